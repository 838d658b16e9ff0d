//! The `Engine` operations on the GPU: each layer's forward and backward as cuDNN, cuBLAS or
//! NVRTC-kernel calls queued on the engine's one stream, on device tensors in NCHW order
//! (the bf16 products of `Math::Bf16` are in `mixed`).

use cudarc::driver::PushKernelArg;

use super::kernels::{elementwise, launched, per_item};
use super::{blas, cuda_err, Cuda, Tensor};
use crate::error::Result;
use crate::model::{pool_out, Conv, Lrn};
use crate::train::augment::Crop;
use crate::train::engine::{dropout_threshold, Colour, Engine, Math, Normalise, Shape};

fn out_shape(xs: Shape, c: &Conv) -> Shape {
    Shape::new(xs.n, c.out, c.out_size(xs.h), c.out_size(xs.w))
}

impl Engine for Cuda {
    type Tensor = Tensor;
    type PoolSaved = ();
    type LrnSaved = ();

    fn describe(&self) -> String {
        let math = match self.math {
            Math::Fp32 => "FP32",
            Math::Tf32 => "TF32 convolutions",
            Math::Bf16 => "bf16 products, FP32 master weights",
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

    fn download_into(&self, t: &Tensor, host: &mut Vec<f32>) -> Result<()> {
        host.resize(t.len(), 0.0);
        self.stream
            .memcpy_dtoh(t, host.as_mut_slice())
            .map_err(cuda_err("copy from GPU"))?;
        self.stream.synchronize().map_err(cuda_err("GPU work"))
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
        let px = self.put(&self.pixels, pixels)?;
        let table = Colour::flatten(&norm.colours_of_planes(pixels, shifts));
        let co = self.put(&self.colours, &table)?;
        let mut x = self.alloc(s.len())?;
        let (len, plane) = (s.len() as i64, (s.h * s.w) as i32);
        let mut b = self.stream.launch_builder(&self.k.input_u8);
        b.arg(&px.ptr)
            .arg(&co.ptr)
            .arg(&mut x)
            .arg(&len)
            .arg(&plane);
        // SAFETY: px and x hold len elements, co n·9.
        launched(unsafe { b.launch(elementwise(s.len())) }, "input_u8")?;
        self.release(&self.pixels, px)?;
        self.release(&self.colours, co)?;
        Ok(x)
    }

    fn cuts_views(&self) -> bool {
        self.gpu_crops
    }

    fn input_views(
        &self,
        images: &[u8],
        side: usize,
        views: &[Crop],
        norm: &Normalise,
        crop: usize,
    ) -> Result<Tensor> {
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the GPU"))?;
        let img = self.put(&self.pixels, images)?;
        let places: Vec<i32> = views
            .iter()
            .flat_map(|v| [v.x as i32, v.y as i32, v.flip as i32])
            .collect();
        let at = self.put(&self.views, &places)?;
        let table = Colour::flatten(&norm.colours_of_views(images, side, views, crop));
        let co = self.put(&self.colours, &table)?;
        let s = Shape::new(views.len(), 3, crop, crop);
        let mut x = self.alloc(s.len())?;
        let (len, side32, crop32) = (s.len() as i64, side as i32, crop as i32);
        let mut b = self.stream.launch_builder(&self.k.input_crop);
        b.arg(&img.ptr)
            .arg(&at.ptr)
            .arg(&co.ptr)
            .arg(&mut x)
            .arg(&len);
        b.arg(&side32).arg(&crop32);
        // SAFETY: img holds n·side²·3 bytes, at n·3 ints, co n·9 floats, x len; every view
        // lies inside its image (augment's crops are at most side − crop from the edge).
        launched(unsafe { b.launch(elementwise(s.len())) }, "input_crop")?;
        self.release(&self.pixels, img)?;
        self.release(&self.views, at)?;
        self.release(&self.colours, co)?;
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
        if self.math == Math::Bf16 {
            return Ok((self.conv_forward_bf16((x, xs), w, b, c, ys)?, ys));
        }
        let mut y = self.alloc(ys.len())?;
        let yp = self.ptr_mut(&mut y);
        self.dnn
            .conv_forward(self.ptr(x), xs, self.ptr(w), c, yp, ys)?;
        self.dnn.add_bias(self.ptr(b), yp, ys)?;
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
        if self.math == Math::Bf16 {
            return self.conv_backward_bf16((x, xs), w, c, (dy, ys), dw, db, need_dx);
        }
        let mut dx = if need_dx {
            Some(self.alloc(xs.len())?)
        } else {
            None
        };
        let dxp = dx.as_mut().map(|d| self.ptr_mut(d));
        let (dwp, dbp) = (self.ptr_mut(dw), self.ptr_mut(db));
        self.dnn.bias_grad(self.ptr(dy), ys, dbp)?;
        self.dnn.conv_backward(
            (self.ptr(x), xs),
            self.ptr(w),
            c,
            (self.ptr(dy), ys),
            dwp,
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
        if self.math == Math::Bf16 {
            let (wb, xb) = (self.narrow(w)?, self.narrow(x)?);
            self.gemm_bf16(blas::forward(n, i, o), &wb, &xb, &mut y)?;
        } else {
            self.gemm(blas::forward(n, i, o), w, x, &mut y)?;
        }
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
        let mut dx = self.alloc(n * i)?;
        if self.math == Math::Bf16 {
            let (xb, wb, dyb) = (self.narrow(x)?, self.narrow(w)?, self.narrow(dy)?);
            self.gemm_bf16(blas::weight_grad(n, i, o), &xb, &dyb, dw)?;
            self.gemm_bf16(blas::input_grad(n, i, o), &wb, &dyb, &mut dx)?;
        } else {
            self.gemm(blas::weight_grad(n, i, o), x, dy, dw)?;
            self.gemm(blas::input_grad(n, i, o), w, dy, &mut dx)?;
        }
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
        let lab = self.put(&self.labels, labels)?;
        let (mut loss, mut grad) = (self.alloc(n)?, self.alloc(n * classes)?);
        let (n32, k32) = (n as i32, classes as i32);
        let mut b = self.stream.launch_builder(&self.k.softmax_xent);
        b.arg(logits)
            .arg(&lab.ptr)
            .arg(&mut loss)
            .arg(&mut grad)
            .arg(&n32)
            .arg(&k32);
        // SAFETY: logits and grad hold n·classes floats, labels and loss n.
        launched(unsafe { b.launch(per_item(n)) }, "softmax_xent")?;
        self.release(&self.labels, lab)?;
        Ok((loss, grad))
    }

    fn scale(&self, t: &mut Tensor, a: f32) -> Result<()> {
        let len = t.len() as i64;
        let mut b = self.stream.launch_builder(&self.k.scale);
        b.arg(t).arg(&len).arg(&a);
        // SAFETY: t holds len floats.
        launched(unsafe { b.launch(elementwise(len as usize)) }, "scale")
    }

    fn make_current(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the GPU"))
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
