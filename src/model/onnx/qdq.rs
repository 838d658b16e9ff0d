//! Writes the int8 form of the network for ONNX Runtime's CPU integer kernels, in the QDQ format:
//! QuantizeLinear/DequantizeLinear pairs around each convolution and fully connected layer that
//! ONNX Runtime fuses into QLinearConv and QGemm (VNNI on x86). Weights are int8 within ±64
//! (`WEIGHT_MAX`) with one scale per output channel; activations are uint8 with the static
//! ranges calibration measured.
//!
//! The LRN stays in float, laid out NHWC so that its Σ over channels is one matrix product and
//! the pooling after it runs on uint8 (`NhwcMaxPool`); the transposes around it cancel against
//! the ones ONNX Runtime puts around its NHWC QLinearConv. fc7 comes out of QGemm as f32.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::graph::{attr_int, attr_ints, f32_tensor, lrn_band, tensor, Builder};
use super::proto::*;
use super::{check_params, EMBEDDING, INPUT, LOGITS};
use crate::error::{Error, Result};
use crate::model::{AlexNetConfig, Lrn, Param};

/// What calibration measured: the range each quantised activation is clipped to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranges {
    /// The input's [lo, hi], known exactly from the preprocessing.
    pub input: (f32, f32),
    /// Upper clip of each non-negative activation, by its name in the fp32 graph.
    pub clip: BTreeMap<String, f32>,
}

/// The fp32 tensors whose ranges the int8 graph needs (all non-negative: ReLU or LRN outputs).
pub fn calibration_points(config: &AlexNetConfig) -> Vec<String> {
    let mut v = Vec::new();
    for n in 1..=5 {
        v.push(format!("relu{n}"));
        if n <= 2 && config.lrn.is_some() {
            v.push(format!("lrn{n}"));
        }
    }
    v.push("fc6".into());
    v
}

/// uint8 scale and zero point for values in [lo, hi] (widened to hold 0).
pub fn uint8_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    (scale, (-lo / scale).round().clamp(0.0, 255.0) as u8)
}

/// The largest weight magnitude written: 7 bits and a sign, not 127. CPUs without VNNI (AVX2,
/// AVX-512 before Cascade Lake) multiply uint8 by int8 in pairs summed into int16 with saturation
/// (`vpmaddubsw`): 255 × 127 × 2 overflows it, 255 × 64 × 2 = 32,640 does not. Under QEMU's
/// EPYC-Milan (Zen 3) the 127 form's fc7 vectors strayed twice as far from fp32 as on a VNNI CPU
/// (BENCHMARKS.md, "int8 on CPUs without VNNI"); with 64 every CPU computes the same integers
/// with the same kernels at the same speed.
pub const WEIGHT_MAX: f32 = 64.0;

/// Symmetric int8 values in ±`WEIGHT_MAX` and one scale per output channel (the first axis) of `w`.
pub fn int8_per_channel(w: &Param) -> (Vec<i8>, Vec<f32>) {
    let per = w.data.len() / w.shape[0];
    let mut q = Vec::with_capacity(w.data.len());
    let mut scales = Vec::with_capacity(w.shape[0]);
    for row in w.data.chunks_exact(per) {
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = if max > 0.0 { max / WEIGHT_MAX } else { 1.0 };
        q.extend(
            row.iter()
                .map(|v| (v / s).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8),
        );
        scales.push(s);
    }
    (q, scales)
}

struct Writer<'a> {
    b: Builder,
    params: &'a [Param],
    ranges: &'a Ranges,
    /// (scale, zero point) of each quantised tensor, by the fp32 name it stands for.
    qparams: BTreeMap<String, (f32, u8)>,
}

