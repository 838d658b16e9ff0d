//! One epoch of a run on one engine (or a data-parallel team): its order of samples, its loop
//! over the batches that `batch` assembles and `feed` prepares while the engine works on the
//! last, the SGD steps (`step`) and the epoch's running sums.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::Result;
use crate::model::Param;
use crate::train::batch::{training_batch, Batch, Plan};
use crate::train::checkpoint::{self, State};
use crate::train::dataset::Split;
use crate::train::engine::Engine;
use crate::train::feed;
use crate::train::parallel::{Queued, Step, Team};
use crate::train::progress::TrainProgress;
use crate::train::seeds::mix;
use crate::train::step::{Hyper, Weights};

/// Queues step `b` of the current epoch over the team (the lead alone unless data-parallel);
/// a self-supervised step's bank rows are updated at once, so the next step scores against
/// them whether or not this one has been settled (and a resumed run as an uninterrupted one).
fn queue_step<E: Engine>(
    (e, team): (&E, &mut Team<E>),
    st: &mut State,
    w: &mut Weights<E>,
    batch: &Batch,
    b: usize,
) -> Result<Queued<E>> {
    let r = &st.recipe;
    let h = Hyper {
        lr: st.lr,
        momentum: r.momentum,
        weight_decay: r.weight_decay,
        dropout: r.dropout,
    };
    let seed = mix(r.seed, st.epoch as u64 + 7, b as u64);
    let step = Step {
        cfg: &st.config,
        batch,
        stats: &st.stats,
        h,
        seed,
        bank: r.instance.as_ref().map(|i| (i, &st.bank[..])),
    };
    let queued = team.queue(e, w, step)?;
    if let (Some(i), Some(v)) = (&st.recipe.instance, queued.embeddings()) {
        crate::train::instance::update(&mut st.bank, &batch.labels, &v, i.bank_momentum);
    }
    Ok(queued)
}

/// A queued step and its batch, settled (waited for, checked and counted) once the next one
/// is queued: the host prepares a batch while the engine works on the last.
struct InFlight<E: Engine> {
    queued: Queued<E>,
    batch: Batch,
    b: usize,
}

/// Waits for `f`, stops on a non-finite loss, and adds the step to the epoch's sums.
fn settle<E: Engine>(
    (e, team): (&E, &Team<E>),
    st: &mut State,
    f: InFlight<E>,
    ckpt: &Path,
) -> Result<()> {
    let scored = f.queued.correct();
    let (losses, logits) = team.collect(e, f.queued)?;
    crate::train::guard::finite_losses(&losses, st.epoch + 1, f.b + 1, ckpt)?;
    let k = st.config.classes;
    let correct = scored.unwrap_or_else(|| {
        logits
            .chunks(k)
            .zip(&f.batch.labels)
            .filter(|(row, &l)| row.iter().all(|&v| v <= row[l as usize]))
            .count()
    });
    count(st, &f.batch, correct, &losses);
    Ok(())
}

/// The host copies a checkpoint is written from.
pub struct HostCopy<'a> {
    pub params: &'a mut [Param],
    pub velocity: &'a mut [Vec<f32>],
}

/// When a run stops before its planned epochs: Ctrl-C, or a number of steps (`--max-steps`);
/// and after how many steps of an epoch the run says how long it expects to take (once).
pub struct Halt<'a> {
    pub stop: &'a AtomicBool,
    pub steps_left: Option<usize>,
    pub estimate_after: Option<usize>,
}

/// How an epoch's loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    Interrupted,
    StepLimit,
}

