//! Data-parallel training: each batch split into contiguous shards, one per engine (GPU); each
//! runs the forward and backward pass on its shard with its loss gradient weighted by the
//! shard's share of the batch, the gradients are summed across engines (`Reduce`: NCCL's
//! all-reduce on GPUs, `HostSum` anywhere), and every engine applies the same SGD update, so
//! the weights stay identical (`Team::check_agreement`, run at every checkpoint). The first
//! engine, the lead, does everything else (validation, checkpoints, export). A team of one
//! steps exactly as `epoch::train_step`.

pub mod check;
pub mod nccl;

use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::{AlexNetConfig, Param};
use crate::train::augment::ColourStats;
use crate::train::batch::Batch;
use crate::train::engine::Engine;
use crate::train::instance::{Instance, Scored};
use crate::train::network::{self, Forward, Mode};
use crate::train::seeds::mix;
use crate::train::step::{Hyper, Weights};

/// Sums gradients across engines.
pub trait Reduce<E: Engine>: Sync {
    /// grads[r][p] ← Σ_r' grads[r'][p] on every engine r (`engines[r]`).
    fn sum(&self, engines: &[&E], grads: &mut [&mut Vec<E::Tensor>]) -> Result<()>;
}

/// Sums through the host in engine order: any engine, for tests and the CPU.
pub struct HostSum;

impl<E: Engine> Reduce<E> for HostSum {
    fn sum(&self, engines: &[&E], grads: &mut [&mut Vec<E::Tensor>]) -> Result<()> {
        for p in 0..grads[0].len() {
            let mut total = engines[0].download(&grads[0][p])?;
            for r in 1..grads.len() {
                let g = engines[r].download(&grads[r][p])?;
                total.iter_mut().zip(g).for_each(|(t, v)| *t += v);
            }
            for (e, g) in engines.iter().zip(grads.iter_mut()) {
                g[p] = e.upload(&total)?;
            }
        }
        Ok(())
    }
}

/// The lead's helpers: their engines and weights, and how gradients are summed.
pub struct Team<'a, E: Engine> {
    helpers: Vec<(&'a E, Weights<E>)>,
    reduce: Option<&'a dyn Reduce<E>>,
}

/// Contiguous shards of `n` samples over `k` engines, sizes differing by at most one.
pub fn shards(n: usize, k: usize) -> Vec<Range<usize>> {
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|r| {
            let len = base + usize::from(r < extra);
            start += len;
            start - len..start
        })
        .collect()
}

/// What one SGD step of the team works on.
#[derive(Clone, Copy)]
pub struct Step<'b> {
    pub cfg: &'b AlexNetConfig,
    pub batch: &'b Batch,
    pub stats: &'b ColourStats,
    pub h: Hyper,
    /// The dropout seed (the lead's; helpers derive theirs from it).
    pub seed: u64,
    /// Self-supervised training: the objective, and the memory bank the step scores against.
    pub bank: Option<(&'b Instance, &'b [f32])>,
}

/// A step queued on the team (`Team::queue`), its results still on the engines.
pub struct Queued<E: Engine> {
    shards: Vec<Shard<E::Tensor>>,
}

/// What one engine keeps of its shard's step until it is collected.
struct Shard<T> {
    losses: Option<T>,
    logits: Option<T>,
    /// A self-supervised step's loss, scored on the host.
    scored: Option<Scored>,
}

impl<E: Engine> Queued<E> {
    /// A self-supervised step's normalised embeddings ([n, dim], batch order).
    pub fn embeddings(&self) -> Option<Vec<f32>> {
        self.scored()
            .map(|s| s.iter().flat_map(|s| s.v.iter().copied()).collect())
    }

    /// A self-supervised step's views whose own bank row scored highest.
    pub fn correct(&self) -> Option<usize> {
        self.scored().map(|s| s.iter().map(|s| s.correct).sum())
    }

    fn scored(&self) -> Option<Vec<&Scored>> {
        let s: Vec<&Scored> = self
            .shards
            .iter()
            .filter_map(|s| s.scored.as_ref())
            .collect();
        (!s.is_empty()).then_some(s)
    }
}

impl<'a, E: Engine> Team<'a, E> {
    /// The lead alone.
    pub fn solo() -> Self {
        Team {
            helpers: Vec::new(),
            reduce: None,
        }
    }

