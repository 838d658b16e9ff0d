//! Convolution on the CPU: a chunk of images is unfolded side by side (im2col) and multiplied
//! by each group's weights in one wide product, chunks in parallel with rayon. Chunk sizes
//! depend only on the layer's shape and weight gradients are summed over chunks in order, so
//! results do not depend on the thread count and a resumed run equals an uninterrupted one.
//! 3×3 and 5×5 convolutions on wide maps (the paper network's conv2..5) run all three passes
//! by Winograd's F(2×2, 3×3) or F(2×2, 5×5) instead (`winograd.rs`), with fewer products.

use rayon::prelude::*;

use super::unfold::{col2im, im2col};
use super::winograd;
use crate::model::Conv;
use crate::train::engine::Shape;
use crate::util::matmul::{matmul, Mat};

/// Output positions per product that keep the GEMM kernels busy: small maps (13×13, 3×3) are
/// unfolded several images at a time up to this width.
const PRODUCT_COLUMNS: usize = 1024;
/// At most this many images per chunk, so a batch still splits across threads.
const MAX_CHUNK: usize = 16;

fn out_hw(xs: Shape, c: &Conv) -> (usize, usize) {
    (c.out_size(xs.h), c.out_size(xs.w))
}

/// Images unfolded together for a layer whose output map has `p` positions.
fn chunk_images(p: usize) -> usize {
    (PRODUCT_COLUMNS / p.max(1)).clamp(1, MAX_CHUNK)
}

/// A layer's sizes: per group input channels, output channels, unfolded rows; positions.
struct Dims {
    cg: usize,
    og: usize,
    kk: usize,
    p: usize,
}

fn dims(xs: Shape, c: &Conv) -> Dims {
    let (ho, wo) = out_hw(xs, c);
    let cg = xs.c / c.groups;
    Dims {
        cg,
        og: c.out / c.groups,
        kk: cg * c.kernel * c.kernel,
        p: ho * wo,
    }
}

pub fn conv_forward(x: &[f32], xs: Shape, w: &[f32], b: &[f32], c: &Conv) -> (Vec<f32>, Shape) {
    let (ho, wo) = out_hw(xs, c);
    let ys = Shape::new(xs.n, c.out, ho, wo);
    if let Some(l) = winograd::layer(xs, c) {
        return (winograd::forward(x, w, b, l), ys);
    }
    (unfolded_forward(x, xs, w, b, c, ys), ys)
}

/// The forward pass as unfolded products: chunks of images side by side, each group's weights
/// by their columns.
fn unfolded_forward(x: &[f32], xs: Shape, w: &[f32], b: &[f32], c: &Conv, ys: Shape) -> Vec<f32> {
    let Dims { cg, og, kk, p } = dims(xs, c);
    let chunk = chunk_images(p);
    let mut y = vec![0.0; ys.len()];
    y.par_chunks_mut(ys.per_sample() * chunk)
        .enumerate()
        .for_each(|(ch, yc)| {
            let imgs = yc.len() / ys.per_sample();
            let ld = imgs * p;
            let (mut col, mut out) = (vec![0.0; kk * ld], vec![0.0; og * ld]);
            for g in 0..c.groups {
                for j in 0..imgs {
                    let xi = &x[(ch * chunk + j) * xs.per_sample()..][..xs.per_sample()];
                    im2col(xi, xs, c, (g * cg, cg), &mut col[j * p..], ld);
                }
                // [og, kk] · [kk, imgs·p] → [og, imgs·p]
                let wg = Mat::new(&w[g * og * kk..(g + 1) * og * kk], og, kk);
                matmul(wg, Mat::new(&col, kk, ld), &mut out, false, false);
                for (j, yi) in yc.chunks_mut(ys.per_sample()).enumerate() {
                    for o in 0..og {
                        let dst = &mut yi[(g * og + o) * p..][..p];
                        let bias = b[g * og + o];
                        let src = &out[o * ld + j * p..][..p];
                        dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s + bias);
                    }
                }
            }
        });
    y
}

