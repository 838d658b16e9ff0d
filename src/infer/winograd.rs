//! fc7's own 3×3 convolutions inside ONNX Runtime: the custom operator `fc7.Winograd` that
//! fc7's fp32 CPU sessions run in place of each 3×3, stride-1, pad-1 Conv + Relu on maps of at
//! least 12 × 12 (`model::onnx::winograd` rewrites it in). ONNX Runtime's direct convolutions
//! already run at the CPU's FMA peak (230–240 GFLOP/s on 2 Zen 4 cores), so the only way to
//! spend less time is fewer products: Winograd's F(2×2, 3×3) (Lavin & Gray 2015) computes each
//! 2×2 block of outputs from a 4×4 input tile with 16 multiplications instead of 36, as 16
//! matrix products of [K, C] filters by [C, tiles] transformed inputs. AlexNet's conv3..5 at
//! 13 × 13: 80 against 91 ms a batch of 32 (BENCHMARKS.md).
//!
//! Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A per tile and channel pair, summed over input channels; the
//! filters' G g Gᵀ is computed once, in f64, when the graph is rewritten. Bᵀ and Aᵀ hold only
//! 0 and ±1, so the result differs from the direct sum by rounding only (tests: within 1e-5 of
//! the output's scale against an f64 reference, 1.5e-6 of fc7's against ONNX Runtime's own).

use ort::operator::{
    BoxedKernel, ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

use crate::infer::lrn::in_parallel_by;
use crate::util::matmul::{matmul, Mat};

/// Work items of a batch per thread, so that threads finish close together.
const ITEMS_PER_THREAD: usize = 4;
/// At most this many tiles (2×2 outputs each) per item, so that an item's transformed inputs and
/// products ([16, Cg, tiles] and [16, Kg, tiles], ~5 MB for AlexNet's conv3) stay in cache.
const MAX_TILES: usize = 256;

/// One layer's shape: `c` input and `k` output channels in `groups` groups, `h` × `w` maps
/// (the same size out as in: 3×3, stride 1, pad 1).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layer {
    c: usize,
    k: usize,
    h: usize,
    w: usize,
    groups: usize,
}

impl Layer {
    fn tiles_h(&self) -> usize {
        self.h.div_ceil(2)
    }
    fn tiles_w(&self) -> usize {
        self.w.div_ceil(2)
    }
    /// Output tiles per image.
    fn tiles(&self) -> usize {
        self.tiles_h() * self.tiles_w()
    }
    /// Whole images per item for a batch of `n` on `threads`: few items make the products wide
    /// (each packs its [Kg, Cg] filters again), but every thread needs several.
    fn images_per_item(&self, n: usize, threads: usize) -> usize {
        let even = n.div_ceil(ITEMS_PER_THREAD * threads.max(1));
        even.clamp(1, (MAX_TILES / self.tiles()).max(1))
    }
}

/// What an item works in: transformed inputs [16, Cg, P] and products [16, Kg, P], kept per
/// thread between calls (allocating them afresh faulted their pages in every time).
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// The convolution (+ bias, then ReLU when `relu`) of whole images `x` [n, C, H, W] into `y`
/// [n, K, H, W], with `u` the transformed filters [16, K, Cg] and `bias` [K].
fn convolve_images(x: &[f32], u: &[f32], bias: &[f32], y: &mut [f32], l: Layer, relu: bool) {
    let (cg, kg) = (l.c / l.groups, l.k / l.groups);
    let n = x.len() / (l.c * l.h * l.w);
    let p = n * l.tiles();
    let mut s = SCRATCH.take();
    s.v.resize(16 * cg * p, 0.0);
    s.m.resize(16 * kg * p, 0.0);
    for g in 0..l.groups {
        input_transform(x, &mut s.v, l, g);
        for xi in 0..16 {
            let a = &u[(xi * l.k + g * kg) * cg..][..kg * cg];
            let b = &s.v[xi * cg * p..][..cg * p];
            let c = &mut s.m[xi * kg * p..][..kg * p];
            matmul(Mat::new(a, kg, cg), Mat::new(b, cg, p), c, false, false);
        }
        output_transform(&s.m, bias, y, l, g, relu);
    }
    SCRATCH.set(s);
}

