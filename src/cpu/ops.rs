//! The CPU engine's kernels on host slices: convolution as im2col + GEMM (the `gemm` crate,
//! as candle uses), everything parallel over the batch with rayon. Reductions over the batch (weight gradients) are split
//! into fixed chunks summed in order, so results do not depend on the thread count and a
//! resumed run equals an uninterrupted one.

use rayon::prelude::*;

use crate::engine::Shape;
use crate::model::{Conv, Lrn, POOL_KERNEL, POOL_STRIDE};

/// Images per partial weight gradient; fixed for determinism.
const GRAD_CHUNK: usize = 4;

/// A logical rows × cols matrix over row-major storage, optionally transposed.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    trans: bool,
}

impl<'a> Mat<'a> {
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            trans: false,
        }
    }
    /// The transpose of a row-major `stored_rows` × `stored_cols` matrix.
    fn t(data: &'a [f32], stored_rows: usize, stored_cols: usize) -> Self {
        Mat {
            data,
            rows: stored_cols,
            cols: stored_rows,
            trans: true,
        }
    }
    fn strides(&self) -> (isize, isize) {
        if self.trans {
            (1, self.rows as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

/// c [a.rows × b.cols] = (acc ? c : 0) + a · b.
fn matmul(a: Mat, b: Mat, c: &mut [f32], acc: bool, parallel: bool) {
    assert_eq!(a.cols, b.rows);
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(c.len() >= m * n && a.data.len() >= m * k && b.data.len() >= k * n);
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let par = if parallel {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every index gemm touches by the slices' lengths.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            acc,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Dot products of every row of `a` [n, dim] with every row of `b` [m, dim]: [n, m].
pub fn dot_rows(a: &[f32], b: &[f32], dim: usize) -> Vec<f32> {
    let (n, m) = (a.len() / dim, b.len() / dim);
    let mut out = vec![0.0; n * m];
    matmul(
        Mat::new(a, n, dim),
        Mat::t(b, m, dim),
        &mut out,
        false,
        true,
    );
    out
}

fn out_hw(xs: Shape, c: &Conv) -> (usize, usize) {
    (c.out_size(xs.h), c.out_size(xs.w))
}

/// Unfolds channels [c0, c0+cg) of one image into col [cg·k·k, ho·wo].
fn im2col(x: &[f32], xs: Shape, c: &Conv, c0: usize, cg: usize, col: &mut [f32]) {
    let (ho, wo) = out_hw(xs, c);
    let k = c.kernel;
    for ci in 0..cg {
        let plane = &x[(c0 + ci) * xs.h * xs.w..(c0 + ci + 1) * xs.h * xs.w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ci * k + ky) * k + kx) * ho * wo..][..ho * wo];
                for oy in 0..ho {
                    let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                    let dst = &mut row[oy * wo..(oy + 1) * wo];
                    if iy < 0 || iy >= xs.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * xs.w..(iy as usize + 1) * xs.w];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let ix = (ox * c.stride + kx) as isize - c.pad as isize;
                        *d = if ix < 0 || ix >= xs.w as isize {
                            0.0
                        } else {
                            src[ix as usize]
                        };
                    }
                }
            }
        }
    }
}

/// Folds col back onto channels [c0, c0+cg) of one image's gradient, accumulating.
fn col2im(col: &[f32], xs: Shape, c: &Conv, c0: usize, cg: usize, dx: &mut [f32]) {
    let (ho, wo) = out_hw(xs, c);
    let k = c.kernel;
    for ci in 0..cg {
        let plane = &mut dx[(c0 + ci) * xs.h * xs.w..(c0 + ci + 1) * xs.h * xs.w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &col[((ci * k + ky) * k + kx) * ho * wo..][..ho * wo];
                for oy in 0..ho {
                    let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                    if iy < 0 || iy >= xs.h as isize {
                        continue;
                    }
                    for ox in 0..wo {
                        let ix = (ox * c.stride + kx) as isize - c.pad as isize;
                        if ix >= 0 && ix < xs.w as isize {
                            plane[iy as usize * xs.w + ix as usize] += row[oy * wo + ox];
                        }
                    }
                }
            }
        }
    }
}

