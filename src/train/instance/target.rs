//! Reconstruction beside instance discrimination (`--reconstruct W`): the head grows by
//! outputs that predict, from whichever view the step shows, a picture of the whole source
//! image standardised by its own mean and deviation (a denoising autoencoder towards the
//! unaugmented image): its 16×16 thumbnail, or its histogram of oriented gradients (`hog`,
//! `--reconstruct-target hog`). Instance discrimination learns what tells one image from every
//! other; this term makes fc7 keep each image's layout, so images that look alike stay near in
//! fc7. Each batch reduces its views' source images (a thumbnail, or a grey picture for the
//! histogram) from the pack images it has just read (`Batch`), so a run holds none beyond its
//! batches and reads nothing more at its start, however large the folder; the loss is host
//! code shared by every engine, like `loss`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::hog;
use crate::model::standardise::{Sums, MIN_STD};

/// What the reconstruction term predicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The 16×16 RGB thumbnail ([3, SIDE, SIDE]).
    #[default]
    Thumbnail,
    /// The histogram of oriented gradients of a 32×32 grey thumbnail (`hog`).
    Hog,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "thumbnail" => Ok(Target::Thumbnail),
            "hog" => Ok(Target::Hog),
            _ => Err(format!("{s:?} is not a target: thumbnail or hog")),
        }
    }
}

impl Target {
    /// Bytes each view carries for its target: its source image reduced.
    pub fn source_len(self) -> usize {
        match self {
            Target::Thumbnail => LEN,
            Target::Hog => hog::GREY * hog::GREY,
        }
    }

    /// Head outputs that predict it.
    pub fn outputs(self) -> usize {
        match self {
            Target::Thumbnail => LEN,
            Target::Hog => hog::LEN,
        }
    }

    /// The reduced source of each of `images` ([n, side, side, 3], as `Split::read_images`
    /// gives): [n, source_len].
    pub fn sources(self, images: &[u8], side: usize) -> Vec<u8> {
        let per = self.source_len();
        let mut out = vec![0u8; images.len() / (3 * side * side) * per];
        out.par_chunks_mut(per)
            .zip(images.par_chunks(3 * side * side))
            .for_each(|(t, im)| match self {
                Target::Thumbnail => t.copy_from_slice(&thumbnail(im, side)),
                Target::Hog => t.copy_from_slice(&grey(im, side)),
            });
        out
    }

    /// The values the head is asked for, from a view's reduced `source`: [len].
    fn values(self, source: &[u8]) -> Vec<f32> {
        match self {
            Target::Thumbnail => standardised(source),
            Target::Hog => {
                let mut h = hog::histogram(source);
                standardise(&mut h);
                h
            }
        }
    }
}

/// Side of a thumbnail.
pub const SIDE: usize = 16;
/// Values of a thumbnail, and head outputs that predict it: [3, SIDE, SIDE].
pub const LEN: usize = 3 * SIDE * SIDE;

/// The sums of the pixels of `image` ([side, side, 3], HWC RGB) in each cell of a grid×grid
/// division (cell y covers rows y·side/grid .. (y+1)·side/grid, at least one), cells row by
/// row, with each cell's number of pixels.
fn cell_sums(image: &[u8], side: usize, grid: usize) -> Vec<([u32; 3], u32)> {
    let span = |c: usize| {
        let a = c * side / grid;
        (a, ((c + 1) * side / grid).max(a + 1))
    };
    (0..grid * grid)
        .map(|cell| {
            let ((y0, y1), (x0, x1)) = (span(cell / grid), span(cell % grid));
            let mut sums = [0u32; 3];
            for row in image.chunks(3 * side).take(y1).skip(y0) {
                for px in row[3 * x0..3 * x1].chunks(3) {
                    sums.iter_mut().zip(px).for_each(|(s, &v)| *s += v as u32);
                }
            }
            (sums, ((y1 - y0) * (x1 - x0)) as u32)
        })
        .collect()
}

/// The rounded means of each thumbnail cell's pixels of `image` ([side, side, 3], HWC RGB;
/// `cell_sums`' cells): [3, SIDE, SIDE].
pub fn thumbnail(image: &[u8], side: usize) -> Vec<u8> {
    let mut out = vec![0u8; LEN];
    for (cell, (sums, n)) in cell_sums(image, side, SIDE).into_iter().enumerate() {
        for (c, s) in sums.iter().enumerate() {
            out[c * SIDE * SIDE + cell] = ((s + n / 2) / n) as u8;
        }
    }
    out
}

/// The rounded luminance (ITU-R BT.601 weights ×256: 77, 150, 29) of each cell's pixels of
/// `image` ([side, side, 3], HWC RGB) on `hog`'s GREY×GREY grid (`cell_sums`' cells):
/// [GREY, GREY].
pub fn grey(image: &[u8], side: usize) -> Vec<u8> {
    cell_sums(image, side, hog::GREY)
        .into_iter()
        .map(|([r, g, b], n)| {
            let n = 256 * n;
            ((77 * r + 150 * g + 29 * b + n / 2) / n) as u8
        })
        .collect()
}

