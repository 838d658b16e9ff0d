//! The CPU engine: `Engine` on host vectors, delegating to the slice kernels in `conv` and `ops`
//! (im2col + GEMM, rayon over the batch, results independent of the thread count). It is also
//! the reference the CUDA engine is checked against (`fc7 selftest`).

mod conv;
mod linear;
mod lrn;
pub mod ops;
mod unfold;
mod winograd;

use rayon::prelude::*;

use crate::error::Result;
use crate::model::{Conv, Lrn};
use crate::train::engine::{Engine, Normalise, Sgd, Shape};

pub struct Cpu;

impl Engine for Cpu {
    type Tensor = Vec<f32>;
    type PoolSaved = Vec<u32>;
    type LrnSaved = Vec<f32>;

    fn describe(&self) -> String {
        format!("CPU ({} threads)", rayon::current_num_threads())
    }

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn download(&self, t: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(t.clone())
    }

    fn download_into(&self, t: &Vec<f32>, host: &mut Vec<f32>) -> Result<()> {
        host.clear();
        host.extend_from_slice(t);
        Ok(())
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn input(
        &self,
        pixels: &[u8],
        shifts: &[[f32; 3]],
        norm: &Normalise,
        s: Shape,
    ) -> Result<Vec<f32>> {
        let plane = s.h * s.w;
        let colours = norm.colours_of_planes(pixels, shifts);
        let mut x = vec![0.0; s.len()];
        x.par_chunks_mut(plane).enumerate().for_each(|(i, out)| {
            let (colour, c) = (&colours[i / 3], i % 3);
            let src = &pixels[i * plane..(i + 1) * plane];
            for (o, &v) in out.iter_mut().zip(src) {
                *o = colour.apply(v, c);
            }
        });
        Ok(x)
    }

    fn conv_forward(
        &self,
        x: &Vec<f32>,
        xs: Shape,
        w: &Vec<f32>,
        b: &Vec<f32>,
        c: &Conv,
    ) -> Result<(Vec<f32>, Shape)> {
        Ok(ops::conv_forward(x, xs, w, b, c))
    }

    fn conv_backward(
        &self,
        x: &Vec<f32>,
        xs: Shape,
        w: &Vec<f32>,
        c: &Conv,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
        need_dx: bool,
    ) -> Result<Option<Vec<f32>>> {
        Ok(ops::conv_backward(x, xs, w, c, dy, dw, db, need_dx))
    }

    fn relu_forward(&self, x: &mut Vec<f32>, _: Shape) -> Result<()> {
        ops::relu_forward(x);
        Ok(())
    }

    fn relu_backward(&self, y: &Vec<f32>, dy: &mut Vec<f32>, _: Shape) -> Result<()> {
        ops::relu_backward(y, dy);
        Ok(())
    }

    fn lrn_forward(&self, x: &Vec<f32>, xs: Shape, l: &Lrn) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(ops::lrn_forward(x, xs, l))
    }

    fn lrn_backward(
        &self,
        x: &Vec<f32>,
        y: &Vec<f32>,
        scale: &Vec<f32>,
        xs: Shape,
        l: &Lrn,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        Ok(ops::lrn_backward(x, y, scale, xs, l, dy))
    }

    fn pool_forward(&self, x: &Vec<f32>, xs: Shape) -> Result<(Vec<f32>, Shape, Vec<u32>)> {
        Ok(ops::pool_forward(x, xs))
    }

    fn pool_backward(
        &self,
        _: &Vec<f32>,
        xs: Shape,
        _: &Vec<f32>,
        idx: &Vec<u32>,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        Ok(ops::pool_backward(xs, idx, dy))
    }

    fn linear_forward(
        &self,
        x: &Vec<f32>,
        n: usize,
        w: &Vec<f32>,
        b: &Vec<f32>,
        o: usize,
    ) -> Result<Vec<f32>> {
        Ok(ops::linear_forward(x, n, w, b, o))
    }

    fn linear_backward(
        &self,
        x: &Vec<f32>,
        n: usize,
        w: &Vec<f32>,
        o: usize,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
    ) -> Result<Vec<f32>> {
        Ok(ops::linear_backward(x, n, w, o, dy, dw, db))
    }

    fn linear_backward_sgd(
        &self,
        (x, n, o): (&Vec<f32>, usize, usize),
        dy: &Vec<f32>,
        (w, vw): (&mut Vec<f32>, &mut Vec<f32>),
        (b, vb): (&mut Vec<f32>, &mut Vec<f32>),
        _: (&mut Vec<f32>, &mut Vec<f32>),
        h: Sgd,
    ) -> Result<Vec<f32>> {
        Ok(ops::linear_backward_sgd((x, n, o), dy, (w, vw), (b, vb), h))
    }

    fn dropout(&self, h: &mut Vec<f32>, p: f32, seed: u64) -> Result<()> {
        ops::dropout(h, p, seed);
        Ok(())
    }

    fn softmax_cross_entropy(
        &self,
        logits: &Vec<f32>,
        labels: &[u32],
        classes: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(ops::softmax_cross_entropy(logits, labels, classes))
    }

    fn scale(&self, t: &mut Vec<f32>, a: f32) -> Result<()> {
        t.iter_mut().for_each(|v| *v *= a);
        Ok(())
    }

    fn sgd_step(
        &self,
        w: &mut Vec<f32>,
        v: &mut Vec<f32>,
        g: &Vec<f32>,
        lr: f32,
        momentum: f32,
        decay: f32,
    ) -> Result<()> {
        ops::sgd_step(w, v, g, lr, momentum, decay);
        Ok(())
    }
}

/// Helpers for the kernels' gradient tests.
#[cfg(test)]
pub(crate) mod testing {
    pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        crate::train::engine::random(n, seed)
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// Central differences of L(v) = Σ r·f(v) at a spread of entries of v, against `analytic`.
    pub fn check(name: &str, v: &[f32], analytic: &[f32], loss: impl Fn(&[f32]) -> f64) {
        let eps = 1e-2f32;
        let step = (v.len() / 23).max(1);
        for i in (0..v.len()).step_by(step) {
            let (mut p, mut m) = (v.to_vec(), v.to_vec());
            p[i] += eps;
            m[i] -= eps;
            let num = (loss(&p) - loss(&m)) / (2.0 * eps as f64);
            let err = (num - analytic[i] as f64).abs();
            assert!(
                err <= 2e-2 * num.abs().max(analytic[i].abs() as f64).max(0.1),
                "{name}[{i}]: numeric {num} vs analytic {}",
                analytic[i]
            );
        }
    }
}
