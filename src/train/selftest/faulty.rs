//! A CPU engine with one planted fault, so the selftest is shown to catch each kind of mistake
//! an engine could make rather than only to agree with the CPU engine it is built on.

use crate::error::Result;
use crate::model::{Conv, Lrn};
use crate::train::engine::cpu::Cpu;
use crate::train::engine::{Engine, Normalise, Shape};

/// Which operation is wrong, and how.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    None,
    /// ReLU lets small negatives through.
    LeakyRelu,
    /// LRN forgets β (divides by the base, not its power).
    LrnWithoutBeta,
    /// The convolution's weight gradient comes out 1% too large.
    ConvDwScaled,
    /// SGD ignores weight decay.
    SgdWithoutDecay,
}

pub struct Faulty(pub Fault);

type T = Vec<f32>;

impl Engine for Faulty {
    type Tensor = T;
    type PoolSaved = Vec<u32>;
    type LrnSaved = Vec<f32>;

    fn describe(&self) -> String {
        format!("CPU with {:?}", self.0)
    }
    fn upload(&self, data: &[f32]) -> Result<T> {
        Cpu.upload(data)
    }
    fn download(&self, t: &T) -> Result<Vec<f32>> {
        Cpu.download(t)
    }
    fn zeros(&self, len: usize) -> Result<T> {
        Cpu.zeros(len)
    }
    fn input(&self, px: &[u8], sh: &[[f32; 3]], norm: &Normalise, s: Shape) -> Result<T> {
        Cpu.input(px, sh, norm, s)
    }
    fn conv_forward(&self, x: &T, xs: Shape, w: &T, b: &T, c: &Conv) -> Result<(T, Shape)> {
        Cpu.conv_forward(x, xs, w, b, c)
    }
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &self,
        x: &T,
        xs: Shape,
        w: &T,
        c: &Conv,
        dy: &T,
        dw: &mut T,
        db: &mut T,
        need_dx: bool,
    ) -> Result<Option<T>> {
        let dx = Cpu.conv_backward(x, xs, w, c, dy, dw, db, need_dx)?;
        if self.0 == Fault::ConvDwScaled {
            dw.iter_mut().for_each(|v| *v *= 1.01);
        }
        Ok(dx)
    }
    fn relu_forward(&self, x: &mut T, s: Shape) -> Result<()> {
        let leak: Vec<f32> = x.iter().map(|v| v.clamp(-1e-3, 0.0)).collect();
        Cpu.relu_forward(x, s)?;
        if self.0 == Fault::LeakyRelu {
            x.iter_mut().zip(leak).for_each(|(v, l)| *v += l);
        }
        Ok(())
    }
    fn relu_backward(&self, y: &T, dy: &mut T, s: Shape) -> Result<()> {
        Cpu.relu_backward(y, dy, s)
    }
    fn lrn_forward(&self, x: &T, xs: Shape, l: &Lrn) -> Result<(T, Vec<f32>)> {
        match self.0 {
            Fault::LrnWithoutBeta => Cpu.lrn_forward(x, xs, &Lrn { beta: 1.0, ..*l }),
            _ => Cpu.lrn_forward(x, xs, l),
        }
    }
    fn lrn_backward(&self, x: &T, y: &T, s: &Vec<f32>, xs: Shape, l: &Lrn, dy: &T) -> Result<T> {
        Cpu.lrn_backward(x, y, s, xs, l, dy)
    }
    fn pool_forward(&self, x: &T, xs: Shape) -> Result<(T, Shape, Vec<u32>)> {
        Cpu.pool_forward(x, xs)
    }
    fn pool_backward(&self, x: &T, xs: Shape, y: &T, s: &Vec<u32>, dy: &T) -> Result<T> {
        Cpu.pool_backward(x, xs, y, s, dy)
    }
    fn linear_forward(&self, x: &T, n: usize, w: &T, b: &T, o: usize) -> Result<T> {
        Cpu.linear_forward(x, n, w, b, o)
    }
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        x: &T,
        n: usize,
        w: &T,
        o: usize,
        dy: &T,
        dw: &mut T,
        db: &mut T,
    ) -> Result<T> {
        Cpu.linear_backward(x, n, w, o, dy, dw, db)
    }
    fn dropout(&self, h: &mut T, p: f32, seed: u64) -> Result<()> {
        Cpu.dropout(h, p, seed)
    }
    fn softmax_cross_entropy(&self, logits: &T, labels: &[u32], k: usize) -> Result<(T, T)> {
        Cpu.softmax_cross_entropy(logits, labels, k)
    }
    fn scale(&self, t: &mut T, a: f32) -> Result<()> {
        Cpu.scale(t, a)
    }
    fn sgd_step(&self, w: &mut T, v: &mut T, g: &T, lr: f32, m: f32, decay: f32) -> Result<()> {
        let decay = if self.0 == Fault::SgdWithoutDecay {
            0.0
        } else {
            decay
        };
        Cpu.sgd_step(w, v, g, lr, m, decay)
    }
}
