//! The CPU engine's Winograd layers: 3×3 and 5×5, stride-1, "same" convolutions on maps of at
//! least `MIN_MAP` (the paper network's conv2 at 27 × 27 and conv3..5 at 13 × 13), whose
//! unfolded products already ran at 65–82% of the CPU's FMA peak. All three passes go through
//! `util::winograd`'s F(2×2, 3×3) or F(2×2, 5×5): the forward pass, the input gradient (dy
//! convolved by the turned filters) and the filter gradient (the adjoint of the forward's
//! products), 16 multiplications per 2×2 block instead of 36, or 36 instead of 100. Images are
//! cut into calls and partial sums by the layer's shape only, and partials
//! are added in order, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::model::Conv;
use crate::train::engine::Shape;
use crate::util::winograd::{self as util_winograd, Layer, KERNELS, MIN_MAP};

/// `c` on `xs` as a Winograd layer, when it is one: 3×3 or 5×5, stride 1, pad 1 or 2, maps at
/// least `MIN_MAP` wide (on narrower ones the tiles' padding costs what the fewer products save).
pub(super) fn layer(xs: Shape, c: &Conv) -> Option<Layer> {
    let fits = KERNELS.contains(&c.kernel)
        && c.stride == 1
        && c.pad == c.kernel / 2
        && xs.h.min(xs.w) >= MIN_MAP;
    fits.then_some(Layer {
        c: xs.c,
        k: c.out,
        h: xs.h,
        w: xs.w,
        groups: c.groups,
        r: c.kernel,
    })
}

/// `x` [n, l.c, h, w] convolved into `y` [n, l.k, h, w] by transformed filters `u`, a fixed
/// number of images per call (by shape only, so results do not depend on the thread count).
fn convolve(x: &[f32], u: &[f32], bias: &[f32], y: &mut [f32], l: Layer) {
    let per = l.images_per_call();
    let plane = l.h * l.w;
    y.par_chunks_mut(per * l.k * plane)
        .zip(x.par_chunks(per * l.c * plane))
        .for_each(|(yc, xc)| util_winograd::convolve_images(xc, u, bias, yc, l, false));
}

/// The forward pass of Winograd layer `l`: `x` [n, C, h, w] → [n, K, h, w], bias added.
pub(super) fn forward(x: &[f32], w: &[f32], b: &[f32], l: Layer) -> Vec<f32> {
    let mut y = vec![0.0; x.len() / l.c * l.k];
    let u = util_winograd::transform_filters(w, l.k, l.c / l.groups, l.r);
    convolve(x, &u, b, &mut y, l);
    y
}

/// Calls of `util_winograd::accumulate_filter_gradient` summed into one partial filter gradient:
/// fewer partials to add up, each call's scratch still in cache.
const CALLS_PER_PARTIAL: usize = 4;

/// A Winograd layer's backward pass: dw from partial sums over fixed runs of images (in the
/// transformed domain, then Gᵀ dU G), db from dy's sums, and dx as dy convolved by the turned
/// filters.
pub(super) fn backward(
    (x, w, dy): (&[f32], &[f32], &[f32]),
    l: Layer,
    (dw, db): (&mut [f32], &mut [f32]),
    need_dx: bool,
) -> Option<Vec<f32>> {
    let (cg, plane, per) = (l.c / l.groups, l.h * l.w, l.images_per_call());
    let partial = |(xc, dyc): (&[f32], &[f32])| {
        let mut du = vec![0.0f32; l.elements() * l.k * cg];
        for (xi, dyi) in xc
            .chunks(per * l.c * plane)
            .zip(dyc.chunks(per * l.k * plane))
        {
            util_winograd::accumulate_filter_gradient(xi, dyi, &mut du, l);
        }
        du
    };
    let run = per * CALLS_PER_PARTIAL;
    let partials: Vec<Vec<f32>> = x
        .par_chunks(run * l.c * plane)
        .zip(dy.par_chunks(run * l.k * plane))
        .map(partial)
        .collect();
    let mut du = vec![0.0f32; l.elements() * l.k * cg];
    for p in &partials {
        du.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    dw.copy_from_slice(&util_winograd::filter_gradient(&du, l.k, cg, l.r));
    let sums = super::conv::bias_sums(dy, l.k, plane);
    db.iter_mut().zip(sums).for_each(|(a, b)| *a = b as f32);
    need_dx.then(|| {
        let mut dx = vec![0.0; x.len()];
        let u = util_winograd::transform_filters_for_input_gradient(w, l);
        convolve(dy, &u, &vec![0.0; l.c], &mut dx, l.transposed());
        dx
    })
}
