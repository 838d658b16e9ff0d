//! The graph fc7's own CPU sessions run: the exported model (fp32 or int8) with each LRN's
//! standard-operator spelling (square, band product, + k, two square roots, divide; see
//! `lrn` in `mod.rs` and `qdq.rs`) replaced by one `fc7.Lrn` node (`infer::lrn`), and each fp32
//! 3×3 convolution on wide maps and its ReLU by one `fc7.Winograd` node (`winograd.rs`). The file on disk
//! stays standard ONNX for every other runtime; only a graph whose LRN is exactly what fc7
//! writes — the band matrix and k bit for bit, nothing else reading the inner tensors — is
//! rewritten, and anything else is left as it is.

use prost::Message;

use super::graph::{attr_float, attr_int, lrn_band};
use super::proto::*;
use super::read::floats;
use crate::model::{AlexNetConfig, Lrn};

pub const DOMAIN: &str = "fc7";
pub const OP: &str = "Lrn";
/// The 8-bit form: DequantizeLinear → Relu → Lrn → QuantizeLinear as one node.
pub const QOP: &str = "QLrn";
/// A 3×3, stride-1, pad-1 convolution and its ReLU as one node (`infer::winograd`).
pub const WINOGRAD: &str = "Winograd";
/// The rewrite's version: part of the cache key of a rewritten graph's optimised form, so that
/// a changed rewrite never meets the graph an older one saved.
pub const VERSION: u32 = 4;
/// The inner tensors of LRN `name`, by suffix: the nodes that make them are replaced.
const INNER: [&str; 6] = [".square", ".sum", ".den", ".sqrt", ".sqrt2", ".pow"];

/// The channel axis LRN `name` sums over (1: NCHW band [C, C, 1, 1]; −1: NHWC band [C, C]), when
/// its band and k are what fc7 writes for `l`.
fn checked_axis(g: &GraphProto, name: &str, l: &Lrn) -> Option<i64> {
    let init = |suffix: &str| {
        g.initializer
            .iter()
            .find(|t| t.name == format!("{name}{suffix}"))
    };
    let (band, k) = (init(".band")?, init(".k")?);
    let c = *band.dims.first()? as usize;
    let axis = match band.dims.as_slice() {
        [a, b, 1, 1] if *a == *b => 1,
        [a, b] if *a == *b => -1,
        _ => return None,
    };
    let same = |a: &[f32], b: &[f32]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    };
    let ok =
        same(&floats(band)?, &lrn_band(c, l.size, l.alpha)) && same(&floats(k)?, &vec![l.k; c]);
    ok.then_some(axis)
}

/// Replaces LRN `name` in `g` by one `fc7.Lrn` node; false (and `g` untouched) when its shape
/// is not exactly fc7's.
fn fuse_one(g: &mut GraphProto, name: &str, l: &Lrn) -> bool {
    let Some(axis) = checked_axis(g, name, l) else {
        return false;
    };
    let inner: Vec<String> = INNER.iter().map(|s| format!("{name}{s}")).collect();
    let made_here = |n: &NodeProto| n.output.iter().any(|o| o == name || inner.contains(o));
    let Some(last) = g
        .node
        .iter()
        .find(|n| n.output.first().is_some_and(|o| o == name))
    else {
        return false;
    };
    let x = last.input[0].clone();
    let square_of_x = g.node.iter().any(|n| {
        n.output.first() == Some(&inner[0])
            && n.op_type == "Mul"
            && n.input == [x.clone(), x.clone()]
    });
    let read_outside = g
        .node
        .iter()
        .filter(|n| !made_here(n))
        .any(|n| n.input.iter().any(|i| inner.contains(i)));
    let is_output = g.output.iter().any(|o| inner.contains(&o.name));
    if !square_of_x || read_outside || is_output || last.op_type != "Div" && last.op_type != "Mul" {
        return false;
    }
    let at = g
        .node
        .iter()
        .position(made_here)
        .expect("the last node is made here");
    g.node.retain(|n| !made_here(n));
    let attribute = vec![
        attr_int("size", l.size as i64),
        attr_float("alpha", l.alpha),
        attr_float("beta", l.beta),
        attr_float("bias", l.k),
        attr_int("axis", axis),
    ];
    g.node.insert(
        at,
        NodeProto {
            input: vec![x],
            output: vec![name.to_string()],
            name: name.to_string(),
            op_type: OP.into(),
            attribute,
            domain: DOMAIN.into(),
        },
    );
    let unused = [".band", ".k", ".neg_beta"].map(|s| format!("{name}{s}"));
    g.initializer.retain(|t| !unused.contains(&t.name));
    true
}

