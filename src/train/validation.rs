//! Scoring a network during and after training: loss, top-1 and top-5 error on a split under
//! the paper's views (centre or ten crops) or exemplar training's held-out views, and the fc7
//! vectors behind a retrieval score.

use crate::error::Result;
use crate::model::AlexNetConfig;
use crate::train::augment::{ColourStats, Crop};
use crate::train::batch::Batch;
use crate::train::checkpoint::State;
use crate::train::dataset::Split;
use crate::train::engine::Engine;
use crate::train::exemplar::{self, Exemplar};
use crate::train::network::{self, Mode};

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

/// Which views of each image are scored.
pub enum Views<'a> {
    /// The same crops of every image, softmax averaged over them (centre, or the ten).
    Crops(&'a [Crop]),
    /// Each surrogate's held-out exemplar view (seeded by the run's seed and its class).
    HeldOut(&'a Exemplar, u64),
}

/// A network on an engine, with the colour statistics that normalise its input.
pub struct Scorer<'a, E: Engine> {
    pub e: &'a E,
    pub cfg: &'a AlexNetConfig,
    pub params: &'a [E::Tensor],
    pub stats: &'a ColourStats,
    pub batch: usize,
}

impl<'a, E: Engine> Scorer<'a, E> {
    /// The network of a run's state with `params` on the engine, at the recipe's batch size.
    pub fn of(e: &'a E, st: &'a State, params: &'a [E::Tensor]) -> Self {
        Scorer {
            e,
            cfg: &st.config,
            params,
            stats: &st.stats,
            batch: st.recipe.batch,
        }
    }

    /// The batches of `views` of images `idx` of `split`, read once.
    fn batches(&self, split: &Split, idx: &[usize], views: &Views) -> Result<Vec<Batch>> {
        let images = split.read_images(idx)?;
        let input = self.cfg.input;
        Ok(match views {
            Views::Crops(crops) => crops
                .iter()
                .map(|v| Batch::cut(&images, split, idx, &vec![*v; idx.len()], input))
                .collect(),
            Views::HeldOut(ex, seed) => {
                let views: Vec<_> = idx
                    .iter()
                    .map(|&i| {
                        exemplar::held_out_view(*seed, split.labels[i], split.side, input, ex)
                    })
                    .collect();
                vec![Batch::rendered(&images, split, idx, &views, input)]
            }
        })
    }

    /// Mean loss, top-1 and top-5 error on `split`, averaging softmax over `views`.
    pub fn evaluate(&self, split: &Split, views: &Views) -> Result<Evaluation> {
        let k = self.cfg.classes;
        let mut loss = 0.0f64;
        let mut all_probs = Vec::with_capacity(split.len() * k);
        let all: Vec<usize> = (0..split.len()).collect();
        for idx in all.chunks(self.batch.max(1)) {
            let mut probs = vec![0.0f32; idx.len() * k];
            let batches = self.batches(split, idx, views)?;
            let share = 1.0 / batches.len() as f32;
            for b in batches {
                let x = b.input(self.e, self.stats)?;
                let out =
                    network::forward(self.e, self.cfg, self.params, x, idx.len(), Mode::Eval)?;
                let logits = self
                    .e
                    .download(out.logits.as_ref().expect("a classifier"))?;
                for (row, p) in logits.chunks(k).zip(probs.chunks_mut(k)) {
                    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
                    p.iter_mut()
                        .zip(row)
                        .for_each(|(p, v)| *p += (v - max).exp() / sum * share);
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

    /// The last layer's outputs for each image's held-out view: [split.len(), classes] (a
    /// self-supervised network's embedding head before normalisation).
    pub fn held_out_outputs(&self, split: &Split, ex: &Exemplar, seed: u64) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(split.len() * self.cfg.classes);
        let all: Vec<usize> = (0..split.len()).collect();
        for idx in all.chunks(self.batch.max(1)) {
            for b in self.batches(split, idx, &Views::HeldOut(ex, seed))? {
                let x = b.input(self.e, self.stats)?;
                let f = network::forward(self.e, self.cfg, self.params, x, idx.len(), Mode::Eval)?;
                out.extend(self.e.download(f.logits.as_ref().expect("a head"))?);
            }
        }
        Ok(out)
    }

    /// The fc7 vectors of `split` under one crop: [split.len(), hidden].
    pub fn features(&self, split: &Split, crop: Crop) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(split.len() * self.cfg.hidden);
        let all: Vec<usize> = (0..split.len()).collect();
        for idx in all.chunks(self.batch.max(1)) {
            for b in self.batches(split, idx, &Views::Crops(&[crop]))? {
                let x = b.input(self.e, self.stats)?;
                let f = network::forward(self.e, self.cfg, self.params, x, idx.len(), Mode::Eval)?;
                out.extend(self.e.download(&f.fc7)?);
            }
        }
        Ok(out)
    }
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
