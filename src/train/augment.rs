//! The paper's data augmentation and input normalisation, from the 8-bit training cache:
//! random crops and horizontal flips (§4.1), the PCA colour shift (§4.1: add
//! [p1 p2 p3][α1λ1 α2λ2 α3λ3]ᵀ with α ~ N(0, σ)), and the test-time centre and 10-crop views.

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::model::Standardise;
use crate::train::dataset::Split;
use crate::train::engine::Normalise;

/// Per-channel mean and std and the RGB covariance's eigen-decomposition, in [0, 1] units,
/// and whether the input is standardised by these means or by each image's own.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColourStats {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub eigenvalues: [f32; 3],
    /// eigenvectors[k] is the k-th eigenvector.
    pub eigenvectors: [[f32; 3]; 3],
    /// The recipe's `--standardise` (absent from checkpoints written before it: channels).
    #[serde(default, skip_serializing_if = "Standardise::is_channels")]
    pub standardise: Standardise,
}

impl ColourStats {
    /// What the engines standardise a view by.
    pub fn normalise(&self) -> Normalise {
        Normalise {
            mean: self.mean,
            std: self.std,
            standardise: self.standardise,
        }
    }
}

/// Mean, std and covariance of RGB over every pixel of the split, from the pack's exact
/// integer moments (so the same for any order of the images).
pub fn colour_stats(split: &Split, standardise: Standardise) -> ColourStats {
    let (m, pixels) = split.moments();
    let n = pixels.max(1) as f64;
    let s = [m[0], m[1], m[2]].map(|v| v as f64 / 255.0);
    let sq = |v: u64| v as f64 / (255.0 * 255.0);
    let ss = [
        [sq(m[3]), sq(m[4]), sq(m[5])],
        [sq(m[4]), sq(m[6]), sq(m[7])],
        [sq(m[5]), sq(m[7]), sq(m[8])],
    ];
    let mean = s.map(|x| x / n);
    let mut cov = [[0f64; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            cov[i][j] = ss[i][j] / n - mean[i] * mean[j];
        }
    }
    let (eigenvalues, eigenvectors) = jacobi_eigen(cov);
    ColourStats {
        mean: mean.map(|m| m as f32),
        std: [0, 1, 2].map(|i| cov[i][i].max(1e-6).sqrt() as f32),
        eigenvalues: eigenvalues.map(|l| l.max(0.0) as f32),
        eigenvectors: eigenvectors.map(|v| v.map(|x| x as f32)),
        standardise,
    }
}

/// Eigenvalues and eigenvectors of a symmetric 3×3 matrix (cyclic Jacobi rotations).
pub fn jacobi_eigen(mut a: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _ in 0..50 {
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q].abs() < 1e-15 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
            for row in a.iter_mut() {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (rp, rq) = (a[p], a[q]);
            for k in 0..3 {
                a[p][k] = c * rp[k] - s * rq[k];
                a[q][k] = s * rp[k] + c * rq[k];
            }
            for row in v.iter_mut() {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    let vectors = [0, 1, 2].map(|k| [v[0][k], v[1][k], v[2][k]]);
    ([a[0][0], a[1][1], a[2][2]], vectors)
}

/// Which part of a cached image becomes one network input.
#[derive(Clone, Copy, Debug)]
pub struct Crop {
    pub x: usize,
    pub y: usize,
    pub flip: bool,
    /// RGB shift in [0, 1] units (the PCA colour augmentation), zero at test time.
    pub shift: [f32; 3],
}

/// A random training view: crop position, flip, colour shift with α ~ N(0, `pca_std`).
pub fn random_crop(
    rng: &mut impl Rng,
    side: usize,
    crop: usize,
    stats: &ColourStats,
    pca_std: f32,
) -> Crop {
    let span = side - crop;
    let (x, y) = (rng.random_range(0..=span), rng.random_range(0..=span));
    let flip = rng.random::<bool>();
    let mut shift = [0.0; 3];
    if pca_std > 0.0 {
        let normal = Normal::new(0.0, pca_std).expect("finite");
        for k in 0..3 {
            let a = normal.sample(rng) * stats.eigenvalues[k];
            for (c, s) in shift.iter_mut().enumerate() {
                *s += a * stats.eigenvectors[k][c];
            }
        }
    }
    Crop { x, y, flip, shift }
}

/// The paper's 10 test views: four corners and the centre, each also flipped.
pub fn ten_crops(side: usize, crop: usize) -> Vec<Crop> {
    let (e, m) = (side - crop, (side - crop) / 2);
    let mut out = Vec::new();
    for flip in [false, true] {
        for (x, y) in [(0, 0), (e, 0), (0, e), (e, e), (m, m)] {
            out.push(Crop {
                x,
                y,
                flip,
                shift: [0.0; 3],
            });
        }
    }
    out
}

pub fn centre_crop(side: usize, crop: usize) -> Crop {
    let m = (side - crop) / 2;
    Crop {
        x: m,
        y: m,
        flip: false,
        shift: [0.0; 3],
    }
}

/// Copies the view of `image` ([side, side, 3] u8) into `out` ([3, crop, crop] u8): the
/// geometric half of the augmentation; the engine's `input` adds the colour shift and
/// normalises.
pub fn write_crop(image: &[u8], side: usize, crop: usize, view: &Crop, out: &mut [u8]) {
    let plane = crop * crop;
    for y in 0..crop {
        let row = &image[(view.y + y) * side * 3..][..side * 3];
        for x in 0..crop {
            let sx = view.x + if view.flip { crop - 1 - x } else { x };
            for c in 0..3 {
                out[c * plane + y * crop + x] = row[sx * 3 + c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_a_known_decomposition() {
        // Eigenvalues 3, 1, 1 with (1,1,1)/√3 the top eigenvector.
        let (vals, vecs) = jacobi_eigen([
            [5.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0],
            [2.0 / 3.0, 5.0 / 3.0, 2.0 / 3.0],
            [2.0 / 3.0, 2.0 / 3.0, 5.0 / 3.0],
        ]);
        let top = (0..3).max_by(|&a, &b| vals[a].total_cmp(&vals[b])).unwrap();
        assert!((vals[top] - 3.0).abs() < 1e-9);
        let mut sorted = vals;
        sorted.sort_by(f64::total_cmp);
        assert!((sorted[0] - 1.0).abs() < 1e-9 && (sorted[1] - 1.0).abs() < 1e-9);
        let v = vecs[top];
        assert!(
            v.iter().all(|x| (x.abs() - 1.0 / 3f64.sqrt()).abs() < 1e-9),
            "{v:?}"
        );
    }

    #[test]
    fn flipped_crop_mirrors_and_ten_crops_cover_the_corners() {
        let side = 4;
        let image: Vec<u8> = (0..side * side)
            .flat_map(|i| [i as u8 * 10, 0, 0])
            .collect();
        let mut out = vec![0u8; 3 * 4];
        let view = Crop {
            x: 2,
            y: 0,
            flip: true,
            shift: [0.0; 3],
        };
        write_crop(&image, side, 2, &view, &mut out);
        assert_eq!(out[..4], [30, 20, 70, 60]);
        assert!(out[4..].iter().all(|&v| v == 0));
        let crops = ten_crops(side, 2);
        assert_eq!(crops.len(), 10);
        assert_eq!((crops[3].x, crops[3].y, crops[9].flip), (2, 2, true));
    }
}