impl Writer<'_> {
    fn param(&self, name: &str) -> &Param {
        self.params
            .iter()
            .find(|p| p.name == name)
            .expect("checked")
    }

    /// uint8 `name.u8` of the float tensor `x`, with the range measured for `name`.
    fn quantize(&mut self, x: &str, name: &str) -> Result<String> {
        let (lo, hi) = match name {
            INPUT => self.ranges.input,
            _ => (
                0.0,
                *self.ranges.clip.get(name).ok_or_else(|| {
                    Error::Invalid(format!("calibration has no range for '{name}'"))
                })?,
            ),
        };
        let (s, z) = uint8_params(lo, hi);
        self.qparams.insert(name.into(), (s, z));
        let scale = self
            .b
            .constant(f32_tensor(&format!("{name}.scale"), &[], &[s]));
        let zero = self
            .b
            .constant(tensor(&format!("{name}.zero"), &[], UINT8, vec![z]));
        Ok(self.b.node(
            "QuantizeLinear",
            &[x, &scale, &zero],
            &format!("{name}.u8"),
            vec![],
        ))
    }

    /// The float view of the uint8 tensor `u`, quantised as `name` was.
    fn dequantize(&mut self, u: &str, name: &str, out: &str) -> String {
        let inputs = [u, &format!("{name}.scale"), &format!("{name}.zero")];
        self.b.node("DequantizeLinear", &inputs, out, vec![])
    }

    /// Weight `w` as int8 and bias `bias` as int32 (scale input × weight), each behind a
    /// per-channel DequantizeLinear.
    fn weights(&mut self, w: &str, bias: &str, input_scale: f32) -> (String, String) {
        let (wp, bp) = (self.param(w).clone(), self.param(bias).clone());
        let (q, s) = int8_per_channel(&wp);
        let o = wp.shape[0];
        let raw = q.iter().map(|&v| v as u8).collect();
        let wi = self
            .b
            .constant(tensor(&format!("{w}.int8"), &wp.shape, INT8, raw));
        let ws = self.b.constant(f32_tensor(&format!("{w}.scale"), &[o], &s));
        let wz = self
            .b
            .constant(tensor(&format!("{w}.zero"), &[o], INT8, vec![0; o]));
        let bs: Vec<f32> = s.iter().map(|s| s * input_scale).collect();
        let bq = bp.data.iter().zip(&bs).map(|(v, s)| {
            (*v as f64 / *s as f64)
                .round()
                .clamp(i32::MIN as f64, i32::MAX as f64) as i32
        });
        let raw = bq.flat_map(|v| v.to_le_bytes()).collect();
        let bi = self
            .b
            .constant(tensor(&format!("{bias}.int32"), &[o], INT32, raw));
        let bsn = self
            .b
            .constant(f32_tensor(&format!("{bias}.scale"), &[o], &bs));
        let bz = self
            .b
            .constant(tensor(&format!("{bias}.zero"), &[o], INT32, vec![0; 4 * o]));
        let axis = vec![attr_int("axis", 0)];
        let wd = self.b.node(
            "DequantizeLinear",
            &[&wi, &ws, &wz],
            &format!("{w}.dq"),
            axis.clone(),
        );
        let bd = self.b.node(
            "DequantizeLinear",
            &[&bi, &bsn, &bz],
            &format!("{bias}.dq"),
            axis,
        );
        (wd, bd)
    }

    /// `layer` (conv or fc) on uint8 `u` quantised as `key`, then ReLU: the float output's name.
    fn layer(
        &mut self,
        u: &str,
        key: &str,
        layer: &str,
        conv: Option<&crate::model::Conv>,
    ) -> String {
        let x = self.dequantize(u, key, &format!("{layer}.x"));
        let (w, b) = self.weights(
            &format!("{layer}.w"),
            &format!("{layer}.b"),
            self.qparams[key].0,
        );
        let y = match conv {
            Some(c) => self.b.conv(&x, &w, &b, layer, c),
            None => self.b.gemm(&x, &w, &b, &format!("{layer}_linear")),
        };
        let out = if layer == "fc7" {
            EMBEDDING.to_string()
        } else {
            layer.replace("conv", "relu")
        };
        self.b.relu(&y, &out)
    }

    /// uint8 NCHW `u` → NHWC → `pool{n}` (NhwcMaxPool) → NCHW, quantised as before.
    fn pool_u8(&mut self, u: &str, n: usize) -> String {
        let to_nhwc = vec![attr_ints("perm", &[0, 2, 3, 1])];
        let t = self
            .b
            .node("Transpose", &[u], &format!("pool{n}.in.nhwc"), to_nhwc);
        let p = self.b.pool("NhwcMaxPool", &t, &format!("pool{n}.nhwc"));
        let to_nchw = vec![attr_ints("perm", &[0, 3, 1, 2])];
        self.b
            .node("Transpose", &[&p], &format!("pool{n}.u8"), to_nchw)
    }

    /// LRN `n` of uint8 `relu{n}.u8` in float NHWC ([N, H, W, C] · band[C, C] sums the
    /// squares), quantised again as `lrn{n}` for the pooling.
    fn lrn(&mut self, u: &str, n: usize, channels: usize, l: &Lrn) -> Result<String> {
        let name = format!("lrn{n}");
        let to_nhwc = vec![attr_ints("perm", &[0, 2, 3, 1])];
        let t = self
            .b
            .node("Transpose", &[u], &format!("{name}.in.nhwc"), to_nhwc);
        let f0 = self.dequantize(&t, &format!("relu{n}"), &format!("{name}.in.f32"));
        // one consumer per DequantizeLinear: ONNX Runtime would otherwise run it three times
        let f = self.b.relu(&f0, &format!("{name}.in"));
        let band = lrn_band(channels, l.size, l.alpha);
        let m = self.b.constant(f32_tensor(
            &format!("{name}.band"),
            &[channels, channels],
            &band,
        ));
        let k = self.b.constant(f32_tensor(
            &format!("{name}.k"),
            &[channels],
            &vec![l.k; channels],
        ));
        let sq = self
            .b
            .node("Mul", &[&f, &f], &format!("{name}.square"), vec![]);
        let sum = self
            .b
            .node("MatMul", &[&sq, &m], &format!("{name}.sum"), vec![]);
        let den = self
            .b
            .node("Add", &[&sum, &k], &format!("{name}.den"), vec![]);
        let y = self.b.lrn_divide(&f, &den, l, &name);
        let q = self.quantize(&y, &name)?;
        let p = self.b.pool("NhwcMaxPool", &q, &format!("pool{n}.nhwc"));
        let to_nchw = vec![attr_ints("perm", &[0, 3, 1, 2])];
        Ok(self
            .b
            .node("Transpose", &[&p], &format!("pool{n}.u8"), to_nchw))
    }
}

