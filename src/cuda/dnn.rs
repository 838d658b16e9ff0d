//! cuDNN for the CUDA engine: convolutions (forward, backward data, backward filter, bias),
//! ReLU, cross-channel LRN and overlapping max-pooling on NCHW f32 tensors, through cuDNN 9's
//! legacy API loaded at run time (cudarc's `sys` bindings). Descriptors are made per call
//! (host-only, microseconds) and freed on drop; the convolution algorithms are chosen once per
//! shape by timing them (`cudnnFind…`, as PyTorch's `cudnn.benchmark`), and one workspace
//! buffer, grown on demand, serves every call on the engine's single stream.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cudnn::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use crate::engine::Shape;
use crate::error::{Error, Result};
use crate::model::{Conv, Lrn, POOL_KERNEL, POOL_STRIDE};

/// The most workspace a convolution algorithm may ask for.
const WORKSPACE_LIMIT: usize = 1 << 30;

/// A device address as cuDNN takes it.
pub type Ptr = u64;

fn check(status: sys::cudnnStatus_t, what: &str) -> Result<()> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    // SAFETY: cudnnGetErrorString returns a static NUL-terminated string.
    let text = unsafe { std::ffi::CStr::from_ptr(sys::cudnnGetErrorString(status)) };
    Err(Error::Cuda(format!(
        "cuDNN {what}: {}",
        text.to_string_lossy()
    )))
}

macro_rules! descriptor {
    ($name:ident, $t:ty, $create:ident, $destroy:ident) => {
        struct $name($t);
        impl $name {
            fn create() -> Result<Self> {
                let mut d = std::ptr::null_mut();
                // SAFETY: creates a descriptor owned by the returned value.
                check(unsafe { sys::$create(&mut d) }, stringify!($create))?;
                Ok($name(d))
            }
        }
        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: the descriptor was created by `create` and is destroyed once.
                unsafe { sys::$destroy(self.0) };
            }
        }
    };
}

descriptor!(
    TensorDesc,
    sys::cudnnTensorDescriptor_t,
    cudnnCreateTensorDescriptor,
    cudnnDestroyTensorDescriptor
);
descriptor!(
    FilterDesc,
    sys::cudnnFilterDescriptor_t,
    cudnnCreateFilterDescriptor,
    cudnnDestroyFilterDescriptor
);
descriptor!(
    ConvDesc,
    sys::cudnnConvolutionDescriptor_t,
    cudnnCreateConvolutionDescriptor,
    cudnnDestroyConvolutionDescriptor
);
descriptor!(
    PoolDesc,
    sys::cudnnPoolingDescriptor_t,
    cudnnCreatePoolingDescriptor,
    cudnnDestroyPoolingDescriptor
);
descriptor!(
    LrnDesc,
    sys::cudnnLRNDescriptor_t,
    cudnnCreateLRNDescriptor,
    cudnnDestroyLRNDescriptor
);
descriptor!(
    ActDesc,
    sys::cudnnActivationDescriptor_t,
    cudnnCreateActivationDescriptor,
    cudnnDestroyActivationDescriptor
);

fn tensor(s: Shape) -> Result<TensorDesc> {
    let d = TensorDesc::create()?;
    let i = |v: usize| v as i32;
    // SAFETY: valid descriptor; dimensions checked by cuDNN.
    check(
        unsafe {
            sys::cudnnSetTensor4dDescriptor(
                d.0,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                i(s.n),
                i(s.c),
                i(s.h),
                i(s.w),
            )
        },
        "tensor descriptor",
    )?;
    Ok(d)
}

/// Weights [out, cin/groups, k, k] and the convolution itself.
fn conv_descs(cin: usize, c: &Conv, math: sys::cudnnMathType_t) -> Result<(FilterDesc, ConvDesc)> {
    let (f, cd) = (FilterDesc::create()?, ConvDesc::create()?);
    let (k, p, s) = (c.kernel as i32, c.pad as i32, c.stride as i32);
    // SAFETY: valid descriptors, plain values.
    unsafe {
        check(
            sys::cudnnSetFilter4dDescriptor(
                f.0,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                c.out as i32,
                (cin / c.groups) as i32,
                k,
                k,
            ),
            "filter descriptor",
        )?;
        check(
            sys::cudnnSetConvolution2dDescriptor(
                cd.0,
                p,
                p,
                s,
                s,
                1,
                1,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            ),
            "convolution descriptor",
        )?;
        check(
            sys::cudnnSetConvolutionGroupCount(cd.0, c.groups as i32),
            "group count",
        )?;
        check(sys::cudnnSetConvolutionMathType(cd.0, math), "math type")?;
    }
    Ok((f, cd))
}

