//! One training run's work on one engine: the weights, velocities and gradients kept where the
//! engine computes (host vectors or GPU buffers), the SGD step, and an epoch's loop over the
//! batches that `batch` assembles and `feed` prepares while the engine works on the last.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::Result;
use crate::model::{AlexNetConfig, Param};
use crate::train::batch::{mix, training_batch, Batch, Plan};
use crate::train::checkpoint::{self, State};
use crate::train::dataset::Split;
use crate::train::engine::Engine;
use crate::train::feed;
use crate::train::network::{self, Mode};
use crate::train::parallel::{Queued, Step, Team};
use crate::train::progress::TrainProgress;

/// Parameters, momentum and gradient buffers on the engine, in `param_shapes()` order.
pub struct Weights<E: Engine> {
    pub params: Vec<E::Tensor>,
    pub velocity: Vec<E::Tensor>,
    pub(crate) grads: Vec<E::Tensor>,
}

impl<E: Engine> Weights<E> {
    pub fn upload(e: &E, params: &[Param], velocity: &[Vec<f32>]) -> Result<Self> {
        Ok(Weights {
            params: params
                .iter()
                .map(|p| e.upload(&p.data))
                .collect::<Result<_>>()?,
            velocity: velocity
                .iter()
                .map(|v| e.upload(v))
                .collect::<Result<_>>()?,
            grads: params
                .iter()
                .map(|p| e.zeros(p.data.len()))
                .collect::<Result<_>>()?,
        })
    }

    /// The paper's SGD update of every parameter from `grads`.
    pub(crate) fn update(&mut self, e: &E, h: Hyper) -> Result<()> {
        for ((p, v), g) in self
            .params
            .iter_mut()
            .zip(&mut self.velocity)
            .zip(&self.grads)
        {
            e.sgd_step(p, v, g, h.lr, h.momentum, h.weight_decay)?;
        }
        Ok(())
    }

    /// Copies the engine's parameters and velocities back into the host copies.
    pub fn download(&self, e: &E, params: &mut [Param], velocity: &mut [Vec<f32>]) -> Result<()> {
        for (p, t) in params.iter_mut().zip(&self.params) {
            p.data = e.download(t)?;
        }
        for (v, t) in velocity.iter_mut().zip(&self.velocity) {
            *v = e.download(t)?;
        }
        Ok(())
    }
}

/// The recipe's per-step numbers.
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub dropout: f32,
}

impl Hyper {
    /// The paper's numbers, for measured and checked steps.
    pub const BENCH: Hyper = Hyper {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 5e-4,
        dropout: 0.5,
    };
}

/// Queues one SGD step on input `x`; returns the per-sample losses and the logits (still on
/// the engine, so the caller decides when to wait for them).
pub fn train_step<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    w: &mut Weights<E>,
    (x, labels): (E::Tensor, &[u32]),
    h: Hyper,
    seed: u64,
) -> Result<(E::Tensor, E::Tensor)> {
    let mode = Mode::Train {
        dropout: h.dropout,
        seed,
    };
    let out = network::forward(e, cfg, &w.params, x, labels.len(), mode)?;
    let logits = out.logits.as_ref().expect("a classifier");
    let (losses, dlogits) = e.softmax_cross_entropy(logits, labels, cfg.classes)?;
    network::backward(e, cfg, &w.params, &out, &dlogits, &mut w.grads)?;
    w.update(e, h)?;
    Ok((losses, out.logits.expect("a classifier")))
}

/// Queues step `b` of the current epoch over the team (the lead alone unless data-parallel).
fn queue_step<E: Engine>(
    (e, team): (&E, &mut Team<E>),
    st: &State,
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
    };
    team.queue(e, w, step)
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
    let (losses, logits) = team.collect(e, f.queued)?;
    crate::train::guard::finite_losses(&losses, st.epoch + 1, f.b + 1, ckpt)?;
    count(st, &f.batch, &logits, &losses);
    Ok(())
}

/// The host copies a checkpoint is written from.
pub struct HostCopy<'a> {
    pub params: &'a mut [Param],
    pub velocity: &'a mut [Vec<f32>],
}

