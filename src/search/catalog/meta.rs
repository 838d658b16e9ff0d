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
}

impl Meta {
    pub fn key(self) -> &'static str {
        match self {
            Meta::ModelSha256 => "model_sha256",
            Meta::ModelPath => "model_path",
            Meta::Dim => "dim",
            Meta::Preprocess => "preprocess",
            Meta::Graph => "graph",
        }
    }
}

impl Catalog {
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
