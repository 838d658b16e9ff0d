//! The fast path of search: an HNSW graph over short PCA codes of the catalog's vectors, one
//! memory-mapped file per generation (`flat`), built by `build`. It is derived data: written
//! under a new generation name, then switched to by one SQLite commit, and rebuilt (its PCA
//! refitted) when it is missing, unreadable, or a tenth of its points are dead or a tenth more
//! rows have come since. Rows newer than the graph and rows deleted since it was built are
//! handled at query time (brute force over the former, filtering of the latter), and the
//! graph's candidates are re-ranked by their full vectors, so results are never stale.

use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{DistL2, Hnsw};

use crate::error::{Error, Result};
use crate::search::catalog::{Catalog, Meta};
use crate::search::vectors::Vectors;

mod build;
pub mod flat;

pub use flat::FlatGraph;

/// Graph search breadth; raised to the number of candidates when that is larger.
pub const EF_SEARCH: usize = 128;
/// Dimensions of the codes the graph is built on, unless the index says otherwise: on the
/// demo's 60,000 fc7 vectors 128 keep 99.3% of the variance and recall@6 0.9997 after the
/// re-rank (BENCHMARKS.md).
pub const CODE_DIM: usize = 128;

/// An in-memory hnsw_rs graph over full vectors, for evaluations without an index.
pub type Graph<'a> = Hnsw<'a, f32, DistL2>;

/// What the catalog records about the current graph.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphMeta {
    pub generation: i64,
    /// Highest catalog id in the graph; newer rows are searched by brute force.
    pub max_id: i64,
    /// Points in the graph, dead ones included.
    pub points: i64,
    /// Size of the file, checked before it is used.
    pub bytes: u64,
    pub code_dim: usize,
    /// Share of the vectors' variance the codes keep.
    pub kept: f32,
    /// The vector file generation its slots point into.
    pub vectors: i64,
}

fn file(dir: &Path, generation: i64) -> PathBuf {
    dir.join(format!("graph-{generation}.fc7g"))
}

pub fn graph_meta(cat: &Catalog) -> Result<Option<GraphMeta>> {
    let Some(text) = cat.meta(Meta::Graph)? else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Invalid(e.to_string()))?;
    let num = |k: &str| v[k].as_i64().unwrap_or(-1);
    Ok(Some(GraphMeta {
        generation: num("generation"),
        max_id: num("max_id"),
        points: num("points"),
        bytes: num("bytes") as u64,
        code_dim: num("code_dim").max(0) as usize,
        kept: v["kept"].as_f64().unwrap_or(0.0) as f32,
        vectors: num("vectors"),
    }))
}

/// The current graph, mapped; `None` when there is none or it is unusable (missing,
/// truncated, another size than recorded, or not a graph file of this version).
pub fn open(dir: &Path, meta: Option<&GraphMeta>) -> Result<Option<FlatGraph>> {
    let Some(m) = meta else { return Ok(None) };
    let path = file(dir, m.generation);
    if std::fs::metadata(&path).map_or(true, |f| f.len() != m.bytes) {
        return Ok(None);
    }
    Ok(FlatGraph::open(&path)?.filter(|g| g.header.points as i64 == m.points))
}

/// An in-memory hnsw_rs graph over full `vectors` (ids are positions), for evaluations
/// without an index.
pub fn build_in_memory(vectors: &[f32], dim: usize) -> Graph<'static> {
    let graph = Hnsw::new(24, (vectors.len() / dim).max(16), 16, 200, DistL2 {});
    let refs: Vec<(&[f32], usize)> = vectors.chunks(dim).zip(0..).collect();
    graph.parallel_insert_slice(&refs);
    graph
}

/// The k nearest points of an in-memory graph to `q`: (position, Euclidean distance).
pub fn search_in_memory(graph: &Graph, q: &[f32], k: usize) -> Vec<(i64, f32)> {
    graph
        .search(q, k, EF_SEARCH.max(k))
        .into_iter()
        .map(|n| (n.d_id as i64, n.distance))
        .collect()
}

/// How the graph was brought up to date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    Rebuilt(usize),
    /// The index holds no images, so there is no graph.
    Empty,
}

/// Brings the graph up to date with the catalog (call with the index lock held): rebuilds it
/// when it is missing or unreadable, or when dead points or rows newer than it reach a tenth
/// of its points; `code_dim` applies to a rebuild.
pub fn refresh(dir: &Path, cat: &Catalog, vectors: &Vectors, code_dim: usize) -> Result<Refresh> {
    let meta = graph_meta(cat)?;
    let alive = cat.count("images")?;
    if let Some(m) = &meta {
        let newer = cat.count_after(m.max_id)?;
        let dead = m.points - (alive - newer);
        let codes = code_dim.min(vectors.dim()).min(m.points.max(0) as usize);
        let fresh = (dead * 10 < m.points.max(1))
            && (newer * 10 < m.points.max(1))
            && m.code_dim == codes
            && m.vectors == vectors.generation();
        if fresh && open(dir, meta.as_ref())?.is_some() {
            remove_old(dir, Some(m.generation)); // left by a run killed before its switch
            return Ok(Refresh::Unchanged);
        }
    }
    let rows = cat.slots_after(0)?;
    if rows.is_empty() {
        cat.clear_meta(Meta::Graph)?;
        remove_old(dir, None);
        return Ok(Refresh::Empty);
    }
    let bytes = build::build(vectors, &rows, code_dim);
    let generation = meta.map_or(1, |m| m.generation + 1);
    let last = rows.last().expect("rows").0;
    save(dir, cat, &bytes, (generation, vectors.generation()), last)?;
    Ok(Refresh::Rebuilt(rows.len()))
}

/// Writes graph `generation` durably, switches the catalog to it, then removes older ones.
fn save(
    dir: &Path,
    cat: &Catalog,
    bytes: &[u8],
    (generation, vectors): (i64, i64),
    max_id: i64,
) -> Result<()> {
    let path = file(dir, generation);
    crate::util::fs::atomic_write(&path, bytes)?;
    crate::util::fault::point("graph-written");
    let g = FlatGraph::open(&path)?.ok_or_else(|| Error::Index {
        path: dir.to_path_buf(),
        reason: format!("{} did not read back as a graph", path.display()),
    })?;
    let meta = serde_json::json!({
        "generation": generation,
        "max_id": max_id,
        "points": g.header.points,
        "bytes": bytes.len(),
        "code_dim": g.header.code_dim,
        "kept": g.header.kept,
        "vectors": vectors,
    });
    cat.set_meta(Meta::Graph, &meta.to_string())?;
    crate::util::fault::point("graph-switched");
    remove_old(dir, Some(generation));
    Ok(())
}

/// Removes graph files other than generation `keep` (all of them for `None`), including the
/// hnsw_rs dumps of indexes written before the flat layout.
fn remove_old(dir: &Path, keep: Option<i64>) {
    let keep = keep.map(|g| file(dir, g));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("graph-") || name.starts_with(".graph-");
        if ours && Some(e.path()) != keep {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
