//! Building a graph file from the index's vectors: fit the PCA on a sample, code every vector,
//! let hnsw_rs link the codes, and write its layers out in the flat layout `flat` searches.

use hnsw_rs::prelude::{DistL2, Hnsw};
use rayon::prelude::*;

use super::flat::{encode, Header, NONE};
use crate::search::pca::{Pca, FIT_ROWS};
use crate::search::vectors::Vectors;

/// Links per node above layer 0 (twice that at layer 0), and the construction search width:
/// on 2 cores a million 128-d codes build at 3,595/s with 16/64 and 2,665/s with 16/100, with
/// the same recall after the re-rank (the codes, not the graph, limit it); 24/200 managed
/// 1,900/s on 50,000.
pub const LINKS: usize = 16;
const EF_CONSTRUCTION: usize = 64;
const MAX_LAYERS: usize = 16;
const CHUNK: usize = 8192;

/// The vectors of `rows` (id, slot) as f32, [rows, dim]; rows the view lacks stay zero.
fn read(vectors: &Vectors, rows: &[(i64, i64)]) -> Vec<f32> {
    let dim = vectors.dim();
    let mut out = vec![0.0f32; rows.len() * dim];
    out.par_chunks_mut(dim).zip(rows).for_each(|(o, r)| {
        if let Some(v) = vectors.row(r.1) {
            o.copy_from_slice(&v);
        }
    });
    out
}

/// The codes of every row, [rows, code_dim], and the PCA that made them.
fn codes(vectors: &Vectors, rows: &[(i64, i64)], code_dim: usize) -> (Pca, Vec<f32>) {
    let stride = rows.len().div_ceil(FIT_ROWS).max(1);
    let sample: Vec<(i64, i64)> = rows.iter().step_by(stride).copied().collect();
    let pca = Pca::fit(&read(vectors, &sample), vectors.dim(), code_dim, 7);
    let mut codes = Vec::with_capacity(rows.len() * pca.code_dim);
    for chunk in rows.chunks(CHUNK) {
        codes.extend(pca.project(&read(vectors, chunk)));
    }
    (pca, codes)
}

/// A node's links on each of its layers (layer 0 first).
type Links = Vec<Vec<u32>>;

/// hnsw_rs's graph over `codes`, as each node's links and the entry node.
fn link(codes: &[f32], code_dim: usize) -> (Vec<Links>, u32) {
    let n = codes.len() / code_dim;
    let hnsw: Hnsw<f32, DistL2> = Hnsw::new(LINKS, n, MAX_LAYERS, EF_CONSTRUCTION, DistL2 {});
    let refs: Vec<(&[f32], usize)> = codes.chunks(code_dim).zip(0..).collect();
    for chunk in refs.chunks(CHUNK) {
        hnsw.parallel_insert_slice(&chunk.to_vec());
    }
    let top = hnsw.get_max_level_observed();
    let mut links: Vec<Links> = vec![Vec::new(); n];
    let mut entry = 0u32;
    for p in hnsw.get_point_indexation() {
        let node = p.get_origin_id();
        let level = p.get_point_id().0;
        if level == top {
            entry = node as u32;
        }
        links[node] = p
            .get_neighborhood_id()
            .into_iter()
            .take(level as usize + 1)
            .map(|l| l.iter().map(|nb| nb.d_id as u32).collect())
            .collect();
    }
    (links, entry)
}

/// Fixed-width lists: each padded with `NONE` (or cut) to `width`.
fn pad(lists: impl Iterator<Item = Vec<u32>>, width: usize) -> Vec<u32> {
    lists
        .flat_map(|mut l| {
            l.resize(width, NONE);
            l
        })
        .collect()
}

/// The graph file for `rows` (catalog id, vector slot), codes of `code_dim`.
pub fn build(vectors: &Vectors, rows: &[(i64, i64)], code_dim: usize) -> Vec<u8> {
    let (pca, codes) = codes(vectors, rows, code_dim);
    let (links, entry) = link(&codes, pca.code_dim);
    let (m0, m) = (2 * LINKS, LINKS);
    let level0 = pad(
        links.iter().map(|l| l.first().cloned().unwrap_or_default()),
        m0,
    );
    let upper: Vec<u32> = (0..links.len() as u32)
        .filter(|&i| links[i as usize].len() > 1)
        .collect();
    let mut offsets = vec![0u32];
    for &u in &upper {
        offsets.push(offsets.last().unwrap() + links[u as usize].len() as u32 - 1);
    }
    let upper_links = pad(
        upper
            .iter()
            .flat_map(|&u| links[u as usize][1..].iter().cloned()),
        m,
    );
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let slots: Vec<u32> = rows.iter().map(|r| r.1 as u32).collect();
    let header = Header {
        dim: pca.dim as u32,
        code_dim: pca.code_dim as u32,
        m0: m0 as u32,
        m: m as u32,
        points: rows.len() as u64,
        upper: upper.len() as u64,
        upper_lists: *offsets.last().unwrap() as u64,
        entry,
        kept: pca.kept,
    };
    let b = bytemuck::cast_slice::<f32, u8>;
    let u = bytemuck::cast_slice::<u32, u8>;
    encode(
        &header,
        [
            b(&pca.mean),
            b(&pca.basis),
            bytemuck::cast_slice(&ids),
            u(&slots),
            b(&codes),
            u(&level0),
            u(&upper),
            u(&offsets),
            u(&upper_links),
        ],
    )
}
