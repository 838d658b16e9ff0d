//! The CPU engine's other layer kernels on host slices (ReLU, LRN, overlapping max-pool,
//! softmax cross-entropy), parallel with rayon; convolution is in `conv`, the fully connected
//! layers and SGD in `linear`.

use rayon::prelude::*;

pub use super::conv::{conv_backward, conv_forward};
pub use super::linear::{linear_backward, linear_backward_sgd, linear_forward, sgd_step};
use crate::model::{Lrn, POOL_KERNEL, POOL_STRIDE};
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

/// s^−β, with β = 0.75 (the paper's) as 1/(√s·√√s): vectorised square roots instead of a
/// libm `powf` per element (a tenth of the paper network's step went to LRN's `powf`).
#[inline(always)]
fn pow_neg_beta(s: f32, beta: f32) -> f32 {
    if beta == 0.75 {
        let r = s.sqrt();
        1.0 / (r * r.sqrt())
    } else {
        s.powf(-beta)
    }
}

/// Σ over the channel window of `f(channel plane)[p]` into `out`, for every position p of one
/// image's planes (`planes` [c, hw]); positions innermost, so the adds vectorise.
fn window_sums(planes: &[f32], hw: usize, c: usize, half: usize, sq: bool, out: &mut [f32]) {
    let channels = planes.len() / hw;
    let (lo, hi) = (c.saturating_sub(half), (c + half).min(channels - 1));
    out.fill(0.0);
    for j in lo..=hi {
        let src = &planes[j * hw..(j + 1) * hw];
        if sq {
            out.iter_mut().zip(src).for_each(|(o, &v)| *o += v * v);
        } else {
            out.iter_mut().zip(src).for_each(|(o, &v)| *o += v);
        }
    }
}

pub fn lrn_forward(x: &[f32], xs: Shape, l: &Lrn) -> (Vec<f32>, Vec<f32>) {
    let (hw, half, per) = (xs.h * xs.w, l.size / 2, xs.per_sample());
    let mut scale = vec![0.0; x.len()];
    let mut y = vec![0.0; x.len()];
    scale
        .par_chunks_mut(per)
        .zip(y.par_chunks_mut(per))
        .enumerate()
        .for_each(|(i, (s, yi))| {
            let xi = &x[i * per..(i + 1) * per];
            for c in 0..xs.c {
                let sc = &mut s[c * hw..(c + 1) * hw];
                window_sums(xi, hw, c, half, true, sc);
                let (xc, yc) = (&xi[c * hw..(c + 1) * hw], &mut yi[c * hw..(c + 1) * hw]);
                for ((s, y), &v) in sc.iter_mut().zip(yc).zip(xc) {
                    *s = l.k + l.alpha * *s;
                    *y = v * pow_neg_beta(*s, l.beta);
                }
            }
        });
    (y, scale)
}

pub fn lrn_backward(
    x: &[f32],
    y: &[f32],
    scale: &[f32],
    xs: Shape,
    l: &Lrn,
    dy: &[f32],
) -> Vec<f32> {
    let (hw, half, per) = (xs.h * xs.w, l.size / 2, xs.per_sample());
    let k = 2.0 * l.alpha * l.beta;
    // t_j = dy_j · y_j / s_j; dx_i = dy_i · s_i^−β − 2αβ x_i Σ_{j ∈ window(i)} t_j
    let mut dx = vec![0.0; x.len()];
    dx.par_chunks_mut(per).enumerate().for_each(|(i, dxi)| {
        let o = i * per;
        let t: Vec<f32> = (o..o + per).map(|at| dy[at] * y[at] / scale[at]).collect();
        let mut sum = vec![0.0; hw];
        for c in 0..xs.c {
            window_sums(&t, hw, c, half, false, &mut sum);
            let at = o + c * hw;
            let (d, s, xc) = (&dy[at..at + hw], &scale[at..at + hw], &x[at..at + hw]);
            for ((((out, &d), &s), &v), &sum) in dxi[c * hw..(c + 1) * hw]
                .iter_mut()
                .zip(d)
                .zip(s)
                .zip(xc)
                .zip(&sum)
            {
                *out = d * pow_neg_beta(s, l.beta) - k * v * sum;
            }
        }
    });
    dx
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
    fn lrn_has_the_right_gradient_and_hand_value() {
        let l = Lrn {
            size: 5,
            alpha: 0.1,
            beta: 0.75,
            k: 2.0,
        };
        let xs = Shape::new(2, 7, 3, 2);
        let x: Vec<f32> = rand_vec(xs.len(), 5).iter().map(|v| v * 3.0).collect();
        let (y, s) = lrn_forward(&x, xs, &l);
        let r = rand_vec(y.len(), 6);
        let dx = lrn_backward(&x, &y, &s, xs, &l, &r);
        check("lrn dx", &x, &dx, |x| dot(&lrn_forward(x, xs, &l).0, &r));
        // One channel of value 2: y = 2 / (2 + 0.1·4)^0.75.
        let (y1, _) = lrn_forward(&[2.0], Shape::new(1, 1, 1, 1), &l);
        assert!((y1[0] - 2.0 / 2.4f32.powf(0.75)).abs() < 1e-6);
    }

    #[test]
    fn lrn_sums_each_channels_window_by_hand_and_any_beta() {
        // Channels 1, 2, 3 at one position, window 3: s = 2 + 0.1·(1+4), (1+4+9), (4+9).
        for beta in [0.75f32, 0.5] {
            let l = Lrn {
                size: 3,
                alpha: 0.1,
                beta,
                k: 2.0,
            };
            let (y, s) = lrn_forward(&[1.0, 2.0, 3.0], Shape::new(1, 3, 1, 1), &l);
            let want_s = [2.5f32, 3.4, 3.3];
            for c in 0..3 {
                assert!((s[c] - want_s[c]).abs() < 1e-6, "s[{c}] = {}", s[c]);
                let want = (c + 1) as f32 / want_s[c].powf(beta);
                assert!(
                    (y[c] - want).abs() < 1e-6 * want,
                    "beta {beta}: y[{c}] = {}",
                    y[c]
                );
            }
        }
        // The square-root form of s^−0.75 against libm's powf over LRN's range of s.
        for i in 0..10_000 {
            let s = 1.0 + i as f32 * 0.37;
            let (fast, exact) = (pow_neg_beta(s, 0.75), s.powf(-0.75));
            assert!((fast - exact).abs() <= 4.0 * f32::EPSILON * exact, "{s}");
        }
    }

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