/// The algorithms chosen for one convolution shape and the workspace they need.
#[derive(Clone, Copy)]
struct Plan {
    fwd: sys::cudnnConvolutionFwdAlgo_t,
    data: sys::cudnnConvolutionBwdDataAlgo_t,
    filter: sys::cudnnConvolutionBwdFilterAlgo_t,
    bytes: usize,
}

/// Everything one convolution call needs.
struct ConvCall {
    x: TensorDesc,
    y: TensorDesc,
    bias: TensorDesc,
    w: FilterDesc,
    conv: ConvDesc,
    plan: Plan,
    workspace: (Ptr, usize),
}

/// The fastest successful algorithm within the workspace limit, from cuDNN's timed list.
macro_rules! fastest {
    ($perf:expr, $count:expr, $what:expr) => {{
        $perf[..$count as usize]
            .iter()
            .find(|p| {
                p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && p.memory <= WORKSPACE_LIMIT
            })
            .map(|p| (p.algo, p.memory))
            .ok_or_else(|| Error::Cuda(format!("cuDNN found no usable {} algorithm", $what)))
    }};
}

pub struct Dnn {
    handle: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
    relu: ActDesc,
    pool: PoolDesc,
    math: sys::cudnnMathType_t,
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
    /// `tf32` lets convolutions use TF32 tensor cores (PyTorch's default for cuDNN).
    pub fn new(stream: Arc<CudaStream>, tf32: bool) -> Result<Dnn> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: creates the handle owned by the returned Dnn and binds it to our stream.
        unsafe {
            check(sys::cudnnCreate(&mut handle), "create")?;
            check(
                sys::cudnnSetStream(handle, stream.cu_stream() as sys::cudaStream_t),
                "set stream",
            )?;
        }
        let relu = ActDesc::create()?;
        let pool = PoolDesc::create()?;
        // SAFETY: valid descriptors, plain values.
        unsafe {
            check(
                sys::cudnnSetActivationDescriptor(
                    relu.0,
                    sys::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU,
                    sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
                    0.0,
                ),
                "activation descriptor",
            )?;
            let (k, s) = (POOL_KERNEL as i32, POOL_STRIDE as i32);
            check(
                sys::cudnnSetPooling2dDescriptor(
                    pool.0,
                    sys::cudnnPoolingMode_t::CUDNN_POOLING_MAX,
                    sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
                    k,
                    k,
                    0,
                    0,
                    s,
                    s,
                ),
                "pooling descriptor",
            )?;
        }
        let math = if tf32 {
            sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        };
        Ok(Dnn {
            handle,
            stream,
            relu,
            pool,
            math,
            plans: Mutex::new(HashMap::new()),
            workspace: Mutex::new(None),
        })
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

    fn find(
        &self,
        x: &TensorDesc,
        w: &FilterDesc,
        conv: &ConvDesc,
        y: &TensorDesc,
    ) -> Result<Plan> {
        let h = self.handle;
        let mut n = 0i32;
        // SAFETY: the perf arrays are plain C structs (zero is a valid value of every field)
        // and cuDNN writes at most the requested count.
        unsafe {
            let mut fwd: [sys::cudnnConvolutionFwdAlgoPerf_t; 10] = std::mem::zeroed();
            check(
                sys::cudnnFindConvolutionForwardAlgorithm(
                    h,
                    x.0,
                    w.0,
                    conv.0,
                    y.0,
                    10,
                    &mut n,
                    fwd.as_mut_ptr(),
                ),
                "find forward algorithm",
            )?;
            let (fwd, m1) = fastest!(fwd, n, "forward")?;
            let mut data: [sys::cudnnConvolutionBwdDataAlgoPerf_t; 10] = std::mem::zeroed();
            check(
                sys::cudnnFindConvolutionBackwardDataAlgorithm(
                    h,
                    w.0,
                    y.0,
                    conv.0,
                    x.0,
                    10,
                    &mut n,
                    data.as_mut_ptr(),
                ),
                "find backward-data algorithm",
            )?;
            let (data, m2) = fastest!(data, n, "backward-data")?;
            let mut filter: [sys::cudnnConvolutionBwdFilterAlgoPerf_t; 10] = std::mem::zeroed();
            check(
                sys::cudnnFindConvolutionBackwardFilterAlgorithm(
                    h,
                    x.0,
                    y.0,
                    conv.0,
                    w.0,
                    10,
                    &mut n,
                    filter.as_mut_ptr(),
                ),
                "find backward-filter algorithm",
            )?;
            let (filter, m3) = fastest!(filter, n, "backward-filter")?;
            Ok(Plan {
                fwd,
                data,
                filter,
                bytes: m1.max(m2).max(m3),
            })
        }
    }