/// A thumbnail as the head's target: (v/255 − mean) / max(std, MIN_STD) over all its values.
/// The statistics are `Sums`', as the input's per-image standardisation takes them.
fn standardised(thumb: &[u8]) -> Vec<f32> {
    let (mean, std) = Sums::planar(thumb).mean_std([0.0; 3]);
    thumb
        .iter()
        .map(|&x| (x as f32 / 255.0 - mean) / std)
        .collect()
}

/// `v` ← (v − mean) / max(std, MIN_STD) over its values.
fn standardise(v: &mut [f32]) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt().max(MIN_STD);
    v.iter_mut()
        .for_each(|x| *x = ((*x as f64 - mean) / std) as f32);
}

/// The reconstruction term of head outputs `r` ([n, target.outputs()]) of views whose reduced
/// sources are `sources` ([n, target.source_len()], row for row): per view `weight` × the mean
/// squared error over its outputs, and the gradient of the views' sum divided by `per`.
pub fn reconstruct(
    r: &[f32],
    sources: &[u8],
    target: Target,
    weight: f32,
    per: f32,
) -> Reconstructed {
    let len = target.outputs();
    let each: Vec<(f32, Vec<f32>)> = r
        .par_chunks(len)
        .zip(sources.par_chunks(target.source_len()))
        .map(|(out, source)| {
            let t = target.values(source);
            let err: Vec<f32> = out.iter().zip(&t).map(|(y, t)| y - t).collect();
            let loss = weight * err.iter().map(|e| e * e).sum::<f32>() / len as f32;
            let k = 2.0 * weight / len as f32 / per;
            (loss, err.iter().map(|e| k * e).collect())
        })
        .collect();
    Reconstructed {
        losses: each.iter().map(|e| e.0).collect(),
        dr: each.into_iter().flat_map(|e| e.1).collect(),
    }
}

/// One step's reconstruction term.
pub struct Reconstructed {
    /// Per view: `weight` × its mean squared error.
    pub losses: Vec<f32>,
    /// dL/dr ([n, target.outputs()]) of the views' sum divided by `per`.
    pub dr: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thumbnail_is_the_mean_of_each_cell_s_pixels() {
        // A 32×32 image, 2×2 pixels a cell: red 4·(cell x) + (cell y), blue 200.
        let side = 32;
        let mut im = vec![0u8; side * side * 3];
        for y in 0..side {
            for x in 0..side {
                im[3 * (y * side + x)] = (4 * (x / 2) + y / 2) as u8;
                im[3 * (y * side + x) + 2] = 200;
            }
        }
        im[1] = 9; // green of pixel (0, 0): cell (0, 0)'s mean 9/4 rounds to 2
        let t = thumbnail(&im, side);
        assert_eq!(t[3 * SIDE + 5], (4 * 5 + 3) as u8, "red of cell (3, 5)");
        assert_eq!(t[SIDE * SIDE], 2);
        assert_eq!(t[SIDE * SIDE + 1], 0);
        assert!(t[2 * SIDE * SIDE..].iter().all(|&b| b == 200));
        // 72 px: cells of 4 or 5 rows, covering every row once.
        let side = 72;
        let spans: usize = (0..SIDE)
            .map(|c| (c + 1) * side / SIDE - c * side / SIDE)
            .sum();
        assert_eq!(spans, side);
        assert_eq!(thumbnail(&vec![77; side * side * 3], side), vec![77; LEN]);
        // A batch's images, row for row.
        let two = [im, vec![77; 32 * 32 * 3]].concat();
        assert_eq!(
            Target::Thumbnail.sources(&two, 32),
            [t, vec![77; LEN]].concat()
        );
    }

    #[test]
    fn grey_is_the_luminance_of_each_cell() {
        // 64 px: 2×2 pixels a cell. Pure red, green and blue rows of cells.
        let side = 64;
        let mut im = vec![0u8; side * side * 3];
        for y in 0..side {
            for x in 0..side {
                im[3 * (y * side + x) + (y / 2) % 3] = 255;
            }
        }
        let g = grey(&im, side);
        let column: Vec<u8> = g.iter().step_by(hog::GREY).take(3).copied().collect();
        assert_eq!(column, [77, 149, 29], "rounded 255·w/256");
        assert_eq!(g[hog::GREY + 7], 149);
        // 72 px: cells of 2 or 3 rows, covering every row once.
        assert_eq!(
            grey(&vec![200; 72 * 72 * 3], 72),
            vec![200; hog::GREY * hog::GREY]
        );
    }