/// When a run stops before its planned epochs: Ctrl-C, or a number of steps (`--max-steps`).
pub struct Halt<'a> {
    pub stop: &'a AtomicBool,
    pub steps_left: Option<usize>,
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
    // Exemplar training shows each surrogate several times an epoch (`Exemplar::passes`).
    let passes = st
        .recipe
        .exemplar
        .as_ref()
        .map_or(1, |ex| ex.passes(train.len()));
    let mut order: Vec<usize> = (0..passes * train.len()).map(|i| i % train.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(mix(
        st.recipe.seed,
        st.epoch as u64,
        0,
    )));
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
            report(progress, st, step, seen_here as f32 / elapsed(started));
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
fn count(st: &mut State, batch: &Batch, logits: &[f32], losses: &[f32]) {
    let k = st.config.classes;
    let correct = logits
        .chunks(k)
        .zip(&batch.labels)
        .filter(|(row, &l)| row.iter().all(|&v| v <= row[l as usize]))
        .count();
    st.epoch_loss_sum += losses.iter().map(|&l| l as f64).sum::<f64>();
    st.epoch_correct += correct;
    st.epoch_seen += batch.len();
    st.steps += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Init};
    use crate::train::engine::cpu::Cpu;
    use crate::train::recipe::{architecture, preset};

    const BASE: Hyper = Hyper {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 5e-4,
        dropout: 0.5,
    };

    /// The quick network's weights (flattened) before and after `steps` SGD steps under `h`,
    /// all on the same batch.
    fn weights_after(h: Hyper, steps: usize) -> (Vec<f32>, Vec<f32>) {
        let cfg = architecture(&preset("quick").unwrap(), 4);
        let params = init_params(&cfg, Init::He, 1);
        let vel: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.data.len()]).collect();
        let mut w = Weights::upload(&Cpu, &params, &vel).unwrap();
        let x = crate::train::engine::random(4 * 3 * cfg.input * cfg.input, 3);
        for step in 0..steps {
            train_step(
                &Cpu,
                &cfg,
                &mut w,
                (x.clone(), &[0, 1, 2, 3]),
                h,
                step as u64,
            )
            .unwrap();
        }
        let (mut after, mut v) = (params.clone(), vel);
        w.download(&Cpu, &mut after, &mut v).unwrap();
        let flat = |p: Vec<crate::model::Param>| p.into_iter().flat_map(|p| p.data).collect();
        (flat(params), flat(after))
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Weight decay after one step: w₁ − w₁' = −lr·wd·w₀ exactly (v₀ = 0; same gradient).
    #[test]
    fn weight_decay_shrinks_the_first_step_by_lr_times_wd_times_w() {
        let (w0, with) = weights_after(BASE, 1);
        let without = weights_after(
            Hyper {
                weight_decay: 0.0,
                ..BASE
            },
            1,
        )
        .1;
        let want: Vec<f32> = w0
            .iter()
            .map(|w| -BASE.lr * BASE.weight_decay * w)
            .collect();
        let got: Vec<f32> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
        assert!(
            max_abs_diff(&got, &want) < 1e-7,
            "{}",
            max_abs_diff(&got, &want)
        );
        assert!(want.iter().any(|v| v.abs() > 1e-6));
    }

    /// Momentum in the second step: w₂ − w₂' = m·(w₁ − w₀), the first step being the same.
    #[test]
    fn momentum_carries_the_first_step_into_the_second() {
        let (w0, w1) = weights_after(BASE, 1);
        let with = weights_after(BASE, 2).1;
        let without = weights_after(
            Hyper {
                momentum: 0.0,
                ..BASE
            },
            2,
        )
        .1;
        let want: Vec<f32> = w1
            .iter()
            .zip(&w0)
            .map(|(a, b)| BASE.momentum * (a - b))
            .collect();
        let got: Vec<f32> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
        assert!(
            max_abs_diff(&got, &want) < 1e-6,
            "{}",
            max_abs_diff(&got, &want)
        );
    }

    /// Dropout changes the gradient, and so the step.
    #[test]
    fn dropout_changes_the_step() {
        let with = weights_after(BASE, 1).1;
        let without = weights_after(
            Hyper {
                dropout: 0.0,
                ..BASE
            },
            1,
        )
        .1;
        assert!(max_abs_diff(&with, &without) > 1e-6);
    }
}
