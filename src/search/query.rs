//! Nearest-neighbour queries: embed the query image (or reuse its stored vector when it is
//! indexed and unchanged), search the graph, brute-force the rows newer than the graph, drop
//! rows deleted since it was built, and rank by Euclidean distance. `exact` searches every row
//! by brute force (the check on the graph).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::imaging;
use crate::infer::embed::{EmbedOptions, Embedder};
use crate::search::catalog::Catalog;
use crate::search::graph::{self, GraphMeta};
use crate::search::knn;
use crate::search::store::Store;

#[derive(Clone, Debug)]
pub struct QueryOptions {
    pub k: usize,
    pub exact: bool,
    pub exclude_self: bool,
    pub embed: EmbedOptions,
    pub max_pixels: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Neighbour {
    pub rank: usize,
    pub distance: f32,
    pub path: PathBuf,
    pub id: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueryResult {
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
    cat: &Catalog,
    embedder: &mut Option<Embedder>,
    opts: &QueryOptions,
) -> Result<Probe> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if let Some((id, vector)) =
        cat.vector_of(path, meta.len(), crate::imaging::scan::mtime_ns(&meta))?
    {
        return Ok(Probe {
            vector,
            self_id: Some(id),
        });
    }
    if embedder.is_none() {
        let model = crate::search::ingest::resolve_model(None, cat)?;
        let e = Embedder::open(&model, &opts.embed)?;
        cat.check_model(&model, &e.manifest)?;
        *embedder = Some(e);
    }
    let e = embedder.as_mut().expect("opened above");
    let input = imaging::input_from_file(path, &e.manifest.preprocess, opts.max_pixels)?;
    Ok(Probe {
        vector: e.run(&input.tensor, 1, false)?.fc7,
        self_id: None,
    })
}

/// The `want` nearest live rows to `q`: graph candidates plus brute force over newer rows.
fn nearest(
    cat: &Catalog,
    graph: Option<(&graph::Graph, &GraphMeta)>,
    q: &[f32],
    want: usize,
) -> Result<Vec<(i64, f32, PathBuf)>> {
    let mut hits: Vec<(i64, f32)> = Vec::new();
    let after = match graph {
        Some((g, m)) => {
            let alive_in_graph = cat.count("images")? - cat.count_after(m.max_id)?;
            let dead = (m.points - alive_in_graph).max(0) as usize;
            hits.extend(graph::search(g, q, want + dead.min(1000)));
            m.max_id
        }
        None => 0,
    };
    cat.for_each_vector(after, |id, v| hits.push((id, knn::l2(q, v))))?;
    knn::sort_hits(&mut hits);
    let mut out = Vec::with_capacity(want);
    for (id, d) in hits {
        if out.len() == want {
            break;
        }
        if let Some(p) = cat.path_of(id)? {
            out.push((id, d, p));
        }
    }
    Ok(out)
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
pub fn query(store: &Store, images: &[PathBuf], opts: &QueryOptions) -> Result<Vec<QueryResult>> {
    let cat = &store.catalog;
    let meta = if opts.exact {
        None
    } else {
        graph::graph_meta(cat)?
    };
    let mut embedder = None;
    graph::with_graph(&store.dir, meta.as_ref(), |g| {
        let graph = g.zip(meta.as_ref());
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
                match probe(&path, cat, &mut embedder, opts) {
                    Ok(p) => {
                        res.indexed = p.self_id.is_some();
                        let hits = nearest(cat, graph, &p.vector, opts.k + 1)?;
                        res.neighbours = rank(hits, p.self_id, opts);
                    }
                    Err(e) if e.is_per_file() => res.error = Some(e.to_string()),
                    Err(e) => return Err(e),
                }
                Ok(res)
            })
            .collect()
    })
}
