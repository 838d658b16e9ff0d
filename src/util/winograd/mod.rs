//! 3×3 and 5×5 convolutions (stride 1, "same" padding, groups) by Winograd's F(2×2, 3×3) and
//! F(2×2, 5×5) (Lavin & Gray 2015): each 2×2 block of outputs from a 4×4 (6×6) input tile with
//! 16 (36) multiplications instead of 36 (100), as 16 (36) matrix products of [K, C] filters by
//! [C, tiles] transformed inputs. Direct convolutions already run near the CPU's FMA peak, so
//! fewer products is the only way to spend less time.
//! Both of fc7's users share this: ONNX Runtime's `fc7.Winograd` operator (`infer::winograd`)
//! and the training engine's forward pass and both gradients (`train::engine::cpu::winograd`).
//!
//! Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A per tile and channel pair, summed over input channels, with
//! α × α tiles (α = r + 1 for r × r filters). F(2×2, 3×3)'s Bᵀ and Aᵀ hold only 0 and ±1;
//! F(2×2, 5×5)'s are those of the points 0, ±1, ±2 and ∞ (Bᵀ up to 5, Aᵀ up to 2, as in the
//! widely used F(4×4, 3×3)). G g Gᵀ is computed in f64, so the result differs from the direct
//! sum by rounding only (tests: within 1e-5 of the output's scale of an f64 reference).

mod transform;

use transform::{input_transform, output_gradient_transform, output_transform};

use crate::util::matmul::{matmul, Mat};

/// Maps at least this wide run faster as Winograd. Measured on 2 Zen 4 cores: the paper
/// network's 13 × 13 conv3..5 (192–384 channels a group) 82 against 91 ms a batch of 32 in
/// ONNX Runtime's direct convolutions, and its 27 × 27 conv2 as F(2×2, 5×5) 7–10% more images a
/// second on top; the quick network's 3 × 3 ones (48–96 channels), where 2 × 2 tiles cover a
/// 4 × 4 map, made indexing 3% slower. Between: unmeasured, left as it was.
pub const MIN_MAP: usize = 12;
/// At most this many tiles (2×2 outputs each) per call of `convolve_images`, so that its
/// transformed inputs and products ([α², Cg, tiles] and [α², Kg, tiles], ~5 MB for AlexNet's
/// conv3) stay in cache (512, 1,024 and 2,048 made the paper step 7%, 13% and 25% slower).
pub const MAX_TILES: usize = 256;

/// The filter sides this module computes.
pub const KERNELS: [usize; 2] = [3, 5];

/// The filter transform G (4 × 3) of F(2×2, 3×3).
const G3: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
/// The filter transform G (6 × 5) of F(2×2, 5×5): each row evaluates the filter at one of the
/// points 0, 1, −1, 2, −2 (scaled as Bᵀ needs) and ∞.
const G5: [[f64; 5]; 6] = [
    [0.25, 0.0, 0.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 2.0 / 24.0, 4.0 / 24.0, 8.0 / 24.0, 16.0 / 24.0],
    [
        1.0 / 24.0,
        -2.0 / 24.0,
        4.0 / 24.0,
        -8.0 / 24.0,
        16.0 / 24.0,
    ],
    [0.0, 0.0, 0.0, 0.0, 1.0],
];

/// G[i][t] for `r` × `r` filters.
fn g(r: usize, i: usize, t: usize) -> f64 {
    match r {
        3 => G3[i][t],
        5 => G5[i][t],
        _ => panic!("Winograd filters are 3×3 or 5×5, not {r}×{r}"),
    }
}

/// One layer's shape: `c` input and `k` output channels in `groups` groups, `h` × `w` maps,
/// `r` × `r` filters (3 or 5; the same size out as in: stride 1, pad r / 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layer {
    pub c: usize,
    pub k: usize,
    pub h: usize,
    pub w: usize,
    pub groups: usize,
    pub r: usize,
}

impl Layer {
    /// Input tile side α.
    fn alpha(&self) -> usize {
        self.r + 1
    }
    /// Elements of a transformed tile (α²): the number of products per call.
    pub fn elements(&self) -> usize {
        self.alpha() * self.alpha()
    }
    fn pad(&self) -> usize {
        self.r / 2
    }
    fn tiles_h(&self) -> usize {
        self.h.div_ceil(2)
    }
    fn tiles_w(&self) -> usize {
        self.w.div_ceil(2)
    }
    /// Output tiles per image.
    pub fn tiles(&self) -> usize {
        self.tiles_h() * self.tiles_w()
    }
    /// Whole images per call that keep it within `MAX_TILES` (at least one).
    pub fn images_per_call(&self) -> usize {
        (MAX_TILES / self.tiles()).max(1)
    }
    /// The layer whose convolution gives this one's input gradient: dy's K channels in, C out.
    pub fn transposed(&self) -> Layer {
        Layer {
            c: self.k,
            k: self.c,
            ..*self
        }
    }
}

/// G g Gᵀ of every filter: [K, Cg, r, r] → [α², K, Cg] (element ξ = α i + j of each α × α
/// first).
pub fn transform_filters(w: &[f32], k: usize, cg: usize, r: usize) -> Vec<f32> {
    let a = r + 1;
    let mut u = vec![0.0f32; a * a * k * cg];
    let mut gf = vec![0.0f64; a * r];
    for (f, w) in w.chunks_exact(r * r).enumerate() {
        // [α, r] = G g, then [α, α] = (G g) Gᵀ
        for (at, v) in gf.iter_mut().enumerate() {
            let (i, j) = (at / r, at % r);
            *v = (0..r).map(|t| g(r, i, t) * w[t * r + j] as f64).sum();
        }
        for (i, row) in gf.chunks_exact(r).enumerate() {
            for j in 0..a {
                let v: f64 = (0..r).map(|t| row[t] * g(r, j, t)).sum();
                u[(i * a + j) * k * cg + f] = v as f32;
            }
        }
    }
    u
}

