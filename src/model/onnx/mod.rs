//! Writes AlexNet to ONNX from a parameter set, and the manifest beside it. The protobuf messages
//! (`proto`) are the subset of onnx.proto this writer needs, declared by hand with prost (field
//! numbers as in onnx/onnx.proto), so no `protoc` is needed at build time.

use prost::Message;

use crate::error::{Error, Result};
use crate::model::{AlexNetConfig, Param};

mod proto;

use proto::*;

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;
pub const INPUT: &str = "image";
pub const EMBEDDING: &str = "fc7";
pub const LOGITS: &str = "logits";

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: ATTR_INT,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: ATTR_FLOAT,
        ..Default::default()
    }
}

/// Accumulates nodes; each helper returns the name of the tensor it produced.
struct Builder {
    nodes: Vec<NodeProto>,
}

impl Builder {
    fn node(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: out.to_string(),
            op_type: op.into(),
            attribute: attrs,
        });
        out.to_string()
    }

    fn conv(&mut self, x: &str, name: &str, c: &crate::model::Conv) -> String {
        let (w, b) = (format!("{name}.w"), format!("{name}.b"));
        let k = c.kernel as i64;
        let p = c.pad as i64;
        let s = c.stride as i64;
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
            attr_ints("pads", &[p, p, p, p]),
            attr_int("group", c.groups as i64),
        ];
        self.node("Conv", &[x, &w, &b], name, attrs)
    }

    fn gemm(&mut self, x: &str, name: &str, out: &str) -> String {
        let (w, b) = (format!("{name}.w"), format!("{name}.b"));
        self.node("Gemm", &[x, &w, &b], out, vec![attr_int("transB", 1)])
    }

    fn relu(&mut self, x: &str, out: &str) -> String {
        self.node("Relu", &[x], out, vec![])
    }

    fn lrn(&mut self, x: &str, out: &str, l: &crate::model::Lrn) -> String {
        let attrs = vec![
            attr_int("size", l.size as i64),
            // ONNX divides alpha by size; the paper does not.
            attr_float("alpha", l.alpha * l.size as f32),
            attr_float("beta", l.beta),
            attr_float("bias", l.k),
        ];
        self.node("LRN", &[x], out, attrs)
    }

    fn pool(&mut self, x: &str, out: &str) -> String {
        let k = crate::model::POOL_KERNEL as i64;
        let s = crate::model::POOL_STRIDE as i64;
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
        ];
        self.node("MaxPool", &[x], out, attrs)
    }
}

fn value_info(name: &str, dims: &[DimValue]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(d.clone()),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

fn initializer(p: &Param) -> TensorProto {
    let mut raw = Vec::with_capacity(p.data.len() * 4);
    for v in &p.data {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        dims: p.shape.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        name: p.name.clone(),
        raw_data: raw,
    }
}

/// Nodes of the forward graph in eval mode (dropout is the identity): image → fc7 (→ logits).
fn nodes(config: &AlexNetConfig) -> Vec<NodeProto> {
    let mut b = Builder { nodes: Vec::new() };
    let mut x = INPUT.to_string();
    for (i, c) in config.convs.iter().enumerate() {
        let n = i + 1;
        x = b.conv(&x, &format!("conv{n}"), c);
        x = b.relu(&x, &format!("relu{n}"));
        if n <= 2 {
            if let Some(l) = &config.lrn {
                x = b.lrn(&x, &format!("lrn{n}"), l);
            }
        }
        if matches!(n, 1 | 2 | 5) {
            x = b.pool(&x, &format!("pool{n}"));
        }
    }
    x = b.node("Flatten", &[&x], "flat", vec![attr_int("axis", 1)]);
    x = b.gemm(&x, "fc6", "fc6_linear");
    x = b.relu(&x, "fc6");
    x = b.gemm(&x, "fc7", "fc7_linear");
    x = b.relu(&x, EMBEDDING);
    if config.classes > 0 {
        b.gemm(&x, "fc8", LOGITS);
    }
    b.nodes
}

/// Serialises the network with `params` as initialisers. Parameters must match
/// `config.param_shapes()` in name and shape.
pub fn to_onnx_bytes(config: &AlexNetConfig, params: &[Param], doc: &str) -> Result<Vec<u8>> {
    config.validate().map_err(Error::Invalid)?;
    let want = config.param_shapes();
    if want.len() != params.len()
        || want.iter().zip(params).any(|((n, s), p)| {
            *n != p.name || *s != p.shape || p.data.len() != s.iter().product::<usize>()
        })
    {
        return Err(Error::Invalid(
            "parameters do not match the architecture".into(),
        ));
    }
    let n = DimValue::Param("N".into());
    let hw = config.input as i64;
    let input = value_info(
        INPUT,
        &[
            n.clone(),
            DimValue::Value(3),
            DimValue::Value(hw),
            DimValue::Value(hw),
        ],
    );
    let mut outputs = vec![value_info(
        EMBEDDING,
        &[n.clone(), DimValue::Value(config.hidden as i64)],
    )];
    if config.classes > 0 {
        outputs.push(value_info(
            LOGITS,
            &[n, DimValue::Value(config.classes as i64)],
        ));
    }
    let graph = GraphProto {
        node: nodes(config),
        name: "alexnet".into(),
        initializer: params.iter().map(initializer).collect(),
        input: vec![input],
        output: outputs,
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "fc7".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: vec![],
    };
    Ok(model.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Init};

    #[test]
    fn lrn_alpha_is_scaled_for_onnx() {
        let nodes = nodes(&AlexNetConfig::paper(10, 2));
        let lrn = nodes.iter().find(|n| n.op_type == "LRN").unwrap();
        let alpha = lrn.attribute.iter().find(|a| a.name == "alpha").unwrap().f;
        assert!((alpha - 5e-4).abs() < 1e-9);
        let groups: Vec<i64> = nodes
            .iter()
            .filter(|n| n.op_type == "Conv")
            .map(|n| n.attribute.iter().find(|a| a.name == "group").unwrap().i)
            .collect();
        assert_eq!(groups, vec![1, 2, 1, 2, 2]);
    }

    #[test]
    fn bytes_decode_back_with_every_initializer() {
        let mut c = AlexNetConfig::paper(4, 2);
        c.input = 67;
        c.hidden = 32;
        let p = init_params(&c, Init::He, 3);
        let bytes = to_onnx_bytes(&c, &p, "t").unwrap();
        let m = ModelProto::decode(bytes.as_slice()).unwrap();
        let g = m.graph.unwrap();
        assert_eq!(g.initializer.len(), p.len());
        let fc7 = g.initializer.iter().find(|t| t.name == "fc7.w").unwrap();
        assert_eq!(fc7.raw_data.len(), 32 * 32 * 4);
        assert_eq!(&fc7.raw_data[..4], &p[12].data[0].to_le_bytes());
        assert_eq!(
            g.output.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            vec!["fc7", "logits"]
        );
    }

    #[test]
    fn mismatched_params_are_refused() {
        let c = AlexNetConfig::paper(4, 2);
        let mut c2 = c.clone();
        c2.classes = 5;
        let mut small = c2.clone();
        small.input = 67;
        small.hidden = 8;
        let p = init_params(&small, Init::He, 0);
        assert!(to_onnx_bytes(&c, &p, "").is_err());
    }
}