/// One epoch's batches from `st.next_batch` on; a halt saves a checkpoint first. A
/// non-finite loss stops the run with an error and leaves the last checkpoint as it was.
#[allow(clippy::too_many_arguments)]
pub fn run_epoch<E: Engine>(
    (e, team): (&E, &mut Team<E>),
    st: &mut State,
    w: &mut Weights<E>,
    host: HostCopy,
    train: &Split,
    progress: &dyn TrainProgress,
    halt: &mut Halt,
    ckpt: &Path,
) -> Result<Outcome> {
    let order = epoch_order(st, train.len());
    let batches: Vec<&[usize]> = order.chunks(st.recipe.batch).collect();
    progress.epoch_start(st.epoch, batches.len());
    let started = Instant::now();
    let (first, mut seen_here) = (st.next_batch, 0usize);
    let plan = Plan {
        seed: st.recipe.seed,
        epoch: st.epoch,
        crop: st.recipe.crop,
        pca_std: st.recipe.pca_std,
        stats: st.stats.clone(),
        exemplar: st.recipe.exemplar.clone(),
        on_engine: e.cuts_views(),
        target: st
            .recipe
            .instance
            .as_ref()
            .filter(|i| i.reconstructs())
            .map(|i| i.target),
    };
    let jobs: Vec<(usize, &[usize])> = batches.iter().copied().enumerate().skip(first).collect();
    let batch = st.recipe.batch;
    let make = |(b, idx): (usize, &[usize])| Ok((b, training_batch(&plan, train, idx, b * batch)?));
    let mut in_flight: Option<InFlight<E>> = None;
    let halted = feed::prefetch(jobs, feed::DEPTH, make, |(b, batch)| {
        let outcome = if halt.stop.load(Ordering::SeqCst) {
            Outcome::Interrupted
        } else if halt.steps_left == Some(0) {
            Outcome::StepLimit
        } else {
            Outcome::Finished
        };
        if outcome != Outcome::Finished {
            st.next_batch = b;
            return Ok(ControlFlow::Break(outcome));
        }
        if let Some(left) = &mut halt.steps_left {
            *left -= 1;
        }
        let queued = queue_step((e, &mut *team), st, w, &batch, b)?;
        let next = InFlight { queued, batch, b };
        if let Some(done) = in_flight.replace(next) {
            seen_here += done.batch.len();
            let step = done.b + 1;
            settle((e, &*team), st, done, ckpt)?;
            let rate = seen_here as f32 / elapsed(started);
            report(progress, st, step, rate);
            if halt.estimate_after == Some(step - first) {
                halt.estimate_after = None;
                say_expected(e, st, progress, (step, batches.len()), rate)?;
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    if let Some(done) = in_flight.take() {
        seen_here += done.batch.len();
        let step = done.b + 1;
        settle((e, &*team), st, done, ckpt)?;
        report(progress, st, step, seen_here as f32 / elapsed(started));
    }
    st.seconds += started.elapsed().as_secs_f64();
    if let Some(outcome) = halted {
        team.check_agreement(e, w)?;
        w.download(e, host.params, host.velocity)?;
        checkpoint::save(ckpt, st, host.params, host.velocity)?;
        return Ok(outcome);
    }
    Ok(Outcome::Finished)
}

/// The epoch's samples in order: every image once (exemplar training: several times, as
/// `Exemplar::passes` says), shuffled; self-supervised training shows two views of each image
/// side by side, each the other's positive.
fn epoch_order(st: &State, images: usize) -> Vec<usize> {
    let views = st.recipe.views();
    let passes = st.recipe.passes(images);
    let mut order: Vec<usize> = (0..passes * images).map(|i| i % images).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(mix(
        st.recipe.seed,
        st.epoch as u64,
        0,
    )));
    order
        .into_iter()
        .flat_map(|i| std::iter::repeat_n(i, views))
        .collect()
}

/// One line: how long the rest of the run should take at `rate` images/s, measured on this
/// machine after `step` of the epoch's `batches`; on the CPU with the paper preset, also what
/// the quick preset would take for the same epochs (a few of its steps measured here).
fn say_expected<E: Engine>(
    e: &E,
    st: &State,
    progress: &dyn TrainProgress,
    (step, batches): (usize, usize),
    rate: f32,
) -> Result<()> {
    use crate::train::progress::duration;
    let r = &st.recipe;
    let steps = (r.epochs - st.epoch) * batches - step;
    let secs = (steps * r.batch) as f64 / rate.max(1e-6) as f64;
    let left = r.epochs - st.epoch;
    let mut line = format!(
        "expected: about {} more for {left} epoch{} at {rate:.0} images/s on this machine ({})",
        duration(secs),
        if left == 1 { "" } else { "s" },
        e.describe()
    );
    if r.preset == "paper" && e.describe().starts_with("CPU") {
        let quick = crate::train::recipe::preset("quick")?;
        let cfg = crate::train::recipe::architecture(&quick, st.config.classes);
        let q = crate::train::throughput::step_rate(e, &cfg, r.batch.min(64), 2)?;
        line += &format!(
            "; on a CPU, --preset quick (63-px crops, narrower convolutions) would take about {} for the same images",
            duration((steps * r.batch) as f64 / q.max(1e-6))
        );
    }
    progress.note(&line);
    Ok(())
}

fn elapsed(since: Instant) -> f32 {
    since.elapsed().as_secs_f32().max(1e-6)
}

/// The epoch's running loss and error after `step` steps, and images/s.
fn report(progress: &dyn TrainProgress, st: &State, step: usize, rate: f32) {
    progress.batch(
        step,
        (st.epoch_loss_sum / st.epoch_seen.max(1) as f64) as f32,
        1.0 - st.epoch_correct as f32 / st.epoch_seen.max(1) as f32,
        rate,
    );
}

/// Adds one step's losses and correct predictions to the epoch's running sums.
fn count(st: &mut State, batch: &Batch, correct: usize, losses: &[f32]) {
    st.epoch_loss_sum += losses.iter().map(|&l| l as f64).sum::<f64>();
    st.epoch_correct += correct;
    st.epoch_seen += batch.len();
    st.steps += 1;
}
