//! fc7's LRN on 8-bit activations: the operator `fc7.QLrn` that replaces, in the int8 graph,
//! the chain DequantizeLinear → Relu → `fc7.Lrn` → QuantizeLinear around each LRN (NHWC rows
//! of channels). Four nodes and three float tensors of 37 MB become one pass over bytes: the
//! int8 network's time went 117 → ~100 ms a batch of 32 on 2 cores (BENCHMARKS.md).
//!
//! Each step is computed as ONNX Runtime computes it on the rewritten-away nodes: (q − zp)·s,
//! max(0, ·), `lrn::normalise` itself, then y / s′ clamped to the uint8 range, rounded half
//! to even, + zp′.

use ort::operator::{
    BoxedKernel, ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

use crate::infer::lrn::{in_parallel, normalise, params, LrnParams};
use crate::model::onnx::fused::QOP;

/// A uint8 tensor's float meaning: value = (q − zero)·scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quant {
    pub scale: f32,
    pub zero: u8,
}

/// Rows of `c` channels normalised per pass: their floats (64 KB) stay in the L1/L2 cache.
const ROWS_FLOATS: usize = 16_384;

/// `y` = quantise(LRN(max(0, dequantise(`x`)))) over NHWC rows of `c` channels.
pub fn normalise_u8(x: &[u8], y: &mut [u8], c: usize, (qx, qy): (Quant, Quant), p: &LrnParams) {
    let per = (ROWS_FLOATS / c).max(1) * c;
    let (mut f, mut g) = (vec![0.0f32; per], vec![0.0f32; per]);
    for (xs, ys) in x.chunks(per).zip(y.chunks_mut(per)) {
        let (f, g) = (&mut f[..xs.len()], &mut g[..xs.len()]);
        convert(xs, f, g, ys, qx, qy, c, p);
    }
}

#[allow(clippy::too_many_arguments)]
fn convert(
    x: &[u8],
    f: &mut [f32],
    g: &mut [f32],
    y: &mut [u8],
    qx: Quant,
    qy: Quant,
    c: usize,
    p: &LrnParams,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::util::isa::avx512f() {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { dequantise_avx512(x, f, qx) };
            normalise(f, g, c, 1, p);
            // SAFETY: as above.
            return unsafe { quantise_avx512(g, y, qy) };
        }
        if crate::util::isa::avx2() {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { dequantise_avx2(x, f, qx) };
            normalise(f, g, c, 1, p);
            // SAFETY: as above.
            return unsafe { quantise_avx2(g, y, qy) };
        }
    }
    dequantise(x, f, qx);
    normalise(f, g, c, 1, p);
    quantise(g, y, qy)
}

/// DequantizeLinear then Relu.
#[inline(always)]
fn dequantise(x: &[u8], f: &mut [f32], q: Quant) {
    let zero = q.zero as i32;
    f.iter_mut()
        .zip(x)
        .for_each(|(f, &x)| *f = ((x as i32 - zero) as f32 * q.scale).max(0.0));
}

