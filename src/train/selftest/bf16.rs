//! The CUDA engine's `Math::Bf16` arithmetic on the CPU, the reference its whole training steps
//! are checked against: every convolution and fully connected product takes bf16-rounded
//! operands into FP32 sums, convolution results and gradients are rounded to bf16 (cuDNN
//! writes bf16 tensors), fully connected results stay FP32 (cuBLAS writes f32), and biases,
//! their gradients and every other operation are the CPU engine's FP32. Against plain FP32, a
//! small network's updates after two steps differ by up to 22% of their largest value (ReLU and
//! max-pool decisions flip on rounded values), far past any tolerance that would still catch a
//! bug; against this reference only the order of the GPU's sums differs.

use crate::error::Result;
use crate::model::{Conv, Lrn};
use crate::train::engine::cpu::Cpu;
use crate::train::engine::{bf16_round, Engine, Normalise, Shape};

pub struct Bf16Cpu;

type T = Vec<f32>;

fn rounded(v: &[f32]) -> T {
    v.iter().map(|&x| bf16_round(x)).collect()
}

/// db[o] = Σ dy over every sample and position; dy: [n, o, plane] (plane 1 for a matrix).
fn bias_grad(dy: &[f32], o: usize, plane: usize) -> T {
    let mut db = vec![0.0f32; o];
    for (i, chunk) in dy.chunks(plane).enumerate() {
        db[i % o] += chunk.iter().sum::<f32>();
    }
    db
}

#[allow(clippy::too_many_arguments)]
impl Engine for Bf16Cpu {
    type Tensor = T;
    type PoolSaved = Vec<u32>;
    type LrnSaved = Vec<f32>;

    cpu_passthrough!();

    fn describe(&self) -> String {
        "CPU emulating bf16 products".into()
    }
    /// y = bf16(conv(bf16 x, bf16 w)) + b. x: [N, Cin, H, W] → [N, Out, Ho, Wo]
    fn conv_forward(&self, x: &T, xs: Shape, w: &T, b: &T, c: &Conv) -> Result<(T, Shape)> {
        let (y, ys) = Cpu.conv_forward(&rounded(x), xs, &rounded(w), &vec![0.0; c.out], c)?;
        let plane = ys.h * ys.w;
        let y = y
            .iter()
            .enumerate()
            .map(|(i, &v)| bf16_round(v) + b[i / plane % c.out])
            .collect();
        Ok((y, ys))
    }
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
        let (xr, wr, dyr) = (rounded(x), rounded(w), rounded(dy));
        let dx = Cpu.conv_backward(&xr, xs, &wr, c, &dyr, dw, db, need_dx)?;
        *dw = rounded(dw);
        *db = bias_grad(dy, c.out, dy.len() / (c.out * xs.n));
        Ok(dx.map(|d| rounded(&d)))
    }
    fn relu_forward(&self, x: &mut T, s: Shape) -> Result<()> {
        Cpu.relu_forward(x, s)
    }
    fn lrn_forward(&self, x: &T, xs: Shape, l: &Lrn) -> Result<(T, Vec<f32>)> {
        Cpu.lrn_forward(x, xs, l)
    }
    /// y [N, O] = bf16 x · bf16 wᵀ + b, in FP32.
    fn linear_forward(&self, x: &T, n: usize, w: &T, b: &T, o: usize) -> Result<T> {
        Cpu.linear_forward(&rounded(x), n, &rounded(w), b, o)
    }
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
        let dx = Cpu.linear_backward(&rounded(x), n, &rounded(w), o, &rounded(dy), dw, db)?;
        *db = bias_grad(dy, o, 1);
        Ok(dx)
    }
    fn sgd_step(&self, w: &mut T, v: &mut T, g: &T, lr: f32, m: f32, decay: f32) -> Result<()> {
        Cpu.sgd_step(w, v, g, lr, m, decay)
    }
}

#[cfg(test)]
mod tests {
    use super::super::faulty::{Fault, Faulty};
    use super::*;
    use crate::train::engine::Math;
    use crate::train::selftest::{compare, Check};

    fn failed(checks: Vec<Check>) -> Vec<String> {
        checks
            .into_iter()
            .filter(|c| !c.passed())
            .map(|c| format!("{} ({:.2e})", c.name, c.error))
            .collect()
    }

    /// The bf16 tolerances admit the bf16 arithmetic (`Bf16Cpu` checked as if it were the
    /// GPU), the FP32 ones do not (so it rounds where the GPU does), and at bf16 tolerances a
    /// planted 1% weight-gradient error is still caught.
    #[test]
    fn bf16_tolerances_admit_bf16_arithmetic_and_still_catch_a_fault() {
        assert_eq!(failed(compare(&Bf16Cpu, Math::Bf16)), Vec::<String>::new());
        let strict = failed(compare(&Bf16Cpu, Math::Fp32));
        assert!(strict.iter().any(|n| n.contains("forward")), "{strict:?}");
        let caught = failed(compare(&Faulty(Fault::ConvDwScaled), Math::Bf16));
        assert!(caught.iter().any(|n| n.contains("dw")), "{caught:?}");
    }

    /// What the reference does: bf16 products, FP32 biases, FP32 elsewhere.
    #[test]
    fn the_bf16_reference_rounds_products_only() {
        let xs = Shape::new(1, 1, 1, 1);
        let c = Conv::new(1, 1, 1, 0, 1);
        let e = |k: i32| 2f32.powi(-k);
        // (1 + 2⁻⁷)² = 1 + 2⁻⁶ + 2⁻¹⁴: a convolution's bf16 result drops the 2⁻¹⁴, the fully
        // connected layer's f32 keeps it; the bias 2⁻⁹ is added in FP32 afterwards.
        let (x, w, b) = (vec![1.0 + e(7)], vec![1.0 + e(7)], vec![e(9)]);
        let (y, _) = Bf16Cpu.conv_forward(&x, xs, &w, &b, &c).unwrap();
        assert_eq!(y, vec![1.0 + e(6) + e(9)]);
        let y = Bf16Cpu.linear_forward(&x, 1, &w, &b, 1).unwrap();
        assert_eq!(y, vec![1.0 + e(6) + e(14) + e(9)]);
        // 1 + 2⁻⁸ is a tie and rounds to 1 (even) as an operand.
        let (x, w) = (vec![1.0 + e(8)], vec![1.0]);
        let (mut dw, mut db) = (vec![0.0], vec![0.0]);
        let dy = vec![1.0 + 1.0 / 256.0];
        Bf16Cpu
            .linear_backward(&x, 1, &w, 1, &dy, &mut dw, &mut db)
            .unwrap();
        assert_eq!((dw[0], db[0]), (1.0, 1.0 + 1.0 / 256.0));
    }
}
