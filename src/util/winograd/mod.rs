//! 3×3 convolutions (stride 1, pad 1, groups) by Winograd's F(2×2, 3×3) (Lavin & Gray 2015):
//! each 2×2 block of outputs from a 4×4 input tile with 16 multiplications instead of 36, as 16
//! matrix products of [K, C] filters by [C, tiles] transformed inputs. Direct convolutions
//! already run near the CPU's FMA peak, so fewer products is the only way to spend less time.
//! Both of fc7's users share this: ONNX Runtime's `fc7.Winograd` operator (`infer::winograd`)
//! and the training engine's forward pass and both gradients (`train::engine::cpu::winograd`).
//!
//! Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A per tile and channel pair, summed over input channels. Bᵀ
//! and Aᵀ hold only 0 and ±1 and G g Gᵀ is computed in f64, so the result differs from the
//! direct sum by rounding only (tests: within 1e-5 of the output's scale of an f64 reference).

mod transform;

use transform::{input_transform, output_gradient_transform, output_transform};

use crate::util::matmul::{matmul, Mat};

/// Maps at least this wide run faster as Winograd. Measured on 2 Zen 4 cores: the paper
/// network's 13 × 13 conv3..5 (192–384 channels a group) 82 against 91 ms a batch of 32 in
/// ONNX Runtime's direct convolutions; the quick network's 3 × 3 ones (48–96 channels), where
/// 2 × 2 tiles cover a 4 × 4 map, made indexing 3% slower. Between: unmeasured, left as it was.
pub const MIN_MAP: usize = 12;
/// At most this many tiles (2×2 outputs each) per call of `convolve_images`, so that its
/// transformed inputs and products ([16, Cg, tiles] and [16, Kg, tiles], ~5 MB for AlexNet's
/// conv3) stay in cache.
pub const MAX_TILES: usize = 256;

/// Input tile side of F(2×2, 3×3).
const A: usize = 4;
/// The filter transform G (A × 3) of F(2×2, 3×3).
const G: [[f64; 3]; A] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// One layer's shape: `c` input and `k` output channels in `groups` groups, `h` × `w` maps
/// (the same size out as in: 3×3, stride 1, pad 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layer {
    pub c: usize,
    pub k: usize,
    pub h: usize,
    pub w: usize,
    pub groups: usize,
}

impl Layer {
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

/// G g Gᵀ of every filter: [K, Cg, 3, 3] → [16, K, Cg] (element ξ = 4i + j of each 4×4 first).
pub fn transform_filters(w: &[f32], k: usize, cg: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; A * A * k * cg];
    for (f, g) in w.chunks_exact(9).enumerate() {
        // [A, 3] = G g, then [A, A] = (G g) Gᵀ
        let mut gg = [[0.0f64; 3]; A];
        for (i, row) in gg.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|t| G[i][t] * g[t * 3 + j] as f64).sum();
            }
        }
        for (i, row) in gg.iter().enumerate() {
            for (j, gj) in G.iter().enumerate() {
                let v: f64 = (0..3).map(|t| row[t] * gj[t]).sum();
                u[(i * A + j) * k * cg + f] = v as f32;
            }
        }
    }
    u
}

/// The transformed filters of `l.transposed()` from `l`'s filters `w` [K, Cg, 3, 3]: input
/// channel c of group g takes from output channel k of its group the filter turned by 180°
/// (a stride-1, pad-1 convolution's input gradient is such a convolution of its output's).
pub fn transform_filters_for_input_gradient(w: &[f32], l: Layer) -> Vec<f32> {
    let (cg, kg) = (l.c / l.groups, l.k / l.groups);
    // [C, Kg, 3, 3]
    let mut turned = vec![0.0f32; l.c * kg * 9];
    for (ci, dst) in turned.chunks_exact_mut(kg * 9).enumerate() {
        let (g, c) = (ci / cg, ci % cg);
        for (kk, f) in dst.chunks_exact_mut(9).enumerate() {
            let src = &w[((g * kg + kk) * cg + c) * 9..][..9];
            f.iter_mut()
                .zip(src.iter().rev())
                .for_each(|(d, &s)| *d = s);
        }
    }
    transform_filters(&turned, l.c, kg)
}

