//! Instance discrimination (Wu, Xiong, Yu & Lin, CVPR 2018, "non-parametric instance
//! discrimination"): every image of an unlabelled folder is its own class, but without an fc8
//! as wide as the folder. The network's last layer is a small embedding head on fc7 (`dim`
//! units, dropped at export); its output is L2-normalised and scored against a memory bank
//! holding every image's last normalised embedding, at temperature τ. A step scores each view
//! against its own bank row and `negatives` rows drawn for the step (all rows when the bank is
//! smaller), so its cost does not grow with the folder; afterwards each image's row moves
//! towards its new embedding (`bank_momentum`) and is normalised again.
//!
//! The loss and its gradient (`loss`) are host code shared by every engine: only the head's
//! output ([n, dim]) comes down and its gradient goes back up. Here: the settings, the bank,
//! the step's loss (with `target`'s reconstruction term when asked), and how well held-out
//! views are recognised against the bank.

mod hog;
mod loss;
pub mod target;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use loss::{score, score_centred, Scored};
pub use target::Target;

/// The objective's settings, saved in the recipe and the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Width of the normalised embedding head on fc7.
    pub dim: usize,
    /// τ: scores are cosine similarities divided by it.
    pub temperature: f32,
    /// A bank row keeps this share of itself when its image is seen again.
    pub bank_momentum: f32,
    /// Bank rows drawn as negatives for each step (all rows when there are fewer).
    pub negatives: usize,
    /// Weight of `target`'s reconstruction term (0: none, and no outputs for it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reconstruct: f32,
    /// What the reconstruction term predicts (absent from recipes written before it could be
    /// chosen: the thumbnail).
    #[serde(default, skip_serializing_if = "is_thumbnail")]
    pub target: Target,
}

fn is_thumbnail(t: &Target) -> bool {
    *t == Target::Thumbnail
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

impl Default for Instance {
    /// Wu et al.'s 128-d embedding and bank momentum 0.5; τ = 0.1 and 256 bank negatives
    /// beside the step's own views (Wu et al.'s τ = 0.07 with 4,096 negatives and no second
    /// view collapsed on Fashion-MNIST without batch normalisation; against τ = 0.2, τ = 0.1
    /// found more edited copies' sources and Fashion-MNIST's neighbours were no worse), and
    /// the reconstruction term at weight 50, which leads the loss (at the rate `recipe::
    /// instance` sets with it, 0.001, its neighbours were of the same class 5–6 points more
    /// often on Fashion-MNIST and more edited copies found their source; weight 50 beat 25,
    /// 100 and 200 on 8,000 images and 100 on all 60,000), predicting the image's histogram of
    /// oriented gradients (on all 60,000, 0.839 of the neighbours were of the same class
    /// against 0.825 with the 16×16 thumbnail: BENCHMARKS.md).
    fn default() -> Self {
        Instance {
            dim: 128,
            temperature: 0.1,
            bank_momentum: 0.5,
            negatives: 256,
            reconstruct: 50.0,
            target: Target::Hog,
        }
    }
}

impl Instance {
    /// Refuses settings the loss cannot use, naming the flag.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let checks = [
            (self.dim >= 2, "the embedding needs at least 2 dimensions"),
            (
                self.temperature > 0.0 && self.temperature.is_finite(),
                "--temperature must be positive",
            ),
            (
                (0.0..1.0).contains(&self.bank_momentum),
                "--bank-momentum must be in [0, 1)",
            ),
            (self.negatives >= 1, "--negatives must be at least 1"),
            (
                self.reconstruct >= 0.0 && self.reconstruct.is_finite(),
                "--reconstruct must be 0 or more",
            ),
        ];
        crate::error::first_refusal(&checks)
    }

    /// Whether the head also predicts each view's source thumbnail (`--reconstruct W`, W > 0).
    pub fn reconstructs(&self) -> bool {
        self.reconstruct > 0.0
    }

    /// The head's width: the embedding, then the target's outputs when reconstructing.
    pub fn width(&self) -> usize {
        self.dim
            + if self.reconstructs() {
                self.target.outputs()
            } else {
                0
            }
    }

    /// The embedding columns of head outputs `z` ([n, width]): [n, dim].
    pub fn embedding(&self, z: &[f32]) -> Vec<f32> {
        let w = self.width();
        z.chunks(w)
            .flat_map(|r| r[..self.dim].iter().copied())
            .collect()
    }

    /// One step's loss on head outputs `z` ([n, width]) of views of images `own`, against
    /// `bank` and, when reconstructing, the views' reduced `sources` ([n, target.source_len()]):
    /// instance discrimination (`score_centred`) on the embedding columns plus the
    /// reconstruction term; the gradient of the sum divided by `per`. The losses reported are
    /// the instance loss's alone, which the stall guard compares with chance's ln C (with the
    /// term added, a weight of 25 put Fashion-MNIST's loss at ln 319 by coincidence and the run
    /// was stopped), made NaN where the term is not finite so that the NaN guard still sees it.
    pub fn score_step(
        &self,
        z: &[f32],
        own: &[u32],
        (bank, sources): (&[f32], &[u8]),
        negatives: Option<&[u32]>,
        per: f32,
    ) -> Scored {
        let t = self.temperature;
        if !self.reconstructs() {
            return score_centred(z, own, bank, negatives, t, per);
        }
        assert_eq!(
            sources.len(),
            own.len() * self.target.source_len(),
            "a target's source per view"
        );
        let (w, dim) = (self.width(), self.dim);
        let r: Vec<f32> = z.chunks(w).flat_map(|r| r[dim..].iter().copied()).collect();
        let mut s = score_centred(&self.embedding(z), own, bank, negatives, t, per);
        let rec = target::reconstruct(&r, sources, self.target, self.reconstruct, per);
        s.losses
            .iter_mut()
            .zip(&rec.losses)
            .filter(|(_, r)| !r.is_finite())
            .for_each(|(l, _)| *l = f32::NAN);
        s.dz =
            s.dz.chunks(dim)
                .zip(rec.dr.chunks(self.target.outputs()))
                .flat_map(|(a, b)| a.iter().chain(b).copied())
                .collect();
        s
    }

    /// How many scores a view's softmax takes in a step of `batch` views (two of each image)
    /// over a bank of `rows`: its positive, the step's other views of other images and the
    /// bank's negatives (chance's loss is the log of it).
    pub fn scored(&self, rows: usize, batch: usize) -> usize {
        1 + batch.saturating_sub(2) + self.negatives.min(rows.saturating_sub(1))
    }

    /// The negatives of one step, drawn from `seed` (None: every row of a bank of `rows`
    /// that is not larger than the negatives asked for).
    pub fn draw(&self, rows: usize, seed: u64) -> Option<Vec<u32>> {
        if rows <= self.negatives + 1 {
            return None;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1A57_A9CE);
        Some(
            (0..self.negatives)
                .map(|_| rng.random_range(0..rows as u32))
                .collect(),
        )
    }
}