/// dy of a chunk's images for group g, side by side: [og, imgs·p].
fn gather_dy(dyc: &[f32], ysz: usize, g: usize, og: usize, p: usize, out: &mut [f32]) {
    let ld = out.len() / og;
    for (j, dyi) in dyc.chunks(ysz).enumerate() {
        for o in 0..og {
            out[o * ld + j * p..][..p].copy_from_slice(&dyi[(g * og + o) * p..][..p]);
        }
    }
}

/// One chunk's partial gradients: dw and db of its images (returned), and their dx written
/// into `dxc` when it is given. `xc` and `dyc` are the chunk's inputs and output gradients.
fn chunk_backward(
    (xc, xs): (&[f32], Shape),
    w: &[f32],
    c: &Conv,
    dyc: &[f32],
    mut dxc: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f64>) {
    let Dims { cg, og, kk, p } = dims(xs, c);
    let ysz = c.out * p;
    let ld = dyc.len() / ysz * p;
    let mut pdw = vec![0.0f32; w.len()];
    let (mut col, mut dyg) = (vec![0.0; kk * ld], vec![0.0; og * ld]);
    for g in 0..c.groups {
        gather_dy(dyc, ysz, g, og, p, &mut dyg);
        for (j, xi) in xc.chunks(xs.per_sample()).enumerate() {
            im2col(xi, xs, c, (g * cg, cg), &mut col[j * p..], ld);
        }
        // dw_g [og, kk] = dy_g [og, imgs·p] · colᵀ [imgs·p, kk]
        let (dy_g, col_t) = (Mat::new(&dyg, og, ld), Mat::t(&col, kk, ld));
        matmul(
            dy_g,
            col_t,
            &mut pdw[g * og * kk..(g + 1) * og * kk],
            false,
            false,
        );
        if let Some(dxc) = dxc.as_deref_mut() {
            // dcol [kk, imgs·p] = w_gᵀ [kk, og] · dy_g [og, imgs·p]
            let wg = Mat::t(&w[g * og * kk..(g + 1) * og * kk], og, kk);
            matmul(wg, dy_g, &mut col, false, false);
            for (j, dxi) in dxc.chunks_mut(xs.per_sample()).enumerate() {
                col2im(&col[j * p..], ld, xs, c, (g * cg, cg), dxi);
            }
        }
    }
    (pdw, bias_sums(dyc, c.out, p))
}

