//! One training run's work on one engine: the weights, velocities and gradients kept where the
//! engine computes (host vectors or GPU buffers), batches assembled on the host as 8-bit crops
//! (the geometric augmentation) and turned into network input by the engine, the SGD step,
//! and validation. The host prepares batch b+1 while the engine works on batch b.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::augment::{self, ColourStats, Crop};
use crate::checkpoint::{self, State};
use crate::dataset::Split;
use crate::engine::{Engine, Normalise, Shape};
use crate::error::Result;
use crate::model::{AlexNetConfig, Param};
use crate::network::{self, Mode};
use crate::train::TrainProgress;

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
    pub fn new(split: &Split, idx: &[usize], views: &[Crop], crop: usize) -> Batch {
        let per = 3 * crop * crop;
        let mut pixels = vec![0u8; idx.len() * per];
        pixels
            .par_chunks_mut(per)
            .zip(idx.par_iter().zip(views))
            .for_each(|(out, (&i, v))| {
                augment::write_crop(split.image(i), split.side, crop, v, out)
            });
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

/// (mean loss, top-1 error, top-5 error) on `split`, averaging softmax over `views`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    params: &[E::Tensor],
    split: &Split,
    stats: &ColourStats,
    views: &[Crop],
    batch: usize,
) -> Result<(f32, f32, f32)> {
    let k = cfg.classes;
    let mut loss = 0.0f64;
    let mut all_probs = Vec::with_capacity(split.len() * k);
    let all: Vec<usize> = (0..split.len()).collect();
    for idx in all.chunks(batch.max(1)) {
        let mut probs = vec![0.0f32; idx.len() * k];
        for v in views {
            let b = Batch::new(split, idx, &vec![*v; idx.len()], cfg.input);
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
    let (e1, e5) = crate::eval::top_errors(&all_probs, &split.labels);
    let n = split.len().max(1) as f64;
    Ok(((loss / n) as f32, e1 as f32, e5 as f32))
}

pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut x =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// Batch `b` of the epoch: random views seeded by (seed, epoch, sample).
fn training_batch(st: &State, train: &Split, idx: &[usize]) -> Batch {
    let r = &st.recipe;
    let views: Vec<Crop> = idx
        .iter()
        .map(|&i| {
            let mut rng =
                rand::rngs::StdRng::seed_from_u64(mix(r.seed, st.epoch as u64 + 1, i as u64));
            augment::random_crop(&mut rng, train.side, r.crop, &st.stats, r.pca_std)
        })
        .collect();
    Batch::new(train, idx, &views, r.crop)
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

/// One epoch's batches from `st.next_batch` on; returns false when stopped (after saving).
#[allow(clippy::too_many_arguments)]
pub fn run_epoch<E: Engine>(
    e: &E,
    st: &mut State,
    w: &mut Weights<E>,
    host: HostCopy,
    train: &Split,
    progress: &dyn TrainProgress,
    stop: &AtomicBool,
    ckpt: &Path,
) -> Result<bool> {
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
    let mut next = batches.get(first).map(|idx| training_batch(st, train, idx));
    for b in first..batches.len() {
        if stop.load(Ordering::SeqCst) {
            st.next_batch = b;
            st.seconds += started.elapsed().as_secs_f64();
            w.download(e, host.params, host.velocity)?;
            checkpoint::save(ckpt, st, host.params, host.velocity)?;
            return Ok(false);
        }
        let batch = next.take().expect("prepared batch");
        let (losses, logits) = step(e, st, w, &batch, b)?;
        // The engine may still be computing: build the next batch meanwhile.
        next = batches.get(b + 1).map(|idx| training_batch(st, train, idx));
        let (losses, logits) = (e.download(&losses)?, e.download(&logits)?);
        let k = st.config.classes;
        let correct = logits
            .chunks(k)
            .zip(&batch.labels)
            .filter(|(row, &l)| row.iter().all(|&v| v <= row[l as usize]))
            .count();
        st.epoch_loss_sum += losses.iter().map(|&l| l as f64).sum::<f64>();
        st.epoch_correct += correct;
        st.epoch_seen += batch.len();
        seen_here += batch.len();
        let rate = seen_here as f32 / started.elapsed().as_secs_f32().max(1e-6);
        progress.batch(
            b + 1,
            (st.epoch_loss_sum / st.epoch_seen as f64) as f32,
            1.0 - st.epoch_correct as f32 / st.epoch_seen as f32,
            rate,
        );
    }
    st.seconds += started.elapsed().as_secs_f64();
    Ok(true)
}
