//! Unfolding images into the columns a convolution multiplies (`im2col`) and folding gradient
//! columns back (`col2im`), one image at a time into a slice of a several-image unfolding, so
//! a chunk of images becomes one wide matrix product. Each row is a run of copies between the
//! padding, not a bounds check per element.

use crate::model::Conv;
use crate::train::engine::Shape;

/// The output columns [lo, hi) whose input column ox·stride + kx − pad lies inside [0, w):
/// the rest read padding. When none does (lo = hi), the first input column lo·stride + kx − pad
/// may lie past the row, so callers copy nothing.
fn valid_cols(w: usize, wo: usize, c: &Conv, kx: usize) -> (usize, usize) {
    let lo = c.pad.saturating_sub(kx).div_ceil(c.stride).min(wo);
    let hi = if w + c.pad > kx {
        ((w + c.pad - kx - 1) / c.stride + 1).min(wo)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Unfolds channels [c0, c0+cg) of one image into col [cg·k·k, ho·wo], whose rows start
/// `ld` apart (ld ≥ ho·wo: this image's columns within several images' unfolding).
pub fn im2col(
    x: &[f32],
    xs: Shape,
    c: &Conv,
    (c0, cg): (usize, usize),
    col: &mut [f32],
    ld: usize,
) {
    let (ho, wo) = (c.out_size(xs.h), c.out_size(xs.w));
    let k = c.kernel;
    for ci in 0..cg {
        let plane = &x[(c0 + ci) * xs.h * xs.w..(c0 + ci + 1) * xs.h * xs.w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ci * k + ky) * k + kx) * ld..][..ho * wo];
                let (lo, hi) = valid_cols(xs.w, wo, c, kx);
                for oy in 0..ho {
                    let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                    let dst = &mut row[oy * wo..(oy + 1) * wo];
                    if iy < 0 || iy >= xs.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * xs.w..(iy as usize + 1) * xs.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo == hi {
                        continue;
                    }
                    let first = lo * c.stride + kx - c.pad;
                    if c.stride == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                    } else {
                        let taken = src[first..].iter().step_by(c.stride);
                        dst[lo..hi].iter_mut().zip(taken).for_each(|(d, &s)| *d = s);
                    }
                }
            }
        }
    }
}

/// Folds col (rows `ld` apart) back onto channels [c0, c0+cg) of one image's gradient,
/// accumulating: the adjoint of `im2col`.
pub fn col2im(
    col: &[f32],
    ld: usize,
    xs: Shape,
    c: &Conv,
    (c0, cg): (usize, usize),
    dx: &mut [f32],
) {
    let (ho, wo) = (c.out_size(xs.h), c.out_size(xs.w));
    let k = c.kernel;
    for ci in 0..cg {
        let plane = &mut dx[(c0 + ci) * xs.h * xs.w..(c0 + ci + 1) * xs.h * xs.w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &col[((ci * k + ky) * k + kx) * ld..][..ho * wo];
                let (lo, hi) = valid_cols(xs.w, wo, c, kx);
                for oy in 0..ho {
                    let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                    if iy < 0 || iy >= xs.h as isize || lo == hi {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * xs.w..(iy as usize + 1) * xs.w];
                    let src = &row[oy * wo + lo..oy * wo + hi];
                    let first = lo * c.stride + kx - c.pad;
                    if c.stride == 1 {
                        let dst = &mut dst[first..first + hi - lo];
                        dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
                    } else {
                        let put = dst[first..].iter_mut().step_by(c.stride);
                        put.zip(src).for_each(|(d, &s)| *d += s);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::cpu::testing::{dot, rand_vec};

    /// im2col element by element: what the row-at-a-time version must equal.
    fn im2col_reference(x: &[f32], xs: Shape, c: &Conv) -> Vec<f32> {
        let (ho, wo) = (c.out_size(xs.h), c.out_size(xs.w));
        let k = c.kernel;
        let mut col = vec![0.0; xs.c * k * k * ho * wo];
        for ((ci, ky), (kx, oy)) in (0..xs.c)
            .flat_map(|a| (0..k).map(move |b| (a, b)))
            .flat_map(|a| (0..k).flat_map(move |b| (0..ho).map(move |d| (a, (b, d)))))
        {
            for ox in 0..wo {
                let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                let ix = (ox * c.stride + kx) as isize - c.pad as isize;
                let inside = (0..xs.h as isize).contains(&iy) && (0..xs.w as isize).contains(&ix);
                col[(((ci * k + ky) * k + kx) * ho + oy) * wo + ox] = if inside {
                    x[(ci * xs.h + iy as usize) * xs.w + ix as usize]
                } else {
                    0.0
                };
            }
        }
        col
    }

    #[test]
    fn im2col_equals_the_element_wise_unfolding_and_col2im_is_its_adjoint() {
        for (kernel, stride, pad, side) in [
            (11, 4, 2, 23),
            (5, 1, 2, 7),
            (3, 1, 1, 3),
            (3, 2, 0, 8),
            (1, 1, 0, 4),
            (4, 3, 3, 5),
            (2, 2, 1, 1),
            (3, 4, 2, 1),
        ] {
            let c = Conv {
                out: 1,
                kernel,
                stride,
                pad,
                groups: 1,
            };
            let xs = Shape::new(1, 2, side, side + 1);
            let x = rand_vec(xs.len(), 7);
            let want = im2col_reference(&x, xs, &c);
            // Inside a wider unfolding (rows 3 columns longer), the rest left as it was.
            let p = want.len() / (2 * kernel * kernel);
            let mut wide = vec![f32::NAN; 2 * kernel * kernel * (p + 3)];
            im2col(&x, xs, &c, (0, 2), &mut wide, p + 3);
            for (r, row) in wide.chunks(p + 3).enumerate() {
                assert_eq!(
                    row[..p],
                    want[r * p..(r + 1) * p],
                    "k{kernel} s{stride} p{pad}"
                );
                assert!(row[p..].iter().all(|v| v.is_nan()));
            }
            let mut col = vec![f32::NAN; want.len()];
            im2col(&x, xs, &c, (0, 2), &mut col, p);
            assert_eq!(col, want, "k{kernel} s{stride} p{pad} side {side}");
            // ⟨im2col(x), r⟩ = ⟨x, col2im(r)⟩ for any r.
            let r = rand_vec(col.len(), 8);
            let mut back = vec![0.0; xs.len()];
            col2im(&r, p, xs, &c, (0, 2), &mut back);
            let (lhs, rhs) = (dot(&col, &r), dot(&x, &back));
            assert!(
                (lhs - rhs).abs() < 1e-4,
                "k{kernel} s{stride} p{pad}: {lhs} vs {rhs}"
            );
        }
    }
}