/// The network as the int8 QDQ graph described above: nodes and every constant.
fn build(config: &AlexNetConfig, params: &[Param], ranges: &Ranges) -> Result<Builder> {
    let mut w = Writer {
        b: Builder::default(),
        params,
        ranges,
        qparams: BTreeMap::new(),
    };
    let (mut u, mut key) = (w.quantize(INPUT, INPUT)?, INPUT.to_string());
    for (i, c) in config.convs.iter().enumerate() {
        let n = i + 1;
        let relu = w.layer(&u, &key, &format!("conv{n}"), Some(c));
        (u, key) = (w.quantize(&relu, &relu)?, relu);
        match (&config.lrn, n) {
            (Some(l), 1 | 2) => (u, key) = (w.lrn(&u, n, c.out, l)?, format!("lrn{n}")),
            (_, 1 | 2 | 5) => u = w.pool_u8(&u, n),
            _ => {}
        }
    }
    let flat =
        w.b.node("Flatten", &[&u], "flat.u8", vec![attr_int("axis", 1)]);
    let fc6 = w.layer(&flat, &key, "fc6", None);
    let u = w.quantize(&fc6, &fc6)?;
    let fc7 = w.layer(&u, "fc6", "fc7", None);
    if config.classes > 0 {
        for name in ["fc8.w", "fc8.b"] {
            let p = w.param(name).clone();
            w.b.constant(f32_tensor(name, &p.shape, &p.data));
        }
        w.b.gemm(&fc7, "fc8.w", "fc8.b", LOGITS);
    }
    Ok(w.b)
}

