//! The index's description in the catalog's `meta` table, each key named once, and the one
//! answer to "was this index built with this model".

use std::path::Path;

use super::Catalog;
use crate::error::{Error, Result};
use crate::model::Manifest;

/// What the catalog's `meta` table holds about the index, each key named once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meta {
    /// SHA-256 of the ONNX model every vector was made with.
    ModelSha256,
    /// That model's absolute path when the index was last updated.
    ModelPath,
    /// The vectors' dimension.
    Dim,
    /// The model's preprocessing (JSON).
    Preprocess,
    /// The HNSW graph's description (`GraphMeta`, JSON).
    Graph,
    /// The vector file's generation and committed rows (JSON).
    Vectors,
    /// Dimensions of the graph's codes, when the user chose them.
    CodeDim,
    /// The metrics of the last `fc7 eval figure4` run on this index (JSON).
    Figure4,
}

impl Meta {
    pub fn key(self) -> &'static str {
        match self {
            Meta::ModelSha256 => "model_sha256",
            Meta::ModelPath => "model_path",
            Meta::Dim => "dim",
            Meta::Preprocess => "preprocess",
            Meta::Graph => "graph",
            Meta::Vectors => "vectors",
            Meta::CodeDim => "code_dim",
            Meta::Figure4 => "figure4",
        }
    }
}

/// The `Meta::Vectors` value for vector file `generation` with `rows` committed rows.
pub fn vectors_json(generation: i64, rows: i64) -> String {
    serde_json::json!({"generation": generation, "rows": rows}).to_string()
}

impl Catalog {
    /// The vector file's generation and committed rows ((1, 0) before any).
    pub fn vector_file(&self) -> Result<(i64, i64)> {
        let Some(text) = self.meta(Meta::Vectors)? else {
            return Ok((1, 0));
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: vectors meta: {e}", self.path.display())))?;
        Ok((
            v["generation"].as_i64().unwrap_or(1),
            v["rows"].as_i64().unwrap_or(0),
        ))
    }

    /// Refuses `model` when the index holds vectors of another model; an index without a model
    /// yet accepts any.
    pub fn check_model(&self, model: &Path, manifest: &Manifest) -> Result<()> {
        let Some(sha) = self.meta(Meta::ModelSha256)? else {
            return Ok(());
        };
        if sha == manifest.onnx_sha256 {
            return Ok(());
        }
        Err(Error::Index {
            path: self.path.clone(),
            reason: format!(
                "built with another model (sha256 {}…, {}) than {}; `fc7 index --reembed` re-embeds every image with it",
                &sha[..12.min(sha.len())],
                self.meta(Meta::ModelPath)?.unwrap_or_default(),
                model.display()
            ),
        })
    }

    /// Records `model` as the index's model.
    pub fn bind_model(&self, model: &Path, manifest: &Manifest) -> Result<()> {
        let abs = std::path::absolute(model).map_err(|e| Error::io(model, e))?;
        self.set_meta(Meta::ModelSha256, &manifest.onnx_sha256)?;
        self.set_meta(Meta::ModelPath, &abs.to_string_lossy())?;
        self.set_meta(Meta::Dim, &manifest.embedding_dim.to_string())?;
        let pre = serde_json::to_string(&manifest.preprocess).expect("json");
        self.set_meta(Meta::Preprocess, &pre)
    }
}
