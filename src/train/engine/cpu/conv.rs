//! Convolution on the CPU: im2col + GEMM per image, parallel over the batch with rayon. Weight
//! gradients are summed over fixed chunks of images in order, so results do not depend on the
//! thread count and a resumed run equals an uninterrupted one.

use rayon::prelude::*;

use crate::model::Conv;
use crate::train::engine::Shape;
use crate::util::matmul::{matmul, Mat};

/// Images per partial weight gradient; fixed for determinism.
const GRAD_CHUNK: usize = 4;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::cpu::testing::{check, dot, rand_vec};

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
}