/// Bᵀ d B of every 4×4 input tile of group `g`'s channels: `v` [16, Cg, P] with P the images'
/// tiles in order. Per plane, each padded input row is split into even and odd columns and
/// multiplied by B at once (d B of every tile in the row); the rows of those products, split
/// in turn into even and odd rows, make every Bᵀ (d B) a sum of two runs over the plane's tiles.
fn input_transform(x: &[f32], v: &mut [f32], l: Layer, g: usize) {
    let (cg, th, tw) = (l.c / l.groups, l.tiles_h(), l.tiles_w());
    let (p, t) = (v.len() / (16 * cg), l.tiles());
    let run = (th + 1) * tw; // one of d B's columns j over even (or odd) padded rows
    let mut h = vec![0.0f32; 8 * run]; // [parity, j, row / 2, tile column]
    let (mut e, mut o) = (vec![0.0f32; tw + 1], vec![0.0f32; tw + 1]);
    for (img, xi) in x.chunks_exact(l.c * l.h * l.w).enumerate() {
        for c in 0..cg {
            let plane = &xi[(g * cg + c) * l.h * l.w..][..l.h * l.w];
            for pr in 0..2 * (th + 1) {
                // padded row pr is input row pr − 1; padded column q + 1 is input column q
                e.fill(0.0);
                o.fill(0.0);
                if let Some(row) = pr.checked_sub(1).filter(|&r| r < l.h) {
                    for (q, &val) in plane[row * l.w..][..l.w].iter().enumerate() {
                        let half = q.div_ceil(2);
                        if q % 2 == 0 {
                            o[half] = val
                        } else {
                            e[half] = val
                        }
                    }
                }
                let at = (pr % 2) * 4 * run + (pr / 2) * tw;
                let [h0, h1, h2, h3] = four_mut(&mut h, [0, 1, 2, 3].map(|j| at + j * run), tw);
                combine([h0, h1, h2, h3], (&e[..tw], &e[1..]), (&o[..tw], &o[1..]));
            }
            for j in 0..4 {
                // rows 2ty and 2ty + 2 of column j, then 2ty + 1 and 2ty + 3, over every ty
                let (ev, od) = (&h[j * run..][..run], &h[(4 + j) * run..][..run]);
                let at = [0, 1, 2, 3].map(|i| ((i * 4 + j) * cg + c) * p + img * t);
                let rows = four_mut(v, at, t);
                combine(rows, (&ev[..t], &ev[tw..]), (&od[..t], &od[tw..]));
            }
        }
    }
}

/// Bᵀ's four rows applied along runs, into `r`: (d0 − d2, d1 + d2, d2 − d1, d1 − d3) per
/// element, with d0 and d2 from `e` (the even rows or columns) and d1 and d3 from `o`.
#[inline(always)]
fn combine(r: [&mut [f32]; 4], (e0, e2): (&[f32], &[f32]), (o1, o3): (&[f32], &[f32])) {
    let n = r[0].len();
    let [r0, r1, r2, r3] = r.map(|x| &mut x[..n]);
    let (e0, e2, o1, o3) = (&e0[..n], &e2[..n], &o1[..n], &o3[..n]);
    for q in 0..n {
        (r0[q], r1[q]) = (e0[q] - e2[q], o1[q] + e2[q]);
        (r2[q], r3[q]) = (e2[q] - o1[q], o1[q] - o3[q]);
    }
}

/// Four runs of `len` starting at the increasing, `len`-apart-or-more offsets `at`.
#[inline(always)]
fn four_mut(v: &mut [f32], at: [usize; 4], len: usize) -> [&mut [f32]; 4] {
    let (a, rest) = v[at[0]..].split_at_mut(at[1] - at[0]);
    let (b, rest) = rest.split_at_mut(at[2] - at[1]);
    let (c, d) = rest.split_at_mut(at[3] - at[2]);
    [&mut a[..len], &mut b[..len], &mut c[..len], &mut d[..len]]
}

