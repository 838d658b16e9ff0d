//! Training batches on the host: images read from the pack and cut into 8-bit views (the
//! geometric augmentation: the paper's crops and flips, or exemplar training's warps, with
//! their colour changes), which the engine turns into normalised network input. An engine
//! that cuts crops itself (the GPU) is handed the whole images instead. Every view is
//! seeded by (seed, epoch, sample), so a resumed run draws what an uninterrupted one would.

use rand::SeedableRng;
use rayon::prelude::*;

use crate::error::Result;
use crate::model::{AlexNetConfig, Standardise};
use crate::train::augment::{self, ColourStats, Crop};
use crate::train::dataset::Split;
use crate::train::engine::{Engine, Shape};
use crate::train::exemplar::{self, Exemplar, View};
use crate::train::instance::Target;
use crate::train::seeds::mix;

/// One batch on the host: its 8-bit pixels with their colour shifts, and labels.
pub struct Batch {
    pixels: Pixels,
    pub(crate) labels: Vec<u32>,
    crop: usize,
    /// With `--reconstruct`: each view's reduced source ([n, Target::source_len]); else empty.
    sources: Vec<u8>,
}

/// A batch's pixels: views already cut, or whole images for an engine that cuts them itself.
enum Pixels {
    /// [n, 3, crop, crop], and each view's colour shift.
    Cut {
        pixels: Vec<u8>,
        shifts: Vec<[f32; 3]>,
    },
    /// [n, side, side, 3], the pack's rows, with each image's view (colour shift included).
    Whole {
        images: Vec<u8>,
        side: usize,
        views: Vec<Crop>,
    },
}

impl Batch {
    /// Reads images `idx` of `split` from its pack and cuts `views` out of them, on the host
    /// or, with `on_engine`, later by the engine (`Engine::input_views`).
    pub fn new(
        split: &Split,
        idx: &[usize],
        views: &[Crop],
        crop: usize,
        on_engine: bool,
    ) -> Result<Batch> {
        let images = split.read_images(idx)?;
        if !on_engine {
            return Ok(Batch::cut(&images, split, idx, views, crop));
        }
        Ok(Batch {
            pixels: Pixels::Whole {
                images,
                side: split.side,
                views: views.to_vec(),
            },
            labels: split.labels_of(idx),
            crop,
            sources: Vec::new(),
        })
    }

    /// A batch of views already cut: `pixels` [n, 3, crop, crop], one colour shift and label
    /// per view.
    pub fn from_cut(
        pixels: Vec<u8>,
        shifts: Vec<[f32; 3]>,
        labels: Vec<u32>,
        crop: usize,
    ) -> Batch {
        Batch {
            pixels: Pixels::Cut { pixels, shifts },
            labels,
            crop,
            sources: Vec::new(),
        }
    }

    /// `n` synthetic 8-bit crops for `cfg` with labels, and plain colour statistics: the input
    /// of measured and checked steps (`throughput`, `parallel::check`).
    pub fn synthetic(cfg: &AlexNetConfig, n: usize) -> (Batch, ColourStats) {
        let side = cfg.input;
        let px: Vec<u8> = (0..n * 3 * side * side)
            .map(|i| ((i * 2_654_435_761) >> 7) as u8)
            .collect();
        let labels: Vec<u32> = (0..n as u32).map(|i| i * 7 % cfg.classes as u32).collect();
        let stats = ColourStats {
            mean: [0.5; 3],
            std: [0.25; 3],
            eigenvalues: [0.0; 3],
            eigenvectors: [[0.0; 3]; 3],
            standardise: Standardise::Channels,
        };
        (Batch::from_cut(px, vec![[0.0; 3]; n], labels, side), stats)
    }

