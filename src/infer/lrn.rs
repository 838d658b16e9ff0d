//! fc7's own local response normalisation inside ONNX Runtime: the custom operator `fc7.Lrn`
//! that fc7's CPU sessions run in place of the exported graph's LRN (`model::onnx::fused`
//! rewrites it in). The exported graph spells the LRN in standard operators that ONNX Runtime
//! runs fast enough (Σx² as a product with a [C, C] band matrix, then x / (k + αΣ)^¾ by two
//! square roots), but it does 19× the arithmetic of a 5-channel window and six passes over
//! memory: 17% of the fp32 network's time and 45% of the int8 network's on 2 cores
//! (BENCHMARKS.md). Here it is one pass: the squares of a tile, a 5-tap sum, the power.
//!
//! y = x / (bias + α Σ_{|c' − c| ≤ size/2} x_c'²)^β along `axis` (1: NCHW, −1: NHWC), the
//! same window and constants as the training engines and the exported graph.

use std::sync::Mutex;

use ort::operator::{
    BoxedKernel, ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput,
    OperatorOutput,
};
use ort::value::TensorElementType;

use crate::model::onnx::fused::{DOMAIN, OP};

/// The LRN's constants as the operator's attributes carry them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnParams {
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
}

impl From<crate::model::Lrn> for LrnParams {
    fn from(l: crate::model::Lrn) -> Self {
        LrnParams {
            size: l.size,
            alpha: l.alpha,
            beta: l.beta,
            bias: l.k,
        }
    }
}

/// Columns of an NCHW plane normalised per tile: [C + 4, 1024] squares (400 KB) stay in the L2
/// cache (256 and 64 measured 20% slower on one thread: 96 planes are read side by side).
const TILE: usize = 1024;

/// Normalises `x` into `y`, both whole blocks of `c` channels × `inner` positions (NCHW: one
/// image, `inner` = H·W; NHWC: rows of `c` with `inner` = 1). The loops are compiled for
/// AVX-512 and for AVX2 and picked at run time (the build itself targets any x86-64); no
/// path contracts a product and a sum into one rounding, so all give the same bits.
pub fn normalise(x: &[f32], y: &mut [f32], c: usize, inner: usize, p: &LrnParams) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::util::isa::avx512f() {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { normalise_avx512(x, y, c, inner, p) };
        }
        if crate::util::isa::avx2() {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { normalise_avx2(x, y, c, inner, p) };
        }
    }
    normalise_any(x, y, c, inner, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn normalise_avx512(x: &[f32], y: &mut [f32], c: usize, inner: usize, p: &LrnParams) {
    normalise_any(x, y, c, inner, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn normalise_avx2(x: &[f32], y: &mut [f32], c: usize, inner: usize, p: &LrnParams) {
    normalise_any(x, y, c, inner, p)
}

#[inline(always)]
fn normalise_any(x: &[f32], y: &mut [f32], c: usize, inner: usize, p: &LrnParams) {
    if inner == 1 {
        return normalise_rows(x, y, c, p);
    }
    let half = p.size / 2;
    let t = inner.min(TILE);
    // [c + 2·half, t] squares scaled by α, zero rows above and below: every window has size taps
    let mut sq = vec![0.0f32; (c + 2 * half) * t];
    let mut den = vec![0.0f32; t];
    for (xb, yb) in x.chunks_exact(c * inner).zip(y.chunks_exact_mut(c * inner)) {
        for t0 in (0..inner).step_by(t) {
            let w = t.min(inner - t0);
            for ch in 0..c {
                let src = &xb[ch * inner + t0..][..w];
                let dst = &mut sq[(ch + half) * t..][..w];
                dst.iter_mut().zip(src).for_each(|(s, v)| *s = v * v);
            }
            for ch in 0..c {
                den[..w].fill(0.0);
                for tap in 0..p.size {
                    let row = &sq[(ch + tap) * t..][..w];
                    den[..w]
                        .iter_mut()
                        .zip(row)
                        .for_each(|(d, s)| *d += p.alpha * s);
                }
                let src = &xb[ch * inner + t0..][..w];
                let dst = &mut yb[ch * inner + t0..][..w];
                power(src, &den[..w], dst, p);
            }
        }
    }
}

/// NHWC: each row of `c` channels, the window sum vectorised along the row.
#[inline(always)]
fn normalise_rows(x: &[f32], y: &mut [f32], c: usize, p: &LrnParams) {
    let half = p.size / 2;
    let mut sq = vec![0.0f32; c + 2 * half];
    let mut den = vec![0.0f32; c];
    for (xr, yr) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
        sq[half..half + c]
            .iter_mut()
            .zip(xr)
            .for_each(|(s, v)| *s = v * v);
        den.fill(0.0);
        for tap in 0..p.size {
            den.iter_mut()
                .zip(&sq[tap..tap + c])
                .for_each(|(d, s)| *d += p.alpha * s);
        }
        power(xr, &den, yr, p);
    }
}

/// y = x / (bias + d)^β; β = ¾ by two square roots as the exported graph computes it.
#[inline(always)]
fn power(x: &[f32], d: &[f32], y: &mut [f32], p: &LrnParams) {
    let it = y.iter_mut().zip(x).zip(d);
    if p.beta == 0.75 {
        it.for_each(|((y, x), d)| {
            let r2 = (p.bias + d).sqrt();
            *y = x / (r2 * r2.sqrt());
        });
    } else {
        it.for_each(|((y, x), d)| *y = x * (p.bias + d).powf(-p.beta));
    }
}

/// The channel count and positions per channel of a tensor of `shape` normalised along `axis`.
fn layout(shape: &[i64], axis: i64) -> Option<(usize, usize)> {
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    match (axis, dims.len()) {
        (1, r) if r >= 2 => Some((dims[1], dims[2..].iter().product())),
        (-1, r) if r >= 1 => Some((dims[r - 1], 1)),
        _ => None,
    }
}

/// The `fc7.Lrn` operator: one float input, its normalised copy out.
pub struct LrnOp;

impl Operator for LrnOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        OP
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Float32)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, k: &KernelContext<'attr>) -> ort::Result<BoxedKernel<'attr>> {
        let p = params(k)?;
        let axis = k.get::<i64>("axis").unwrap_or(1);
        Ok(Box::new(LrnKernel { p, axis }))
    }
}

