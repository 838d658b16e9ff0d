//! The layer operations AlexNet's training needs, as a trait an engine implements: the CPU
//! engine here (`crate::cpu`), a cuDNN/cuBLAS one later. The network's forward and backward
//! pass (`crate::network`) is written once against it.
//!
//! Tensors are NCHW, row-major; a `Shape` is (n, c, h, w). Gradients of parameters are
//! written (not accumulated) by the backward calls.

use crate::model::{Conv, Lrn};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Shape { n, c, h, w }
    }
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Elements per sample.
    pub fn per_sample(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// What the max-pool forward pass remembers for its backward pass.
pub type PoolIndex = Vec<u32>;

pub trait Engine: Sync {
    /// y = conv(x, w) + b. x: [N, Cin, H, W], w: [Out, Cin/groups, k, k] → [N, Out, Ho, Wo].
    fn conv_forward(
        &self,
        x: &[f32],
        xs: Shape,
        w: &[f32],
        b: &[f32],
        c: &Conv,
    ) -> (Vec<f32>, Shape);
    /// Given dy: writes dw, db and returns dx.
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &self,
        x: &[f32],
        xs: Shape,
        w: &[f32],
        c: &Conv,
        dy: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) -> Vec<f32>;
    fn relu_forward(&self, x: &mut [f32]);
    /// dy ← dy where y > 0, else 0.
    fn relu_backward(&self, y: &[f32], dy: &mut [f32]);
    /// Cross-channel LRN (paper convention); returns (y, scale) with scale = k + α Σ x².
    fn lrn_forward(&self, x: &[f32], xs: Shape, l: &Lrn) -> (Vec<f32>, Vec<f32>);
    fn lrn_backward(
        &self,
        x: &[f32],
        y: &[f32],
        scale: &[f32],
        xs: Shape,
        l: &Lrn,
        dy: &[f32],
    ) -> Vec<f32>;
    /// Overlapping max-pool, 3×3 window, stride 2.
    fn pool_forward(&self, x: &[f32], xs: Shape) -> (Vec<f32>, Shape, PoolIndex);
    fn pool_backward(&self, xs: Shape, idx: &PoolIndex, dy: &[f32]) -> Vec<f32>;
    /// y [N, O] = x [N, I] · wᵀ + b, w: [O, I].
    fn linear_forward(&self, x: &[f32], n: usize, w: &[f32], b: &[f32], o: usize) -> Vec<f32>;
    /// Writes dw, db; returns dx.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        x: &[f32],
        n: usize,
        w: &[f32],
        o: usize,
        dy: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) -> Vec<f32>;
    /// SGD with momentum as in the paper: v ← m·v − wd·lr·w − lr·g; w ← w + v.
    fn sgd_step(&self, w: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, momentum: f32, decay: f32);
}

/// Mean softmax cross-entropy over the batch; returns (loss, dlogits).
pub fn softmax_cross_entropy(logits: &[f32], labels: &[usize], classes: usize) -> (f32, Vec<f32>) {
    let n = labels.len();
    let mut grad = vec![0.0; logits.len()];
    let mut loss = 0.0f64;
    for (i, &label) in labels.iter().enumerate() {
        let row = &logits[i * classes..(i + 1) * classes];
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        loss += sum.ln() - (row[label] - max) as f64;
        for (j, g) in grad[i * classes..(i + 1) * classes].iter_mut().enumerate() {
            let p = (((row[j] - max) as f64).exp() / sum) as f32;
            *g = (p - if j == label { 1.0 } else { 0.0 }) / n as f32;
        }
    }
    ((loss / n as f64) as f32, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_hand_values() {
        // logits [0, ln 3] → p = [0.25, 0.75]; label 1 → loss = −ln 0.75.
        let (loss, g) = softmax_cross_entropy(&[0.0, 3f32.ln()], &[1], 2);
        assert!((loss - (-(0.75f32).ln())).abs() < 1e-6);
        assert!((g[0] - 0.25).abs() < 1e-6 && (g[1] + 0.25).abs() < 1e-6);
    }
}
