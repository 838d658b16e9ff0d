//! The CPU engine's local response normalisation across channels (the paper's §3.3) and its
//! backward, one image per rayon task. Each image's loops are also compiled for AVX-512 and
//! AVX2 and picked at run time (`util::isa`), because the build targets any x86-64 and these
//! loops of divisions and square roots were then four lanes wide; they hold no fused
//! multiply-add and every element's operations keep their order, so all paths give the same
//! bits.

use rayon::prelude::*;

use crate::model::Lrn;
use crate::train::engine::Shape;
use crate::util::isa::{self, Path};

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
#[inline(always)]
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

/// One image's parts: its input, and for the backward its output, scale and output gradient.
struct Image<'a> {
    x: &'a [f32],
    y: &'a [f32],
    scale: &'a [f32],
    dy: &'a [f32],
}

pub fn lrn_forward(x: &[f32], xs: Shape, l: &Lrn) -> (Vec<f32>, Vec<f32>) {
    forward_on(isa::fastest(), x, xs, l)
}

fn forward_on(path: Path, x: &[f32], xs: Shape, l: &Lrn) -> (Vec<f32>, Vec<f32>) {
    let per = xs.per_sample();
    let mut scale = vec![0.0; x.len()];
    let mut y = vec![0.0; x.len()];
    scale
        .par_chunks_mut(per)
        .zip(y.par_chunks_mut(per))
        .enumerate()
        .for_each(|(i, (s, yi))| {
            let xi = &x[i * per..(i + 1) * per];
            match path {
                // SAFETY: `isa::fastest` gives Avx512 only where the CPU has AVX-512F, and
                // `isa::runnable` (the tests') only paths the CPU has.
                #[cfg(target_arch = "x86_64")]
                Path::Avx512 => unsafe { forward_avx512(xi, s, yi, xs, l) },
                // SAFETY: as above, for AVX2.
                #[cfg(target_arch = "x86_64")]
                Path::Avx2 => unsafe { forward_avx2(xi, s, yi, xs, l) },
                _ => forward_image(xi, s, yi, xs, l),
            }
        });
    (y, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512(x: &[f32], s: &mut [f32], y: &mut [f32], xs: Shape, l: &Lrn) {
    forward_image(x, s, y, xs, l)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn forward_avx2(x: &[f32], s: &mut [f32], y: &mut [f32], xs: Shape, l: &Lrn) {
    forward_image(x, s, y, xs, l)
}

/// One image [c, h, w]: scale s = k + α Σ window x² and y = x · s^−β.
#[inline(always)]
fn forward_image(xi: &[f32], s: &mut [f32], yi: &mut [f32], xs: Shape, l: &Lrn) {
    let (hw, half) = (xs.h * xs.w, l.size / 2);
    for c in 0..xs.c {
        let sc = &mut s[c * hw..(c + 1) * hw];
        window_sums(xi, hw, c, half, true, sc);
        let (xc, yc) = (&xi[c * hw..(c + 1) * hw], &mut yi[c * hw..(c + 1) * hw]);
        for ((s, y), &v) in sc.iter_mut().zip(yc).zip(xc) {
            *s = l.k + l.alpha * *s;
            *y = v * pow_neg_beta(*s, l.beta);
        }
    }
}

pub fn lrn_backward(
    x: &[f32],
    y: &[f32],
    scale: &[f32],
    xs: Shape,
    l: &Lrn,
    dy: &[f32],
) -> Vec<f32> {
    backward_on(isa::fastest(), (x, y, scale, dy), xs, l)
}

fn backward_on(
    path: Path,
    (x, y, scale, dy): (&[f32], &[f32], &[f32], &[f32]),
    xs: Shape,
    l: &Lrn,
) -> Vec<f32> {
    let per = xs.per_sample();
    let mut dx = vec![0.0; x.len()];
    dx.par_chunks_mut(per).enumerate().for_each(|(i, dxi)| {
        let r = i * per..(i + 1) * per;
        let im = Image {
            x: &x[r.clone()],
            y: &y[r.clone()],
            scale: &scale[r.clone()],
            dy: &dy[r],
        };
        match path {
            // SAFETY: as in `forward_on`.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { backward_avx512(&im, dxi, xs, l) },
            // SAFETY: as in `forward_on`.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { backward_avx2(&im, dxi, xs, l) },
            _ => backward_image(&im, dxi, xs, l),
        }
    });
    dx
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn backward_avx512(im: &Image, dx: &mut [f32], xs: Shape, l: &Lrn) {
    backward_image(im, dx, xs, l)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn backward_avx2(im: &Image, dx: &mut [f32], xs: Shape, l: &Lrn) {
    backward_image(im, dx, xs, l)
}

/// One image: t_j = dy_j · y_j / s_j; dx_i = dy_i · s_i^−β − 2αβ x_i Σ_{j ∈ window(i)} t_j.
#[inline(always)]
fn backward_image(im: &Image, dxi: &mut [f32], xs: Shape, l: &Lrn) {
    let (hw, half) = (xs.h * xs.w, l.size / 2);
    let k = 2.0 * l.alpha * l.beta;
    let t: Vec<f32> = (im.dy.iter().zip(im.y).zip(im.scale))
        .map(|((d, y), s)| d * y / s)
        .collect();
    let mut sum = vec![0.0; hw];
    for c in 0..xs.c {
        window_sums(&t, hw, c, half, false, &mut sum);
        let r = c * hw..(c + 1) * hw;
        let (d, s, xc) = (&im.dy[r.clone()], &im.scale[r.clone()], &im.x[r.clone()]);
        for ((((out, &d), &s), &v), &sum) in dxi[r].iter_mut().zip(d).zip(s).zip(xc).zip(&sum) {
            *out = d * pow_neg_beta(s, l.beta) - k * v * sum;
        }
    }
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

    /// Every compiled copy of the loops gives the baseline's bits, forward and backward, on
    /// the paper's constants and on a β that takes `powf`.
    #[test]
    fn lrn_paths_give_the_same_bits() {
        let paths = isa::runnable();
        let xs = Shape::new(3, 11, 7, 5);
        let x: Vec<f32> = rand_vec(xs.len(), 31).iter().map(|v| v * 4.0).collect();
        let dy = rand_vec(xs.len(), 32);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for beta in [0.75, 0.6] {
            let l = Lrn {
                size: 5,
                alpha: 1e-2,
                beta,
                k: 2.0,
            };
            let (y0, s0) = forward_on(Path::Base, &x, xs, &l);
            let dx0 = backward_on(Path::Base, (&x, &y0, &s0, &dy), xs, &l);
            for &p in &paths[1..] {
                let (y, s) = forward_on(p, &x, xs, &l);
                assert_eq!((bits(&y), bits(&s)), (bits(&y0), bits(&s0)), "{p:?}");
                let dx = backward_on(p, (&x, &y, &s, &dy), xs, &l);
                assert_eq!(bits(&dx), bits(&dx0), "{p:?}, beta {beta}");
            }
        }
    }
}