pub fn conv_forward(x: &[f32], xs: Shape, w: &[f32], b: &[f32], c: &Conv) -> (Vec<f32>, Shape) {
    let (ho, wo) = out_hw(xs, c);
    let ys = Shape::new(xs.n, c.out, ho, wo);
    let (cg, og, kk) = (
        xs.c / c.groups,
        c.out / c.groups,
        (xs.c / c.groups) * c.kernel * c.kernel,
    );
    let mut y = vec![0.0; ys.len()];
    y.par_chunks_mut(ys.per_sample())
        .enumerate()
        .for_each(|(i, yi)| {
            let xi = &x[i * xs.per_sample()..(i + 1) * xs.per_sample()];
            let mut col = vec![0.0; kk * ho * wo];
            for g in 0..c.groups {
                im2col(xi, xs, c, g * cg, cg, &mut col);
                // [og, kk] · [kk, ho·wo] → [og, ho·wo]
                let yg = &mut yi[g * og * ho * wo..(g + 1) * og * ho * wo];
                matmul(
                    Mat::new(&w[g * og * kk..(g + 1) * og * kk], og, kk),
                    Mat::new(&col, kk, ho * wo),
                    yg,
                    false,
                    false,
                );
            }
            for (o, plane) in yi.chunks_mut(ho * wo).enumerate() {
                plane.iter_mut().for_each(|v| *v += b[o]);
            }
        });
    (y, ys)
}

#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    x: &[f32],
    xs: Shape,
    w: &[f32],
    c: &Conv,
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    need_dx: bool,
) -> Option<Vec<f32>> {
    let (ho, wo) = out_hw(xs, c);
    let (cg, og, kk, p) = (
        xs.c / c.groups,
        c.out / c.groups,
        (xs.c / c.groups) * c.kernel * c.kernel,
        ho * wo,
    );
    let ysz = c.out * p;
    let mut dx = vec![0.0; xs.len()];
    // Each chunk of images: its dx slices and its partial dw, db.
    let partials: Vec<(Vec<f32>, Vec<f64>)> = dx
        .par_chunks_mut(xs.per_sample() * GRAD_CHUNK)
        .enumerate()
        .map(|(ch, dxc)| {
            let mut pdw = vec![0.0f32; dw.len()];
            let mut pdb = vec![0.0f64; c.out];
            let mut col = vec![0.0; kk * p];
            for (j, dxi) in dxc.chunks_mut(xs.per_sample()).enumerate() {
                let i = ch * GRAD_CHUNK + j;
                let xi = &x[i * xs.per_sample()..(i + 1) * xs.per_sample()];
                let dyi = &dy[i * ysz..(i + 1) * ysz];
                for g in 0..c.groups {
                    let dyg = &dyi[g * og * p..(g + 1) * og * p];
                    im2col(xi, xs, c, g * cg, cg, &mut col);
                    // dw_g [og, kk] += dy_g [og, p] · colᵀ [p, kk]
                    matmul(
                        Mat::new(dyg, og, p),
                        Mat::t(&col, kk, p),
                        &mut pdw[g * og * kk..(g + 1) * og * kk],
                        true,
                        false,
                    );
                    if !need_dx {
                        continue;
                    }
                    // dcol [kk, p] = w_gᵀ [kk, og] · dy_g [og, p]
                    matmul(
                        Mat::t(&w[g * og * kk..(g + 1) * og * kk], og, kk),
                        Mat::new(dyg, og, p),
                        &mut col,
                        false,
                        false,
                    );
                    col2im(&col, xs, c, g * cg, cg, dxi);
                }
                for (o, plane) in dyi.chunks(p).enumerate() {
                    pdb[o] += plane.iter().map(|&v| v as f64).sum::<f64>();
                }
            }
            (pdw, pdb)
        })
        .collect();
    dw.fill(0.0);
    let mut sdb = vec![0.0f64; c.out];
    for (pdw, pdb) in &partials {
        dw.iter_mut().zip(pdw).for_each(|(a, b)| *a += b);
        sdb.iter_mut().zip(pdb).for_each(|(a, b)| *a += b);
    }
    db.iter_mut().zip(sdb).for_each(|(a, b)| *a = b as f32);
    need_dx.then_some(dx)
}

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