/// In an int8 graph, folds the DequantizeLinear → Relu before the fused LRN `name` and the
/// QuantizeLinear after it into one `fc7.QLrn` node (uint8 in and out); false when the chain is
/// not exactly that, or an inner tensor has another reader.
fn fuse_quantized(g: &mut GraphProto, name: &str) -> bool {
    let made = |out: &str| {
        g.node
            .iter()
            .position(|n| n.output.first().is_some_and(|o| o == out))
    };
    let readers = |t: &str| {
        g.node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == t))
            .count()
    };
    let Some(lrn) = made(name).filter(|&i| g.node[i].op_type == OP) else {
        return false;
    };
    let relu_out = g.node[lrn].input[0].clone();
    let Some(relu) = made(&relu_out).filter(|&i| g.node[i].op_type == "Relu") else {
        return false;
    };
    let dq_out = g.node[relu].input[0].clone();
    let Some(dq) = made(&dq_out).filter(|&i| g.node[i].op_type == "DequantizeLinear") else {
        return false;
    };
    let q = g
        .node
        .iter()
        .position(|n| n.op_type == "QuantizeLinear" && n.input.first().is_some_and(|i| i == name));
    let Some(q) = q else {
        return false;
    };
    let inner = [dq_out.as_str(), relu_out.as_str(), name];
    let private = inner
        .iter()
        .all(|t| readers(t) == 1 && !g.output.iter().any(|o| o.name == *t));
    if !private || g.node[dq].input.len() != 3 || g.node[q].input.len() != 3 {
        return false;
    }
    let mut node = g.node[lrn].clone();
    node.op_type = QOP.into();
    node.input = [g.node[dq].input.clone(), g.node[q].input[1..].to_vec()].concat();
    node.output = g.node[q].output.clone();
    node.attribute.retain(|a| a.name != "axis");
    let gone = [dq, relu, lrn, q];
    let mut i = 0;
    g.node.retain(|_| {
        i += 1;
        !gone.contains(&(i - 1))
    });
    g.node.insert(dq.min(relu).min(lrn), node);
    true
}

