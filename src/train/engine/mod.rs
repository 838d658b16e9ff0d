//! The layer operations AlexNet's training needs, as a trait each engine implements: the CPU
//! engine (`crate::train::engine::cpu`, im2col + GEMM) and the CUDA engine (`crate::train::engine::cuda`, cuDNN + cuBLAS +
//! NVRTC kernels). The network's forward and backward pass (`crate::train::network`) is written once
//! against it; tensors live wherever the engine keeps them (host vectors, device buffers) and
//! only cross to the host through `upload`/`download`.
//!
//! Tensors are NCHW, row-major; a `Shape` is (n, c, h, w). Gradients of parameters are
//! written (not accumulated) by the backward calls.

pub mod cpu;
pub mod cuda;
pub mod normalise;
pub mod timed;

pub use normalise::{Colour, Normalise};

use crate::error::Result;
use crate::model::{Conv, Lrn};
use crate::train::augment::Crop;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// A [n, features] matrix as a tensor shape.
    pub fn flat(n: usize, features: usize) -> Self {
        Shape::new(n, features, 1, 1)
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

/// The arithmetic of the GPU's convolutions and fully connected products (`--precision`);
/// everything else (ReLU, LRN, pooling, softmax, the loss), the master weights, the velocities
/// and the update stay FP32. The CPU engine always computes in FP32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Math {
    /// Full FP32 (what `fc7 selftest` checks the engine in by default).
    Fp32,
    /// TF32 tensor cores for convolutions (PyTorch's default for cuDNN).
    #[default]
    Tf32,
    /// bf16 copies of weights and activations into tensor-core products that accumulate in
    /// FP32; results back in FP32.
    Bf16,
}

impl std::str::FromStr for Math {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" => Ok(Math::Fp32),
            "tf32" => Ok(Math::Tf32),
            "bf16" => Ok(Math::Bf16),
            _ => Err(format!(
                "unknown precision '{s}' (expected fp32, tf32 or bf16)"
            )),
        }
    }
}

impl std::fmt::Display for Math {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Math::Fp32 => "fp32",
            Math::Tf32 => "tf32",
            Math::Bf16 => "bf16",
        })
    }
}

/// `v` rounded to the nearest bf16 (ties to even), as the GPU's `to_bf16` kernel rounds it.
pub fn bf16_round(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

/// SGD with momentum as in the paper: v ← m·v − wd·lr·w − lr·g; w ← w + v.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub decay: f32,
}

#[allow(clippy::too_many_arguments)]
pub trait Engine: Sync {
    /// A buffer of f32 the engine computes on.
    type Tensor: Send + Sync;
    /// What max-pooling keeps for its backward pass (argmax positions on the CPU; nothing for
    /// cuDNN, which reads the input and output again).
    type PoolSaved: Send + Sync;
    /// What LRN keeps for its backward pass (the CPU keeps the denominator base).
    type LrnSaved: Send + Sync;

