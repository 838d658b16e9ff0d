//! One training run's work on one engine: the weights, velocities and gradients kept where the
//! engine computes (host vectors or GPU buffers), batches assembled on the host as 8-bit crops
//! (the geometric augmentation) and turned into network input by the engine, the SGD step,
//! and validation. `feed` prepares the next batches while the engine works on this one.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::error::Result;
use crate::model::{AlexNetConfig, Param};
use crate::train::augment::{self, ColourStats, Crop};
use crate::train::checkpoint::{self, State};
use crate::train::dataset::Split;
use crate::train::engine::{Engine, Normalise, Shape};
use crate::train::feed;
use crate::train::network::{self, Mode};
use crate::train::progress::TrainProgress;

/// Parameters, momentum and gradient buffers on the engine, in `param_shapes()` order.
pub struct Weights<E: Engine> {
    pub params: Vec<E::Tensor>,
    pub velocity: Vec<E::Tensor>,
    grads: Vec<E::Tensor>,
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

/// One batch on the host: crops [n, 3, crop, crop] u8, colour shifts and labels.
pub struct Batch {
    pixels: Vec<u8>,
    shifts: Vec<[f32; 3]>,
    labels: Vec<u32>,
    crop: usize,
}

impl Batch {
    /// Reads images `idx` of `split` from its pack and cuts `views` out of them.
    pub fn new(split: &Split, idx: &[usize], views: &[Crop], crop: usize) -> Result<Batch> {
        let images = split.read_images(idx)?;
        Ok(Batch::cut(&images, split, idx, views, crop))
    }

    /// Cuts `views` out of `images` (images `idx` of `split`, as `Split::read_images` gives).
    fn cut(images: &[u8], split: &Split, idx: &[usize], views: &[Crop], crop: usize) -> Batch {
        let per = 3 * crop * crop;
        let mut pixels = vec![0u8; idx.len() * per];
        pixels
            .par_chunks_mut(per)
            .zip(images.par_chunks(split.image_bytes()).zip(views))
            .for_each(|(out, (image, v))| augment::write_crop(image, split.side, crop, v, out));
        Batch {
            pixels,
            shifts: views.iter().map(|v| v.shift).collect(),
            labels: idx.iter().map(|&i| split.labels[i] as u32).collect(),
            crop,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The normalised network input on the engine.
    pub fn input<E: Engine>(&self, e: &E, stats: &ColourStats) -> Result<E::Tensor> {
        let norm = Normalise {
            mean: stats.mean,
            std: stats.std,
        };
        let s = Shape::new(self.len(), 3, self.crop, self.crop);
        e.input(&self.pixels, &self.shifts, &norm, s)
    }
}

/// A split's scores under one set of views.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f32,
    pub top1: f32,
    pub top5: f32,
    /// The share of images predicted as the most predicted class (near 1/C for a network that
    /// tells classes apart, near 1 for one that has collapsed onto a class).
    pub top_class_share: f32,
}

/// Mean loss, top-1 and top-5 error on `split`, averaging softmax over `views`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    params: &[E::Tensor],
    split: &Split,
    stats: &ColourStats,
    views: &[Crop],
    batch: usize,
) -> Result<Evaluation> {
    let k = cfg.classes;
    let mut loss = 0.0f64;
    let mut all_probs = Vec::with_capacity(split.len() * k);
    let all: Vec<usize> = (0..split.len()).collect();
    for idx in all.chunks(batch.max(1)) {
        let mut probs = vec![0.0f32; idx.len() * k];
        // Read once, cut once per view (10 views: the 10-crop evaluation).
        let images = split.read_images(idx)?;
        for v in views {
            let b = Batch::cut(&images, split, idx, &vec![*v; idx.len()], cfg.input);
            let out = network::forward(e, cfg, params, b.input(e, stats)?, idx.len(), Mode::Eval)?;
            let logits = e.download(out.logits.as_ref().expect("a classifier"))?;
            for (row, p) in logits.chunks(k).zip(probs.chunks_mut(k)) {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
                p.iter_mut()
                    .zip(row)
                    .for_each(|(p, v)| *p += (v - max).exp() / sum / views.len() as f32);
            }
        }
        for (p, &i) in probs.chunks(k).zip(idx) {
            loss -= (p[split.labels[i]].max(1e-12) as f64).ln();
        }
        all_probs.extend(probs);
    }
    let (e1, e5) = crate::train::metrics::top_errors(&all_probs, &split.labels);
    let n = split.len().max(1) as f64;
    Ok(Evaluation {
        loss: (loss / n) as f32,
        top1: e1 as f32,
        top5: e5 as f32,
        top_class_share: top_class_share(&all_probs, k),
    })
}

/// The share of rows whose arg-max is the most frequent arg-max.
fn top_class_share(probs: &[f32], k: usize) -> f32 {
    let mut counts = vec![0usize; k];
    for row in probs.chunks(k) {
        let best = (0..k).fold(0, |b, c| if row[c] > row[b] { c } else { b });
        counts[best] += 1;
    }
    let rows = (probs.len() / k.max(1)).max(1);
    *counts.iter().max().unwrap_or(&0) as f32 / rows as f32
}

pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut x =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// What the feed needs to make an epoch's batches (a copy, so the engine's side may change
/// the run's state meanwhile).
pub(crate) struct Plan {
    pub seed: u64,
    pub epoch: usize,
    pub crop: usize,
    pub pca_std: f32,
    pub stats: ColourStats,
}

/// A batch of the epoch: random views seeded by (seed, epoch, sample).
pub(crate) fn training_batch(p: &Plan, train: &Split, idx: &[usize]) -> Result<Batch> {
    let views: Vec<Crop> = idx
        .iter()
        .map(|&i| {
            let mut rng =
                rand::rngs::StdRng::seed_from_u64(mix(p.seed, p.epoch as u64 + 1, i as u64));
            augment::random_crop(&mut rng, train.side, p.crop, &p.stats, p.pca_std)
        })
        .collect();
    Batch::new(train, idx, &views, p.crop)
}

/// The recipe's per-step numbers.
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub dropout: f32,
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
    for ((p, v), g) in w.params.iter_mut().zip(&mut w.velocity).zip(&w.grads) {
        e.sgd_step(p, v, g, h.lr, h.momentum, h.weight_decay)?;
    }
    Ok((losses, out.logits.expect("a classifier")))
}