    fn conv_call(&self, xs: Shape, c: &Conv, ys: Shape) -> Result<ConvCall> {
        let (x, y) = (tensor(xs)?, tensor(ys)?);
        let bias = tensor(Shape::new(1, c.out, 1, 1))?;
        let (w, conv) = conv_descs(xs.c, c, self.math)?;
        let key = (xs, [c.out, c.kernel, c.stride, c.pad, c.groups]);
        let known = self.plans.lock().expect("plan lock").get(&key).copied();
        let plan = match known {
            Some(plan) => plan,
            None => {
                let plan = self.find(&x, &w, &conv, &y)?;
                self.plans.lock().expect("plan lock").insert(key, plan);
                plan
            }
        };
        let workspace = self.workspace(plan.bytes)?;
        Ok(ConvCall {
            x,
            y,
            bias,
            w,
            conv,
            plan,
            workspace,
        })
    }

    /// y = conv(x, w) + b.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_forward(
        &self,
        x: Ptr,
        xs: Shape,
        w: Ptr,
        b: Ptr,
        c: &Conv,
        y: Ptr,
        ys: Shape,
    ) -> Result<()> {
        let k = self.conv_call(xs, c, ys)?;
        let (ws, wsz) = k.workspace;
        // SAFETY: pointers address device buffers of the described shapes on our stream.
        unsafe {
            check(
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
                ),
                "convolution forward",
            )?;
            check(
                sys::cudnnAddTensor(self.handle, one(), k.bias.0, p(b), one(), k.y.0, p(y)),
                "convolution bias",
            )
        }
    }

    /// Writes dw and db, and dx when given.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_backward(
        &self,
        (x, xs): (Ptr, Shape),
        w: Ptr,
        c: &Conv,
        (dy, ys): (Ptr, Shape),
        dw: Ptr,
        db: Ptr,
        dx: Option<Ptr>,
    ) -> Result<()> {
        let k = self.conv_call(xs, c, ys)?;
        let (ws, wsz) = k.workspace;
        // SAFETY: as in conv_forward.
        unsafe {
            check(
                sys::cudnnConvolutionBackwardBias(
                    self.handle,
                    one(),
                    k.y.0,
                    p(dy),
                    zero(),
                    k.bias.0,
                    p(db),
                ),
                "convolution backward bias",
            )?;
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

    /// dy in place, masked where the ReLU output y is not positive (x is read as y: ReLU's
    /// input is positive exactly where its output is).
    pub fn relu_backward(&self, y: Ptr, dy: Ptr, s: Shape) -> Result<()> {
        let d = tensor(s)?;
        // SAFETY: cuDNN allows dx == dy for activation backward.
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
                    p(dy),
                )
            },
            "ReLU backward",
        )
    }

    fn lrn_desc(l: &Lrn) -> Result<LrnDesc> {
        let d = LrnDesc::create()?;
        // cuDNN divides alpha by the window size; the paper's α does not.
        let alpha = l.alpha as f64 * l.size as f64;
        // SAFETY: valid descriptor, plain values.
        check(
            unsafe {
                sys::cudnnSetLRNDescriptor(d.0, l.size as u32, alpha, l.beta as f64, l.k as f64)
            },
            "LRN descriptor",
        )?;
        Ok(d)
    }

    pub fn lrn_forward(&self, x: Ptr, y: Ptr, s: Shape, l: &Lrn) -> Result<()> {
        let (d, ld) = (tensor(s)?, Self::lrn_desc(l)?);
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
        let (d, ld) = (tensor(s)?, Self::lrn_desc(l)?);
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