/// db in f64: each of `k` output channels' gradients `dy` [n, k, p] summed over images and
/// positions.
pub(super) fn bias_sums(dy: &[f32], k: usize, p: usize) -> Vec<f64> {
    let mut db = vec![0.0f64; k];
    for dyi in dy.chunks(k * p) {
        for (o, plane) in dyi.chunks(p).enumerate() {
            db[o] += plane.iter().map(|&v| v as f64).sum::<f64>();
        }
    }
    db
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
    if let Some(l) = winograd::layer(xs, c) {
        return winograd::backward((x, w, dy), l, (dw, db), need_dx);
    }
    let p = dims(xs, c).p;
    let (ysz, chunk, per) = (c.out * p, chunk_images(p), xs.per_sample());
    let mut dx = vec![0.0; if need_dx { xs.len() } else { 0 }];
    let xcs = x.par_chunks(per * chunk).zip(dy.par_chunks(ysz * chunk));
    // Each chunk of images: its dx slices and its partial dw, db.
    let partials: Vec<(Vec<f32>, Vec<f64>)> = if need_dx {
        xcs.zip(dx.par_chunks_mut(per * chunk))
            .map(|((xc, dyc), dxc)| chunk_backward((xc, xs), w, c, dyc, Some(dxc)))
            .collect()
    } else {
        xcs.map(|(xc, dyc)| chunk_backward((xc, xs), w, c, dyc, None))
            .collect()
    };
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
    fn winograd_layers_agree_with_the_unfolded_products_and_have_the_right_gradients() {
        winograd_layer_agrees(3);
        winograd_layer_agrees(5);
    }

    fn winograd_layer_agrees(kernel: usize) {
        let c = Conv {
            out: 6,
            kernel,
            stride: 1,
            pad: kernel / 2,
            groups: 2,
        };
        // 13 × 13 maps: Winograd; 7 images over calls of 5 (49 tiles each) and 2
        let xs = Shape::new(7, 4, 13, 13);
        assert_eq!(
            winograd::layer(xs, &c).map(|l| l.images_per_call()),
            Some(5)
        );
        let (x, w, b) = (
            rand_vec(xs.len(), 31),
            rand_vec(6 * 2 * kernel * kernel, 32),
            rand_vec(6, 33),
        );
        let (y, ys) = conv_forward(&x, xs, &w, &b, &c);
        let close = |a: &[f32], b: &[f32], what: &str| {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-5 * scale, "{what}: {worst} of {scale}");
        };
        close(&y, &unfolded_forward(&x, xs, &w, &b, &c, ys), "y");
        let dy = rand_vec(y.len(), 34);
        let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; 6]);
        let dx = conv_backward(&x, xs, &w, &c, &dy, &mut dw, &mut db, true).unwrap();
        let mut unfolded_dx = vec![0.0; xs.len()];
        let (unfolded_dw, unfolded_db) =
            chunk_backward((&x, xs), &w, &c, &dy, Some(&mut unfolded_dx));
        close(&dx, &unfolded_dx, "dx");
        close(&dw, &unfolded_dw, "dw");
        let unfolded_db: Vec<f32> = unfolded_db.iter().map(|&v| v as f32).collect();
        close(&db, &unfolded_db, "db");
        let one = Shape::new(1, 4, 13, 13);
        let (x1, r) = (&x[..one.len()], &dy[..ys.per_sample()]);
        let dx1 = conv_backward(x1, one, &w, &c, r, &mut dw, &mut db, true).unwrap();
        check("winograd dx", x1, &dx1, |x| {
            dot(&conv_forward(x, one, &w, &b, &c).0, r)
        });
        check("winograd dw", &w, &dw, |w| {
            dot(&conv_forward(x1, one, w, &b, &c).0, r)
        });
    }

    #[test]
    fn a_batch_over_several_chunks_equals_its_images_one_by_one() {
        // 4×4 outputs: 16 images a chunk, so 37 images are chunks of 16, 16 and 5.
        let c = Conv {
            out: 4,
            kernel: 3,
            stride: 1,
            pad: 1,
            groups: 2,
        };
        let xs = Shape::new(37, 2, 4, 4);
        assert_eq!(chunk_images(16), 16);
        let (x, w, b) = (rand_vec(xs.len(), 21), rand_vec(4 * 9, 22), rand_vec(4, 23));
        let (y, ys) = conv_forward(&x, xs, &w, &b, &c);
        let dy = rand_vec(y.len(), 24);
        let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; 4]);
        let dx = conv_backward(&x, xs, &w, &c, &dy, &mut dw, &mut db, true).unwrap();
        let one = Shape::new(1, 2, 4, 4);
        let (mut sum_dw, mut sum_db) = (vec![0.0f64; w.len()], vec![0.0f64; 4]);
        for i in 0..37 {
            let xi = &x[i * one.len()..(i + 1) * one.len()];
            let dyi = &dy[i * ys.per_sample()..(i + 1) * ys.per_sample()];
            let (yi, _) = conv_forward(xi, one, &w, &b, &c);
            let (mut dwi, mut dbi) = (vec![0.0; w.len()], vec![0.0; 4]);
            let dxi = conv_backward(xi, one, &w, &c, dyi, &mut dwi, &mut dbi, true).unwrap();
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-5);
            assert!(
                close(&y[i * ys.per_sample()..][..ys.per_sample()], &yi),
                "y of {i}"
            );
            assert!(close(&dx[i * one.len()..][..one.len()], &dxi), "dx of {i}");
            sum_dw
                .iter_mut()
                .zip(&dwi)
                .for_each(|(s, &v)| *s += v as f64);
            sum_db
                .iter_mut()
                .zip(&dbi)
                .for_each(|(s, &v)| *s += v as f64);
        }
        assert!(dw
            .iter()
            .zip(&sum_dw)
            .all(|(a, b)| (*a as f64 - b).abs() < 1e-4));
        assert!(db
            .iter()
            .zip(&sum_db)
            .all(|(a, b)| (*a as f64 - b).abs() < 1e-4));
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