    /// Reads images `idx` of `split` and renders exemplar `views` of them, with each view's
    /// source reduced for self-supervised reconstruction's `target`, when there is one.
    pub fn warped(
        split: &Split,
        idx: &[usize],
        views: &[View],
        crop: usize,
        target: Option<Target>,
    ) -> Result<Batch> {
        let images = split.read_images(idx)?;
        let mut b = Batch::rendered(&images, split, idx, views, crop);
        if let Some(t) = target {
            b.sources = t.sources(&images, split.side);
        }
        Ok(b)
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
            pixels: Pixels::Cut { pixels, shifts },
            labels: split.labels_of(idx),
            crop,
            sources: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The reduced sources of views `r` ([r.len(), Target::source_len]; empty without them).
    pub fn sources(&self, r: std::ops::Range<usize>) -> &[u8] {
        let per = self.sources.len() / self.len().max(1);
        self.sources.get(r.start * per..r.end * per).unwrap_or(&[])
    }

    /// The normalised network input on the engine.
    pub fn input<E: Engine>(&self, e: &E, stats: &ColourStats) -> Result<E::Tensor> {
        self.input_range(e, stats, 0..self.len())
    }

    /// The input of samples `r` only (one data-parallel shard), without copying the batch.
    pub fn input_range<E: Engine>(
        &self,
        e: &E,
        stats: &ColourStats,
        r: std::ops::Range<usize>,
    ) -> Result<E::Tensor> {
        let norm = stats.normalise();
        match &self.pixels {
            Pixels::Cut { pixels, shifts } => {
                let per = 3 * self.crop * self.crop;
                let s = Shape::new(r.len(), 3, self.crop, self.crop);
                let pixels = &pixels[r.start * per..r.end * per];
                e.input(pixels, &shifts[r], &norm, s)
            }
            Pixels::Whole {
                images,
                side,
                views,
            } => {
                let per = side * side * 3;
                let images = &images[r.start * per..r.end * per];
                e.input_views(images, *side, &views[r], &norm, self.crop)
            }
        }
    }
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
    /// Whether the engine cuts the views (`Engine::cuts_views`).
    pub on_engine: bool,
    /// What batches carry of their views' sources for `--reconstruct`, if anything.
    pub target: Option<Target>,
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
            Batch::warped(train, idx, &views, p.crop, p.target)
        }
        None => {
            let views: Vec<Crop> = idx
                .iter()
                .map(|&i| {
                    augment::random_crop(&mut rng(i), train.side, p.crop, &p.stats, p.pca_std)
                })
                .collect();
            Batch::new(train, idx, &views, p.crop, p.on_engine)
        }
    }
}

/// A generated dataset (3 classes of 40² images packed at 72) under `dir` and a training plan
/// for 63² crops with colour shifts, for tests that need real batches.
#[cfg(test)]
pub(crate) fn fixture(dir: &std::path::Path) -> (crate::train::dataset::Dataset, Plan) {
    use crate::train::dataset::{load, synthetic::synthetic, Source};
    let data = dir.join("data");
    synthetic(&data, 3, 6, 40, 2).unwrap();
    let source = Source {
        root: &data,
        cache: &dir.join("cache"),
        progress: &|_, _| {},
    };
    let d = load(&source, 72, 0.2, 0).unwrap();
    let plan = Plan {
        seed: 5,
        epoch: 1,
        crop: 63,
        pca_std: 0.1,
        stats: augment::colour_stats(&d.train, Standardise::Channels),
        exemplar: None,
        on_engine: false,
        target: None,
    };
    (d, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::cpu::Cpu;

    /// A batch handed over whole (the GPU's way) gives the engine the same input and labels as
    /// one cut on the host: the same views, flips and colour shifts of the same images.
    #[test]
    fn whole_images_cut_by_the_engine_equal_the_host_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (d, mut plan) = fixture(dir.path());
        let last = d.train.len() - 1;
        let idx = [last, 0, 3, last - 2, 5];
        let host = training_batch(&plan, &d.train, &idx, 0).unwrap();
        plan.on_engine = true;
        let whole = training_batch(&plan, &d.train, &idx, 0).unwrap();
        assert!(matches!(whole.pixels, Pixels::Whole { .. }));
        assert_eq!(whole.labels, host.labels);
        let (a, b) = (
            host.input(&Cpu, &plan.stats),
            whole.input(&Cpu, &plan.stats),
        );
        assert_eq!(a.unwrap(), b.unwrap());
    }

    /// With `--reconstruct`, each view carries its own source image's thumbnail, and a shard's
    /// range takes its views' rows; without it a batch carries none.
    #[test]
    fn views_carry_their_source_thumbnails_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (d, mut plan) = fixture(dir.path());
        plan.exemplar = Some(Exemplar::default());
        let idx = [4, 0, 4, 7];
        assert!(training_batch(&plan, &d.train, &idx, 0)
            .unwrap()
            .sources(0..4)
            .is_empty());
        plan.target = Some(Target::Thumbnail);
        let b = training_batch(&plan, &d.train, &idx, 0).unwrap();
        let each: Vec<Vec<u8>> = idx
            .iter()
            .map(|&i| {
                crate::train::instance::target::thumbnail(
                    &d.train.read_images(&[i]).unwrap(),
                    d.train.side,
                )
            })
            .collect();
        assert_ne!(each[0], each[1], "the images differ");
        assert_eq!(b.sources(0..4), each.concat());
        assert_eq!(b.sources(1..3), [&each[1][..], &each[2][..]].concat());
    }
}