/// `v` scaled to unit length (left as is when it is zero); returns the length.
fn normalise(v: &mut [f32]) -> f32 {
    let len = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if len > 0.0 {
        v.iter_mut().for_each(|x| *x /= len);
    }
    len
}

/// A bank of `rows` random unit rows of `dim`, drawn from `seed`.
pub fn random_bank(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut bank = crate::train::engine::random(rows * dim, seed ^ 0xBA4C);
    bank.chunks_mut(dim).for_each(|r| {
        normalise(r);
    });
    bank
}

/// Moves the rows `own` of `bank` towards the normalised embeddings `v` ([n, dim]):
/// m ← normalise(μ·m + (1 − μ)·v), in order (an image met twice in a step moves twice).
pub fn update(bank: &mut [f32], own: &[u32], v: &[f32], momentum: f32) {
    let dim = v.len() / own.len().max(1);
    for (&o, vi) in own.iter().zip(v.chunks(dim)) {
        let m = &mut bank[o as usize * dim..(o as usize + 1) * dim];
        m.iter_mut()
            .zip(vi)
            .for_each(|(m, v)| *m = momentum * *m + (1.0 - momentum) * v);
        normalise(m);
    }
}

/// How well held-out views (centred together, as `score_centred` centres a batch) are
/// recognised against the whole bank: the mean loss over every
/// row, top-1 and top-5 error (the own row not first, not among the first five) and the share
/// of views whose best row is the most common best row (near 1 when the embedding collapsed).
pub fn recognise(z: &[f32], own: &[usize], bank: &[f32], temperature: f32) -> Recognition {
    let dim = z.len() / own.len().max(1);
    let rows = bank.len() / dim;
    let mut v = z.to_vec();
    if own.len() > 1 {
        loss::centre(&mut v, dim);
    }
    v.chunks_mut(dim).for_each(|r| {
        normalise(r);
    });
    let (mut loss, mut best) = (0.0f64, vec![0usize; rows]);
    let (mut wrong1, mut wrong5) = (0.0f64, 0.0f64);
    // A few views at a time: the scores of every view against a bank of a million rows would
    // not fit in memory. One buffer for every chunk's scores (fresh pages would be zeroed anew).
    let mut scores = Vec::new();
    for (chunk, ids) in v.chunks(32 * dim).zip(own.chunks(32)) {
        crate::util::matmul::dot_rows_into(chunk, bank, dim, &mut scores);
        for (row, &o) in scores.chunks(rows).zip(ids) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s)) / temperature;
            let sum: f64 = row
                .iter()
                .map(|&s| ((s / temperature - max) as f64).exp())
                .sum();
            loss += max as f64 + sum.ln() - (row[o] / temperature) as f64;
            let top = (0..rows).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            best[top] += 1;
        }
        let (e1, e5) = crate::train::metrics::top_errors(&scores, ids);
        (wrong1, wrong5) = (
            wrong1 + e1 * ids.len() as f64,
            wrong5 + e5 * ids.len() as f64,
        );
    }
    let n = own.len().max(1);
    let (top1, top5) = (wrong1 / n as f64, wrong5 / n as f64);
    Recognition {
        loss: (loss / n as f64) as f32,
        top1: top1 as f32,
        top5: top5 as f32,
        top_share: *best.iter().max().unwrap_or(&0) as f32 / n as f32,
    }
}

