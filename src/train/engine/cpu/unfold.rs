//! Unfolding images into the columns a convolution multiplies (`im2col`) and folding gradient
//! columns back (`col2im`), one image at a time into a slice of a several-image unfolding, so
//! a chunk of images becomes one wide matrix product. The image is first laid out padded and
//! split by stride phase (`Phases`), so each row of the unfolding is contiguous copies.

use crate::model::Conv;
use crate::train::engine::Shape;

/// One image's channels laid out so that every run of an unfolded row is a contiguous copy:
/// per channel, the plane zero-padded by `pad` on every side and split into `stride` phases
/// of its columns, [stride, h + 2·pad, wp] with phase[q][py][j] = padded[py][j·stride + q].
/// Output column ox of kernel column kx then reads phase kx % stride at j = ox + kx / stride,
/// so a row's wo values sit side by side (AlexNet's first layer reads every fourth pixel, and
/// the small maps' runs are a few floats between padding: both were element-wise before).
struct Phases {
    s: usize,
    hp: usize,
    wp: usize,
    wo: usize,
}

impl Phases {
    fn new(xs: Shape, c: &Conv) -> Self {
        let wo = c.out_size(xs.w);
        Phases {
            s: c.stride,
            hp: xs.h + 2 * c.pad,
            wp: wo + (c.kernel - 1) / c.stride,
            wo,
        }
    }
    fn channel_len(&self) -> usize {
        self.s * self.hp * self.wp
    }
    /// Per phase q that holds input pixels, the phase columns [lo, hi) that do, and the input
    /// column of the first: phase column j holds padded column j·s + q, input column j·s + q − pad.
    fn spans(&self, w: usize, pad: usize) -> Vec<(usize, usize, usize, usize)> {
        (0..self.s)
            .map(|q| {
                let lo = pad.saturating_sub(q).div_ceil(self.s);
                let hi = (pad + w).saturating_sub(q).div_ceil(self.s).min(self.wp);
                (q, lo, hi, (lo * self.s + q).saturating_sub(pad))
            })
            .filter(|&(_, lo, hi, _)| lo < hi)
            .collect()
    }
    /// Where padded row py of phase q starts in a channel's phases.
    fn row(&self, q: usize, py: usize) -> usize {
        (q * self.hp + py) * self.wp
    }
    /// Start of the run that row (ky, kx) of the unfolding reads for output row oy.
    fn run(&self, ky: usize, kx: usize, oy: usize) -> usize {
        ((kx % self.s) * self.hp + oy * self.s + ky) * self.wp + kx / self.s
    }
}

thread_local! {
    static PHASES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls `f` with a zeroed scratch of `len` floats kept by this thread between calls.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = PHASES.take();
    buf.clear();
    buf.resize(len, 0.0);
    let r = f(&mut buf);
    PHASES.set(buf);
    r
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
    let (ho, k, ph) = (c.out_size(xs.h), c.kernel, Phases::new(xs, c));
    let (wo, spans) = (ph.wo, ph.spans(xs.w, c.pad));
    with_scratch(cg * ph.channel_len(), |phases| {
        for (ci, chan) in phases.chunks_mut(ph.channel_len()).enumerate() {
            let plane = &x[(c0 + ci) * xs.h * xs.w..][..xs.h * xs.w];
            for (iy, src) in plane.chunks(xs.w).enumerate() {
                for &(q, lo, hi, ix) in &spans {
                    let dst = &mut chan[ph.row(q, iy + c.pad)..][lo..hi];
                    let taken = src[ix..].iter().step_by(ph.s);
                    dst.iter_mut().zip(taken).for_each(|(d, &v)| *d = v);
                }
            }
            for ky in 0..k {
                for kx in 0..k {
                    let row = &mut col[((ci * k + ky) * k + kx) * ld..][..ho * wo];
                    for (oy, dst) in row.chunks_mut(wo).enumerate() {
                        dst.copy_from_slice(&chan[ph.run(ky, kx, oy)..][..wo]);
                    }
                }
            }
        }
    });
}