    /// "CPU" or the GPU's name.
    fn describe(&self) -> String;
    fn upload(&self, data: &[f32]) -> Result<Self::Tensor>;
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// `download` into `host`, whose pages are reused when it is long enough: the weights are
    /// downloaded at every checkpoint, and fresh pages for them cost more than the copy.
    fn download_into(&self, t: &Self::Tensor, host: &mut Vec<f32>) -> Result<()> {
        *host = self.download(t)?;
        Ok(())
    }
    fn zeros(&self, len: usize) -> Result<Self::Tensor>;
    /// Network input from 8-bit crops `pixels` ([n, 3, h, w]) and per-image colour shifts.
    fn input(
        &self,
        pixels: &[u8],
        shifts: &[[f32; 3]],
        norm: &Normalise,
        s: Shape,
    ) -> Result<Self::Tensor>;
    /// Whether `input_views` cuts the views on the engine, so batches should carry whole
    /// images rather than cut them on the host.
    fn cuts_views(&self) -> bool {
        false
    }
    /// Network input [n, 3, crop, crop] from whole 8-bit images `images` ([n, side, side, 3],
    /// the pack's rows) and one view of each: `augment::write_crop`'s crop and flip, then
    /// `input`'s colour shift and normalisation. This default cuts on the host.
    fn input_views(
        &self,
        images: &[u8],
        side: usize,
        views: &[Crop],
        norm: &Normalise,
        crop: usize,
    ) -> Result<Self::Tensor> {
        let per = 3 * crop * crop;
        let mut pixels = vec![0u8; views.len() * per];
        let image_bytes = side * side * 3;
        for ((out, image), v) in pixels
            .chunks_mut(per)
            .zip(images.chunks(image_bytes))
            .zip(views)
        {
            crate::train::augment::write_crop(image, side, crop, v, out);
        }
        let shifts: Vec<[f32; 3]> = views.iter().map(|v| v.shift).collect();
        let s = Shape::new(views.len(), 3, crop, crop);
        self.input(&pixels, &shifts, norm, s)
    }
    /// y = conv(x, w) + b. x: [N, Cin, H, W], w: [Out, Cin/groups, k, k] → [N, Out, Ho, Wo].
    fn conv_forward(
        &self,
        x: &Self::Tensor,
        xs: Shape,
        w: &Self::Tensor,
        b: &Self::Tensor,
        c: &Conv,
    ) -> Result<(Self::Tensor, Shape)>;
    /// Given dy: writes dw, db and returns dx when `need_dx` (not for the first layer).
    fn conv_backward(
        &self,
        x: &Self::Tensor,
        xs: Shape,
        w: &Self::Tensor,
        c: &Conv,
        dy: &Self::Tensor,
        dw: &mut Self::Tensor,
        db: &mut Self::Tensor,
        need_dx: bool,
    ) -> Result<Option<Self::Tensor>>;
    fn relu_forward(&self, x: &mut Self::Tensor, s: Shape) -> Result<()>;
    /// dy ← dy where y > 0, else 0.
    fn relu_backward(&self, y: &Self::Tensor, dy: &mut Self::Tensor, s: Shape) -> Result<()>;
    /// Cross-channel LRN, paper convention: y = x / (k + α Σ x²)^β over `size` channels.
    fn lrn_forward(
        &self,
        x: &Self::Tensor,
        xs: Shape,
        l: &Lrn,
    ) -> Result<(Self::Tensor, Self::LrnSaved)>;
    fn lrn_backward(
        &self,
        x: &Self::Tensor,
        y: &Self::Tensor,
        saved: &Self::LrnSaved,
        xs: Shape,
        l: &Lrn,
        dy: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// Overlapping max-pool, 3×3 window, stride 2.
    fn pool_forward(
        &self,
        x: &Self::Tensor,
        xs: Shape,
    ) -> Result<(Self::Tensor, Shape, Self::PoolSaved)>;
    fn pool_backward(
        &self,
        x: &Self::Tensor,
        xs: Shape,
        y: &Self::Tensor,
        saved: &Self::PoolSaved,
        dy: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// y [N, O] = x [N, I] · wᵀ + b, w: [O, I].
    fn linear_forward(
        &self,
        x: &Self::Tensor,
        n: usize,
        w: &Self::Tensor,
        b: &Self::Tensor,
        o: usize,
    ) -> Result<Self::Tensor>;
    /// Writes dw, db; returns dx.
    fn linear_backward(
        &self,
        x: &Self::Tensor,
        n: usize,
        w: &Self::Tensor,
        o: usize,
        dy: &Self::Tensor,
        dw: &mut Self::Tensor,
        db: &mut Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// `linear_backward` then `sgd_step` on the weights and the bias, for a layer whose
    /// gradients nothing else reads (training on one engine): returns dx, computed from the
    /// weights before the update. `grads` receive dw and db here; the CPU engine folds the
    /// weight gradient into the update block by block instead and leaves them unwritten.
    fn linear_backward_sgd(
        &self,
        (x, n, o): (&Self::Tensor, usize, usize),
        dy: &Self::Tensor,
        (w, vw): (&mut Self::Tensor, &mut Self::Tensor),
        (b, vb): (&mut Self::Tensor, &mut Self::Tensor),
        (dw, db): (&mut Self::Tensor, &mut Self::Tensor),
        h: Sgd,
    ) -> Result<Self::Tensor> {
        let dx = self.linear_backward(x, n, w, o, dy, dw, db)?;
        self.sgd_step(w, vw, dw, h.lr, h.momentum, h.decay)?;
        self.sgd_step(b, vb, db, h.lr, h.momentum, h.decay)?;
        Ok(dx)
    }
    /// Inverted dropout in place: element i is zeroed where `dropout_keeps(seed, i, p)` is
    /// false and scaled by 1/(1−p) otherwise. The same call on dy is its backward pass.
    fn dropout(&self, h: &mut Self::Tensor, p: f32, seed: u64) -> Result<()>;
    /// Softmax cross-entropy of logits [n, classes]: per-sample losses [n] and
    /// dL/dlogits of the batch mean [n, classes].
    fn softmax_cross_entropy(
        &self,
        logits: &Self::Tensor,
        labels: &[u32],
        classes: usize,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    /// t ← a·t (a data-parallel shard's loss gradient weighted by its share of the batch).
    fn scale(&self, t: &mut Self::Tensor, a: f32) -> Result<()>;
    /// Makes this engine's device current on the calling thread before a run of calls (one
    /// thread drives several GPUs in data-parallel training); nothing to do on the CPU.
    fn make_current(&self) -> Result<()> {
        Ok(())
    }
    /// SGD with momentum as in the paper: v ← m·v − wd·lr·w − lr·g; w ← w + v.
    fn sgd_step(
        &self,
        w: &mut Self::Tensor,
        v: &mut Self::Tensor,
        g: &Self::Tensor,
        lr: f32,
        momentum: f32,
        decay: f32,
    ) -> Result<()>;
}

/// The dropout mask as a pure function of (seed, element), identical on every engine
/// (the CUDA kernel computes the same splitmix64 hash), so masks need no storage.
/// `threshold` is `dropout_threshold(p)`, computed once per call site.
#[inline(always)]
pub fn dropout_keeps(seed: u64, i: u64, threshold: u32) -> bool {
    dropout_hash(seed, i) >= threshold
}

/// 24 uniform bits for element `i`.
#[inline(always)]
pub fn dropout_hash(seed: u64, i: u64) -> u32 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as u32
}

/// Elements whose hash is below this are dropped.
pub fn dropout_threshold(p: f32) -> u32 {
    (p.clamp(0.0, 1.0) as f64 * (1u64 << 24) as f64) as u32
}

/// Uniform in [−1, 1), from a fixed LCG so every run compares the same numbers.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_mask_is_seeded_and_drops_the_right_fraction() {
        let half = dropout_threshold(0.5);
        let kept = |seed| {
            (0..100_000)
                .filter(|&i| dropout_keeps(seed, i, half))
                .count()
        };
        let a = kept(3);
        assert_eq!(a, kept(3));
        assert!((a as f64 / 1e5 - 0.5).abs() < 0.01, "{a}");
        let same = (0..1000)
            .filter(|&i| dropout_keeps(3, i, half) == dropout_keeps(4, i, half))
            .count();
        assert!((400..600).contains(&same), "{same}");
        assert_eq!(dropout_threshold(0.0), 0);
        assert!((0..1000).all(|i| dropout_keeps(1, i, dropout_threshold(0.0))));
        // splitmix64 of seed 0, element 0: the reference value the CUDA kernel must match.
        assert_eq!(dropout_hash(0, 0), (0xE220_A839_7B1D_CDAF_u64 >> 40) as u32);
    }
}