/// Held-out views against the bank (`recognise`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recognition {
    pub loss: f32,
    pub top1: f32,
    pub top5: f32,
    pub top_share: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-row bank in 2-d: rows at 0°, 90° and 180°.
    const BANK: [f32; 6] = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
    #[test]
    fn the_bank_moves_towards_new_embeddings_and_stays_unit() {
        let mut bank = BANK.to_vec();
        update(&mut bank, &[1], &[1.0, 0.0], 0.5);
        let h = 0.5f32.sqrt();
        assert!(
            (bank[2] - h).abs() < 1e-6 && (bank[3] - h).abs() < 1e-6,
            "{bank:?}"
        );
        assert_eq!(&bank[..2], &[1.0, 0.0]);
        assert_eq!(&bank[4..], &[-1.0, 0.0]);
        let r = random_bank(4, 3, 1);
        for row in r.chunks(3) {
            assert!((row.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert_ne!(r, random_bank(4, 3, 2));
    }

    #[test]
    fn held_out_views_are_recognised_against_the_whole_bank() {
        // Three views already centred (their mean is 0): near rows 0, 1 and 2; the third's own
        // row is 0, so it is wrong.
        let z = [3.0, 0.1, 0.1, 2.0, -3.1, -2.1];
        let own = [0, 1, 0];
        let r = recognise(&z, &own, &BANK, 0.5);
        assert!((r.top1 - 1.0 / 3.0).abs() < 1e-6, "{r:?}");
        assert_eq!(r.top5, 0.0);
        assert!((r.top_share - 1.0 / 3.0).abs() < 1e-6);
        let want: f32 = (0..3)
            .map(|i| {
                score(
                    &z[2 * i..2 * i + 2],
                    &[own[i] as u32],
                    &BANK,
                    None,
                    0.5,
                    1.0,
                )
                .losses[0]
            })
            .sum::<f32>()
            / 3.0;
        assert!((r.loss - want).abs() < 1e-5, "{} vs {want}", r.loss);
    }

    #[test]
    fn a_step_with_reconstruction_adds_each_view_s_term_and_its_gradient() {
        assert_eq!(Instance::default().target, Target::Hog);
        for target in [Target::Hog, Target::Thumbnail] {
            a_step_adds_the_term_of(target);
        }
    }

    fn a_step_adds_the_term_of(target: Target) {
        let plain = Instance {
            dim: 3,
            reconstruct: 0.0,
            target,
            ..Instance::default()
        };
        let both = Instance {
            reconstruct: 2.5,
            ..plain.clone()
        };
        let (per, out) = (target.source_len(), target.outputs());
        assert_eq!((plain.width(), both.width()), (3, 3 + out));
        let bank = random_bank(4, 3, 1);
        let sources: Vec<u8> = (0..3 * per).map(|i| (i * 37 % 251) as u8).collect();
        let z = crate::train::engine::random(3 * both.width(), 2);
        let own = [2, 0, 2];
        let s = both.score_step(&z, &own, (&bank, &sources), None, 3.0);
        let e = both.embedding(&z);
        let alone = score_centred(&e, &own, &bank, None, both.temperature, 3.0);
        let r: Vec<f32> = z
            .chunks(both.width())
            .flat_map(|r| r[3..].to_vec())
            .collect();
        let rec = target::reconstruct(&r, &sources, target, 2.5, 3.0);
        assert_eq!(
            s.losses, alone.losses,
            "the instance loss, as chance is judged"
        );
        for v in 0..3 {
            assert!(rec.losses[v] > 0.1, "the term is not negligible here");
            let row = &s.dz[v * both.width()..(v + 1) * both.width()];
            assert_eq!(&row[..3], &alone.dz[v * 3..v * 3 + 3]);
            assert_eq!(&row[3..], &rec.dr[v * out..(v + 1) * out]);
        }
        assert_eq!(s.v, alone.v, "the bank moves towards the embedding only");
        let no = plain.score_step(&e, &own, (&bank, &[]), None, 3.0);
        assert_eq!(no.losses, alone.losses);
        let mut bad = z.clone();
        bad[both.width() + 5] = f32::INFINITY;
        let s = both.score_step(&bad, &own, (&bank, &sources), None, 3.0);
        assert!(
            s.losses[1].is_nan() && s.losses[0].is_finite(),
            "{:?}",
            s.losses
        );
    }

    #[test]
    fn negatives_are_drawn_per_step_only_when_the_bank_is_larger() {
        let i = Instance {
            negatives: 4,
            ..Instance::default()
        };
        assert_eq!(i.draw(5, 1), None);
        assert_eq!(i.scored(5, 2), 5);
        assert_eq!(i.scored(1000, 64), 1 + 62 + 4);
        let a = i.draw(1000, 1).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(Some(a.clone()), i.draw(1000, 1));
        assert_ne!(Some(a), i.draw(1000, 2));
        assert!(Instance {
            temperature: 0.0,
            ..i.clone()
        }
        .validate()
        .is_err());
    }
}