pub fn lrn_forward(x: &[f32], xs: Shape, l: &Lrn) -> (Vec<f32>, Vec<f32>) {
    let mut scale = vec![0.0; x.len()];
    let hw = xs.h * xs.w;
    let half = l.size / 2;
    scale
        .par_chunks_mut(xs.per_sample())
        .enumerate()
        .for_each(|(i, s)| {
            let xi = &x[i * xs.per_sample()..(i + 1) * xs.per_sample()];
            for c in 0..xs.c {
                let (lo, hi) = (c.saturating_sub(half), (c + half).min(xs.c - 1));
                for p in 0..hw {
                    let sq: f32 = (lo..=hi).map(|j| xi[j * hw + p] * xi[j * hw + p]).sum();
                    s[c * hw + p] = l.k + l.alpha * sq;
                }
            }
        });
    let y = x
        .par_iter()
        .zip(&scale)
        .map(|(&v, &s)| v * s.powf(-l.beta))
        .collect();
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
    let hw = xs.h * xs.w;
    let half = l.size / 2;
    // t_j = dy_j · y_j / s_j; dx_i = dy_i · s_i^−β − 2αβ x_i Σ_{j ∈ window(i)} t_j
    let t: Vec<f32> = dy
        .par_iter()
        .zip(y)
        .zip(scale)
        .map(|((&d, &y), &s)| d * y / s)
        .collect();
    let mut dx = vec![0.0; x.len()];
    dx.par_chunks_mut(xs.per_sample())
        .enumerate()
        .for_each(|(i, dxi)| {
            let o = i * xs.per_sample();
            for c in 0..xs.c {
                let (lo, hi) = (c.saturating_sub(half), (c + half).min(xs.c - 1));
                for p in 0..hw {
                    let at = o + c * hw + p;
                    let sum: f32 = (lo..=hi).map(|j| t[o + j * hw + p]).sum();
                    dxi[c * hw + p] =
                        dy[at] * scale[at].powf(-l.beta) - 2.0 * l.alpha * l.beta * x[at] * sum;
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

pub fn linear_forward(x: &[f32], n: usize, w: &[f32], b: &[f32], o: usize) -> Vec<f32> {
    let i = w.len() / o;
    let mut y = vec![0.0; n * o];
    matmul(Mat::new(x, n, i), Mat::t(w, o, i), &mut y, false, true);
    y.par_chunks_mut(o)
        .for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
    y
}

#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    x: &[f32],
    n: usize,
    w: &[f32],
    o: usize,
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
) -> Vec<f32> {
    let i = w.len() / o;
    // dw [o, i] = dyᵀ [o, n] · x [n, i]; dx [n, i] = dy [n, o] · w [o, i]
    matmul(Mat::t(dy, n, o), Mat::new(x, n, i), dw, false, true);
    let mut dx = vec![0.0; n * i];
    matmul(Mat::new(dy, n, o), Mat::new(w, o, i), &mut dx, false, true);
    for (j, d) in db.iter_mut().enumerate() {
        *d = (0..n).map(|r| dy[r * o + j] as f64).sum::<f64>() as f32;
    }
    dx
}

pub fn sgd_step(w: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, momentum: f32, decay: f32) {
    w.par_chunks_mut(1 << 14)
        .zip(v.par_chunks_mut(1 << 14))
        .zip(g.par_chunks(1 << 14))
        .for_each(|((w, v), g)| {
            for ((w, v), g) in w.iter_mut().zip(v.iter_mut()).zip(g) {
                *v = momentum * *v - decay * lr * *w - lr * g;
                *w += *v;
            }
        });
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

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        crate::selftest::random(n, seed)
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// Central differences of L(v) = Σ r·f(v) at a spread of entries of v, against `analytic`.
    fn check(name: &str, v: &[f32], analytic: &[f32], loss: impl Fn(&[f32]) -> f64) {
        let eps = 1e-2f32;
        let step = (v.len() / 23).max(1);
        for i in (0..v.len()).step_by(step) {
            let (mut p, mut m) = (v.to_vec(), v.to_vec());
            p[i] += eps;
            m[i] -= eps;
            let num = (loss(&p) - loss(&m)) / (2.0 * eps as f64);
            let err = (num - analytic[i] as f64).abs();
            assert!(
                err <= 2e-2 * num.abs().max(analytic[i].abs() as f64).max(0.1),
                "{name}[{i}]: numeric {num} vs analytic {}",
                analytic[i]
            );
        }
    }

    #[test]
    fn conv_with_groups_stride_and_padding_has_the_right_gradients() {
        let c = Conv {
            out: 6,
            kernel: 3,
            stride: 2,
            pad: 1,
            groups: 2,
        };
        let xs = Shape::new(5, 4, 7, 7);
        let (x, w, b) = (
            rand_vec(xs.len(), 1),
            rand_vec(6 * 2 * 9, 2),
            rand_vec(6, 3),
        );
        let (y, ys) = conv_forward(&x, xs, &w, &b, &c);
        assert_eq!(ys, Shape::new(5, 6, 4, 4));
        let r = rand_vec(y.len(), 4);
        let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; 6]);
        let dx = conv_backward(&x, xs, &w, &c, &r, &mut dw, &mut db, true).unwrap();
        check("conv dx", &x, &dx, |x| {
            dot(&conv_forward(x, xs, &w, &b, &c).0, &r)
        });
        check("conv dw", &w, &dw, |w| {
            dot(&conv_forward(&x, xs, w, &b, &c).0, &r)
        });
        check("conv db", &b, &db, |b| {
            dot(&conv_forward(&x, xs, &w, b, &c).0, &r)
        });
    }

    #[test]
    fn conv_forward_matches_a_hand_computed_case() {
        // 1 image, 1 channel 3×3 = 1..9, kernel of ones 2×2, stride 1, no padding, bias 0.5.
        let c = Conv {
            out: 1,
            kernel: 2,
            stride: 1,
            pad: 0,
            groups: 1,
        };
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let (y, _) = conv_forward(&x, Shape::new(1, 1, 3, 3), &[1.0; 4], &[0.5], &c);
        assert_eq!(y, vec![12.5, 16.5, 24.5, 28.5]);
    }

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

    #[test]
    fn linear_has_the_right_gradients() {
        let (n, i, o) = (3, 5, 4);
        let (x, w, b) = (rand_vec(n * i, 9), rand_vec(o * i, 10), rand_vec(o, 11));
        let y = linear_forward(&x, n, &w, &b, o);
        assert!((y[0] as f64 - (dot(&x[..i], &w[..i]) + b[0] as f64)).abs() < 1e-5);
        let r = rand_vec(n * o, 12);
        let (mut dw, mut db) = (vec![0.0; o * i], vec![0.0; o]);
        let dx = linear_backward(&x, n, &w, o, &r, &mut dw, &mut db);
        check("linear dx", &x, &dx, |x| {
            dot(&linear_forward(x, n, &w, &b, o), &r)
        });
        check("linear dw", &w, &dw, |w| {
            dot(&linear_forward(&x, n, w, &b, o), &r)
        });
        check("linear db", &b, &db, |b| {
            dot(&linear_forward(&x, n, &w, b, o), &r)
        });
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

    #[test]
    fn sgd_follows_the_papers_update_rule() {
        let (mut w, mut v) = (vec![1.0f32], vec![0.5f32]);
        sgd_step(&mut w, &mut v, &[2.0], 0.1, 0.9, 0.0005);
        // v = 0.9·0.5 − 0.0005·0.1·1 − 0.1·2 = 0.24995; w = 1.24995
        assert!((v[0] - 0.24995).abs() < 1e-6 && (w[0] - 1.24995).abs() < 1e-6);
    }
}