    /// The lead and `helpers`, each with its own copy of `params` and `velocity`.
    pub fn new(
        helpers: &[&'a E],
        reduce: &'a dyn Reduce<E>,
        params: &[Param],
        velocity: &[Vec<f32>],
    ) -> Result<Self> {
        let helpers = helpers
            .iter()
            .map(|&e| {
                e.make_current()?;
                Ok((e, Weights::upload(e, params, velocity)?))
            })
            .collect::<Result<_>>()?;
        Ok(Team {
            helpers,
            reduce: Some(reduce),
        })
    }

    /// Engines in the team, the lead included.
    pub fn size(&self) -> usize {
        1 + self.helpers.len()
    }

    /// One SGD step split across the team: the per-sample losses and the logits
    /// ([n, classes]), on the host in batch order.
    pub fn step(
        &mut self,
        lead: &E,
        w: &mut Weights<E>,
        step: Step,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let queued = self.queue(lead, w, step)?;
        self.collect(lead, queued)
    }

    /// Queues the step without waiting for it: its losses and logits stay on the engines
    /// until `collect`, so the host can prepare the next batch while the GPUs work.
    pub fn queue(&mut self, lead: &E, w: &mut Weights<E>, step: Step) -> Result<Queued<E>> {
        let batch = step.batch;
        if self.helpers.is_empty() {
            // Alone, nothing else reads the gradients: the update follows them.
            lead.make_current()?;
            let shard = shard_gradients(lead, w, &step, 0..batch.len(), 0, true)?;
            return Ok(Queued {
                shards: vec![shard],
            });
        }
        let k = self.size();
        let parts = shards(batch.len(), k);
        let mut engines: Vec<&E> = vec![lead];
        let mut weights: Vec<&mut Weights<E>> = vec![w];
        for (e, hw) in self.helpers.iter_mut() {
            engines.push(*e);
            weights.push(hw);
        }
        let mut kept = Vec::with_capacity(k);
        for (r, range) in parts.iter().enumerate() {
            let (e, w) = (engines[r], &mut *weights[r]);
            e.make_current()?;
            kept.push(shard_gradients(e, w, &step, range.clone(), r, false)?);
        }
        if let Some(reduce) = self.reduce {
            let mut grads: Vec<&mut Vec<E::Tensor>> =
                weights.iter_mut().map(|w| &mut w.grads).collect();
            reduce.sum(&engines, &mut grads)?;
        }
        for (e, w) in engines.iter().zip(weights.iter_mut()) {
            e.make_current()?;
            w.update(*e, step.h)?;
        }
        lead.make_current()?;
        Ok(Queued { shards: kept })
    }

    /// Waits for a queued step: its per-sample losses and logits in batch order.
    pub fn collect(&self, lead: &E, queued: Queued<E>) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mut losses, mut logits) = (Vec::new(), Vec::new());
        for (r, shard) in queued.shards.into_iter().enumerate() {
            let e = if r == 0 { lead } else { self.helpers[r - 1].0 };
            if let Some(s) = shard.scored {
                losses.extend(s.losses);
            } else if let (Some(l), Some(z)) = (shard.losses, shard.logits) {
                e.make_current()?;
                losses.extend(e.download(&l)?);
                logits.extend(e.download(&z)?);
            }
        }
        lead.make_current()?;
        Ok((losses, logits))
    }

    /// Fails unless every helper's weights equal the lead's, bit for bit (their velocities
    /// follow from the same gradients).
    pub fn check_agreement(&self, lead: &E, w: &Weights<E>) -> Result<()> {
        if self.helpers.is_empty() {
            return Ok(());
        }
        lead.make_current()?;
        let want: Vec<Vec<f32>> = w
            .params
            .iter()
            .map(|t| lead.download(t))
            .collect::<Result<_>>()?;
        for (r, (e, hw)) in self.helpers.iter().enumerate() {
            e.make_current()?;
            for (i, (a, b)) in want.iter().zip(&hw.params).enumerate() {
                let b = e.download(b)?;
                if a.iter().zip(&b).any(|(x, y)| x.to_bits() != y.to_bits()) {
                    return Err(Error::Invalid(format!(
                        "data-parallel engines drifted apart: engine {} differs from the lead in parameter {i}",
                        r + 1
                    )));
                }
            }
        }
        lead.make_current()
    }
}

/// Forward and backward of samples `range` of `batch` on one engine, the loss gradient
/// weighted by the shard's share of the batch when it is one of several; the gradients land
/// in `w.grads`, or, with `update` (a team of one), straight in the SGD update of `w`. An
/// empty shard contributes zero gradients.
fn shard_gradients<E: Engine>(
    e: &E,
    w: &mut Weights<E>,
    step: &Step,
    range: Range<usize>,
    rank: usize,
    update: bool,
) -> Result<Shard<E::Tensor>> {
    let Step {
        cfg,
        batch,
        stats,
        h,
        seed,
        bank,
    } = *step;
    let n = range.len();
    if n == 0 {
        for (g, (_, shape)) in w.grads.iter_mut().zip(cfg.param_shapes()) {
            *g = e.zeros(shape.iter().product())?;
        }
        return Ok(Shard {
            losses: None,
            logits: None,
            scored: None,
        });
    }
    let step_seed = seed;
    // The lead keeps the step's seed, so a team of one masks exactly as `train_step`.
    let seed = if rank == 0 {
        seed
    } else {
        mix(seed, 0xD1CE, rank as u64)
    };
    let mode = Mode::Train {
        dropout: h.dropout,
        seed,
    };
    let x = batch.input_range(e, stats, range.clone())?;
    let out = network::forward(e, cfg, &w.params, x, n, mode)?;
    let logits = out.logits.as_ref().expect("a classifier");
    let labels = &batch.labels[range.clone()];
    if let Some((objective, rows)) = bank {
        // Every shard scores against the same negatives (the step's seed, not the shard's),
        // its gradient divided by the whole batch: the shards' sum is the batch mean's.
        let z = e.download(logits)?;
        let negatives = objective.draw(rows.len() / objective.dim, step_seed);
        let per = batch.len() as f32;
        let sources = batch.sources(range.clone());
        let s = objective.score_step(&z, labels, (rows, sources), negatives.as_deref(), per);
        let dz = e.upload(&s.dz)?;
        backward(e, cfg, w, (&out, &dz), update.then_some(h))?;
        return Ok(Shard {
            losses: None,
            logits: None,
            scored: Some(s),
        });
    }
    let (losses, mut dlogits) = e.softmax_cross_entropy(logits, labels, cfg.classes)?;
    if n < batch.len() {
        // Each shard's loss is its own mean; weighted, the sum over shards is the batch mean.
        e.scale(&mut dlogits, n as f32 / batch.len() as f32)?;
    }
    backward(e, cfg, w, (&out, &dlogits), update.then_some(h))?;
    Ok(Shard {
        losses: Some(losses),
        logits: out.logits,
        scored: None,
    })
}

