//! fc7's own 3×3 and 5×5 convolutions inside ONNX Runtime: the custom operator `fc7.Winograd`
//! that fc7's fp32 CPU sessions run in place of each such stride-1 "same" Conv + Relu on maps of
//! at least 12 × 12 (`model::onnx::winograd` rewrites it in, with the filters already
//! transformed: [16 or 36, K, Cg] says which). The arithmetic is `util::winograd`'s F(2×2, 3×3)
//! or F(2×2, 5×5); this is the operator around it: shapes checked, the batch cut into items of
//! whole images on ONNX Runtime's threads. ONNX Runtime's direct convolutions already run at
//! the CPU's FMA peak; AlexNet's conv3..5 at 13 × 13 take 80 against 91 ms a batch of 32 here
//! (BENCHMARKS.md), and with conv2 (27 × 27, 5×5) too the paper network extracts 158–164
//! images/s against 145–148, within 2.9e-6 of ONNX Runtime's own.

use ort::operator::{
    BoxedKernel, ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

use crate::infer::lrn::in_parallel_by;
use crate::util::winograd::{convolve_images, Layer};

/// Work items of a batch per thread, so that threads finish close together.
const ITEMS_PER_THREAD: usize = 4;

/// Whole images per item for a batch of `n` on `threads`: few items make the products wide
/// (each packs its [Kg, Cg] filters again), but every thread needs several.
fn images_per_item(l: Layer, n: usize, threads: usize) -> usize {
    let even = n.div_ceil(ITEMS_PER_THREAD * threads.max(1));
    even.clamp(1, l.images_per_call())
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
    let per = images_per_item(l, x.len() / (l.c * l.h * l.w), threads);
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
        let (&[n, c, h, w], &[e @ (16 | 36), k, cg]) = (&**xs, &**us) else {
            return Err(err(&format!("shapes {xs:?} and {us:?}")));
        };
        let l = Layer {
            c: c as usize,
            k: k as usize,
            h: h as usize,
            w: w as usize,
            groups: self.groups,
            r: if e == 16 { 3 } else { 5 },
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
