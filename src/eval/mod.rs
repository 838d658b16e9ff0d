//! `fc7 eval figure4`: the experiment of §6.1. Embeds a training and a test set, finds each
//! test image's nearest training images by exact Euclidean distance on fc7, renders Figure 4
//! (`figure`), and measures: precision@k of class agreement for fc7 neighbours and, as the
//! paper's contrast, for raw-pixel neighbours; HNSW recall@k against exact search; and the
//! model's own top-1/top-5 error (centre crop and the paper's 10 crops).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::eval::figure::{Row, Tile};
use crate::infer::embed::{EmbedOptions, Embedder};

mod embed;
pub mod figure;
mod metrics;

use embed::{embed_all, Embedded};

use crate::search::catalog::Meta;
use crate::search::index::{with_index, Index, Location};
use crate::search::knn::exact_knn;
use crate::train::metrics::top_errors;
pub use metrics::precision_at_k;

/// Side of the raw-pixel vectors of the baseline (the crop resized to it, RGB).
pub const PIXEL_SIDE: u32 = 32;

#[derive(Clone, Debug)]
pub struct Figure4Options {
    pub model: PathBuf,
    pub train: PathBuf,
    pub test: PathBuf,
    pub queries: usize,
    pub query_files: Vec<PathBuf>,
    pub k: usize,
    pub seed: u64,
    pub out: PathBuf,
    pub embed: EmbedOptions,
    /// Test images used for the metrics (0: all), drawn with `seed`.
    pub max_test: usize,
    /// An index of the training images built with this model: its vectors and HNSW graph are
    /// reused instead of embedding again and building a graph in memory.
    pub index: Option<Location>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Metrics {
    pub k: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub fc7_precision_at_k: f64,
    pub pixel_precision_at_k: f64,
    pub hnsw_recall_at_k: f64,
    pub top1_error_centre: Option<f64>,
    pub top5_error_centre: Option<f64>,
    pub top1_error_10crop: Option<f64>,
    pub top5_error_10crop: Option<f64>,
    /// Training and test files left out because they could not be read or decoded.
    pub skipped_images: usize,
    pub seconds: f64,
}

/// What `figure4` made: the figure's rows, its numbers, and the files it left out with why.
pub struct Figure4 {
    pub rows: Vec<Row>,
    pub metrics: Metrics,
    pub skipped: Vec<(PathBuf, String)>,
}

fn labelled(dir: &Path, classes: &[String]) -> Result<Vec<(PathBuf, usize)>> {
    let files = crate::train::dataset::listing(dir, classes);
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no images in class folders named like the training set's",
            dir.display()
        )));
    }
    Ok(files)
}

/// How many of the exact neighbours the approximate search finds: the index's (graph with
/// re-rank, its ids mapped back to training files by path) when given, else an in-memory
/// HNSW graph.
fn hnsw_hits(
    index: Option<&dyn Index>,
    train: &Embedded,
    queries: &[f32],
    dim: usize,
    knn: &[Vec<(usize, f32)>],
    k: usize,
) -> Result<usize> {
    let count =
        |found: Vec<usize>, q: usize| knn[q].iter().filter(|(i, _)| found.contains(i)).count();
    let Some(s) = index else {
        let graph = crate::search::graph::build_in_memory(&train.fc7, dim);
        return Ok(queries
            .chunks(dim)
            .enumerate()
            .map(|(q, v)| {
                let found = crate::search::graph::search_in_memory(&graph, v, k);
                count(found.iter().map(|h| h.0 as usize).collect(), q)
            })
            .sum());
    };
    if !s.approximate() {
        return Err(Error::Index {
            path: PathBuf::from(s.location()),
            reason: "has no usable graph (run fc7 index)".into(),
        });
    }
    let by_path: std::collections::HashMap<PathBuf, usize> = train
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (std::path::absolute(&f.0).unwrap_or(f.0.clone()), i))
        .collect();
    let mut hits = 0;
    for (q, v) in queries.chunks(dim).enumerate() {
        let found = s.nearest(v, k)?;
        hits += count(
            found
                .iter()
                .filter_map(|h| by_path.get(&h.2).copied())
                .collect(),
            q,
        );
    }
    Ok(hits)
}

/// The test images behind the metrics: shuffled with the seed, at most `max_test` (but never
/// fewer than the figure's queries).
fn test_files(opts: &Figure4Options, classes: &[String]) -> Result<Vec<(PathBuf, usize)>> {
    let mut files = labelled(&opts.test, classes)?;
    files.shuffle(&mut rand::rngs::StdRng::seed_from_u64(opts.seed));
    if opts.max_test > 0 {
        files.truncate(opts.max_test.max(opts.queries));
    }
    Ok(files)
}

