//! The CUDA engine's own small kernels, compiled at run time by NVRTC: input normalisation
//! from 8-bit crops or from whole images cut on the GPU, the dropout mask (the same splitmix64 hash as `engine::dropout_hash`),
//! softmax cross-entropy, the bias of fully connected layers and its gradient, and the paper's
//! SGD update, and the casts between f32 and bf16 for tensor-core products. Element-wise
//! kernels use grid-stride loops.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, DriverError, LaunchConfig};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::error::{Error, Result};

/// The kernels' CUDA C source (kernels.cu beside this file), compiled by NVRTC at run time.
pub const SOURCE: &str = include_str!("kernels.cu");

const NAMES: [&str; 10] = [
    "input_u8",
    "input_crop",
    "dropout",
    "softmax_xent",
    "add_bias_rows",
    "sum_rows",
    "sgd",
    "to_bf16",
    "from_bf16",
    "scale",
];

/// Machine code (a cubin) of `SOURCE` for compute capability `major.minor`. Preferred to PTX:
/// a driver older than NVRTC cannot JIT NVRTC's newer PTX, but runs cubins of the same major
/// CUDA version.
pub fn compile_cubin((major, minor): (i32, i32)) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    let fail = |what: &str, e: result::NvrtcError| Error::Cuda(format!("NVRTC {what}: {e:?}"));
    let src = std::ffi::CString::new(SOURCE).expect("no NUL in the source");
    let prog = result::create_program(&src, None).map_err(|e| fail("create", e))?;
    let arch = format!("--gpu-architecture=sm_{major}{minor}");
    // SAFETY: `prog` is a live program until destroyed at the end; buffers are sized by NVRTC.
    let out = unsafe {
        let built = result::compile_program(prog, &[arch.as_str()]).map_err(|e| {
            let log = result::get_program_log(prog).unwrap_or_default();
            let log: String = log.iter().map(|&c| c as u8 as char).collect();
            Error::Cuda(format!(
                "NVRTC compile for sm_{major}{minor} ({e:?}): {log}"
            ))
        });
        let cubin = built.and_then(|_| {
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(|e| fail("cubin size", e))?;
            let mut buf = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut std::ffi::c_char)
                .result()
                .map_err(|e| fail("cubin", e))?;
            Ok(buf)
        });
        let _ = result::destroy_program(prog);
        cubin
    };
    out
}

/// NVRTC's PTX for `SOURCE`, for the default virtual architecture of the installed NVRTC.
pub fn compile() -> Result<Ptx> {
    let opts = CompileOptions {
        name: Some("fc7_kernels.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(SOURCE, opts).map_err(|e| Error::Cuda(format!("NVRTC: {e}")))
}

pub struct Kernels {
    pub input_u8: CudaFunction,
    pub input_crop: CudaFunction,
    pub dropout: CudaFunction,
    pub softmax_xent: CudaFunction,
    pub add_bias_rows: CudaFunction,
    pub sum_rows: CudaFunction,
    pub sgd: CudaFunction,
    pub to_bf16: CudaFunction,
    pub from_bf16: CudaFunction,
    pub scale: CudaFunction,
}

pub fn driver(what: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Kernels> {
        let module = ctx
            .load_module(compile()?)
            .map_err(driver("loading kernels"))?;
        let f = |name: &str| module.load_function(name).map_err(driver(name));
        let [a, crop, b, c, d, e, g, to, from, scale] = NAMES;
        Ok(Kernels {
            input_u8: f(a)?,
            input_crop: f(crop)?,
            dropout: f(b)?,
            softmax_xent: f(c)?,
            add_bias_rows: f(d)?,
            sum_rows: f(e)?,
            sgd: f(g)?,
            to_bf16: f(to)?,
            from_bf16: f(from)?,
            scale: f(scale)?,
        })
    }
}

/// Grid-stride launch shape for `len` elements.
pub fn elementwise(len: usize) -> LaunchConfig {
    let blocks = len.div_ceil(256).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The result of `LaunchArgs::launch` as ours.
pub fn launched<T>(r: std::result::Result<T, DriverError>, name: &str) -> Result<()> {
    r.map(|_| ()).map_err(driver(name))
}

/// One thread per item, for the kernels that loop inside a thread.
pub fn per_item(count: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (count.div_ceil(128).max(1) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles the kernels with NVRTC where it is installed (scripts/test.sh installs it from
    /// the `nvidia-cuda-nvrtc` wheel and sets FC7_REQUIRE_NVRTC=1); no GPU is needed.
    #[test]
    fn kernels_compile_with_nvrtc() {
        // SAFETY: only probes whether the shared library can be opened.
        let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
        if crate::train::engine::cuda::skipped_without(present, "NVRTC", "FC7_REQUIRE_NVRTC") {
            return;
        }
        let ptx = compile().expect("kernels compile").to_src();
        for name in NAMES {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{name} missing from PTX"
            );
        }
        // Machine code for the H100/H200 (sm_90): an ELF image naming every kernel.
        let cubin = compile_cubin((9, 0)).expect("sm_90 cubin");
        assert_eq!(&cubin[..4], b"\x7fELF");
        for name in NAMES {
            let found = cubin.windows(name.len()).any(|w| w == name.as_bytes());
            assert!(found, "{name} missing from the cubin");
        }
    }
}
