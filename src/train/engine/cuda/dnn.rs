//! cuDNN for the CUDA engine: convolutions (forward, backward data, backward filter, bias;
//! on f32 tensors, or bf16 ones with FP32 accumulation for `Math::Bf16`),
//! ReLU, cross-channel LRN and overlapping max-pooling on NCHW f32 tensors, through cuDNN 9's
//! legacy API loaded at run time (cudarc's `sys` bindings). Descriptors (`descriptors`) are
//! made per call (host-only, microseconds); the convolution algorithms are chosen once per
//! shape by timing them (`cudnnFind…`, as PyTorch's `cudnn.benchmark`), and one workspace
//! buffer, grown on demand, serves every call on the engine's single stream.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cudnn::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::descriptors::{
    check, conv_descs, element, find_plan, lrn_desc, pool_desc, relu_desc, tensor, tensor_of,
    ActDesc, ConvDesc, FilterDesc, Plan, PoolDesc, TensorDesc,
};
use crate::error::{Error, Result};
use crate::model::{Conv, Lrn};
use crate::train::engine::{Math, Shape};

/// A device address as cuDNN takes it.
pub type Ptr = u64;

/// Everything one convolution call needs.
struct ConvCall {
    x: TensorDesc,
    y: TensorDesc,
    w: FilterDesc,
    conv: ConvDesc,
    plan: Plan,
    workspace: (Ptr, usize),
}

pub struct Dnn {
    handle: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
    relu: ActDesc,
    pool: PoolDesc,
    math: sys::cudnnMathType_t,
    /// Convolutions on bf16 tensors (`Math::Bf16`), else f32.
    bf16: bool,
    plans: Mutex<HashMap<(Shape, [usize; 5]), Plan>>,
    workspace: Mutex<Option<CudaSlice<u8>>>,
}

// SAFETY: the handle and descriptors are only used through `&self` methods that enqueue work
// on the engine's one stream; cuDNN handles may be used from any thread bound to the context.
unsafe impl Send for Dnn {}
unsafe impl Sync for Dnn {}

impl Drop for Dnn {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe { sys::cudnnDestroy(self.handle) };
    }
}

/// DEFAULT lets cuDNN use TF32 tensor cores (PyTorch's default); FMA keeps full FP32;
/// TENSOR_OP is what bf16 tensors need.
fn math_type(math: Math) -> sys::cudnnMathType_t {
    match math {
        Math::Fp32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
        Math::Tf32 => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        Math::Bf16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
    }
}

const ONE: f32 = 1.0;
const ZERO: f32 = 0.0;

fn one() -> *const c_void {
    &ONE as *const f32 as *const c_void
}

fn zero() -> *const c_void {
    &ZERO as *const f32 as *const c_void
}

fn p(ptr: Ptr) -> *mut c_void {
    ptr as *mut c_void
}