/// The LRN's constants from a node's attributes (`size`, `alpha`, `beta`, `bias`).
pub(crate) fn params(k: &KernelContext) -> ort::Result<LrnParams> {
    let attr = |name: &str| {
        k.get::<f32>(name)
            .ok_or_else(|| ort::Error::new(format!("fc7's LRN needs the attribute '{name}'")))
    };
    let size = k.get::<i64>("size").unwrap_or(0);
    if size < 1 || size % 2 == 0 {
        return Err(ort::Error::new("fc7's LRN needs an odd 'size'"));
    }
    Ok(LrnParams {
        size: size as usize,
        alpha: attr("alpha")?,
        beta: attr("beta")?,
        bias: attr("bias")?,
    })
}

struct LrnKernel {
    p: LrnParams,
    axis: i64,
}

impl Kernel for LrnKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = ctx
            .input(0)?
            .ok_or_else(|| ort::Error::new("fc7.Lrn: no input"))?;
        let (shape, x) = input.try_extract_tensor::<f32>()?;
        let (c, inner) = layout(shape, self.axis).ok_or_else(|| {
            ort::Error::new(format!("fc7.Lrn: shape {shape:?} on axis {}", self.axis))
        })?;
        let mut out = ctx
            .output(0, shape.to_vec())?
            .ok_or_else(|| ort::Error::new("fc7.Lrn: no output"))?;
        let (_, y) = out.try_extract_tensor_mut::<f32>()?;
        let block = (c * inner).max(1);
        // whole blocks per work item, about 64 KB of input each
        let per = (16_384 / block).max(1) * block;
        let p = self.p;
        in_parallel(ctx, x, y, per, |x, y| normalise(x, y, c, inner, &p))
    }
}

/// Runs `f` on matching `per`-element chunks of `x` and `y` on ONNX Runtime's own threads (so
/// that an operator never waits behind fc7's decoding threads).
pub(crate) fn in_parallel<A: Sync, B: Send>(
    ctx: &ComputeContext,
    x: &[A],
    y: &mut [B],
    per: usize,
    f: impl Fn(&[A], &mut [B]) + Sync + Send,
) -> ort::Result<()> {
    in_parallel_by(ctx, (x, per), (y, per), f)
}

/// `in_parallel` with chunks of `x` and `y` of their own sizes (an operator whose output is not
/// its input's size: the k-th chunk of each belongs together).
pub(crate) fn in_parallel_by<A: Sync, B: Send>(
    ctx: &ComputeContext,
    (x, per_x): (&[A], usize),
    (y, per_y): (&mut [B], usize),
    f: impl Fn(&[A], &mut [B]) + Sync + Send,
) -> ort::Result<()> {
    let items: Vec<Mutex<(&[A], &mut [B])>> = x
        .chunks(per_x)
        .zip(y.chunks_mut(per_y))
        .map(Mutex::new)
        .collect();
    ctx.par_for(items.len(), 0, |i| {
        let mut g = items[i].lock().expect("one item per call");
        let (x, y) = &mut *g;
        f(x, y)
    })
}