/// Aᵀ m A of every tile's 16 products of group `g`, + bias (then ReLU), into `y` [n, K, H, W]:
/// per output plane, runs over all its tiles, then the 2×2 blocks put in place.
fn output_transform(m: &[f32], bias: &[f32], y: &mut [f32], l: Layer, g: usize, relu: bool) {
    let (kg, tw, t) = (l.k / l.groups, l.tiles_w(), l.tiles());
    let p = m.len() / (16 * kg);
    let mut s = vec![0.0f32; 8 * t]; // [i, j, tile] = (Aᵀ m)[i][j]
    let mut out = vec![0.0f32; 4 * t]; // [a, b, tile] = (Aᵀ m A)[a][b]
    for (img, yi) in y.chunks_exact_mut(l.k * l.h * l.w).enumerate() {
        for k in 0..kg {
            let ch = g * kg + k;
            let mrun = |xi: usize| &m[(xi * kg + k) * p + img * t..][..t];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (mrun(j), mrun(4 + j), mrun(8 + j), mrun(12 + j));
                let (s0, s1) = s.split_at_mut(4 * t);
                let (s0, s1) = (&mut s0[j * t..][..t], &mut s1[j * t..][..t]);
                for q in 0..t {
                    s0[q] = m0[q] + m1[q] + m2[q];
                    s1[q] = m1[q] - m2[q] - m3[q];
                }
            }
            for a in 0..2 {
                let si = |j: usize| &s[(a * 4 + j) * t..][..t];
                let (s0, s1, s2, s3) = (si(0), si(1), si(2), si(3));
                let (y0, y1) = out[a * 2 * t..][..2 * t].split_at_mut(t);
                for q in 0..t {
                    y0[q] = s0[q] + s1[q] + s2[q] + bias[ch];
                    y1[q] = s1[q] - s2[q] - s3[q] + bias[ch];
                }
            }
            if relu {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            let plane = &mut yi[ch * l.h * l.w..][..l.h * l.w];
            for (r, row) in plane.chunks_exact_mut(l.w).enumerate() {
                let (a, ty) = (r % 2, r / 2);
                let y0 = &out[a * 2 * t + ty * tw..][..tw];
                let y1 = &out[(a * 2 + 1) * t + ty * tw..][..tw];
                for ((pair, a), b) in row.chunks_mut(2).zip(y0).zip(y1) {
                    pair[0] = *a;
                    if let Some(second) = pair.get_mut(1) {
                        *second = *b;
                    }
                }
            }
        }
    }
}

/// The whole batch: items of whole images on ONNX Runtime's threads.
fn convolve(
    ctx: &ComputeContext,
    x: &[f32],
    (u, bias): (&[f32], &[f32]),
    y: &mut [f32],
    l: Layer,
    relu: bool,
) -> ort::Result<()> {
    if x.is_empty() || y.is_empty() {
        return Ok(()); // no images, or empty maps
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = l.images_per_item(x.len() / (l.c * l.h * l.w), threads);
    let (per_x, per_y) = (per * l.c * l.h * l.w, per * l.k * l.h * l.w);
    in_parallel_by(ctx, (x, per_x), (y, per_y), |x, y| {
        convolve_images(x, u, bias, y, l, relu)
    })
}

pub struct WinogradOp;

impl Operator for WinogradOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        crate::model::onnx::fused::WINOGRAD
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [0, 1, 2].map(|_| OperatorInput::required(TensorElementType::Float32))
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, k: &KernelContext<'attr>) -> ort::Result<BoxedKernel<'attr>> {
        let groups = k.get::<i64>("group").unwrap_or(1).max(1) as usize;
        let relu = k.get::<i64>("relu").unwrap_or(0) != 0;
        Ok(Box::new(WinogradKernel { groups, relu }))
    }
}

struct WinogradKernel {
    groups: usize,
    relu: bool,
}