    #[test]
    fn the_term_by_hand_and_its_gradient() {
        // Image 1's thumbnail: half 0, half 255 → standardised −1 and +1.
        let mut thumbs = vec![0u8; 2 * LEN];
        thumbs[LEN + LEN / 2..].iter_mut().for_each(|b| *b = 255);
        let t = standardised(&thumbs[LEN..]);
        assert!(t[..LEN / 2].iter().all(|&v| (v + 1.0).abs() < 1e-6));
        // A flat thumbnail is 0 everywhere (its deviation floored, not divided by 0).
        assert!(standardised(&thumbs[..LEN]).iter().all(|&v| v == 0.0));
        // View 0 shows image 1, view 1 image 0. Outputs 0: error 1 at every value; weight 3 →
        // loss 3. Outputs 2 against the flat image: 3·4.
        let r = [vec![0.0f32; LEN], vec![2.0; LEN]].concat();
        let swapped = [&thumbs[LEN..], &thumbs[..LEN]].concat();
        let s = reconstruct(&r, &swapped, Target::Thumbnail, 3.0, 2.0);
        assert!((s.losses[0] - 3.0).abs() < 1e-5 && (s.losses[1] - 12.0).abs() < 1e-4);
        // d/dr of (3/LEN)·Σ(r − t)², halved: 3·(r − t)/LEN.
        assert!((s.dr[0] - 3.0 / LEN as f32).abs() < 1e-7);
        assert!((s.dr[LEN] - 3.0 * 2.0 / LEN as f32).abs() < 1e-7);
        // Finite differences on random outputs.
        let r = crate::train::engine::random(2 * LEN, 5);
        let ones = [&thumbs[LEN..], &thumbs[LEN..]].concat();
        agrees_with_finite_differences(
            &r,
            &ones,
            Target::Thumbnail,
            0.7,
            &[0, 5, LEN - 1, LEN + 300],
        );
    }

    /// The term of two views' outputs `r` (`per` 2) and its gradient at outputs `at`, checked
    /// against central differences of the views' summed loss over 2.
    fn agrees_with_finite_differences(
        r: &[f32],
        sources: &[u8],
        target: Target,
        weight: f32,
        at: &[usize],
    ) -> Reconstructed {
        let s = reconstruct(r, sources, target, weight, 2.0);
        let total = |r: &[f32]| -> f64 {
            let l = reconstruct(r, sources, target, weight, 2.0).losses;
            l.iter().map(|&x| x as f64).sum::<f64>() / 2.0
        };
        for &i in at {
            let (mut plus, mut minus) = (r.to_vec(), r.to_vec());
            plus[i] += 1e-2;
            minus[i] -= 1e-2;
            let num = (total(&plus) - total(&minus)) / 2e-2;
            assert!(
                (num - s.dr[i] as f64).abs() < 1e-4,
                "r[{i}]: {num} vs {}",
                s.dr[i]
            );
        }
        s
    }

    #[test]
    fn the_hog_target_is_each_source_s_histogram_standardised() {
        assert_eq!("hog".parse(), Ok(Target::Hog));
        assert!("pixels"
            .parse::<Target>()
            .unwrap_err()
            .contains("thumbnail or hog"));
        // Two 40-px images: a bright square on black, and flat grey.
        let side = 40;
        let mut a = vec![0u8; side * side * 3];
        for y in 10..30 {
            a[3 * (y * side + 10)..3 * (y * side + 30)].fill(250);
        }
        let both = [a.clone(), vec![128; side * side * 3]].concat();
        let t = Target::Hog;
        let src = t.sources(&both, side);
        assert_eq!(src.len(), 2 * t.source_len());
        assert_eq!(&src[..t.source_len()], &grey(&a, side)[..]);
        let v = t.values(&src[..t.source_len()]);
        let h = hog::histogram(&src[..t.source_len()]);
        let mean = h.iter().sum::<f32>() / h.len() as f32;
        let std = (h.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / h.len() as f32).sqrt();
        assert!(v
            .iter()
            .zip(&h)
            .all(|(v, h)| (v - (h - mean) / std).abs() < 1e-4));
        assert!(t.values(&src[t.source_len()..]).iter().all(|&x| x == 0.0));
        // The term on it, against finite differences: outputs of the hog's width.
        let r = crate::train::engine::random(2 * t.outputs(), 9);
        let s = agrees_with_finite_differences(&r, &src, t, 0.5, &[0, 100, hog::LEN + 7]);
        assert_eq!(s.dr.len(), 2 * hog::LEN);
        // The flat image's loss: 0.5 × the mean of its outputs' squares.
        let flat = 0.5 * r[hog::LEN..].iter().map(|x| x * x).sum::<f32>() / hog::LEN as f32;
        assert!((s.losses[1] - flat).abs() < 1e-5);
    }
}
