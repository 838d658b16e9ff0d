//! cuDNN descriptors for the CUDA engine (tensors, filters, convolutions, pooling, LRN,
//! activation) as owned values freed on drop, cuDNN status checking, and the timed choice of
//! convolution algorithms.

use cudarc::cudnn::sys;

use crate::engine::Shape;
use crate::error::{Error, Result};
use crate::model::Conv;

/// The most workspace a convolution algorithm may ask for.
const WORKSPACE_LIMIT: usize = 1 << 30;

pub fn check(status: sys::cudnnStatus_t, what: &str) -> Result<()> {
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
        pub struct $name(pub $t);
        impl $name {
            pub fn create() -> Result<Self> {
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

pub fn tensor(s: Shape) -> Result<TensorDesc> {
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
pub fn conv_descs(
    cin: usize,
    c: &Conv,
    math: sys::cudnnMathType_t,
) -> Result<(FilterDesc, ConvDesc)> {
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
pub struct Plan {
    pub fwd: sys::cudnnConvolutionFwdAlgo_t,
    pub data: sys::cudnnConvolutionBwdDataAlgo_t,
    pub filter: sys::cudnnConvolutionBwdFilterAlgo_t,
    pub bytes: usize,
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

pub fn find_plan(
    h: sys::cudnnHandle_t,
    x: &TensorDesc,
    w: &FilterDesc,
    conv: &ConvDesc,
    y: &TensorDesc,
) -> Result<Plan> {
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
