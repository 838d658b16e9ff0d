//! The CUDA engine: `Engine` on device buffers, with cuDNN for convolutions, ReLU, LRN and
//! max-pooling (`dnn`), cuBLAS for the fully connected layers, and small NVRTC kernels for
//! input normalisation, dropout, softmax cross-entropy, FC biases and SGD (`kernels`).
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

use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
    PinnedHostSlice, PushKernelArg, ValidAsZeroBits,
};

use crate::engine::{dropout_threshold, Engine, Normalise, Shape};
use crate::error::{Error, Result};
use crate::model::{pool_out, Conv, Lrn};
use dnn::{Dnn, Ptr};
use kernels::{elementwise, launched, per_item, Kernels};

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
    tf32: bool,
    /// Page-locked staging for each batch's pixels and labels: copies from it are true DMA
    /// and do not make the stream wait, unlike copies from ordinary (pageable) memory.
    pixels: Mutex<Staging<u8>>,
    shifts: Mutex<Staging<f32>>,
    labels: Mutex<Staging<u32>>,
}

/// A page-locked buffer and the event marking the end of the last copy out of it.
struct Staging<T> {
    buf: Option<PinnedHostSlice<T>>,
    copied: Option<CudaEvent>,
}

impl<T> Default for Staging<T> {
    fn default() -> Self {
        Staging {
            buf: None,
            copied: None,
        }
    }
}

fn cuda_err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

impl Cuda {
    /// The engine on GPU `ordinal`, with TF32 convolutions (PyTorch's default).
    pub fn new(ordinal: i32) -> Result<Cuda> {
        Cuda::with_tf32(ordinal, true)
    }

