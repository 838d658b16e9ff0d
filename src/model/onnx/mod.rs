//! Writes AlexNet to ONNX from a parameter set, and the manifest beside it. The protobuf messages
//! (`proto`) are the subset of onnx.proto this writer needs, declared by hand with prost (field
//! numbers as in onnx/onnx.proto), so no `protoc` is needed at build time.

use crate::error::{Error, Result};
use crate::model::{AlexNetConfig, Conv, Lrn, Param};

pub mod fused;
mod graph;
pub mod half;
mod proto;
pub mod qdq;
pub mod read;
mod stream;
pub mod winograd;

pub use stream::Encoded;

use graph::{f32_tensor, tensor, Builder};
use proto::*;

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;
pub const INPUT: &str = "image";
pub const EMBEDDING: &str = "fc7";
pub const LOGITS: &str = "logits";

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

/// A float output of unknown shape.
fn untyped_output(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: None,
            }),
        }),
    }
}

/// The LRN of `x` ([N, C, H, W]) as ONNX Runtime runs it fast: Σ x² over neighbouring channels
/// by a 1×1 convolution with a band matrix (NCHWc kernels), then x / (k + α Σ)^β. The LRN
/// operator itself runs one thread over plain loops: half of the network's time on 2 cores.
/// `prescale` squares x·√α instead of x (band of ones), so that half precision cannot overflow
/// on x² (past |x| = 255) where α x² is still small.
fn lrn(b: &mut Builder, x: &str, out: &str, channels: usize, l: &Lrn, prescale: bool) -> String {
    let weight = if prescale { 1.0 } else { l.alpha };
    let band = graph::lrn_band(channels, l.size, weight);
    let w = b.constant(f32_tensor(
        &format!("{out}.band"),
        &[channels, channels, 1, 1],
        &band,
    ));
    let k = b.constant(f32_tensor(
        &format!("{out}.k"),
        &[channels],
        &vec![l.k; channels],
    ));
    let s = match prescale {
        true => {
            let r = b.constant(f32_tensor(
                &format!("{out}.sqrt_alpha"),
                &[],
                &[l.alpha.sqrt()],
            ));
            b.node("Mul", &[x, &r], &format!("{out}.scaled"), vec![])
        }
        false => x.to_string(),
    };
    let sq = b.node("Mul", &[&s, &s], &format!("{out}.square"), vec![]);
    let one = Conv::new(channels, 1, 1, 0, 1);
    let den = b.conv(&sq, &w, &k, &format!("{out}.den"), &one);
    b.lrn_divide(x, &den, l, out)
}

/// The forward graph in eval mode (dropout is the identity): image → fc7 (→ logits).
fn build(config: &AlexNetConfig, prescale_lrn: bool) -> Builder {
    let mut b = Builder::default();
    let mut x = INPUT.to_string();
    for (i, c) in config.convs.iter().enumerate() {
        let n = i + 1;
        let (w, bias) = (format!("conv{n}.w"), format!("conv{n}.b"));
        x = b.conv(&x, &w, &bias, &format!("conv{n}"), c);
        x = b.relu(&x, &format!("relu{n}"));
        if n <= 2 {
            if let Some(l) = &config.lrn {
                x = lrn(&mut b, &x, &format!("lrn{n}"), c.out, l, prescale_lrn);
            }
        }
        if matches!(n, 1 | 2 | 5) {
            x = b.pool("MaxPool", &x, &format!("pool{n}"));
        }
    }
    x = b.node("Flatten", &[&x], "flat", vec![graph::attr_int("axis", 1)]);
    x = b.gemm(&x, "fc6.w", "fc6.b", "fc6_linear");
    x = b.relu(&x, "fc6");
    x = b.gemm(&x, "fc7.w", "fc7.b", "fc7_linear");
    x = b.relu(&x, EMBEDDING);
    if config.classes > 0 {
        b.gemm(&x, "fc8.w", "fc8.b", LOGITS);
    }
    b
}

