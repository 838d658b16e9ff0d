//! Reads a model fc7 wrote back into its parameters, so that a later step (quantisation, half
//! precision) starts from exactly the weights the fp32 file holds; anything else is refused
//! with the reason.

use std::path::Path;

use prost::Message;

use super::proto::{ModelProto, TensorProto, FLOAT};
use crate::error::{Error, Result};
use crate::model::manifest::read_manifest;
use crate::model::{AlexNetConfig, Manifest, Param, Precision};

fn not_ours(path: &Path, reason: impl Into<String>) -> Error {
    Error::Model {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A float tensor's values from its raw little-endian bytes; None for any other tensor.
pub(super) fn floats(t: &TensorProto) -> Option<Vec<f32>> {
    (t.data_type == FLOAT && t.raw_data.len().is_multiple_of(4))
        .then(|| crate::util::le::f32s_from_bytes(&t.raw_data))
}

/// `config`'s parameters from the ONNX `bytes` read at `path`, in `param_shapes()` order.
pub fn params_from_onnx(path: &Path, bytes: &[u8], config: &AlexNetConfig) -> Result<Vec<Param>> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| not_ours(path, format!("not an ONNX model ({e})")))?;
    if model.producer_name != "fc7" {
        let who = match model.producer_name.as_str() {
            "" => "an unnamed producer".to_string(),
            p => format!("'{p}'"),
        };
        return Err(not_ours(path, format!("written by {who}, not by fc7")));
    }
    let graph = model.graph.unwrap_or_default();
    config
        .param_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let t = graph
                .initializer
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| not_ours(path, format!("has no fp32 weights '{name}'")))?;
            let data = floats(t)
                .filter(|d| d.len() == shape.iter().product::<usize>())
                .ok_or_else(|| {
                    not_ours(path, format!("'{name}' is not fp32 of shape {shape:?}"))
                })?;
            Ok(Param { name, shape, data })
        })
        .collect()
}

/// An fp32 model fc7 wrote, for making another precision of it (`then`: what is being done, for
/// the refusal): its manifest, parameters and file size. Quantised or half copies are refused.
pub fn fp32_model(path: &Path, then: &str) -> Result<(Manifest, Vec<Param>, u64)> {
    let manifest = read_manifest(path)?;
    if manifest.precision != Precision::Fp32 {
        let p = manifest.precision;
        return Err(not_ours(
            path,
            format!("is already {p}; {then} the fp32 model"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let params = params_from_onnx(path, &bytes, &manifest.architecture)?;
    Ok((manifest, params, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Init};

    #[test]
    fn written_weights_read_back_and_foreign_files_are_refused() {
        let mut c = AlexNetConfig::paper(3, 2);
        c.input = 67;
        c.hidden = 16;
        let p = init_params(&c, Init::He, 5);
        let bytes = super::super::to_onnx_bytes(&c, &p, "").unwrap();
        let path = Path::new("m.onnx");
        assert_eq!(params_from_onnx(path, &bytes, &c).unwrap(), p);
        let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
        m.producer_name = "pytorch".into();
        let e = params_from_onnx(path, &m.encode_to_vec(), &c).unwrap_err();
        assert!(e.to_string().contains("written by 'pytorch'"), "{e}");
        let e = params_from_onnx(path, b"\x01\x02garbage", &c).unwrap_err();
        assert!(e.to_string().contains("not an ONNX model"), "{e}");
        let mut bigger = c.clone();
        bigger.hidden = 32;
        let e = params_from_onnx(path, &bytes, &bigger).unwrap_err();
        assert!(e.to_string().contains("'fc6.w' is not fp32"), "{e}");
    }
}
