//! The fp16 form of the network, for GPUs' tensor cores: the fp32 graph with every weight and
//! constant stored as IEEE half, the image cast to half on entry and fc7 (and logits) cast back
//! to f32 on the way out, so the embedder's contract (f32 in, f32 out) is unchanged. The LRN
//! squares x·√α rather than x, which half precision would overflow past |x| = 255.

use prost::Message;

use super::graph::{attr_int, tensor, Builder};
use super::proto::*;
use super::{build, check_params, EMBEDDING, INPUT, LOGITS};
use std::path::Path;

use crate::error::Result;
use crate::model::manifest::{write_onnx, ModelInfo, DOC};
use crate::model::{AlexNetConfig, Manifest, Param, Precision};

const FLOAT16: i32 = 10;

fn to_half(t: TensorProto) -> TensorProto {
    let raw = t
        .raw_data
        .chunks_exact(4)
        .flat_map(|c| {
            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            half::f16::from_f32(v).to_le_bytes()
        })
        .collect();
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    tensor(&t.name, &dims, FLOAT16, raw)
}

/// Renames tensor `from` to `to` wherever a node reads or writes it (and the node named after it).
fn rename(nodes: &mut [NodeProto], from: &str, to: &str) {
    for n in nodes {
        if n.name == from {
            n.name = to.to_string();
        }
        for name in n.input.iter_mut().chain(n.output.iter_mut()) {
            if name == from {
                *name = to.to_string();
            }
        }
    }
}

fn cast(b: &mut Builder, x: &str, out: &str, to: i32) {
    b.node("Cast", &[x], out, vec![attr_int("to", to as i64)]);
}

/// Serialises the network in half precision (see the module header).
pub fn to_fp16_onnx_bytes(config: &AlexNetConfig, params: &[Param], doc: &str) -> Result<Vec<u8>> {
    check_params(config, params)?;
    let body = build(config, true);
    let mut b = Builder::default();
    cast(&mut b, INPUT, "image.fp16", FLOAT16);
    b.nodes.extend(body.nodes);
    rename(&mut b.nodes[1..], INPUT, "image.fp16");
    let mut outs = vec![EMBEDDING];
    if config.classes > 0 {
        outs.push(LOGITS);
    }
    for out in outs {
        let half = format!("{out}.fp16");
        rename(&mut b.nodes, out, &half);
        cast(&mut b, &half, out, FLOAT);
    }
    b.constants = body.constants.into_iter().map(to_half).collect();
    let init = params
        .iter()
        .map(|p| to_half(super::graph::f32_tensor(&p.name, &p.shape, &p.data)))
        .collect();
    Ok(super::model(b, init, config, doc, &[]).encode_to_vec())
}

/// Writes the fp16 copy of the fp32 model fc7 wrote at `model` to `out`, with its manifest.
pub fn convert(model: &Path, out: &Path) -> Result<Manifest> {
    let (manifest, params, _) = super::read::fp32_model(model, "convert")?;
    let config = &manifest.architecture;
    let fp16 = to_fp16_onnx_bytes(config, &params, DOC)?;
    let info = ModelInfo {
        classes: manifest.classes.clone(),
        preprocess: manifest.preprocess.clone(),
        provenance: serde_json::json!({
            "converted": {"from": model.display().to_string(), "from_sha256": manifest.onnx_sha256},
            "source": manifest.provenance,
        }),
    };
    write_onnx(out, &fp16, config, info, Precision::Fp16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_graph_casts_at_both_ends_and_squares_scaled_values() {
        let mut c = AlexNetConfig::paper(3, 2);
        c.input = 67;
        c.hidden = 8;
        let p = crate::model::init_params(&c, crate::model::Init::He, 2);
        let m = ModelProto::decode(to_fp16_onnx_bytes(&c, &p, "").unwrap().as_slice()).unwrap();
        let g = m.graph.unwrap();
        assert!(g.initializer.iter().all(|t| t.data_type == FLOAT16));
        let casts: Vec<(&str, &str)> = g
            .node
            .iter()
            .filter(|n| n.op_type == "Cast")
            .map(|n| (n.input[0].as_str(), n.output[0].as_str()))
            .collect();
        assert_eq!(
            casts,
            [
                ("image", "image.fp16"),
                ("fc7.fp16", "fc7"),
                ("logits.fp16", "logits")
            ]
        );
        // The band sums (x·√α)², so it holds ones; 1.0 in IEEE half is 0x3c00.
        let band = g
            .initializer
            .iter()
            .find(|t| t.name == "lrn1.band")
            .unwrap();
        assert_eq!(&band.raw_data[..2], &half::f16::from_f32(1.0).to_le_bytes());
        assert!(g.node.iter().any(|n| n.name == "lrn1.scaled"));
    }
}