/// The domain a CPU session registers so that rewritten (and cached) graphs load.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?
        .add(LrnOp)?
        .add(crate::infer::qlrn::QLrnOp)?
        .add(crate::infer::winograd::WinogradOp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper() -> LrnParams {
        crate::model::Lrn::PAPER.into()
    }

    /// The LRN in f64 straight from its definition, for NCHW.
    fn reference(x: &[f32], c: usize, inner: usize, p: &LrnParams) -> Vec<f32> {
        let half = (p.size / 2) as isize;
        let mut y = vec![0.0; x.len()];
        for (b, xb) in x.chunks(c * inner).enumerate() {
            for ch in 0..c as isize {
                for j in 0..inner {
                    let s: f64 = (ch - half..=ch + half)
                        .filter(|&o| (0..c as isize).contains(&o))
                        .map(|o| (xb[o as usize * inner + j] as f64).powi(2))
                        .sum();
                    let d = p.bias as f64 + p.alpha as f64 * s;
                    let v = xb[ch as usize * inner + j] as f64 / d.powf(p.beta as f64);
                    y[b * c * inner + ch as usize * inner + j] = v as f32;
                }
            }
        }
        y
    }

    /// Post-ReLU-like activations in [0, 40), from a multiplicative hash.
    fn input(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let h = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
                40.0 * ((h >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
            .fold(0.0, f32::max)
    }

    #[test]
    fn matches_the_definition_in_both_layouts_and_across_tiles() {
        // 7 channels (windows cut at both ends), 300 positions (a tile and a remainder), 2 images
        let (c, inner) = (7, 300);
        let x = input(2 * c * inner, 3);
        let want = reference(&x, c, inner, &paper());
        let mut y = vec![0.0; x.len()];
        normalise(&x, &mut y, c, inner, &paper());
        assert!(worst(&y, &want) < 2e-6, "NCHW: {}", worst(&y, &want));
        // the same numbers as NHWC rows
        let nhwc: Vec<f32> = (0..2 * inner * c)
            .map(|i| x[(i / (inner * c)) * c * inner + (i % c) * inner + (i / c) % inner])
            .collect();
        let mut y2 = vec![0.0; x.len()];
        normalise(&nhwc, &mut y2, c, 1, &paper());
        for (i, v) in y2.iter().enumerate() {
            let j = (i / (inner * c)) * c * inner + (i % c) * inner + (i / c) % inner;
            assert!(
                (v - want[j]).abs() <= 2e-6 * want[j].abs().max(1e-3),
                "NHWC {i}"
            );
        }
        // another β takes the powf path
        let p = LrnParams {
            beta: 0.6,
            ..paper()
        };
        normalise(&x, &mut y, c, inner, &p);
        assert!(worst(&y, &reference(&x, c, inner, &p)) < 2e-6);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_instruction_set_gives_the_same_bits() {
        let x = input(2 * 96 * 300, 9);
        let mut want = vec![0.0; x.len()];
        let mut got = vec![0.0; x.len()];
        for inner in [300, 1] {
            normalise_any(&x, &mut want, 96, inner, &paper());
            if std::arch::is_x86_feature_detected!("avx2") {
                unsafe { normalise_avx2(&x, &mut got, 96, inner, &paper()) };
                assert!(got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                unsafe { normalise_avx512(&x, &mut got, 96, inner, &paper()) };
                assert!(got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    #[test]
    fn hand_value_of_one_channel_window() {
        // three channels of one position, x = 10, 20, 30, size 3, α 0.01, k 1, β 0.75:
        // channel 1 sees 100 + 400 + 900 → (1 + 14)^0.75 = 7.6220
        let p = LrnParams {
            size: 3,
            alpha: 0.01,
            beta: 0.75,
            bias: 1.0,
        };
        let mut y = [0.0; 3];
        normalise(&[10.0, 20.0, 30.0], &mut y, 3, 1, &p);
        assert!((y[1] - 20.0 / 15f32.powf(0.75)).abs() < 1e-5, "{y:?}");
        assert!((y[1] - 2.6240).abs() < 1e-3);
        assert!((y[0] - 10.0 / 6f32.powf(0.75)).abs() < 1e-5, "{y:?}");
    }

    #[test]
    fn layouts_are_read_from_the_shape() {
        assert_eq!(layout(&[32, 96, 55, 55], 1), Some((96, 3025)));
        assert_eq!(layout(&[32, 55, 55, 96], -1), Some((96, 1)));
        assert_eq!(layout(&[32], 1), None);
    }
}
