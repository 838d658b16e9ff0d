//! The JSON manifest beside every ONNX model — the contract between whoever wrote the model
//! and fc7's embedder (input and output names, preprocessing, architecture, provenance) — and
//! writing or reading a model with it, checked by the ONNX file's SHA-256.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::onnx::{self, EMBEDDING, INPUT, LOGITS};
use crate::model::standardise::Standardise;
use crate::model::{AlexNetConfig, Param};
use crate::util::fs::{
    atomic_write, atomic_write_with, remove_abandoned_temps, sha256_hex, Hashing,
};

/// How an image becomes the network's input: shorter side resized to `resize`, centre crop of
/// `crop`, values divided by `scale`, then (x - mean) / std per RGB channel, or with
/// `standardise: image` by the crop's own mean and standard deviation (mean and std unused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub resize: u32,
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub scale: f32,
    pub channel_order: String,
    /// Absent (channels) in every manifest written before it existed, and left out when
    /// channels, so an index's recorded preprocessing of such a model reads the same.
    #[serde(default, skip_serializing_if = "Standardise::is_channels")]
    pub standardise: Standardise,
}

impl Preprocess {
    /// ImageNet-style preprocessing at the paper's test-time view (256 → centre 224).
    pub fn imagenet(crop: u32) -> Self {
        Preprocess {
            resize: crop * 8 / 7,
            crop,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            scale: 255.0,
            channel_order: "RGB".into(),
            standardise: Standardise::Channels,
        }
    }
}

/// The JSON file beside every model: the contract between whoever wrote the model and fc7's
/// embedder (input/output names, preprocessing), plus provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub input: String,
    pub input_shape: Vec<String>,
    pub embedding_output: String,
    pub embedding_dim: usize,
    pub logits_output: Option<String>,
    #[serde(default)]
    pub classes: Vec<String>,
    pub preprocess: Preprocess,
    pub architecture: AlexNetConfig,
    pub provenance: serde_json::Value,
    pub onnx_sha256: String,
    /// The arithmetic of the weights and activations (fp32 unless the model was quantised).
    #[serde(default)]
    pub precision: Precision,
}

/// How a model computes: as trained (fp32), in half precision for GPUs, or quantised to 8-bit
/// integers for CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        })
    }
}

pub const MANIFEST_FORMAT: u32 = 1;

/// What a caller knows about a model beyond its weights.
pub struct ModelInfo {
    pub classes: Vec<String>,
    pub preprocess: Preprocess,
    pub provenance: serde_json::Value,
}

/// The manifest path beside an ONNX file: `models/x.onnx` → `models/x.json`.
pub fn manifest_path(onnx: &Path) -> PathBuf {
    onnx.with_extension("json")
}

/// Writes `path` (ONNX) and its manifest, each atomically (temp file, fsync, rename). The
/// parameters are written from `params` as they are (`onnx::Encoded`), hashed on their way.
pub fn write_model(
    path: &Path,
    config: &AlexNetConfig,
    params: &[Param],
    info: ModelInfo,
) -> Result<Manifest> {
    let model = onnx::fp32(config, params, DOC, &[])?;
    let mut sha = String::new();
    atomic_write_with(path, |f| {
        let mut out = Hashing::new(f);
        model.write_to(&mut out)?;
        sha = out.hex();
        Ok(())
    })?;
    remove_abandoned_temps(path);
    write_manifest(path, sha, config, info, Precision::Fp32)
}

/// The doc string of every model fc7 writes.
pub const DOC: &str = "AlexNet (Krizhevsky et al. 2012), written by fc7";

/// Writes the serialised model `bytes` to `path` and its manifest, each atomically.
pub fn write_onnx(
    path: &Path,
    bytes: &[u8],
    config: &AlexNetConfig,
    info: ModelInfo,
    precision: Precision,
) -> Result<Manifest> {
    atomic_write(path, bytes)?;
    remove_abandoned_temps(path);
    write_manifest(path, sha256_hex(bytes), config, info, precision)
}

/// The manifest of the ONNX file at `path`, whose SHA-256 is `onnx_sha256`, written beside it.
fn write_manifest(
    path: &Path,
    onnx_sha256: String,
    config: &AlexNetConfig,
    info: ModelInfo,
    precision: Precision,
) -> Result<Manifest> {
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        input: INPUT.into(),
        input_shape: vec![
            "N".into(),
            "3".into(),
            config.input.to_string(),
            config.input.to_string(),
        ],
        embedding_output: EMBEDDING.into(),
        embedding_dim: config.hidden,
        logits_output: (config.classes > 0).then(|| LOGITS.to_string()),
        classes: info.classes,
        preprocess: info.preprocess,
        architecture: config.clone(),
        provenance: info.provenance,
        onnx_sha256,
        precision,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    atomic_write(&manifest_path(path), &json)?;
    Ok(manifest)
}

/// Reads and checks a model's manifest: it must exist, parse, and match the ONNX file's hash.
pub fn read_manifest(onnx: &Path) -> Result<Manifest> {
    let mpath = manifest_path(onnx);
    let text = std::fs::read(&mpath).map_err(|e| Error::Model {
        path: mpath.clone(),
        reason: format!("cannot read the model's manifest: {e}"),
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| Error::Model {
        path: mpath.clone(),
        reason: format!("invalid manifest: {e}"),
    })?;
    if crate::util::stamp::sha256_of_file(onnx)? != manifest.onnx_sha256 {
        return Err(Error::Model {
            path: onnx.to_path_buf(),
            reason: format!(
                "sha256 differs from {} (model changed after export?)",
                mpath.display()
            ),
        });
    }
    Ok(manifest)
}