/// Folds col (rows `ld` apart) back onto channels [c0, c0+cg) of one image's gradient, adding
/// to what dx holds: the adjoint of `im2col`. Each pixel's terms are summed in (ky, kx, oy)
/// order from zero, then added to dx once.
pub fn col2im(
    col: &[f32],
    ld: usize,
    xs: Shape,
    c: &Conv,
    (c0, cg): (usize, usize),
    dx: &mut [f32],
) {
    let (ho, k, ph) = (c.out_size(xs.h), c.kernel, Phases::new(xs, c));
    let (wo, spans) = (ph.wo, ph.spans(xs.w, c.pad));
    with_scratch(cg * ph.channel_len(), |phases| {
        for (ci, chan) in phases.chunks_mut(ph.channel_len()).enumerate() {
            for ky in 0..k {
                for kx in 0..k {
                    let row = &col[((ci * k + ky) * k + kx) * ld..][..ho * wo];
                    for (oy, src) in row.chunks(wo).enumerate() {
                        let dst = &mut chan[ph.run(ky, kx, oy)..][..wo];
                        dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
                    }
                }
            }
            let plane = &mut dx[(c0 + ci) * xs.h * xs.w..][..xs.h * xs.w];
            for (iy, dst) in plane.chunks_mut(xs.w).enumerate() {
                for &(q, lo, hi, ix) in &spans {
                    let src = &chan[ph.row(q, iy + c.pad)..][lo..hi];
                    let put = dst[ix..].iter_mut().step_by(ph.s);
                    put.zip(src).for_each(|(d, &v)| *d += v);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::cpu::testing::{dot, rand_vec};

    /// Every element of the unfolding in (channel, ky, kx, oy, ox) order: its index in col
    /// [c·k·k, ho·wo] and the input pixel it reads, or None for padding.
    fn taps(xs: Shape, c: &Conv) -> Vec<(usize, Option<usize>)> {
        let (ho, wo, k) = (c.out_size(xs.h), c.out_size(xs.w), c.kernel);
        let mut taps = Vec::new();
        for ci in 0..xs.c {
            for (ky, kx) in (0..k).flat_map(|ky| (0..k).map(move |kx| (ky, kx))) {
                for (oy, ox) in (0..ho).flat_map(|oy| (0..wo).map(move |ox| (oy, ox))) {
                    let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                    let ix = (ox * c.stride + kx) as isize - c.pad as isize;
                    let inside =
                        (0..xs.h as isize).contains(&iy) && (0..xs.w as isize).contains(&ix);
                    let pixel = inside.then(|| (ci * xs.h + iy as usize) * xs.w + ix as usize);
                    taps.push((taps.len(), pixel));
                }
            }
        }
        taps
    }

    /// im2col element by element: what the row-at-a-time version must equal.
    fn im2col_reference(x: &[f32], xs: Shape, c: &Conv) -> Vec<f32> {
        let taps = taps(xs, c);
        taps.iter().map(|&(_, p)| p.map_or(0.0, |p| x[p])).collect()
    }

    /// col2im element by element: each pixel's terms summed in the unfolding's order from
    /// zero, then added to dx.
    fn col2im_reference(col: &[f32], xs: Shape, c: &Conv, dx: &mut [f32]) {
        let mut sum = vec![0.0f32; dx.len()];
        for (i, p) in taps(xs, c) {
            if let Some(p) = p {
                sum[p] += col[i];
            }
        }
        dx.iter_mut().zip(sum).for_each(|(d, s)| *d += s);
    }

    #[test]
    fn im2col_and_col2im_equal_the_element_wise_definitions_bit_for_bit() {
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
            let (mut got, mut want) = (rand_vec(xs.len(), 9), vec![0.0; xs.len()]);
            want.copy_from_slice(&got);
            col2im(&r, p, xs, &c, (0, 2), &mut got);
            col2im_reference(&r, xs, &c, &mut want);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "col2im k{kernel} s{stride} p{pad}");
            assert!(
                (lhs - rhs).abs() < 1e-4,
                "k{kernel} s{stride} p{pad}: {lhs} vs {rhs}"
            );
        }
    }
}
