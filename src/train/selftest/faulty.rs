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

    cpu_passthrough!();

    fn describe(&self) -> String {
        format!("CPU with {:?}", self.0)
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
    fn lrn_forward(&self, x: &T, xs: Shape, l: &Lrn) -> Result<(T, Vec<f32>)> {
        match self.0 {
            Fault::LrnWithoutBeta => Cpu.lrn_forward(x, xs, &Lrn { beta: 1.0, ..*l }),
            _ => Cpu.lrn_forward(x, xs, l),
        }
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
    fn sgd_step(&self, w: &mut T, v: &mut T, g: &T, lr: f32, m: f32, decay: f32) -> Result<()> {
        let decay = if self.0 == Fault::SgdWithoutDecay {
            0.0
        } else {
            decay
        };
        Cpu.sgd_step(w, v, g, lr, m, decay)
    }
}