/// What a call works in: transformed inputs [16, Cg, P] and products [16, Kg, P], kept per
/// thread between calls (allocating them afresh faulted their pages in every time).
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// `f` on this thread's scratch, `v` and `m` sized to `[16, cg, p]` and `[16, kg, p]`.
fn with_scratch(cg: usize, kg: usize, p: usize, f: impl FnOnce(&mut Scratch)) {
    let mut s = SCRATCH.take();
    s.v.resize(16 * cg * p, 0.0);
    s.m.resize(16 * kg * p, 0.0);
    f(&mut s);
    SCRATCH.set(s);
}

/// The convolution (+ bias, then ReLU when `relu`) of whole images `x` [n, C, H, W] into `y`
/// [n, K, H, W], with `u` the transformed filters [16, K, Cg] and `bias` [K].
pub fn convolve_images(x: &[f32], u: &[f32], bias: &[f32], y: &mut [f32], l: Layer, relu: bool) {
    let (cg, kg) = (l.c / l.groups, l.k / l.groups);
    let n = x.len() / (l.c * l.h * l.w);
    let p = n * l.tiles();
    with_scratch(cg, kg, p, |s| {
        for g in 0..l.groups {
            input_transform(x, &mut s.v, l, g);
            for xi in 0..16 {
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

/// Adds to `du` [16, K, Cg] the filter gradient, in the transformed domain, of the images `x`
/// [n, C, H, W] whose outputs have gradients `dy` [n, K, H, W]: per element ξ and group,
/// (A δ Aᵀ)[ξ] [Kg, P] · (Bᵀ d B)[ξ]ᵀ [P, Cg], the adjoint of the forward's products. Calls
/// in a fixed order over a batch's images give the same sum on any number of threads.
pub fn accumulate_filter_gradient(x: &[f32], dy: &[f32], du: &mut [f32], l: Layer) {
    let (cg, kg) = (l.c / l.groups, l.k / l.groups);
    let p = x.len() / (l.c * l.h * l.w) * l.tiles();
    with_scratch(cg, kg, p, |s| {
        for g in 0..l.groups {
            input_transform(x, &mut s.v, l, g);
            output_gradient_transform(dy, &mut s.m, l, g);
            for xi in 0..16 {
                // [Kg, P] · [P, Cg], added to du's [Kg, Cg]
                let d = Mat::new(&s.m[xi * kg * p..][..kg * p], kg, p);
                let v = Mat::t(&s.v[xi * cg * p..][..cg * p], cg, p);
                let du = &mut du[(xi * l.k + g * kg) * cg..][..kg * cg];
                matmul(d, v, du, true, false);
            }
        }
    });
}

/// The filter gradient [K, Cg, 3, 3] from its transformed form `du` [16, K, Cg]: Gᵀ dU G per
/// filter (the adjoint of `transform_filters`), in f64.
pub fn filter_gradient(du: &[f32], k: usize, cg: usize) -> Vec<f32> {
    let mut dw = vec![0.0f32; k * cg * 9];
    for (f, out) in dw.chunks_exact_mut(9).enumerate() {
        let at = |i: usize, j: usize| du[(i * A + j) * k * cg + f] as f64;
        // [3, A] = Gᵀ dU, then [3, 3] = (Gᵀ dU) G
        let mut gu = [[0.0f64; A]; 3];
        for (a, row) in gu.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..A).map(|i| G[i][a] * at(i, j)).sum();
            }
        }
        for (t, v) in out.iter_mut().enumerate() {
            let (a, b) = (t / 3, t % 3);
            *v = (0..A).map(|j| gu[a][j] * G[j][b]).sum::<f64>() as f32;
        }
    }
    dw
}

#[cfg(test)]
mod tests;