/// QuantizeLinear to uint8: divide, clamp, round half to even, add the zero point.
#[inline(always)]
fn quantise(g: &[f32], y: &mut [u8], q: Quant) {
    let zero = q.zero as f32;
    let (lo, hi) = (-zero, 255.0 - zero);
    // Comparisons rather than f32::max/min, and the whole number v + zero (exact in f32, in
    // [0, 255]) converted unchecked: the loop vectorises (with saturating conversions it ran
    // element by element, a fifth of the operator's time). A NaN goes to lo, as before.
    y.iter_mut().zip(g).for_each(|(y, &g)| {
        let v = g / q.scale;
        let v = if v >= lo { v } else { lo };
        let v = if v <= hi { v } else { hi };
        // SAFETY: v + zero is finite and within [0, 255] after the two comparisons.
        *y = unsafe { (v.round_ties_even() + zero).to_int_unchecked::<i32>() } as u8;
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dequantise_avx512(x: &[u8], f: &mut [f32], q: Quant) {
    dequantise(x, f, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantise_avx512(g: &[f32], y: &mut [u8], q: Quant) {
    quantise(g, y, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantise_avx2(x: &[u8], f: &mut [f32], q: Quant) {
    dequantise(x, f, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantise_avx2(g: &[f32], y: &mut [u8], q: Quant) {
    quantise(g, y, q)
}

/// The `fc7.QLrn` operator: x (uint8, NHWC), x's scale and zero point, y's scale and zero point.
pub struct QLrnOp;

impl Operator for QLrnOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        QOP
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        use TensorElementType::{Float32, Uint8};
        [Uint8, Float32, Uint8, Float32, Uint8].map(OperatorInput::required)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Uint8)]
    }

    fn create_kernel<'attr>(&self, k: &KernelContext<'attr>) -> ort::Result<BoxedKernel<'attr>> {
        Ok(Box::new(QLrnKernel { p: params(k)? }))
    }
}

struct QLrnKernel {
    p: LrnParams,
}

/// Scalar input `i` of the node.
fn scalar<T: ort::value::PrimitiveTensorElementType + Copy>(
    ctx: &ComputeContext,
    i: usize,
) -> ort::Result<T> {
    let v = ctx
        .input(i)?
        .ok_or_else(|| ort::Error::new("fc7.QLrn: missing input"))?;
    let (_, data) = v.try_extract_tensor::<T>()?;
    data.first()
        .copied()
        .ok_or_else(|| ort::Error::new("fc7.QLrn: empty scale or zero point"))
}

impl Kernel for QLrnKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = ctx
            .input(0)?
            .ok_or_else(|| ort::Error::new("fc7.QLrn: no input"))?;
        let (shape, x) = input.try_extract_tensor::<u8>()?;
        let c = *shape
            .last()
            .ok_or_else(|| ort::Error::new("fc7.QLrn: a scalar input"))? as usize;
        let qx = Quant {
            scale: scalar(ctx, 1)?,
            zero: scalar(ctx, 2)?,
        };
        let qy = Quant {
            scale: scalar(ctx, 3)?,
            zero: scalar(ctx, 4)?,
        };
        let mut out = ctx
            .output(0, shape.to_vec())?
            .ok_or_else(|| ort::Error::new("fc7.QLrn: no output"))?;
        let (_, y) = out.try_extract_tensor_mut::<u8>()?;
        let per = (4 * ROWS_FLOATS / c.max(1)).max(1) * c.max(1);
        let p = self.p;
        in_parallel(ctx, x, y, per, |x, y| normalise_u8(x, y, c, (qx, qy), &p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values_through_dequantise_normalise_quantise() {
        // one row of 3 channels, size 3, α 0.01, k 1: x = (q − 2)·0.5 → 0 (Relu of −1), 10, 20;
        // channel 1: 10 / (1 + 0.01·500)^0.75 = 10 / 6^0.75 = 2.6084 → /0.1 = 26.08 → 26 + 3
        let p = LrnParams {
            size: 3,
            alpha: 0.01,
            beta: 0.75,
            bias: 1.0,
        };
        let (qx, qy) = (
            Quant {
                scale: 0.5,
                zero: 2,
            },
            Quant {
                scale: 0.1,
                zero: 3,
            },
        );
        let mut y = [0u8; 3];
        normalise_u8(&[0, 22, 42], &mut y, 3, (qx, qy), &p);
        // channel 0 is 0 → the zero point; channel 2: 20 / (1 + 0.01·500)^0.75 = 5.2168 → 52 + 3
        assert_eq!(y, [3, 29, 55]);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_instruction_set_gives_the_same_bytes() {
        // halves (ties), values past both ends, a NaN; a zero point inside the range
        let g: Vec<f32> = (0..4000)
            .map(|i| (i as f32 - 1000.0) * 0.025)
            .chain([f32::NAN])
            .collect();
        let q = Quant {
            scale: 0.05,
            zero: 17,
        };
        let mut want = vec![0u8; g.len()];
        quantise(&g, &mut want, q);
        assert_eq!((want[0], want[4000], want[3999]), (0, 0, 255));
        // 0.025 / 0.05 = 0.5 rounds to the even 0; 0.05 / 0.05 = 1; then + 17
        assert_eq!((want[1000], want[1001], want[1002]), (17, 17, 18));
        let x: Vec<u8> = (0..=255).collect();
        let mut f_want = vec![0.0; 256];
        dequantise(&x, &mut f_want, q);
        let (mut got, mut f) = (vec![0u8; g.len()], vec![0.0; 256]);
        if std::arch::is_x86_feature_detected!("avx2") {
            unsafe {
                (
                    quantise_avx2(&g, &mut got, q),
                    dequantise_avx2(&x, &mut f, q),
                )
            };
            assert!(got == want && f == f_want);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            unsafe {
                (
                    quantise_avx512(&g, &mut got, q),
                    dequantise_avx512(&x, &mut f, q),
                )
            };
            assert!(got == want && f == f_want);
        }
    }

    #[test]
    fn agrees_with_the_float_operator_and_saturates() {
        let c = 96;
        let x: Vec<u8> = (0..40 * c)
            .map(|i| ((i * 37 + i / 7) % 256) as u8)
            .collect();
        let (qx, qy) = (
            Quant {
                scale: 0.2,
                zero: 0,
            },
            Quant {
                scale: 0.05,
                zero: 0,
            },
        );
        let mut y = vec![0u8; x.len()];
        normalise_u8(&x, &mut y, c, (qx, qy), &crate::model::Lrn::PAPER.into());
        let f: Vec<f32> = x.iter().map(|&q| q as f32 * 0.2).collect();
        let mut g = vec![0.0; f.len()];
        normalise(&f, &mut g, c, 1, &crate::model::Lrn::PAPER.into());
        for (i, (&q, &v)) in y.iter().zip(&g).enumerate() {
            let want = (v / 0.05).round().min(255.0);
            assert!(
                (q as f32 - want).abs() <= 0.5,
                "{i}: {q} against {want} ({v})"
            );
        }
        assert!(y.contains(&255), "values past the range saturate");
    }
}
