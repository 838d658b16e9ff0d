//! The CUDA engine: `Engine` on device buffers (`layers`), with cuDNN for convolutions, ReLU,
//! LRN and max-pooling (`dnn`), cuBLAS for the fully connected layers, and small NVRTC kernels
//! for input normalisation (and cutting training views out of whole images), dropout, softmax
//! cross-entropy, FC biases and SGD (`kernels`).
//!
//! Every library is loaded at run time (cudarc's dynamic loading), so fc7 builds and runs
//! without CUDA; `Cuda::new` first checks that the driver, cuBLAS, cuDNN 9 and NVRTC can be
//! opened and says which cannot. All work is queued on one stream; only `download` waits.

mod blas;
mod descriptors;
mod dnn;
#[cfg(test)]
mod emulate;
pub mod kernels;
mod layers;
mod mixed;
mod upload;

use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, PushKernelArg,
};

use crate::error::{Error, Result};
use crate::train::engine::Math;
use dnn::{Dnn, Ptr};
use kernels::{launched, per_item, Kernels};
use upload::Staging;

pub type Tensor = CudaSlice<f32>;

/// The shared libraries the engine needs and whether each can be opened.
pub fn libraries() -> Vec<(&'static str, bool)> {
    // SAFETY: each call only tries to dlopen the library by its usual names.
    unsafe {
        vec![
            (
                "libcuda (NVIDIA driver)",
                cudarc::driver::sys::is_culib_present(),
            ),
            (
                "libcublas (cuBLAS)",
                cudarc::cublas::sys::is_culib_present(),
            ),
            (
                "libcudnn.so.9 (cuDNN 9)",
                cudarc::cudnn::sys::is_culib_present(),
            ),
            ("libnvrtc (NVRTC)", cudarc::nvrtc::sys::is_culib_present()),
        ]
    }
}

pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    dnn: Dnn,
    k: Kernels,
    /// The GPU, its architecture and cuDNN's version.
    device: String,
    math: Math,
    /// Page-locked staging for each batch's pixels, views, colour tables (`Colour`) and labels (`upload`).
    pixels: Mutex<Staging<u8>>,
    colours: Mutex<Staging<f32>>,
    views: Mutex<Staging<i32>>,
    labels: Mutex<Staging<u32>>,
    /// Training views cut from whole images on the GPU (`input_views`); FC7_HOST_CROPS=1
    /// cuts them on the host instead, for comparison.
    gpu_crops: bool,
    /// The second stream batches are copied on (FC7_COPY_STREAM=1), else the one stream.
    copy: Option<Arc<CudaStream>>,
}

/// A device buffer of `len` (at least one) elements on `stream`; every caller fully overwrites
/// it before reading it.
fn alloc_on<T: DeviceRepr>(stream: &Arc<CudaStream>, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: see above.
    unsafe { stream.alloc::<T>(len.max(1)) }.map_err(cuda_err("allocating GPU memory"))
}

fn cuda_err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

impl Cuda {
    /// The engine on GPU `ordinal`, with TF32 convolutions (PyTorch's default).
    pub fn new(ordinal: i32) -> Result<Cuda> {
        Cuda::with_math(ordinal, Math::Tf32)
    }

    /// The engine with its products in `math` (`Math::Fp32` for `fc7 selftest`).
    pub fn with_math(ordinal: i32, math: Math) -> Result<Cuda> {
        let missing: Vec<&str> = libraries()
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| name)
            .collect();
        if !missing.is_empty() {
            return Err(Error::Cuda(format!(
                "cannot load {} (put the CUDA 13 / cuDNN 9 library folders on LD_LIBRARY_PATH)",
                missing.join(", ")
            )));
        }
        let count = CudaContext::device_count().map_err(cuda_err("no usable GPU"))?;
        if ordinal < 0 || ordinal >= count {
            return Err(Error::Cuda(format!("no GPU {ordinal} ({count} found)")));
        }
        let ctx = CudaContext::new(ordinal as usize).map_err(cuda_err("opening the GPU"))?;
        // One stream: the engine orders its own work, so cudarc's per-buffer events are waste.
        // SAFETY: no buffers exist yet and only `stream` is used.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(cuda_err("cuBLAS"))?;
        let dnn = Dnn::new(stream.clone(), math)?;
        let k = Kernels::load(&ctx)?;
        let copy = match std::env::var_os("FC7_COPY_STREAM").is_some_and(|v| v == "1") {
            true => Some(ctx.new_stream().map_err(cuda_err("a copy stream"))?),
            false => None,
        };
        let (major, minor) = ctx.compute_capability().map_err(cuda_err("device query"))?;
        let device = format!(
            "{} (GPU {ordinal}, sm_{major}{minor}, cuDNN {}",
            ctx.name().map_err(cuda_err("device query"))?,
            Dnn::version(),
        );
        Ok(Cuda {
            ctx,
            stream,
            blas,
            dnn,
            k,
            device,
            math,
            pixels: Mutex::default(),
            colours: Mutex::default(),
            views: Mutex::default(),
            labels: Mutex::default(),
            gpu_crops: std::env::var_os("FC7_HOST_CROPS").is_none_or(|v| v != "1"),
            copy,
        })
    }

    /// Switches the products' arithmetic on the same GPU context.
    pub fn set_math(&mut self, math: Math) {
        self.dnn.set_math(math);
        self.math = math;
    }

    /// The engine's one stream (for NCCL, which queues its collectives on it).
    pub fn stream(&self) -> Arc<CudaStream> {
        self.stream.clone()
    }

    fn alloc<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>> {
        alloc_on(&self.stream, len)
    }

    fn ptr<T>(&self, t: &CudaSlice<T>) -> Ptr {
        t.device_ptr(&self.stream).0
    }

    fn ptr_mut<T>(&self, t: &mut CudaSlice<T>) -> Ptr {
        t.device_ptr_mut(&self.stream).0
    }

    fn gemm(&self, cfg: GemmConfig<f32>, a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()> {
        // SAFETY: the configurations below describe buffers of exactly these lengths.
        unsafe { self.blas.gemm(cfg, a, b, c) }.map_err(cuda_err("cuBLAS sgemm"))
    }

    /// db[j] = Σ_rows dy[r, j] for dy [n, o].
    fn sum_rows(&self, dy: &Tensor, db: &mut Tensor, n: usize, o: usize) -> Result<()> {
        let (n32, o32) = (n as i32, o as i32);
        let mut b = self.stream.launch_builder(&self.k.sum_rows);
        b.arg(dy).arg(db).arg(&n32).arg(&o32);
        // SAFETY: dy holds n·o floats, db o.
        launched(unsafe { b.launch(per_item(o)) }, "sum_rows")
    }
}

/// For tests that need a CUDA library but no GPU: true (skip) when `library` is absent, saying
/// so in one line that the test harness does not capture; a failure instead when `require` is
/// set in the environment (as scripts/test.sh and CI do).
#[cfg(test)]
pub(crate) fn skipped_without(present: bool, library: &str, require: &str) -> bool {
    use std::io::Write;
    if present {
        return false;
    }
    assert!(
        std::env::var_os(require).is_none(),
        "{require} is set but {library} cannot be loaded (LD_LIBRARY_PATH?)"
    );
    let line = format!("SKIPPED: {library} is not installed here (scripts/test.sh installs it)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    true
}
