//! The node builder both graph writers share (fp32 in `mod.rs`, int8 in `qdq.rs`): ONNX nodes
//! and the constant tensors they need, each helper returning the name of the tensor it made.

use super::proto::*;
use crate::model::{Conv, Lrn};

pub fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: ATTR_INT,
        ..Default::default()
    }
}

pub fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: ATTR_FLOAT,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

/// A tensor of `data_type` holding `raw` (little-endian elements).
pub fn tensor(name: &str, dims: &[usize], data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type,
        name: name.into(),
        raw_data: raw,
    }
}

pub fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    tensor(name, dims, FLOAT, crate::util::le::f32s_to_bytes(data))
}

/// Accumulates nodes and the constants they read.
#[derive(Default)]
pub struct Builder {
    pub nodes: Vec<NodeProto>,
    pub constants: Vec<TensorProto>,
}

impl Builder {
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        out: &str,
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: out.to_string(),
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
        out.to_string()
    }

    pub fn constant(&mut self, t: TensorProto) -> String {
        let name = t.name.clone();
        self.constants.push(t);
        name
    }

    /// Convolution `name` of `x` with weight and bias tensors `w`, `b`.
    pub fn conv(&mut self, x: &str, w: &str, b: &str, name: &str, c: &Conv) -> String {
        let (k, p, s) = (c.kernel as i64, c.pad as i64, c.stride as i64);
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
            attr_ints("pads", &[p, p, p, p]),
            attr_int("group", c.groups as i64),
        ];
        self.node("Conv", &[x, w, b], name, attrs)
    }

    /// x · wᵀ + b with `w` stored [out, in].
    pub fn gemm(&mut self, x: &str, w: &str, b: &str, out: &str) -> String {
        self.node("Gemm", &[x, w, b], out, vec![attr_int("transB", 1)])
    }

    pub fn relu(&mut self, x: &str, out: &str) -> String {
        self.node("Relu", &[x], out, vec![])
    }

    /// 3×3 stride-2 max-pooling; `op` is MaxPool (NCHW) or NhwcMaxPool (ONNX Runtime, 8-bit).
    pub fn pool(&mut self, op: &str, x: &str, out: &str) -> String {
        let k = crate::model::POOL_KERNEL as i64;
        let s = crate::model::POOL_STRIDE as i64;
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
        ];
        let name = self.node(op, &[x], out, attrs);
        if op != "MaxPool" {
            self.nodes.last_mut().expect("just pushed").domain = MS_DOMAIN.into();
        }
        name
    }

    /// x / den^β, with `den` = k + α Σ x² already computed: two square roots and a product for
    /// the paper's β = 3/4 (ONNX Runtime's Pow is per-element `powf`, several times slower).
    pub fn lrn_divide(&mut self, x: &str, den: &str, l: &Lrn, out: &str) -> String {
        if l.beta == 0.75 {
            let r2 = self.node("Sqrt", &[den], &format!("{out}.sqrt"), vec![]);
            let r4 = self.node("Sqrt", &[&r2], &format!("{out}.sqrt2"), vec![]);
            let d = self.node("Mul", &[&r2, &r4], &format!("{out}.pow"), vec![]);
            return self.node("Div", &[x, &d], out, vec![]);
        }
        let e = self.constant(f32_tensor(&format!("{out}.neg_beta"), &[], &[-l.beta]));
        let inv = self.node("Pow", &[den, &e], &format!("{out}.pow"), vec![]);
        self.node("Mul", &[x, &inv], out, vec![])
    }
}

/// [c, c] matrix with `weight` where output channel o sums input channel i (|o − i| ≤ size / 2,
/// the window of the CPU and CUDA engines): the LRN's Σ over neighbouring channels as a product.
pub fn lrn_band(c: usize, size: usize, weight: f32) -> Vec<f32> {
    let half = (size / 2) as isize;
    let mut band = vec![0.0; c * c];
    for o in 0..c {
        for i in 0..c {
            if (o as isize - i as isize).abs() <= half {
                band[o * c + i] = weight;
            }
        }
    }
    band
}
