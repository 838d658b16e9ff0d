//! cuDNN descriptors for the CUDA engine (tensors, filters, convolutions, pooling, LRN,
//! activation) as owned values freed on drop, cuDNN status checking, and the timed choice of
//! convolution algorithms.

use cudarc::cudnn::sys;

use crate::error::{Error, Result};
use crate::model::{Conv, Lrn, POOL_KERNEL, POOL_STRIDE};
use crate::train::engine::Shape;

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

/// The element type of a convolution's tensors: f32, or bf16 for tensor-core products.
pub fn element(bf16: bool) -> sys::cudnnDataType_t {
    if bf16 {
        sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16
    } else {
        sys::cudnnDataType_t::CUDNN_DATA_FLOAT
    }
}

pub fn tensor(s: Shape) -> Result<TensorDesc> {
    tensor_of(s, sys::cudnnDataType_t::CUDNN_DATA_FLOAT)
}

pub fn tensor_of(s: Shape, dtype: sys::cudnnDataType_t) -> Result<TensorDesc> {
    let d = TensorDesc::create()?;
    let i = |v: usize| v as i32;
    // SAFETY: valid descriptor; dimensions checked by cuDNN.
    check(
        unsafe {
            sys::cudnnSetTensor4dDescriptor(
                d.0,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                dtype,
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

/// Weights [out, cin/groups, k, k] of type `dtype` and the convolution itself, which
/// accumulates in FP32 whatever the tensors' type.
pub fn conv_descs(
    cin: usize,
    c: &Conv,
    math: sys::cudnnMathType_t,
    dtype: sys::cudnnDataType_t,
) -> Result<(FilterDesc, ConvDesc)> {
    let (f, cd) = (FilterDesc::create()?, ConvDesc::create()?);
    let (k, p, s) = (c.kernel as i32, c.pad as i32, c.stride as i32);
    // SAFETY: valid descriptors, plain values.
    unsafe {
        check(
            sys::cudnnSetFilter4dDescriptor(
                f.0,
                dtype,
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

pub fn relu_desc() -> Result<ActDesc> {
    let d = ActDesc::create()?;
    // SAFETY: valid descriptor, plain values.
    check(
        unsafe {
            sys::cudnnSetActivationDescriptor(
                d.0,
                sys::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU,
                sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
                0.0,
            )
        },
        "activation descriptor",
    )?;
    Ok(d)
}

/// The overlapping 3×3, stride-2 max-pool, no padding.
pub fn pool_desc() -> Result<PoolDesc> {
    let d = PoolDesc::create()?;
    let (k, s) = (POOL_KERNEL as i32, POOL_STRIDE as i32);
    // SAFETY: valid descriptor, plain values.
    check(
        unsafe {
            sys::cudnnSetPooling2dDescriptor(
                d.0,
                sys::cudnnPoolingMode_t::CUDNN_POOLING_MAX,
                sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
                k,
                k,
                0,
                0,
                s,
                s,
            )
        },
        "pooling descriptor",
    )?;
    Ok(d)
}

pub fn lrn_desc(l: &Lrn) -> Result<LrnDesc> {
    let d = LrnDesc::create()?;
    // cuDNN divides alpha by the window size; the paper's α does not.
    let alpha = l.alpha as f64 * l.size as f64;
    // SAFETY: valid descriptor, plain values.
    check(
        unsafe { sys::cudnnSetLRNDescriptor(d.0, l.size as u32, alpha, l.beta as f64, l.k as f64) },
        "LRN descriptor",
    )?;
    Ok(d)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{pool_out, AlexNetConfig};

    /// Descriptors are host-side: where cuDNN 9 can be loaded (no GPU needed; scripts/test.sh
    /// installs it and sets FC7_REQUIRE_CUDNN=1), cuDNN's own
    /// arithmetic on our descriptors must give the shapes the engine allocates for, for every
    /// layer of the paper's network.
    #[test]
    fn cudnn_agrees_with_our_shapes_for_every_alexnet_layer() {
        // SAFETY: only probes whether the shared library can be opened.
        let present = unsafe { sys::is_culib_present() };
        if crate::train::engine::cuda::skipped_without(present, "cuDNN 9", "FC7_REQUIRE_CUDNN") {
            return;
        }
        let cfg = AlexNetConfig::paper(1000, 2);
        let math = sys::cudnnMathType_t::CUDNN_FMA_MATH;
        let pool = pool_desc().unwrap();
        let mut xs = Shape::new(2, 3, cfg.input, cfg.input);
        for (i, c) in cfg.convs.iter().enumerate() {
            let x = tensor(xs).unwrap();
            let (w, conv) = conv_descs(xs.c, c, math, element(false)).unwrap();
            let (mut n, mut ch, mut h, mut wd) = (0, 0, 0, 0);
            // SAFETY: valid descriptors and out-pointers.
            let st = unsafe {
                sys::cudnnGetConvolution2dForwardOutputDim(
                    conv.0, x.0, w.0, &mut n, &mut ch, &mut h, &mut wd,
                )
            };
            check(st, "output dim").unwrap();
            let ys = Shape::new(xs.n, c.out, c.out_size(xs.h), c.out_size(xs.w));
            assert_eq!(
                (n, ch, h, wd),
                (2, ys.c as i32, ys.h as i32, ys.w as i32),
                "conv{}",
                i + 1
            );
            let mut groups = 0;
            // SAFETY: valid descriptor and out-pointer.
            check(
                unsafe { sys::cudnnGetConvolutionGroupCount(conv.0, &mut groups) },
                "groups",
            )
            .unwrap();
            assert_eq!(groups as usize, c.groups);
            // --precision bf16's descriptors: the same shapes, bf16 weights.
            let tensor_ops = sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH;
            let xb = tensor_of(xs, element(true)).unwrap();
            let (wb, convb) = conv_descs(xs.c, c, tensor_ops, element(true)).unwrap();
            let mut dims = (0, 0, 0, 0);
            let mut dtype = element(false);
            let mut format = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
            let mut k = [0i32; 4];
            // SAFETY: valid descriptors and out-pointers.
            unsafe {
                let (a, b, c3, d) = (&mut dims.0, &mut dims.1, &mut dims.2, &mut dims.3);
                let st =
                    sys::cudnnGetConvolution2dForwardOutputDim(convb.0, xb.0, wb.0, a, b, c3, d);
                check(st, "bf16 output dim").unwrap();
                let [o, i2, kh, kw] = &mut k;
                let st =
                    sys::cudnnGetFilter4dDescriptor(wb.0, &mut dtype, &mut format, o, i2, kh, kw);
                check(st, "bf16 filter").unwrap();
            }
            assert_eq!(dims, (n, ch, h, wd), "bf16 conv{}", i + 1);
            assert_eq!(dtype, element(true));
            assert_eq!(k[0] as usize, c.out);
            xs = ys;
            if matches!(i, 0 | 1 | 4) {
                let y = tensor(xs).unwrap();
                // SAFETY: valid descriptors and out-pointers.
                let st = unsafe {
                    sys::cudnnGetPooling2dForwardOutputDim(
                        pool.0, y.0, &mut n, &mut ch, &mut h, &mut wd,
                    )
                };
                check(st, "pool dim").unwrap();
                xs = Shape::new(xs.n, xs.c, pool_out(xs.h), pool_out(xs.w));
                assert_eq!(
                    (h, wd),
                    (xs.h as i32, xs.w as i32),
                    "pool after conv{}",
                    i + 1
                );
            }
        }
        assert_eq!(xs.per_sample(), cfg.flat_features().unwrap());
        let lrn = lrn_desc(&Lrn::PAPER).unwrap();
        let (mut size, mut alpha, mut beta, mut k) = (0u32, 0f64, 0f64, 0f64);
        // SAFETY: valid descriptor and out-pointers.
        check(
            unsafe { sys::cudnnGetLRNDescriptor(lrn.0, &mut size, &mut alpha, &mut beta, &mut k) },
            "lrn",
        )
        .unwrap();
        assert_eq!(size, 5);
        assert!((alpha / 5e-4 - 1.0).abs() < 1e-6, "cuDNN alpha {alpha}");
        assert!(
            (beta - 0.75).abs() < 1e-6 && (k - 2.0).abs() < 1e-6,
            "{beta} {k}"
        );
        relu_desc().unwrap();
    }
}
