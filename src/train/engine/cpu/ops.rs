//! The CPU engine's other layer kernels on host slices (ReLU, dropout, overlapping max-pool,
//! softmax cross-entropy), parallel with rayon; convolution is in `conv`, the fully connected
//! layers and SGD in `linear`, LRN in `lrn`.

use rayon::prelude::*;

pub use super::conv::{conv_backward, conv_forward};
pub use super::linear::{linear_backward, linear_backward_sgd, linear_forward, sgd_step};
pub use super::lrn::{lrn_backward, lrn_forward};
use crate::model::{POOL_KERNEL, POOL_STRIDE};
use crate::train::engine::{dropout_keeps, dropout_threshold, Shape};

pub fn relu_forward(x: &mut [f32]) {
    x.par_chunks_mut(1 << 14)
        .for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)));
}

pub fn relu_backward(y: &[f32], dy: &mut [f32]) {
    dy.par_chunks_mut(1 << 14)
        .zip(y.par_chunks(1 << 14))
        .for_each(|(d, y)| {
            d.iter_mut().zip(y).for_each(|(d, &y)| {
                if y <= 0.0 {
                    *d = 0.0
                }
            })
        });
}

/// Inverted dropout in place (`Engine::dropout`): the mask's hash per element is the step's
/// cost, so the loop is compiled for AVX-512 (whose 64-bit multiplies vectorise it) and AVX2
/// and picked at run time; integer hashing and one product give the same bits on every path.
pub fn dropout(h: &mut [f32], p: f32, seed: u64) {
    let (scale, threshold) = (1.0 / (1.0 - p), dropout_threshold(p));
    h.par_chunks_mut(1 << 14)
        .enumerate()
        .for_each(|(c, chunk)| {
            let first = (c << 14) as u64;
            #[cfg(target_arch = "x86_64")]
            {
                if crate::util::isa::avx512dq() {
                    // SAFETY: the CPU has AVX-512F and DQ, checked just above.
                    return unsafe { drop_avx512(chunk, first, seed, threshold, scale) };
                }
                if crate::util::isa::avx2() {
                    // SAFETY: the CPU has AVX2, checked just above.
                    return unsafe { drop_avx2(chunk, first, seed, threshold, scale) };
                }
            }
            drop_any(chunk, first, seed, threshold, scale)
        });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn drop_avx512(h: &mut [f32], first: u64, seed: u64, threshold: u32, scale: f32) {
    drop_any(h, first, seed, threshold, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn drop_avx2(h: &mut [f32], first: u64, seed: u64, threshold: u32, scale: f32) {
    drop_any(h, first, seed, threshold, scale)
}

/// Elements `first`.. of the tensor, in `h`.
#[inline(always)]
fn drop_any(h: &mut [f32], first: u64, seed: u64, threshold: u32, scale: f32) {
    for (j, v) in h.iter_mut().enumerate() {
        let keep = dropout_keeps(seed, first + j as u64, threshold);
        *v = if keep { *v * scale } else { 0.0 };
    }
}

pub fn pool_forward(x: &[f32], xs: Shape) -> (Vec<f32>, Shape, Vec<u32>) {
    let (ho, wo) = (crate::model::pool_out(xs.h), crate::model::pool_out(xs.w));
    let ys = Shape::new(xs.n, xs.c, ho, wo);
    let mut y = vec![0.0; ys.len()];
    let mut idx = vec![0u32; ys.len()];
    y.par_chunks_mut(ho * wo)
        .zip(idx.par_chunks_mut(ho * wo))
        .enumerate()
        .for_each(|(plane, (yp, ip))| {
            let base = plane * xs.h * xs.w;
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut best = (f32::NEG_INFINITY, 0);
                    for ky in 0..POOL_KERNEL {
                        for kx in 0..POOL_KERNEL {
                            let at = base + (oy * POOL_STRIDE + ky) * xs.w + ox * POOL_STRIDE + kx;
                            if x[at] > best.0 {
                                best = (x[at], at);
                            }
                        }
                    }
                    yp[oy * wo + ox] = best.0;
                    ip[oy * wo + ox] = best.1 as u32;
                }
            }
        });
    (y, ys, idx)
}

pub fn pool_backward(xs: Shape, idx: &[u32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0; xs.len()];
    let per_in = xs.per_sample();
    let per_out = dy.len() / xs.n.max(1);
    dx.par_chunks_mut(per_in).enumerate().for_each(|(i, dxi)| {
        for (d, &at) in dy[i * per_out..(i + 1) * per_out]
            .iter()
            .zip(&idx[i * per_out..(i + 1) * per_out])
        {
            dxi[at as usize - i * per_in] += d;
        }
    });
    dx
}

/// Softmax cross-entropy of logits [n, classes] (accumulated in f64): per-sample losses [n]
/// and dL/dlogits of the batch mean.
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[u32],
    classes: usize,
) -> (Vec<f32>, Vec<f32>) {
    let n = labels.len();
    let mut losses = vec![0.0; n];
    let mut grad = vec![0.0; logits.len()];
    for (i, &label) in labels.iter().enumerate() {
        let (label, row) = (label as usize, &logits[i * classes..(i + 1) * classes]);
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        losses[i] = (sum.ln() - (row[label] - max) as f64) as f32;
        for (j, g) in grad[i * classes..(i + 1) * classes].iter_mut().enumerate() {
            let p = (((row[j] - max) as f64).exp() / sum) as f32;
            *g = (p - if j == label { 1.0 } else { 0.0 }) / n as f32;
        }
    }
    (losses, grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::cpu::testing::{check, dot, rand_vec};

    #[test]
    fn overlapping_max_pool_routes_gradients_to_the_maxima() {
        let xs = Shape::new(2, 3, 7, 7);
        // Distinct values 0.05 apart (a permutation), so the ±1e-2 finite differences never
        // change which element of a window is the maximum.
        let x: Vec<f32> = (0..xs.len())
            .map(|i| ((i * 37) % xs.len()) as f32 * 0.05)
            .collect();
        let (y, ys, idx) = pool_forward(&x, xs);
        assert_eq!(ys, Shape::new(2, 3, 3, 3));
        let r = rand_vec(y.len(), 8);
        let dx = pool_backward(xs, &idx, &r);
        check("pool dx", &x, &dx, |x| dot(&pool_forward(x, xs).0, &r));
    }

    /// Every compiled path of dropout drops and scales exactly the elements the mask's hash
    /// says, across chunk boundaries (element numbers continue from chunk to chunk).
    #[test]
    fn dropout_paths_follow_the_mask_bit_for_bit() {
        let (p, seed) = (0.4, 77);
        let x = rand_vec(40_000, 21);
        let threshold = dropout_threshold(p);
        let want: Vec<u32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| match dropout_keeps(seed, i as u64, threshold) {
                true => (v * (1.0 / (1.0 - p))).to_bits(),
                false => 0,
            })
            .collect();
        let bits = |h: &[f32]| h.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut h = x.clone();
        dropout(&mut h, p, seed);
        assert_eq!(bits(&h), want);
        type Path = fn(&mut [f32], u64, u64, u32, f32);
        let mut paths: Vec<Path> = vec![drop_any];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512dq") {
                // SAFETY: the CPU has AVX-512F and DQ.
                paths.push(|h, f, s, t, k| unsafe { drop_avx512(h, f, s, t, k) });
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                paths.push(|h, f, s, t, k| unsafe { drop_avx2(h, f, s, t, k) });
            }
        }
        for path in paths {
            let mut h = x[1000..].to_vec();
            path(&mut h, 1000, seed, threshold, 1.0 / (1.0 - p));
            assert_eq!(bits(&h), want[1000..]);
        }
        let dropped = want.iter().filter(|&&b| b == 0).count();
        assert!((14_000..18_000).contains(&dropped), "{dropped}");
    }

    #[test]
    fn softmax_cross_entropy_has_the_right_gradient_and_hand_value() {
        let logits = rand_vec(12, 13);
        let labels = [1, 0, 3];
        let mean = |l: &[f32]| {
            let (losses, _) = softmax_cross_entropy(l, &labels, 4);
            losses.iter().map(|&v| v as f64).sum::<f64>() / 3.0
        };
        let (_, g) = softmax_cross_entropy(&logits, &labels, 4);
        check("ce", &logits, &g, mean);
        // logits [0, ln 3] → p = [0.25, 0.75]; label 1 → loss = −ln 0.75.
        let (loss, g) = softmax_cross_entropy(&[0.0, 3f32.ln()], &[1], 2);
        assert!((loss[0] - (-(0.75f32).ln())).abs() < 1e-6);
        assert!((g[0] - 0.25).abs() < 1e-6 && (g[1] + 0.25).abs() < 1e-6);
    }
}