/// Checks that `params` are `config`'s parameters by name, shape and length.
pub fn check_params(config: &AlexNetConfig, params: &[Param]) -> Result<()> {
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
    Ok(())
}

/// The graph's input and outputs: image [N, 3, S, S] → fc7 [N, hidden] (and logits).
fn signature(config: &AlexNetConfig) -> (ValueInfoProto, Vec<ValueInfoProto>) {
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
    (input, outputs)
}

/// A model of `nodes` reading `initializers`, with `domains` besides the default operator set.
fn model(
    b: Builder,
    mut initializer: Vec<TensorProto>,
    config: &AlexNetConfig,
    doc: &str,
    extra_outputs: &[&str],
) -> ModelProto {
    let (input, mut output) = signature(config);
    output.extend(extra_outputs.iter().map(|name| untyped_output(name)));
    let mut opset_import = vec![OperatorSetIdProto {
        domain: String::new(),
        version: OPSET,
    }];
    if b.nodes.iter().any(|n| n.domain == MS_DOMAIN) {
        opset_import.push(OperatorSetIdProto {
            domain: MS_DOMAIN.into(),
            version: 1,
        });
    }
    initializer.extend(b.constants);
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: "fc7".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.into(),
        graph: Some(GraphProto {
            node: b.nodes,
            name: "alexnet".into(),
            initializer,
            input: vec![input],
            output,
        }),
        opset_import,
        metadata_props: vec![],
    }
}

/// Serialises the network with `params` as initialisers. Parameters must match
/// `config.param_shapes()` in name and shape.
pub fn to_onnx_bytes(config: &AlexNetConfig, params: &[Param], doc: &str) -> Result<Vec<u8>> {
    to_onnx_with_outputs(config, params, doc, &[])
}

/// [`to_onnx_bytes`] with intermediate tensors (e.g. `relu1`, `lrn1`) as extra float outputs,
/// for calibrating a quantised model on what the fp32 network computes.
pub fn to_onnx_with_outputs(
    config: &AlexNetConfig,
    params: &[Param],
    doc: &str,
    extra_outputs: &[&str],
) -> Result<Vec<u8>> {
    Ok(fp32(config, params, doc, extra_outputs)?.to_vec())
}

/// The network with `params` as initialisers, their bytes left in `params` until written
/// (`Encoded::write_to`): what `to_onnx_with_outputs` encodes.
pub fn fp32<'a>(
    config: &AlexNetConfig,
    params: &'a [Param],
    doc: &str,
    extra_outputs: &[&str],
) -> Result<Encoded<'a>> {
    check_params(config, params)?;
    let init = params
        .iter()
        .map(|p| tensor(&p.name, &p.shape, FLOAT, Vec::new()))
        .collect();
    Ok(Encoded {
        model: model(build(config, false), init, config, doc, extra_outputs),
        raws: (params.iter())
            .map(|p| crate::util::le::f32s_as_bytes(&p.data))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Init};
    use prost::Message;

    #[test]
    fn lrn_band_sums_the_engines_window_and_convs_keep_their_groups() {
        let l = Lrn::PAPER;
        let band = graph::lrn_band(6, l.size, l.alpha);
        let row = |o: usize| band[o * 6..o * 6 + 6].to_vec();
        let a = l.alpha;
        assert_eq!(row(0), vec![a, a, a, 0.0, 0.0, 0.0]);
        assert_eq!(row(3), vec![0.0, a, a, a, a, a]);
        let b = build(&AlexNetConfig::paper(10, 2), false);
        assert!(b.nodes.iter().all(|n| n.op_type != "LRN"));
        let groups: Vec<i64> = b
            .nodes
            .iter()
            .filter(|n| n.op_type == "Conv" && !n.name.ends_with(".den"))
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
        // the parameters, then each LRN's band and k
        assert_eq!(g.initializer.len(), p.len() + 4);
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