/// The transformed filters of `l.transposed()` from `l`'s filters `w` [K, Cg, r, r]: input
/// channel c of group g takes from output channel k of its group the filter turned by 180°
/// (a stride-1 "same" convolution's input gradient is such a convolution of its output's).
pub fn transform_filters_for_input_gradient(w: &[f32], l: Layer) -> Vec<f32> {
    let (cg, kg, rr) = (l.c / l.groups, l.k / l.groups, l.r * l.r);
    // [C, Kg, r, r]
    let mut turned = vec![0.0f32; l.c * kg * rr];
    for (ci, dst) in turned.chunks_exact_mut(kg * rr).enumerate() {
        let (g, c) = (ci / cg, ci % cg);
        for (kk, f) in dst.chunks_exact_mut(rr).enumerate() {
            let src = &w[((g * kg + kk) * cg + c) * rr..][..rr];
            f.iter_mut()
                .zip(src.iter().rev())
                .for_each(|(d, &s)| *d = s);
        }
    }
    transform_filters(&turned, l.c, kg, l.r)
}

/// What a call works in: transformed inputs [α², Cg, P] and products [α², Kg, P], kept per
/// thread between calls (allocating them afresh faulted their pages in every time).
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// `f` on this thread's scratch, `v` and `m` sized to `[e, cg, p]` and `[e, kg, p]`.
fn with_scratch(e: usize, (cg, kg, p): (usize, usize, usize), f: impl FnOnce(&mut Scratch)) {
    let mut s = SCRATCH.take();
    s.v.resize(e * cg * p, 0.0);
    s.m.resize(e * kg * p, 0.0);
    f(&mut s);
    SCRATCH.set(s);
}

/// The convolution (+ bias, then ReLU when `relu`) of whole images `x` [n, C, H, W] into `y`
/// [n, K, H, W], with `u` the transformed filters [α², K, Cg] and `bias` [K].
pub fn convolve_images(x: &[f32], u: &[f32], bias: &[f32], y: &mut [f32], l: Layer, relu: bool) {
    let (cg, kg, e) = (l.c / l.groups, l.k / l.groups, l.elements());
    let n = x.len() / (l.c * l.h * l.w);
    let p = n * l.tiles();
    with_scratch(e, (cg, kg, p), |s| {
        for g in 0..l.groups {
            input_transform(x, &mut s.v, l, g);
            for xi in 0..e {
                let a = &u[(xi * l.k + g * kg) * cg..][..kg * cg];
                let b = &s.v[xi * cg * p..][..cg * p];
                let c = &mut s.m[xi * kg * p..][..kg * p];
                // [Kg, Cg] · [Cg, P] → [Kg, P]
                matmul(Mat::new(a, kg, cg), Mat::new(b, cg, p), c, false, false);
            }
            output_transform(&s.m, bias, y, l, g, relu);
        }
    });
}

/// Adds to `du` [α², K, Cg] the filter gradient, in the transformed domain, of the images `x`
/// [n, C, H, W] whose outputs have gradients `dy` [n, K, H, W]: per element ξ and group,
/// (A δ Aᵀ)[ξ] [Kg, P] · (Bᵀ d B)[ξ]ᵀ [P, Cg], the adjoint of the forward's products. Calls
/// in a fixed order over a batch's images give the same sum on any number of threads.
pub fn accumulate_filter_gradient(x: &[f32], dy: &[f32], du: &mut [f32], l: Layer) {
    let (cg, kg, e) = (l.c / l.groups, l.k / l.groups, l.elements());
    let p = x.len() / (l.c * l.h * l.w) * l.tiles();
    with_scratch(e, (cg, kg, p), |s| {
        for g in 0..l.groups {
            input_transform(x, &mut s.v, l, g);
            output_gradient_transform(dy, &mut s.m, l, g);
            for xi in 0..e {
                // [Kg, P] · [P, Cg], added to du's [Kg, Cg]
                let d = Mat::new(&s.m[xi * kg * p..][..kg * p], kg, p);
                let v = Mat::t(&s.v[xi * cg * p..][..cg * p], cg, p);
                let du = &mut du[(xi * l.k + g * kg) * cg..][..kg * cg];
                matmul(d, v, du, true, false);
            }
        }
    });
}

/// The filter gradient [K, Cg, r, r] from its transformed form `du` [α², K, Cg]: Gᵀ dU G per
/// filter (the adjoint of `transform_filters`), in f64.
pub fn filter_gradient(du: &[f32], k: usize, cg: usize, r: usize) -> Vec<f32> {
    let a = r + 1;
    let mut dw = vec![0.0f32; k * cg * r * r];
    let mut gu = vec![0.0f64; r * a];
    for (f, out) in dw.chunks_exact_mut(r * r).enumerate() {
        let at = |i: usize, j: usize| du[(i * a + j) * k * cg + f] as f64;
        // [r, α] = Gᵀ dU, then [r, r] = (Gᵀ dU) G
        for (t, v) in gu.iter_mut().enumerate() {
            let (s, j) = (t / a, t % a);
            *v = (0..a).map(|i| g(r, i, s) * at(i, j)).sum();
        }
        for (t, v) in out.iter_mut().enumerate() {
            let (s, b) = (t / r, t % r);
            *v = (0..a).map(|j| gu[s * a + j] * g(r, j, b)).sum::<f64>() as f32;
        }
    }
    dw
}

#[cfg(test)]
mod tests;