/// Serialises the int8 QDQ model of `params` with the activation `ranges` calibration measured.
pub fn to_int8_onnx_bytes(
    config: &AlexNetConfig,
    params: &[Param],
    ranges: &Ranges,
    doc: &str,
) -> Result<Vec<u8>> {
    use prost::Message;
    check_params(config, params)?;
    let b = build(config, params, ranges)?;
    Ok(super::model(b, Vec::new(), config, doc, &[]).encode_to_vec())
}

/// Ranges for tests: the input in [−2, 2.5], every activation clipped at 3.
#[cfg(test)]
pub(crate) fn test_ranges(config: &AlexNetConfig) -> Ranges {
    Ranges {
        input: (-2.0, 2.5),
        clip: calibration_points(config)
            .into_iter()
            .map(|p| (p, 3.0))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_get_a_scale_per_output_channel_and_activations_keep_zero_exact() {
        let w = Param {
            name: "w".into(),
            shape: vec![2, 3],
            data: vec![0.5, -1.0, 0.25, 0.0, 0.0, 0.0],
        };
        let (q, s) = int8_per_channel(&w);
        assert_eq!(s, vec![1.0 / 64.0, 1.0]);
        assert_eq!(q, vec![32, -64, 16, 0, 0, 0]);
        let (s, z) = uint8_params(-1.0, 3.0);
        assert_eq!((s, z), (4.0 / 255.0, 64));
        let (s, z) = uint8_params(0.5, 5.1);
        assert!((s - 0.02).abs() < 1e-7 && z == 0, "{s} {z}");
    }

    /// The pairwise sums of CPUs without VNNI (`vpmaddubsw`: two uint8 × int8 products into one
    /// saturating int16) cannot overflow for any activations, with every layer's real weights.
    #[test]
    fn no_pair_of_products_overflows_int16() {
        let mut c = AlexNetConfig::paper(10, 2);
        (c.input, c.hidden) = (67, 64);
        let params = crate::model::init_params(&c, crate::model::Init::He, 3);
        for p in params.iter().filter(|p| p.shape.len() > 1) {
            let (q, _) = int8_per_channel(p);
            let top = q.iter().map(|v| v.unsigned_abs() as i32).max().unwrap();
            assert_eq!(top, WEIGHT_MAX as i32, "{}: the range is used", p.name);
            assert!(2 * 255 * top <= i16::MAX as i32, "{}: {top}", p.name);
        }
    }

    #[test]
    fn graph_pools_on_uint8_and_leaves_fc7_in_float() {
        let mut c = AlexNetConfig::paper(0, 2);
        c.input = 67;
        c.hidden = 8;
        let params = crate::model::init_params(&c, crate::model::Init::He, 1);
        let ranges = test_ranges(&c);
        let b = build(&c, &params, &ranges).unwrap();
        let ops = |op: &str| b.nodes.iter().filter(|n| n.op_type == op).count();
        assert_eq!((ops("NhwcMaxPool"), ops("MaxPool"), ops("LRN")), (3, 0, 0));
        let last = b.nodes.last().unwrap();
        assert_eq!(
            (last.op_type.as_str(), last.output[0].as_str()),
            ("Relu", "fc7")
        );
        let mut short = ranges.clone();
        short.clip.remove("lrn2");
        let e = build(&c, &params, &short).err().unwrap().to_string();
        assert!(e.contains("no range for 'lrn2'"), "{e}");
    }
}
