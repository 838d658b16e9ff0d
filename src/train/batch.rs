//! Training batches on the host: images read from the pack and cut into 8-bit views (the
//! geometric augmentation: the paper's crops and flips, or exemplar training's warps, with
//! their colour changes), which the engine turns into normalised network input. Every view is
//! seeded by (seed, epoch, sample), so a resumed run draws what an uninterrupted one would.

use rand::SeedableRng;
use rayon::prelude::*;

use crate::error::Result;
use crate::train::augment::{self, ColourStats, Crop};
use crate::train::dataset::Split;
use crate::train::engine::{Engine, Normalise, Shape};
use crate::train::exemplar::{self, Exemplar, View};

/// One batch on the host: crops [n, 3, crop, crop] u8, colour shifts and labels.
pub struct Batch {
    pub(crate) pixels: Vec<u8>,
    shifts: Vec<[f32; 3]>,
    pub(crate) labels: Vec<u32>,
    crop: usize,
}

impl Batch {
    /// Reads images `idx` of `split` from its pack and cuts `views` out of them.
    pub fn new(split: &Split, idx: &[usize], views: &[Crop], crop: usize) -> Result<Batch> {
        let images = split.read_images(idx)?;
        Ok(Batch::cut(&images, split, idx, views, crop))
    }

    /// Reads images `idx` of `split` and renders exemplar `views` of them.
    pub fn warped(split: &Split, idx: &[usize], views: &[View], crop: usize) -> Result<Batch> {
        let images = split.read_images(idx)?;
        Ok(Batch::rendered(&images, split, idx, views, crop))
    }

    /// Renders exemplar `views` of `images` (images `idx` of `split`).
    pub(crate) fn rendered(
        images: &[u8],
        split: &Split,
        idx: &[usize],
        views: &[View],
        crop: usize,
    ) -> Batch {
        let shifts = vec![[0.0; 3]; idx.len()];
        Batch::assemble(images, split, idx, views, crop, shifts, exemplar::render)
    }

    /// Cuts `views` out of `images` (images `idx` of `split`, as `Split::read_images` gives).
    pub(crate) fn cut(
        images: &[u8],
        split: &Split,
        idx: &[usize],
        views: &[Crop],
        crop: usize,
    ) -> Batch {
        let shifts = views.iter().map(|v| v.shift).collect();
        Batch::assemble(images, split, idx, views, crop, shifts, augment::write_crop)
    }

    /// One view of each image written by `write(image, side, crop, view, out)`, in parallel.
    fn assemble<V: Sync>(
        images: &[u8],
        split: &Split,
        idx: &[usize],
        views: &[V],
        crop: usize,
        shifts: Vec<[f32; 3]>,
        write: impl Fn(&[u8], usize, usize, &V, &mut [u8]) + Sync,
    ) -> Batch {
        let per = 3 * crop * crop;
        let mut pixels = vec![0u8; idx.len() * per];
        pixels
            .par_chunks_mut(per)
            .zip(images.par_chunks(split.image_bytes()).zip(views))
            .for_each(|(out, (image, v))| write(image, split.side, crop, v, out));
        Batch {
            pixels,
            shifts,
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
    pub exemplar: Option<Exemplar>,
}

/// A batch of the epoch whose first sample is at `position` in the epoch's order: random
/// views seeded by (seed, epoch, sample), or for exemplar training, which meets a sample
/// several times an epoch, by (seed, epoch, position).
pub(crate) fn training_batch(
    p: &Plan,
    train: &Split,
    idx: &[usize],
    position: usize,
) -> Result<Batch> {
    let rng =
        |i: usize| rand::rngs::StdRng::seed_from_u64(mix(p.seed, p.epoch as u64 + 1, i as u64));
    match &p.exemplar {
        Some(ex) => {
            let views: Vec<View> = (position..position + idx.len())
                .map(|at| exemplar::random_view(&mut rng(at), train.side, p.crop, ex))
                .collect();
            Batch::warped(train, idx, &views, p.crop)
        }
        None => {
            let views: Vec<Crop> = idx
                .iter()
                .map(|&i| {
                    augment::random_crop(&mut rng(i), train.side, p.crop, &p.stats, p.pca_std)
                })
                .collect();
            Batch::new(train, idx, &views, p.crop)
        }
    }
}