/// `bytes` (a model fc7 wrote, network `arch`) with its LRNs fused and its 3×3 convolutions on
/// wide enough maps for `fc7.Winograd` (`winograd.rs`), or None when nothing could be rewritten.
pub fn with_own_operators(bytes: &[u8], arch: &AlexNetConfig) -> Option<Vec<u8>> {
    let l = arch.lrn.as_ref();
    let mut m = ModelProto::decode(bytes).ok()?;
    if m.producer_name != "fc7" {
        return None;
    }
    let g = m.graph.as_mut()?;
    let fused = ["lrn1", "lrn2"]
        .iter()
        .filter(|n| l.is_some_and(|l| fuse_one(g, n, l)))
        .count();
    for n in ["lrn1", "lrn2"] {
        fuse_quantized(g, n);
    }
    let wide = super::winograd::wide_enough(arch);
    if fused + super::winograd::rewrite(g, &wide) == 0 {
        return None;
    }
    m.opset_import.push(OperatorSetIdProto {
        domain: DOMAIN.into(),
        version: 1,
    });
    Some(m.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, AlexNetConfig, Init};

    fn small() -> (AlexNetConfig, Vec<u8>) {
        let mut c = AlexNetConfig::paper(3, 2);
        c.input = 67;
        c.hidden = 16;
        let bytes = super::super::to_onnx_bytes(&c, &init_params(&c, Init::He, 5), "").unwrap();
        (c, bytes)
    }

    fn ops(bytes: &[u8]) -> Vec<String> {
        let m = ModelProto::decode(bytes).unwrap();
        m.graph
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.clone())
            .collect()
    }

    #[test]
    fn both_lrns_become_one_node_each_and_nothing_else_changes() {
        let (c, bytes) = small();
        let fused = with_own_operators(&bytes, &c).unwrap();
        let (before, after) = (ops(&bytes), ops(&fused));
        assert_eq!(after.iter().filter(|o| *o == OP).count(), 2, "{after:?}");
        for op in ["Sqrt", "Div"] {
            assert!(!after.iter().any(|o| o == op), "{op} left: {after:?}");
        }
        // 2 × (square, band conv, sqrt, sqrt, product, divide) became 2 nodes; conv3..5 work
        // on 3 × 3 maps here, too small for Winograd (winograd.rs)
        assert_eq!(before.len() - after.len(), 2 * 6 - 2);
        assert_eq!(
            before.iter().filter(|o| *o == "Conv").count() - 2,
            after.iter().filter(|o| *o == "Conv").count()
        );
        let m = ModelProto::decode(fused.as_slice()).unwrap();
        assert!(m.opset_import.iter().any(|o| o.domain == DOMAIN));
        assert!(!m
            .graph
            .unwrap()
            .initializer
            .iter()
            .any(|t| t.name.ends_with(".band")));
    }

    fn int8() -> (AlexNetConfig, Vec<u8>) {
        use crate::model::onnx::qdq::{test_ranges, to_int8_onnx_bytes};
        let (c, _) = small();
        let p = init_params(&c, Init::He, 5);
        (
            c.clone(),
            to_int8_onnx_bytes(&c, &p, &test_ranges(&c), "").unwrap(),
        )
    }

    #[test]
    fn int8_chains_become_one_8_bit_node_unless_shared() {
        let (c, bytes) = int8();
        let fused = with_own_operators(&bytes, &c).unwrap();
        let after = ops(&fused);
        assert_eq!(after.iter().filter(|o| *o == QOP).count(), 2, "{after:?}");
        assert!(!after.iter().any(|o| o == OP), "{after:?}");
        let dq = |b: &[u8]| ops(b).iter().filter(|o| *o == "DequantizeLinear").count();
        assert_eq!(dq(&bytes) - dq(&fused), 2);
        // a second reader of lrn1's float input keeps that chain in float
        let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
        let g = m.graph.as_mut().unwrap();
        let mut extra = g
            .node
            .iter()
            .find(|n| n.output[0] == "lrn1.in")
            .unwrap()
            .clone();
        extra.output = vec!["lrn1.in.copy".into()];
        extra.input = vec!["lrn1.in".into()];
        g.node.push(extra);
        let fused = with_own_operators(&m.encode_to_vec(), &c).unwrap();
        let after = ops(&fused);
        assert_eq!(
            (
                after.iter().filter(|o| *o == QOP).count(),
                after.iter().filter(|o| *o == OP).count()
            ),
            (1, 1),
            "{after:?}"
        );
    }

    #[test]
    fn another_band_or_constant_is_left_alone() {
        let (c, bytes) = small();
        let with = |f: &dyn Fn(&mut Lrn)| {
            let mut c = c.clone();
            f(c.lrn.as_mut().unwrap());
            with_own_operators(&bytes, &c)
        };
        assert!(with(&|l| l.alpha *= 2.0).is_none());
        assert!(with(&|l| l.k += 1.0).is_none());
        let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
        m.producer_name = "pytorch".into();
        assert!(with_own_operators(&m.encode_to_vec(), &c).is_none());
    }
}
