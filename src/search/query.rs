//! `fc7 query`: the query image's vector — its stored one when it is indexed and unchanged, so
//! no model is loaded for it; else the model's — searched through the `Index` interface
//! (an index folder or a PostgreSQL store), and ranked with the image itself first when it is
//! indexed.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::imaging;
use crate::infer::embed::{EmbedOptions, Embedder};
use crate::search::index::Index;

#[derive(Clone, Debug)]
pub struct QueryOptions {
    pub k: usize,
    pub exclude_self: bool,
    pub embed: EmbedOptions,
    pub max_pixels: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Neighbour {
    pub rank: usize,
    pub distance: f32,
    #[serde(serialize_with = "crate::util::fs::lossy_path")]
    pub path: PathBuf,
    pub id: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueryResult {
    #[serde(serialize_with = "crate::util::fs::lossy_path")]
    pub query: PathBuf,
    /// True when the query image itself is in the index (it is then rank 0 unless excluded).
    pub indexed: bool,
    pub neighbours: Vec<Neighbour>,
    /// Why this query image could not be searched.
    pub error: Option<String>,
}

/// A query's vector and, when the image is indexed, its catalog id.
struct Probe {
    vector: Vec<f32>,
    self_id: Option<i64>,
}

fn probe(
    path: &Path,
    searcher: &dyn Index,
    embedder: &mut Option<Embedder>,
    opts: &QueryOptions,
) -> Result<Probe> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if let Some((id, vector)) =
        searcher.stored(path, meta.len(), crate::imaging::scan::mtime_ns(&meta))?
    {
        return Ok(Probe {
            vector,
            self_id: Some(id),
        });
    }
    // Decoded before the model opens: a file that is not an image is answered at once.
    let input = match embedder {
        Some(e) => imaging::input_from_file(path, &e.manifest.preprocess, opts.max_pixels)?,
        None => {
            let model = searcher.model()?;
            let manifest = crate::model::manifest::read_manifest(&model)?;
            let input = imaging::input_from_file(path, &manifest.preprocess, opts.max_pixels)?;
            searcher.check_model(&model, &manifest)?;
            *embedder = Some(Embedder::open_read(&model, manifest, &opts.embed)?);
            input
        }
    };
    let e = embedder.as_mut().expect("opened above");
    Ok(Probe {
        vector: e.run(&input.tensor, 1, false)?.fc7,
        self_id: None,
    })
}

fn rank(
    hits: Vec<(i64, f32, PathBuf)>,
    self_id: Option<i64>,
    opts: &QueryOptions,
) -> Vec<Neighbour> {
    let mut out = Vec::new();
    if let (Some(id), false) = (self_id, opts.exclude_self) {
        if let Some((_, _, p)) = hits.iter().find(|h| h.0 == id) {
            out.push(Neighbour {
                rank: 0,
                distance: 0.0,
                path: p.clone(),
                id,
            });
        }
    }
    let others = hits
        .into_iter()
        .filter(|h| Some(h.0) != self_id)
        .take(opts.k);
    for (i, (id, distance, path)) in others.enumerate() {
        out.push(Neighbour {
            rank: i + 1,
            distance,
            path,
            id,
        });
    }
    out
}

/// Searches the index for each of `images`; one failing query image does not stop the others.
pub fn query(
    searcher: &dyn Index,
    images: &[PathBuf],
    opts: &QueryOptions,
) -> Result<Vec<QueryResult>> {
    let mut embedder = None;
    images
        .iter()
        .map(|img| {
            let path = std::path::absolute(img).map_err(|e| Error::io(img, e))?;
            let mut res = QueryResult {
                query: path.clone(),
                indexed: false,
                neighbours: vec![],
                error: None,
            };
            match probe(&path, searcher, &mut embedder, opts) {
                Ok(p) => {
                    res.indexed = p.self_id.is_some();
                    let hits = searcher.nearest(&p.vector, opts.k + 1)?;
                    res.neighbours = rank(hits, p.self_id, opts);
                }
                Err(e) if e.is_per_file() => res.error = Some(e.to_string()),
                Err(e) => return Err(e),
            }
            Ok(res)
        })
        .collect()
}