/// The shard's backward: gradients into `w.grads`, or with `update` into the SGD step too.
fn backward<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    w: &mut Weights<E>,
    (out, dz): (&Forward<E>, &E::Tensor),
    update: Option<Hyper>,
) -> Result<()> {
    match update {
        Some(h) => w.backward_and_update(e, cfg, (out, dz), h),
        None => network::backward(e, cfg, &w.params, out, dz, &mut w.grads),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Init};
    use crate::train::batch::{fixture, training_batch};
    use crate::train::engine::cpu::Cpu;
    use crate::train::selftest::relative_error;
    use crate::train::step::train_step;

    const H: Hyper = Hyper {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        dropout: 0.5,
    };

    fn flat(w: &Weights<Cpu>) -> Vec<f32> {
        w.params.iter().flatten().copied().collect()
    }

    #[test]
    fn shards_cover_the_batch_in_order_and_differ_by_at_most_one() {
        assert_eq!(shards(7, 3), vec![0..3, 3..5, 5..7]);
        assert_eq!(shards(2, 3), vec![0..1, 1..2, 2..2]);
        assert_eq!(shards(8, 1), vec![0..8]);
    }

    /// A team of one is `train_step`, dropout masks included; three CPU engines summing through
    /// the host (shards of 3, 2 and 2 samples, no dropout so the masks cannot differ) take the
    /// same steps as one engine on the whole batch, up to the order of float sums, and agree
    /// with each other bit for bit; a helper whose weights drift is caught.
    #[test]
    fn a_team_steps_as_one_engine_on_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (d, plan) = fixture(dir.path());
        let cfg = crate::train::selftest::small_alexnet();
        let params = init_params(&cfg, Init::He, 4);
        let vel: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.data.len()]).collect();
        let batch = training_batch(&plan, &d.train, &[0, 5, 2, 7, 1, 4, 3], 0).unwrap();

        let mut alone = Weights::upload(&Cpu, &params, &vel).unwrap();
        let mut solo = Weights::upload(&Cpu, &params, &vel).unwrap();
        for step in 0..2 {
            let x = batch.input(&Cpu, &plan.stats).unwrap();
            train_step(&Cpu, &cfg, &mut alone, (x, &batch.labels), H, step).unwrap();
            let s = Step {
                cfg: &cfg,
                batch: &batch,
                stats: &plan.stats,
                h: H,
                seed: step,
                bank: None,
            };
            Team::solo().step(&Cpu, &mut solo, s).unwrap();
        }
        assert!(
            flat(&alone) == flat(&solo),
            "a team of one differs from train_step"
        );

        let h = Hyper { dropout: 0.0, ..H };
        let mut one = Weights::upload(&Cpu, &params, &vel).unwrap();
        let mut lead = Weights::upload(&Cpu, &params, &vel).unwrap();
        let helpers = [&Cpu, &Cpu];
        let mut team = Team::new(&helpers, &HostSum, &params, &vel).unwrap();
        for step in 0..2 {
            let x = batch.input(&Cpu, &plan.stats).unwrap();
            let (l1, z1) = train_step(&Cpu, &cfg, &mut one, (x, &batch.labels), h, step).unwrap();
            let s = Step {
                cfg: &cfg,
                batch: &batch,
                stats: &plan.stats,
                h,
                seed: step,
                bank: None,
            };
            let (l3, z3) = team.step(&Cpu, &mut lead, s).unwrap();
            assert!(relative_error(&l1, &l3) < 1e-5, "losses, step {step}");
            assert!(relative_error(&z1, &z3) < 1e-5, "logits, step {step}");
        }
        let err = relative_error(&flat(&one), &flat(&lead));
        assert!(
            err < 1e-5 && flat(&one) != params[0].data,
            "weights: {err:e}"
        );
        team.check_agreement(&Cpu, &lead).unwrap();
        team.helpers[1].1.params[3][0] += 1e-6;
        let drift = team.check_agreement(&Cpu, &lead).unwrap_err().to_string();
        assert!(
            drift.contains("engine 2") && drift.contains("parameter 3"),
            "{drift}"
        );
    }
}