impl Kernel for WinogradKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let err = |what: &str| ort::Error::new(format!("fc7.Winograd: {what}"));
        let input = |i| ctx.input(i)?.ok_or_else(|| err("an input is missing"));
        let (xv, uv, bv) = (input(0)?, input(1)?, input(2)?);
        let (xs, x) = xv.try_extract_tensor::<f32>()?;
        let (us, u) = uv.try_extract_tensor::<f32>()?;
        let (_, bias) = bv.try_extract_tensor::<f32>()?;
        let (&[n, c, h, w], &[16, k, cg]) = (&**xs, &**us) else {
            return Err(err(&format!("shapes {xs:?} and {us:?}")));
        };
        let l = Layer {
            c: c as usize,
            k: k as usize,
            h: h as usize,
            w: w as usize,
            groups: self.groups,
        };
        if l.c != cg as usize * l.groups || !l.k.is_multiple_of(l.groups) || bias.len() != l.k {
            return Err(err(&format!("{l:?} with filters {us:?}")));
        }
        let mut out = ctx
            .output(0, vec![n, k, h, w])?
            .ok_or_else(|| err("no output"))?;
        let (_, y) = out.try_extract_tensor_mut::<f32>()?;
        convolve(ctx, x, (u, bias), y, l, self.relu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::winograd::transform_filters;

    /// The convolution straight from its definition, in f64: 3×3, stride 1, pad 1, groups.
    fn reference(x: &[f32], w: &[f32], bias: &[f32], l: Layer, relu: bool) -> Vec<f32> {
        let (cg, kg, (h, wd)) = (l.c / l.groups, l.k / l.groups, (l.h as isize, l.w as isize));
        let n = x.len() / (l.c * l.h * l.w);
        let mut y = vec![0.0f32; n * l.k * l.h * l.w];
        for img in 0..n {
            for k in 0..l.k {
                let g = k / kg;
                for oy in 0..h {
                    for ox in 0..wd {
                        let mut sum = bias[k] as f64;
                        for c in 0..cg {
                            for (dy, dx) in (0..9).map(|t| (t / 3, t % 3)) {
                                let (iy, ix) = (oy + dy - 1, ox + dx - 1);
                                if (0..h).contains(&iy) && (0..wd).contains(&ix) {
                                    let xi = ((img * l.c + g * cg + c) as isize * h + iy) * wd + ix;
                                    let wi = (k * cg + c) * 9 + (dy * 3 + dx) as usize;
                                    sum += x[xi as usize] as f64 * w[wi] as f64;
                                }
                            }
                        }
                        let v = if relu { sum.max(0.0) } else { sum };
                        y[((img * l.k + k) as isize * h + oy) as usize * l.w + ox as usize] =
                            v as f32;
                    }
                }
            }
        }
        y
    }

    /// Values in [-1, 1) from a multiplicative hash.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let h = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
                ((h >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    fn check(l: Layer, n: usize, relu: bool) {
        let cg = l.c / l.groups;
        let x = values(n * l.c * l.h * l.w, 1);
        let w = values(l.k * cg * 9, 2);
        let bias = values(l.k, 3);
        let want = reference(&x, &w, &bias, l, relu);
        let u = transform_filters(&w, l.k, cg);
        let mut got = vec![f32::NAN; want.len()];
        convolve_images(&x, &u, &bias, &mut got, l, relu);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * scale, "{l:?} at {i}: {a} vs {b}");
        }
    }

    #[test]
    fn matches_the_direct_convolution_on_odd_and_even_maps_with_groups() {
        // odd maps end in half tiles; two groups read and write their own channels
        check(
            Layer {
                c: 8,
                k: 6,
                h: 13,
                w: 13,
                groups: 2,
            },
            3,
            true,
        );
        check(
            Layer {
                c: 5,
                k: 7,
                h: 6,
                w: 9,
                groups: 1,
            },
            2,
            false,
        );
        check(
            Layer {
                c: 3,
                k: 4,
                h: 1,
                w: 2,
                groups: 1,
            },
            1,
            false,
        );
    }
}