/// Step `b` of the current epoch.
fn step<E: Engine>(
    e: &E,
    st: &State,
    w: &mut Weights<E>,
    batch: &Batch,
    b: usize,
) -> Result<(E::Tensor, E::Tensor)> {
    let r = &st.recipe;
    let h = Hyper {
        lr: st.lr,
        momentum: r.momentum,
        weight_decay: r.weight_decay,
        dropout: r.dropout,
    };
    let seed = mix(r.seed, st.epoch as u64 + 7, b as u64);
    let x = batch.input(e, &st.stats)?;
    train_step(e, &st.config, w, (x, &batch.labels), h, seed)
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
    e: &E,
    st: &mut State,
    w: &mut Weights<E>,
    host: HostCopy,
    train: &Split,
    progress: &dyn TrainProgress,
    halt: &mut Halt,
    ckpt: &Path,
) -> Result<Outcome> {
    let mut order: Vec<usize> = (0..train.len()).collect();
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
    };
    let jobs: Vec<(usize, &[usize])> = batches.iter().copied().enumerate().skip(first).collect();
    let make = |(b, idx): (usize, &[usize])| Ok((b, training_batch(&plan, train, idx)?));
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
        let (losses, logits) = step(e, st, w, &batch, b)?;
        let (losses, logits) = (e.download(&losses)?, e.download(&logits)?);
        crate::train::guard::finite_losses(&losses, st.epoch + 1, b + 1, ckpt)?;
        count(st, &batch, &logits, &losses);
        seen_here += batch.len();
        let rate = seen_here as f32 / started.elapsed().as_secs_f32().max(1e-6);
        progress.batch(
            b + 1,
            (st.epoch_loss_sum / st.epoch_seen as f64) as f32,
            1.0 - st.epoch_correct as f32 / st.epoch_seen as f32,
            rate,
        );
        Ok(ControlFlow::Continue(()))
    })?;
    st.seconds += started.elapsed().as_secs_f64();
    if let Some(outcome) = halted {
        w.download(e, host.params, host.velocity)?;
        checkpoint::save(ckpt, st, host.params, host.velocity)?;
        return Ok(outcome);
    }
    Ok(Outcome::Finished)
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