    /// `tf32 = false` keeps every convolution in full FP32 (used by `fc7 selftest`).
    pub fn with_tf32(ordinal: i32, tf32: bool) -> Result<Cuda> {
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
        let dnn = Dnn::new(stream.clone(), tf32)?;
        let k = Kernels::load(&ctx)?;
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
            tf32,
            pixels: Mutex::default(),
            shifts: Mutex::default(),
            labels: Mutex::default(),
        })
    }

    /// Copies `data` to a new device buffer (at least `data.len()` long) through `staging`.
    fn stage<T: DeviceRepr + ValidAsZeroBits + Copy>(
        &self,
        staging: &Mutex<Staging<T>>,
        data: &[T],
    ) -> Result<CudaSlice<T>> {
        let mut st = staging.lock().expect("staging lock");
        if let Some(done) = &st.copied {
            // The previous copy out of the buffer must finish before it is overwritten.
            done.synchronize().map_err(cuda_err("GPU copy"))?;
        }
        if st.buf.as_ref().is_none_or(|p| p.len() < data.len()) {
            // SAFETY: written below before any copy reads it.
            let fresh = unsafe { self.ctx.alloc_pinned::<T>(data.len().max(1)) };
            st.buf = Some(fresh.map_err(cuda_err("allocating page-locked memory"))?);
        }
        let pinned = st.buf.as_mut().expect("allocated");
        let host = pinned
            .as_mut_slice()
            .map_err(cuda_err("page-locked memory"))?;
        host[..data.len()].copy_from_slice(data);
        // SAFETY: every element is written by the copy below before it is read.
        let mut dev = unsafe { self.stream.alloc::<T>(pinned.len()) }
            .map_err(cuda_err("allocating GPU memory"))?;
        self.stream
            .memcpy_htod(pinned, &mut dev)
            .map_err(cuda_err("copy to GPU"))?;
        let done = self.ctx.new_event(None).map_err(cuda_err("GPU event"))?;
        done.record(&self.stream).map_err(cuda_err("GPU event"))?;
        st.copied = Some(done);
        Ok(dev)
    }

    /// Switches the convolutions between TF32 and full FP32 on the same GPU context.
    pub fn set_tf32(&mut self, tf32: bool) {
        self.dnn.set_tf32(tf32);
        self.tf32 = tf32;
    }

    fn alloc(&self, len: usize) -> Result<Tensor> {
        // SAFETY: every caller fully overwrites the buffer before reading it.
        unsafe { self.stream.alloc::<f32>(len.max(1)) }.map_err(cuda_err("allocating GPU memory"))
    }

    fn ptr(&self, t: &Tensor) -> Ptr {
        t.device_ptr(&self.stream).0
    }

    fn ptr_mut(&self, t: &mut Tensor) -> Ptr {
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

fn out_shape(xs: Shape, c: &Conv) -> Shape {
    Shape::new(xs.n, c.out, c.out_size(xs.h), c.out_size(xs.w))
}

impl Engine for Cuda {
    type Tensor = Tensor;
    type PoolSaved = ();
    type LrnSaved = ();

    fn describe(&self) -> String {
        let math = if self.tf32 {
            "TF32 convolutions"
        } else {
            "FP32"
        };
        format!("{}, {math})", self.device)
    }

    fn upload(&self, data: &[f32]) -> Result<Tensor> {
        self.stream
            .clone_htod(data)
            .map_err(cuda_err("copy to GPU"))
    }

    fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        let v = self
            .stream
            .clone_dtoh(t)
            .map_err(cuda_err("copy from GPU"))?;
        self.stream.synchronize().map_err(cuda_err("GPU work"))?;
        Ok(v)
    }

    fn zeros(&self, len: usize) -> Result<Tensor> {
        self.stream
            .alloc_zeros(len.max(1))
            .map_err(cuda_err("allocating GPU memory"))
    }

    fn input(
        &self,
        pixels: &[u8],
        shifts: &[[f32; 3]],
        norm: &Normalise,
        s: Shape,
    ) -> Result<Tensor> {
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the GPU"))?;
        let px = self.stage(&self.pixels, pixels)?;
        let flat: Vec<f32> = shifts.iter().flatten().copied().collect();
        let sh = self.stage(&self.shifts, &flat)?;
        let mut x = self.alloc(s.len())?;
        let (len, plane) = (s.len() as i64, (s.h * s.w) as i32);
        let ([m0, m1, m2], [s0, s1, s2]) = (norm.mean, norm.std);
        let mut b = self.stream.launch_builder(&self.k.input_u8);
        b.arg(&px).arg(&sh).arg(&mut x).arg(&len).arg(&plane);
        b.arg(&m0).arg(&m1).arg(&m2).arg(&s0).arg(&s1).arg(&s2);
        // SAFETY: px and x hold len elements, sh n·3.
        launched(unsafe { b.launch(elementwise(s.len())) }, "input_u8")?;
        Ok(x)
    }

    fn conv_forward(
        &self,
        x: &Tensor,
        xs: Shape,
        w: &Tensor,
        b: &Tensor,
        c: &Conv,
    ) -> Result<(Tensor, Shape)> {
        let ys = out_shape(xs, c);
        let mut y = self.alloc(ys.len())?;
        let yp = self.ptr_mut(&mut y);
        self.dnn
            .conv_forward(self.ptr(x), xs, self.ptr(w), self.ptr(b), c, yp, ys)?;
        Ok((y, ys))
    }

    fn conv_backward(
        &self,
        x: &Tensor,
        xs: Shape,
        w: &Tensor,
        c: &Conv,
        dy: &Tensor,
        dw: &mut Tensor,
        db: &mut Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        let ys = out_shape(xs, c);
        let mut dx = if need_dx {
            Some(self.alloc(xs.len())?)
        } else {
            None
        };
        let dxp = dx.as_mut().map(|d| self.ptr_mut(d));
        let (dwp, dbp) = (self.ptr_mut(dw), self.ptr_mut(db));
        self.dnn.conv_backward(
            (self.ptr(x), xs),
            self.ptr(w),
            c,
            (self.ptr(dy), ys),
            dwp,
            dbp,
            dxp,
        )?;
        Ok(dx)
    }

    fn relu_forward(&self, x: &mut Tensor, s: Shape) -> Result<()> {
        self.dnn.relu_forward(self.ptr_mut(x), s)
    }

    fn relu_backward(&self, y: &Tensor, dy: &mut Tensor, s: Shape) -> Result<()> {
        let mut dx = self.alloc(s.len())?;
        let dxp = self.ptr_mut(&mut dx);
        self.dnn.relu_backward(self.ptr(y), self.ptr(dy), dxp, s)?;
        *dy = dx;
        Ok(())
    }

    fn lrn_forward(&self, x: &Tensor, xs: Shape, l: &Lrn) -> Result<(Tensor, ())> {
        let mut y = self.alloc(xs.len())?;
        let yp = self.ptr_mut(&mut y);
        self.dnn.lrn_forward(self.ptr(x), yp, xs, l)?;
        Ok((y, ()))
    }

    fn lrn_backward(
        &self,
        x: &Tensor,
        y: &Tensor,
        _: &(),
        xs: Shape,
        l: &Lrn,
        dy: &Tensor,
    ) -> Result<Tensor> {
        let mut dx = self.alloc(xs.len())?;
        let dxp = self.ptr_mut(&mut dx);
        self.dnn
            .lrn_backward((self.ptr(x), self.ptr(y)), self.ptr(dy), dxp, xs, l)?;
        Ok(dx)
    }

    fn pool_forward(&self, x: &Tensor, xs: Shape) -> Result<(Tensor, Shape, ())> {
        let ys = Shape::new(xs.n, xs.c, pool_out(xs.h), pool_out(xs.w));
        let mut y = self.alloc(ys.len())?;
        let yp = self.ptr_mut(&mut y);
        self.dnn.pool_forward(self.ptr(x), xs, yp, ys)?;
        Ok((y, ys, ()))
    }

    fn pool_backward(
        &self,
        x: &Tensor,
        xs: Shape,
        y: &Tensor,
        _: &(),
        dy: &Tensor,
    ) -> Result<Tensor> {
        let ys = Shape::new(xs.n, xs.c, pool_out(xs.h), pool_out(xs.w));
        let mut dx = self.alloc(xs.len())?;
        let dxp = self.ptr_mut(&mut dx);
        self.dnn
            .pool_backward((self.ptr(x), xs), (self.ptr(y), ys), self.ptr(dy), dxp)?;
        Ok(dx)
    }

    fn linear_forward(
        &self,
        x: &Tensor,
        n: usize,
        w: &Tensor,
        b: &Tensor,
        o: usize,
    ) -> Result<Tensor> {
        let i = w.len() / o;
        let mut y = self.alloc(n * o)?;
        self.gemm(blas::forward(n, i, o), w, x, &mut y)?;
        let (len, o32) = ((n * o) as i64, o as i32);
        let mut l = self.stream.launch_builder(&self.k.add_bias_rows);
        l.arg(&mut y).arg(b).arg(&len).arg(&o32);
        // SAFETY: y holds n·o floats, b o.
        launched(unsafe { l.launch(elementwise(n * o)) }, "add_bias_rows")?;
        Ok(y)
    }

    fn linear_backward(
        &self,
        x: &Tensor,
        n: usize,
        w: &Tensor,
        o: usize,
        dy: &Tensor,
        dw: &mut Tensor,
        db: &mut Tensor,
    ) -> Result<Tensor> {
        let i = w.len() / o;
        self.gemm(blas::weight_grad(n, i, o), x, dy, dw)?;
        let mut dx = self.alloc(n * i)?;
        self.gemm(blas::input_grad(n, i, o), w, dy, &mut dx)?;
        self.sum_rows(dy, db, n, o)?;
        Ok(dx)
    }

    fn dropout(&self, h: &mut Tensor, p: f32, seed: u64) -> Result<()> {
        let (len, threshold, scale) = (h.len() as i64, dropout_threshold(p), 1.0 / (1.0 - p));
        let mut b = self.stream.launch_builder(&self.k.dropout);
        b.arg(h).arg(&len).arg(&seed).arg(&threshold).arg(&scale);
        // SAFETY: h holds len floats.
        launched(unsafe { b.launch(elementwise(len as usize)) }, "dropout")
    }

    fn softmax_cross_entropy(
        &self,
        logits: &Tensor,
        labels: &[u32],
        classes: usize,
    ) -> Result<(Tensor, Tensor)> {
        let n = labels.len();
        let lab = self.stage(&self.labels, labels)?;
        let (mut loss, mut grad) = (self.alloc(n)?, self.alloc(n * classes)?);
        let (n32, k32) = (n as i32, classes as i32);
        let mut b = self.stream.launch_builder(&self.k.softmax_xent);
        b.arg(logits)
            .arg(&lab)
            .arg(&mut loss)
            .arg(&mut grad)
            .arg(&n32)
            .arg(&k32);
        // SAFETY: logits and grad hold n·classes floats, labels and loss n.
        launched(unsafe { b.launch(per_item(n)) }, "softmax_xent")?;
        Ok((loss, grad))
    }

    fn sgd_step(
        &self,
        w: &mut Tensor,
        v: &mut Tensor,
        g: &Tensor,
        lr: f32,
        momentum: f32,
        decay: f32,
    ) -> Result<()> {
        let len = w.len() as i64;
        let mut b = self.stream.launch_builder(&self.k.sgd);
        b.arg(w)
            .arg(v)
            .arg(g)
            .arg(&len)
            .arg(&lr)
            .arg(&momentum)
            .arg(&decay);
        // SAFETY: w, v and g hold len floats each.
        launched(unsafe { b.launch(elementwise(len as usize)) }, "sgd")
    }
}
