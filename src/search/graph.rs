//! The fast path of search: an HNSW graph (hnsw_rs, L2) over the catalog's vectors, keyed by
//! catalog id. It is derived data: saved under a new generation name, then switched to by one
//! SQLite commit, and rebuilt whenever it is missing, unreadable or more than a tenth dead.
//! Rows newer than the graph and rows deleted since it was built are handled at query time
//! (brute force over the former, filtering of the latter), so results are never stale.

use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, DistL2, Hnsw, HnswIo};

use crate::error::{Error, Result};
use crate::search::catalog::{Catalog, Meta};

const MAX_CONNECTIONS: usize = 24;
const EF_CONSTRUCTION: usize = 200;
const MAX_LAYERS: usize = 16;
/// Graph search breadth; raised to k when k is larger.
pub const EF_SEARCH: usize = 128;

pub type Graph<'a> = Hnsw<'a, f32, DistL2>;

/// What the catalog records about the current graph.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphMeta {
    pub generation: i64,
    /// Highest catalog id inserted; newer rows are searched by brute force.
    pub max_id: i64,
    /// Points in the graph, dead ones included.
    pub points: i64,
    /// Sizes of the two files, checked before loading.
    pub bytes: (u64, u64),
}

fn basename(generation: i64) -> String {
    format!("graph-{generation}")
}

fn files(dir: &Path, generation: i64) -> (PathBuf, PathBuf) {
    let b = basename(generation);
    (
        dir.join(format!("{b}.hnsw.graph")),
        dir.join(format!("{b}.hnsw.data")),
    )
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
        bytes: (num("graph_bytes") as u64, num("data_bytes") as u64),
    }))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(u64::MAX, |m| m.len())
}

/// Loads the current graph and hands it to `f`; `None` when there is none or it is unusable
/// (files missing, truncated, or failing to parse).
pub fn with_graph<R>(
    dir: &Path,
    meta: Option<&GraphMeta>,
    f: impl FnOnce(Option<&Graph>) -> R,
) -> R {
    let Some(m) = meta else { return f(None) };
    let (g, d) = files(dir, m.generation);
    if (file_len(&g), file_len(&d)) != m.bytes {
        return f(None);
    }
    let mut io = HnswIo::new(dir, &basename(m.generation));
    let io_ref = &mut io;
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        { io_ref }.load_hnsw::<f32, DistL2>()
    }));
    match loaded {
        Ok(Ok(graph)) if graph.get_nb_point() as i64 == m.points => f(Some(&graph)),
        _ => f(None),
    }
}

/// The k nearest graph points to `q`: (catalog id, Euclidean distance).
pub fn search(graph: &Graph, q: &[f32], k: usize) -> Vec<(i64, f32)> {
    graph
        .search(q, k, EF_SEARCH.max(k))
        .into_iter()
        .map(|n| (n.d_id as i64, n.distance))
        .collect()
}

/// An in-memory graph over `vectors` (ids are positions), for evaluations.
pub fn build_in_memory(vectors: &[f32], dim: usize) -> Graph<'static> {
    let graph = new_graph(vectors.len() / dim);
    let refs: Vec<(&[f32], usize)> = vectors
        .chunks(dim)
        .enumerate()
        .map(|(i, v)| (v, i))
        .collect();
    graph.parallel_insert_slice(&refs);
    graph
}

fn new_graph(capacity: usize) -> Graph<'static> {
    Hnsw::new(
        MAX_CONNECTIONS,
        capacity.max(16),
        MAX_LAYERS,
        EF_CONSTRUCTION,
        DistL2 {},
    )
}

/// Inserts every catalog row with id > `after` into `graph`; returns (highest id, count).
fn insert_rows(graph: &Graph, cat: &Catalog, after: i64) -> Result<(i64, usize)> {
    let mut rows: Vec<(Vec<f32>, usize)> = Vec::new();
    cat.for_each_vector(after, |id, v| rows.push((v.to_vec(), id as usize)))?;
    let max = rows.last().map_or(after, |r| r.1 as i64);
    for chunk in rows.chunks(4096) {
        let refs: Vec<(&[f32], usize)> = chunk.iter().map(|(v, id)| (v.as_slice(), *id)).collect();
        graph.parallel_insert_slice(&refs);
    }
    Ok((max, rows.len()))
}

/// How the graph was brought up to date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    Extended(usize),
    Rebuilt(usize),
}

/// Brings the graph up to date with the catalog (call with the index lock held): extends it with
/// new rows, or rebuilds it when it is missing, unreadable or over a tenth dead.
pub fn refresh(dir: &Path, cat: &Catalog) -> Result<Refresh> {
    let meta = graph_meta(cat)?;
    let alive = cat.count("images")?;
    let max_id = cat.max_id()?;
    if let Some(m) = &meta {
        let alive_in_graph = alive - cat.count_after(m.max_id)?;
        let dead = m.points - alive_in_graph;
        let healthy = dead * 10 <= m.points;
        if healthy && m.max_id == max_id {
            if with_graph(dir, meta.as_ref(), |g| g.is_some()) {
                return Ok(Refresh::Unchanged);
            }
        } else if healthy {
            let extended = with_graph(dir, meta.as_ref(), |g| -> Result<Option<usize>> {
                let Some(g) = g else { return Ok(None) };
                let (hi, n) = insert_rows(g, cat, m.max_id)?;
                save(dir, cat, g, m.generation + 1, hi)?;
                Ok(Some(n))
            })?;
            if let Some(n) = extended {
                return Ok(Refresh::Extended(n));
            }
        }
    }
    let graph = new_graph(alive as usize);
    let (hi, n) = insert_rows(&graph, cat, 0)?;
    save(dir, cat, &graph, meta.map_or(1, |m| m.generation + 1), hi)?;
    Ok(Refresh::Rebuilt(n))
}

/// Dumps `graph` as `generation`, makes it durable, switches the catalog to it, then removes
/// older generations.
fn save(dir: &Path, cat: &Catalog, graph: &Graph, generation: i64, max_id: i64) -> Result<()> {
    let idx_err = |reason: String| Error::Index {
        path: dir.to_path_buf(),
        reason,
    };
    graph
        .file_dump(dir, &basename(generation))
        .map_err(|e| idx_err(format!("cannot save the graph: {e}")))?;
    let (g, d) = files(dir, generation);
    for p in [&g, &d] {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(p, e))?;
    }
    let meta = serde_json::json!({
        "generation": generation,
        "max_id": max_id,
        "points": graph.get_nb_point(),
        "graph_bytes": file_len(&g),
        "data_bytes": file_len(&d),
    });
    cat.set_meta(Meta::Graph, &meta.to_string())?;
    remove_old(dir, generation);
    Ok(())
}

fn remove_old(dir: &Path, keep: i64) {
    let keep = basename(keep);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("graph-") && !name.starts_with(&format!("{keep}.")) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