/// The metrics table from both embedded sets and the exact fc7 neighbours.
fn metrics(
    index: Option<&dyn Index>,
    (train, test): (&Embedded, &Embedded),
    dim: usize,
    knn: &[Vec<(usize, f32)>],
    k: usize,
) -> Result<Metrics> {
    let pixel_dim = (3 * PIXEL_SIDE * PIXEL_SIDE) as usize;
    let pix = exact_knn(&test.pixels, &train.pixels, pixel_dim, k);
    let labels: Vec<usize> = test.files.iter().map(|f| f.1).collect();
    let lab = |nn: &[Vec<(usize, f32)>]| -> Vec<Vec<usize>> {
        nn.iter()
            .map(|r| r.iter().map(|(i, _)| train.files[*i].1).collect())
            .collect()
    };
    let recall_n = test.files.len().min(1000);
    let hits = hnsw_hits(index, train, &test.fc7[..recall_n * dim], dim, knn, k)?;
    let errs = |l: &[f32]| (!l.is_empty()).then(|| top_errors(l, &labels));
    let (c, t) = (errs(&test.logits), errs(&test.logits10));
    Ok(Metrics {
        k,
        train_images: train.files.len(),
        test_images: test.files.len(),
        fc7_precision_at_k: precision_at_k(&labels, &lab(knn)),
        pixel_precision_at_k: precision_at_k(&labels, &lab(&pix)),
        hnsw_recall_at_k: hits as f64 / (recall_n * k).max(1) as f64,
        top1_error_centre: c.map(|x| x.0),
        top5_error_centre: c.map(|x| x.1),
        top1_error_10crop: t.map(|x| x.0),
        top5_error_10crop: t.map(|x| x.1),
        skipped_images: train.skipped.len() + test.skipped.len(),
        seconds: 0.0,
    })
}

/// The figure's rows: the named query files when given, else the first `queries` test images
/// (already in seeded random order), each with its exact nearest training images.
fn figure_rows(
    opts: &Figure4Options,
    classes: &[String],
    (train, test): (&Embedded, &Embedded),
    knn: &[Vec<(usize, f32)>],
) -> Vec<Row> {
    let wanted: Vec<PathBuf> = opts
        .query_files
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or(p.clone()))
        .collect();
    let picks: Vec<usize> = if wanted.is_empty() {
        (0..opts.queries.min(test.files.len())).collect()
    } else {
        (0..test.files.len())
            .filter(|&i| wanted.contains(&test.files[i].0))
            .collect()
    };
    let tile = |f: &(PathBuf, usize), d: Option<f32>| Tile {
        path: f.0.clone(),
        class: classes[f.1].clone(),
        distance: d,
    };
    picks
        .iter()
        .map(|&q| Row {
            query: tile(&test.files[q], None),
            neighbours: knn[q]
                .iter()
                .map(|(i, d)| tile(&train.files[*i], Some(*d)))
                .collect(),
        })
        .collect()
}

/// Runs the evaluation; writes DIR/figure4.{png,html,json} and DIR/metrics.json.
pub fn figure4(opts: &Figure4Options) -> Result<Figure4> {
    match &opts.index {
        None => figure4_with(opts, None),
        Some(loc) => with_index(loc, false, None, |i| figure4_with(opts, Some(i))),
    }
}

/// The evaluation, reusing and searching `index` when given (refused when it was built with
/// another model).
fn figure4_with(opts: &Figure4Options, index: Option<&dyn Index>) -> Result<Figure4> {
    let started = Instant::now();
    let classes = crate::train::dataset::subdirs(&opts.train)?;
    let mut e = Embedder::open(&opts.model, &opts.embed)?;
    if let Some(i) = index {
        i.check_model(&opts.model, &e.manifest)?;
    }
    let train = embed_all(&mut e, labelled(&opts.train, &classes)?, false, index)?;
    let has_logits =
        e.manifest.logits_output.is_some() && e.manifest.classes.len() == classes.len();
    let test = embed_all(&mut e, test_files(opts, &classes)?, has_logits, None)?;
    let (dim, k) = (e.dim(), opts.k);
    let knn = exact_knn(&test.fc7, &train.fc7, dim, k);
    let mut m = metrics(index, (&train, &test), dim, &knn, k)?;
    m.seconds = started.elapsed().as_secs_f64();
    let rows = figure_rows(opts, &classes, (&train, &test), &knn);
    crate::eval::figure::write_all(
        &opts.out,
        &rows,
        "fc7 nearest neighbours (Krizhevsky et al. 2012, Figure 4)",
    )?;
    let json = serde_json::to_vec_pretty(&m).expect("json");
    crate::util::fs::atomic_write(&opts.out.join("metrics.json"), &json)?;
    if let Some(i) = index {
        // The index keeps its model's latest Figure 4 numbers, for `fc7 info` and `fc7 serve`.
        let text = String::from_utf8(json).expect("json is UTF-8");
        i.set_meta(Meta::Figure4, &text)?;
    }
    let skipped = [train.skipped, test.skipped].concat();
    Ok(Figure4 {
        rows,
        metrics: m,
        skipped,
    })
}
