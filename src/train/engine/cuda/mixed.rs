//! `Math::Bf16` on the CUDA engine: each convolution and fully connected product takes bf16
//! copies of its f32 operands (the `to_bf16` kernel: round to nearest, ties to even), runs on
//! tensor cores accumulating in FP32 (cuDNN on bf16 tensors; cuBLAS GemmEx writing f32), and
//! hands back f32 — convolution outputs and gradients through `from_bf16`, the fully connected
//! products directly. Biases and their gradients, everything outside the products, and the
//! master weights the copies are made from stay FP32, as does the SGD update.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType};
use cudarc::cublas::GemmConfig;
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::kernels::{elementwise, launched};
use super::{cuda_err, Cuda, Tensor};
use crate::error::Result;
use crate::model::Conv;
use crate::train::engine::Shape;

/// A device buffer of bf16 values (their bits).
pub type Half = CudaSlice<u16>;

impl Cuda {
    /// A bf16 copy of `t`.
    pub(super) fn narrow(&self, t: &Tensor) -> Result<Half> {
        let len = t.len();
        let mut h: Half = self.alloc(len)?;
        let len64 = len as i64;
        let mut b = self.stream.launch_builder(&self.k.to_bf16);
        b.arg(t).arg(&mut h).arg(&len64);
        // SAFETY: t and h hold len elements.
        launched(unsafe { b.launch(elementwise(len)) }, "to_bf16")?;
        Ok(h)
    }

    /// The f32 values of `h` (exact).
    pub(super) fn widen(&self, h: &Half) -> Result<Tensor> {
        let len = h.len();
        let mut t = self.alloc(len)?;
        let len64 = len as i64;
        let mut b = self.stream.launch_builder(&self.k.from_bf16);
        b.arg(h).arg(&mut t).arg(&len64);
        // SAFETY: h and t hold len elements.
        launched(unsafe { b.launch(elementwise(len)) }, "from_bf16")?;
        Ok(t)
    }

    /// y = bf16(conv(bf16(x), bf16(w))) + b, in f32. x: [N, Cin, H, W] → y: ys.
    pub(super) fn conv_forward_bf16(
        &self,
        (x, xs): (&Tensor, Shape),
        w: &Tensor,
        b: &Tensor,
        c: &Conv,
        ys: Shape,
    ) -> Result<Tensor> {
        let (xb, wb) = (self.narrow(x)?, self.narrow(w)?);
        let mut yb: Half = self.alloc(ys.len())?;
        let (xp, wp, yp) = (self.ptr(&xb), self.ptr(&wb), self.ptr_mut(&mut yb));
        self.dnn.conv_forward(xp, xs, wp, c, yp, ys)?;
        let mut y = self.widen(&yb)?;
        let yp = self.ptr_mut(&mut y);
        self.dnn.add_bias(self.ptr(b), yp, ys)?;
        Ok(y)
    }

    /// dw = bf16(∂/∂w), dx = bf16(∂/∂x) from bf16 copies of x, w and dy, in f32; db from the
    /// f32 dy.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_backward_bf16(
        &self,
        (x, xs): (&Tensor, Shape),
        w: &Tensor,
        c: &Conv,
        (dy, ys): (&Tensor, Shape),
        dw: &mut Tensor,
        db: &mut Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        let dbp = self.ptr_mut(db);
        self.dnn.bias_grad(self.ptr(dy), ys, dbp)?;
        let (xb, wb, dyb) = (self.narrow(x)?, self.narrow(w)?, self.narrow(dy)?);
        let mut dwb: Half = self.alloc(dw.len())?;
        let mut dxb: Option<Half> = need_dx.then(|| self.alloc(xs.len())).transpose()?;
        let dwp = self.ptr_mut(&mut dwb);
        let dxp = dxb.as_mut().map(|d| self.ptr_mut(d));
        let (xp, wp, dyp) = (self.ptr(&xb), self.ptr(&wb), self.ptr(&dyb));
        self.dnn
            .conv_backward((xp, xs), wp, c, (dyp, ys), dwp, dxp)?;
        *dw = self.widen(&dwb)?;
        dxb.map(|d| self.widen(&d)).transpose()
    }

    /// c = op(a) · op(b) on tensor cores from bf16 operands, accumulated and written in f32.
    pub(super) fn gemm_bf16(
        &self,
        cfg: GemmConfig<f32>,
        a: &Half,
        b: &Half,
        c: &mut Tensor,
    ) -> Result<()> {
        let (ap, bp, cp) = (self.ptr(a), self.ptr(b), self.ptr_mut(c));
        let bf16 = cudaDataType::CUDA_R_16BF;
        // SAFETY: cfg describes a, b and c of exactly these lengths (blas::forward and co.),
        // alpha and beta are host f32 as CUBLAS_COMPUTE_32F takes them.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                cfg.transa,
                cfg.transb,
                cfg.m,
                cfg.n,
                cfg.k,
                &cfg.alpha as *const f32 as *const c_void,
                ap as *const c_void,
                bf16,
                cfg.lda,
                bp as *const c_void,
                bf16,
                cfg.ldb,
                &cfg.beta as *const f32 as *const c_void,
                cp as *mut c_void,
                cudaDataType::CUDA_R_32F,
                cfg.ldc,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(cuda_err("cuBLAS bf16 GemmEx"))
    }
}
