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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::catalog::NewImage;
    use crate::search::graph::{refresh, Refresh};
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    const DIM: usize = 48;

    /// `n` vectors around 64 cluster centres, as image features gather by content.
    fn vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut centres_rng = rand::rngs::StdRng::seed_from_u64(0);
        let wide = Normal::new(0.0f32, 4.0).unwrap();
        let centres: Vec<Vec<f32>> = (0..64)
            .map(|_| (0..DIM).map(|_| wide.sample(&mut centres_rng)).collect())
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let near = Normal::new(0.0f32, 1.0).unwrap();
        (0..n)
            .map(|i| {
                let c = &centres[(i * 7 + seed as usize) % 64];
                c.iter().map(|x| x + near.sample(&mut rng)).collect()
            })
            .collect()
    }

    fn add(cat: &mut Catalog, vs: &[Vec<f32>], first: usize) -> Vec<i64> {
        cat.transaction(|w| {
            vs.iter()
                .enumerate()
                .map(|(i, v)| {
                    w.insert(&NewImage {
                        path: Path::new(&format!("/p/{}.jpg", first + i)),
                        size: 1,
                        mtime_ns: 1,
                        hash: &[0],
                        width: 1,
                        height: 1,
                        vector: v,
                    })
                })
                .collect()
        })
        .unwrap()
    }

    /// The exact `k` nearest live rows.
    fn exact(live: &[(i64, Vec<f32>)], q: &[f32], k: usize) -> Vec<i64> {
        let mut d: Vec<(i64, f32)> = live.iter().map(|(id, v)| (*id, knn::l2(q, v))).collect();
        knn::sort_hits(&mut d);
        d.into_iter().take(k).map(|h| h.0).collect()
    }

    #[test]
    fn recall_after_additions_and_deletions_against_brute_force() {
        let d = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(d.path(), true).unwrap();
        let (first, second) = (vectors(20_000, 1), vectors(1_000, 2));
        let ids = add(&mut cat, &first, 0);
        assert_eq!(refresh(d.path(), &cat).unwrap(), Refresh::Rebuilt(20_000));
        let ids2 = add(&mut cat, &second, 20_000);
        assert_eq!(refresh(d.path(), &cat).unwrap(), Refresh::Extended(1_000));
        // Newer than the graph (brute force at query time), then 5% of the graph deleted —
        // under the tenth that forces a rebuild, so query time must filter them.
        add(&mut cat, &vectors(300, 3), 21_000);
        cat.transaction(|w| ids.iter().step_by(20).try_for_each(|&id| w.remove(id)))
            .unwrap();
        let meta = graph::graph_meta(&cat).unwrap().unwrap();
        let in_graph: Vec<(i64, Vec<f32>)> = ids
            .iter()
            .chain(&ids2)
            .copied()
            .zip(first.into_iter().chain(second))
            .collect();
        let mut live = Vec::new();
        cat.for_each_vector(0, |id, v| live.push((id, v.to_vec())))
            .unwrap();
        let queries = vectors(300, 4);
        let k = 6;
        let (ours, narrow) = graph::with_graph(d.path(), Some(&meta), |g| {
            let g = g.expect("the graph loads");
            let (mut ours, mut narrow) = (0, 0);
            for q in &queries {
                let want = exact(&live, q, k);
                let got = nearest(&cat, Some((g, &meta)), q, k).unwrap();
                ours += got.iter().filter(|h| want.contains(&h.0)).count();
                // The graph alone, at its narrowest width, against its own points.
                let truth = exact(&in_graph, q, k);
                let bare = g.search(q, k, k);
                narrow += bare
                    .iter()
                    .filter(|n| truth.contains(&(n.d_id as i64)))
                    .count();
            }
            (ours, narrow)
        });
        let recall = |hits: usize| hits as f64 / (k * queries.len()) as f64;
        assert!(
            recall(narrow) < 0.97,
            "at width {k} the graph should miss neighbours (recall {}), or the test is exhaustive",
            recall(narrow)
        );
        assert!(recall(ours) >= 0.99, "recall@6 {}", recall(ours));
    }
}