impl Dnn {
    pub fn new(stream: Arc<CudaStream>, math: Math) -> Result<Dnn> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: creates the handle owned by the returned Dnn and binds it to our stream.
        unsafe {
            check(sys::cudnnCreate(&mut handle), "create")?;
            check(
                sys::cudnnSetStream(handle, stream.cu_stream() as sys::cudaStream_t),
                "set stream",
            )?;
        }
        let (relu, pool) = (relu_desc()?, pool_desc()?);
        Ok(Dnn {
            handle,
            stream,
            relu,
            pool,
            math: math_type(math),
            bf16: math == Math::Bf16,
            plans: Mutex::new(HashMap::new()),
            workspace: Mutex::new(None),
        })
    }

    /// Switches the convolutions' arithmetic; algorithms timed under another are forgotten.
    pub fn set_math(&mut self, math: Math) {
        self.math = math_type(math);
        self.bf16 = math == Math::Bf16;
        self.plans.lock().expect("plan lock").clear();
    }

    /// cuDNN's version as major.minor.patch.
    pub fn version() -> String {
        // SAFETY: no arguments, returns a number.
        let v = unsafe { sys::cudnnGetVersion() };
        format!("{}.{}.{}", v / 10000, v % 10000 / 100, v % 100)
    }

    fn workspace(&self, bytes: usize) -> Result<(Ptr, usize)> {
        let mut ws = self.workspace.lock().expect("workspace lock");
        if ws.as_ref().is_none_or(|w| w.len() < bytes) {
            // SAFETY: scratch memory, written by cuDNN before it is read.
            let buf = unsafe { self.stream.alloc::<u8>(bytes.max(1)) }
                .map_err(|e| Error::Cuda(format!("workspace of {bytes} bytes: {e}")))?;
            *ws = Some(buf);
        }
        let buf = ws.as_ref().expect("allocated");
        let (ptr, _) = buf.device_ptr(&self.stream);
        Ok((ptr, buf.len()))
    }

    fn conv_call(&self, xs: Shape, c: &Conv, ys: Shape) -> Result<ConvCall> {
        let dtype = element(self.bf16);
        let (x, y) = (tensor_of(xs, dtype)?, tensor_of(ys, dtype)?);
        let (w, conv) = conv_descs(xs.c, c, self.math, dtype)?;
        let key = (xs, [c.out, c.kernel, c.stride, c.pad, c.groups]);
        let known = self.plans.lock().expect("plan lock").get(&key).copied();
        let plan = match known {
            Some(plan) => plan,
            None => {
                let plan = find_plan(self.handle, &x, &w, &conv, &y)?;
                self.plans.lock().expect("plan lock").insert(key, plan);
                plan
            }
        };
        let workspace = self.workspace(plan.bytes)?;
        Ok(ConvCall {
            x,
            y,
            w,
            conv,
            plan,
            workspace,
        })
    }

    /// y = conv(x, w), in the engine's convolution type (bf16 or f32).
    pub fn conv_forward(
        &self,
        x: Ptr,
        xs: Shape,
        w: Ptr,
        c: &Conv,
        y: Ptr,
        ys: Shape,
    ) -> Result<()> {
        let k = self.conv_call(xs, c, ys)?;
        let (ws, wsz) = k.workspace;
        // SAFETY: pointers address device buffers of the described shapes on our stream.
        check(
            unsafe {
                sys::cudnnConvolutionForward(
                    self.handle,
                    one(),
                    k.x.0,
                    p(x),
                    k.w.0,
                    p(w),
                    k.conv.0,
                    k.plan.fwd,
                    p(ws),
                    wsz,
                    zero(),
                    k.y.0,
                    p(y),
                )
            },
            "convolution forward",
        )
    }

    /// y[n, o, ·, ·] += b[o] on an f32 output.
    pub fn add_bias(&self, b: Ptr, y: Ptr, ys: Shape) -> Result<()> {
        let (bias, yd) = (tensor(Shape::new(1, ys.c, 1, 1))?, tensor(ys)?);
        // SAFETY: b holds ys.c floats, y ys.len().
        check(
            unsafe { sys::cudnnAddTensor(self.handle, one(), bias.0, p(b), one(), yd.0, p(y)) },
            "convolution bias",
        )
    }

    /// db[o] = Σ dy[n, o, ·, ·] on an f32 gradient.
    pub fn bias_grad(&self, dy: Ptr, ys: Shape, db: Ptr) -> Result<()> {
        let (bias, yd) = (tensor(Shape::new(1, ys.c, 1, 1))?, tensor(ys)?);
        // SAFETY: dy holds ys.len() floats, db ys.c.
        check(
            unsafe {
                sys::cudnnConvolutionBackwardBias(
                    self.handle,
                    one(),
                    yd.0,
                    p(dy),
                    zero(),
                    bias.0,
                    p(db),
                )
            },
            "convolution backward bias",
        )
    }

    /// Writes dw, and dx when given, in the engine's convolution type.
    pub fn conv_backward(
        &self,
        (x, xs): (Ptr, Shape),
        w: Ptr,
        c: &Conv,
        (dy, ys): (Ptr, Shape),
        dw: Ptr,
        dx: Option<Ptr>,
    ) -> Result<()> {
        let k = self.conv_call(xs, c, ys)?;
        let (ws, wsz) = k.workspace;
        // SAFETY: as in conv_forward.
        unsafe {
            check(
                sys::cudnnConvolutionBackwardFilter(
                    self.handle,
                    one(),
                    k.x.0,
                    p(x),
                    k.y.0,
                    p(dy),
                    k.conv.0,
                    k.plan.filter,
                    p(ws),
                    wsz,
                    zero(),
                    k.w.0,
                    p(dw),
                ),
                "convolution backward filter",
            )?;
            if let Some(dx) = dx {
                check(
                    sys::cudnnConvolutionBackwardData(
                        self.handle,
                        one(),
                        k.w.0,
                        p(w),
                        k.y.0,
                        p(dy),
                        k.conv.0,
                        k.plan.data,
                        p(ws),
                        wsz,
                        zero(),
                        k.x.0,
                        p(dx),
                    ),
                    "convolution backward data",
                )?;
            }
        }
        Ok(())
    }

    /// In place.
    pub fn relu_forward(&self, x: Ptr, s: Shape) -> Result<()> {
        let d = tensor(s)?;
        // SAFETY: cuDNN allows in-place activation.
        check(
            unsafe {
                sys::cudnnActivationForward(
                    self.handle,
                    self.relu.0,
                    one(),
                    d.0,
                    p(x),
                    zero(),
                    d.0,
                    p(x),
                )
            },
            "ReLU forward",
        )
    }

    /// dx = dy where the ReLU output y is positive, else 0 (x is read as y: ReLU's input is
    /// positive exactly where its output is).
    pub fn relu_backward(&self, y: Ptr, dy: Ptr, dx: Ptr, s: Shape) -> Result<()> {
        let d = tensor(s)?;
        // SAFETY: device buffers of shape s; dx is distinct from y and dy.
        check(
            unsafe {
                sys::cudnnActivationBackward(
                    self.handle,
                    self.relu.0,
                    one(),
                    d.0,
                    p(y),
                    d.0,
                    p(dy),
                    d.0,
                    p(y),
                    zero(),
                    d.0,
                    p(dx),
                )
            },
            "ReLU backward",
        )
    }

    pub fn lrn_forward(&self, x: Ptr, y: Ptr, s: Shape, l: &Lrn) -> Result<()> {
        let (d, ld) = (tensor(s)?, lrn_desc(l)?);
        let mode = sys::cudnnLRNMode_t::CUDNN_LRN_CROSS_CHANNEL_DIM1;
        // SAFETY: x and y are distinct device buffers of shape s.
        check(
            unsafe {
                sys::cudnnLRNCrossChannelForward(
                    self.handle,
                    ld.0,
                    mode,
                    one(),
                    d.0,
                    p(x),
                    zero(),
                    d.0,
                    p(y),
                )
            },
            "LRN forward",
        )
    }

    pub fn lrn_backward(
        &self,
        (x, y): (Ptr, Ptr),
        dy: Ptr,
        dx: Ptr,
        s: Shape,
        l: &Lrn,
    ) -> Result<()> {
        let (d, ld) = (tensor(s)?, lrn_desc(l)?);
        let mode = sys::cudnnLRNMode_t::CUDNN_LRN_CROSS_CHANNEL_DIM1;
        // SAFETY: all four are device buffers of shape s; dx is distinct from the others.
        check(
            unsafe {
                sys::cudnnLRNCrossChannelBackward(
                    self.handle,
                    ld.0,
                    mode,
                    one(),
                    d.0,
                    p(y),
                    d.0,
                    p(dy),
                    d.0,
                    p(x),
                    zero(),
                    d.0,
                    p(dx),
                )
            },
            "LRN backward",
        )
    }

    pub fn pool_forward(&self, x: Ptr, xs: Shape, y: Ptr, ys: Shape) -> Result<()> {
        let (xd, yd) = (tensor(xs)?, tensor(ys)?);
        // SAFETY: device buffers of the described shapes.
        check(
            unsafe {
                sys::cudnnPoolingForward(
                    self.handle,
                    self.pool.0,
                    one(),
                    xd.0,
                    p(x),
                    zero(),
                    yd.0,
                    p(y),
                )
            },
            "max-pool forward",
        )
    }

    pub fn pool_backward(
        &self,
        (x, xs): (Ptr, Shape),
        (y, ys): (Ptr, Shape),
        dy: Ptr,
        dx: Ptr,
    ) -> Result<()> {
        let (xd, yd) = (tensor(xs)?, tensor(ys)?);
        // SAFETY: device buffers of the described shapes; dx distinct.
        check(
            unsafe {
                sys::cudnnPoolingBackward(
                    self.handle,
                    self.pool.0,
                    one(),
                    yd.0,
                    p(y),
                    yd.0,
                    p(dy),
                    xd.0,
                    p(x),
                    zero(),
                    xd.0,
                    p(dx),
                )
            },
            "max-pool backward",
        )
    }
}
