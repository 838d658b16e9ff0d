//! Reads a model fc7 wrote back into its parameters, so that a later step (quantisation) starts
//! from exactly the weights the fp32 file holds; anything else is refused with the reason.

use std::path::Path;

use prost::Message;

use super::proto::{ModelProto, TensorProto, FLOAT};
use crate::error::{Error, Result};
use crate::model::{AlexNetConfig, Param};

fn not_ours(path: &Path, reason: impl Into<String>) -> Error {
    Error::Model {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn floats(t: &TensorProto) -> Option<Vec<f32>> {
    (t.data_type == FLOAT && t.raw_data.len().is_multiple_of(4)).then(|| {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
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
