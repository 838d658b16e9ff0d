//! One `fc7 index` run: scan the folders, compare with the catalog, and bring it up to date —
//! unchanged files skipped without decoding, changed files re-embedded, moved files keeping their
//! vector, removed files dropped, bad files recorded with their reason. Decoding runs on the
//! rayon pool one batch ahead of inference; each batch lands in one SQLite transaction, so an
//! interrupted run loses at most the batch in flight and the next run resumes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::imaging;
use crate::imaging::scan::{Found, ScanOptions};
use crate::infer::embed::{EmbedOptions, Embedder};
use crate::model::Manifest;
use crate::search::catalog::{path_bytes, Catalog, Known, Meta, NewImage};
use crate::search::fingerprint::{hash_file, partial_hash};
use crate::search::store::Store;

/// Receives progress; the CLI draws a bar, tests and `--quiet` ignore it.
pub trait Progress: Sync {
    fn start(&self, _total: u64) {}
    fn advance(&self, _n: u64) {}
    /// A one-line message about one file (a skipped image).
    fn note(&self, _line: &str) {}
}

/// Ignores all progress.
impl Progress for () {}

#[derive(Clone, Debug)]
pub struct IndexOptions {
    pub roots: Vec<PathBuf>,
    pub model: Option<PathBuf>,
    pub embed: EmbedOptions,
    pub batch: Option<usize>,
    pub scan: ScanOptions,
    pub reembed: bool,
    pub max_pixels: u64,
    /// Dimensions of the graph's codes (kept by the index for later rebuilds).
    pub code_dim: Option<usize>,
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub added: usize,
    pub updated: usize,
    pub moved: usize,
    pub removed: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub skip_reasons: BTreeMap<String, usize>,
    pub seconds: f64,
    /// Decoding and inference (overlapped), and the HNSW update, within `seconds`.
    pub embed_seconds: f64,
    pub graph_seconds: f64,
    pub images_per_second: f64,
    pub provider: Option<String>,
    pub graph: String,
    pub interrupted: bool,
    pub total_indexed: i64,
}

impl Summary {
    /// Counts `n` files skipped for `reason` (in the summary's classes of reasons).
    pub(crate) fn skip(&mut self, reason: &str, n: usize) {
        if n > 0 {
            self.skipped += n;
            *self.skip_reasons.entry(reason_class(reason)).or_default() += n;
        }
    }
}

/// A file that needs decoding and embedding; `replaces` is the row of its older version.
pub(crate) struct Work {
    pub(crate) found: Found,
    pub(crate) replaces: Option<i64>,
}

/// The model a run uses: the one asked for, else the index's own, else the home's default.
pub fn resolve_model(asked: Option<&Path>, cat: &Catalog) -> Result<PathBuf> {
    if let Some(p) = asked {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = cat.meta(Meta::ModelPath)? {
        return Ok(PathBuf::from(p));
    }
    Ok(crate::home::default_model())
}

/// The model `fc7 index` will use for the index in `dir` (see `resolve_model`), checked to
/// exist before anything is created, with the ways to get one when it does not.
pub fn find_model(dir: &Path, asked: Option<&Path>) -> Result<PathBuf> {
    let model = match asked {
        Some(p) => p.to_path_buf(),
        None if dir.join(crate::search::catalog::FILE).is_file() => {
            resolve_model(None, &Store::open_read(dir)?.catalog)?
        }
        None => crate::home::default_model(),
    };
    existing_model(model)
}

/// `model` if it is a file, else the ways to get one.
pub fn existing_model(model: PathBuf) -> Result<PathBuf> {
    if model.is_file() {
        return Ok(model);
    }
    Err(Error::Model {
        path: model,
        reason: "no model here: train one (`fc7 train DATA`), write a random one \
                 (`fc7 model init --random`), or name one with --model"
            .into(),
    })
}

/// Checks the index was built with this model (or adopts it for a new index / `--reembed`).
fn bind_model(store: &mut Store, model: &Path, manifest: &Manifest, reembed: bool) -> Result<()> {
    match store.catalog.check_model(model, manifest) {
        Err(_) if reembed => store.clear_images()?,
        r => r?,
    }
    store.catalog.bind_model(model, manifest)
}

fn under_roots(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

/// Sorts the scan into work, moves, removals and skips; applies moves and removals at once.
fn plan(
    store: &mut Store,
    found: Vec<Found>,
    roots: &[PathBuf],
    sum: &mut Summary,
) -> Result<Vec<Work>> {
    let mut known: HashMap<Vec<u8>, Known> = store.catalog.known()?;
    let skipped = store.catalog.skipped()?;
    let mut work = Vec::new();
    let mut not_images = Vec::new();
    for f in found {
        let key = path_bytes(&f.path);
        if let Some(k) = known.remove(&key) {
            if k.size == f.size && k.mtime_ns == f.mtime_ns {
                sum.unchanged += 1;
            } else {
                work.push(Work {
                    found: f,
                    replaces: Some(k.id),
                });
            }
        } else if matches!(skipped.get(&key), Some((s, m, _)) if *s == f.size && *m == f.mtime_ns) {
            sum.skip(&skipped[&key].2, 1);
        } else if !f.looks_like_image {
            not_images.push(f);
        } else {
            work.push(Work {
                found: f,
                replaces: None,
            });
        }
    }
    // Rows under the scanned folders that the scan did not see: moved, or gone.
    let mut gone: HashMap<(Vec<u8>, u64), i64> = known
        .into_iter()
        .filter(|(p, _)| under_roots(&crate::search::catalog::bytes_path(p), roots))
        .map(|(_, k)| ((k.hash, k.size), k.id))
        .collect();
    let mut moves = Vec::new();
    if !gone.is_empty() {
        let hashes: Vec<Option<Vec<u8>>> = work
            .par_iter()
            .map(|w| {
                w.replaces
                    .is_none()
                    .then(|| hash_file(&w.found.path))
                    .flatten()
            })
            .collect();
        let mut rest = Vec::new();
        for (w, h) in work.into_iter().zip(hashes) {
            match h.and_then(|h| gone.remove(&(h, w.found.size))) {
                Some(id) => moves.push((id, w.found)),
                None => rest.push(w),
            }
        }
        work = rest;
    }
    store.catalog.transaction(|b| {
        for (id, f) in &moves {
            b.move_to(*id, &f.path, f.mtime_ns)?;
        }
        for id in gone.values() {
            b.remove(*id)?;
        }
        for f in &not_images {
            b.skip(&f.path, f.size, f.mtime_ns, "not an image")?;
        }
        Ok(())
    })?;
    sum.moved = moves.len();
    sum.removed = gone.len();
    sum.skip("not an image", not_images.len());
    Ok(work)
}

/// One decoded file ready for the network, or why it could not be.
pub(crate) struct Decoded {
    pub(crate) tensor: Vec<f32>,
    pub(crate) hash: Vec<u8>,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

pub(crate) fn decode(w: &Work, manifest: &Manifest, max_pixels: u64) -> Result<Decoded> {
    let path = &w.found.path;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let input = imaging::input_from_bytes(&bytes, path, &manifest.preprocess, max_pixels)?;
    Ok(Decoded {
        tensor: input.tensor,
        hash: partial_hash(&bytes),
        width: input.width,
        height: input.height,
    })
}

/// Runs the index update. `stop` is polled between batches (Ctrl-C).
pub fn run(
    store: &mut Store,
    opts: &IndexOptions,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Summary> {
    let started = Instant::now();
    // Each batch's tensors are tens of MB: reuse the pages instead of faulting them in again.
    crate::util::heap::keep_freed_memory();
    let mut sum = Summary::default();
    let model = resolve_model(opts.model.as_deref(), &store.catalog)?;
    let manifest = crate::model::manifest::read_manifest(&model)?;
    bind_model(store, &model, &manifest, opts.reembed)?;
    let run_id = store.catalog.begin_run()?;
    let roots: Vec<PathBuf> = opts
        .roots
        .iter()
        .map(|r| std::path::absolute(r).map_err(|e| Error::io(r, e)))
        .collect::<Result<_>>()?;
    let scan = crate::imaging::scan::scan(&roots, &opts.scan)?;
    for (p, e) in &scan.errors {
        progress.note(&format!("skipped {}: {e}", p.display()));
    }
    let work = plan(store, scan.files, &roots, &mut sum)?;
    let embed_start = Instant::now();
    let embedded = if work.is_empty() {
        0
    } else {
        progress.start(work.len() as u64);
        let run = Run {
            opts,
            manifest: &manifest,
            progress,
            stop,
        };
        pipeline(store, &model, &work, &run, &mut sum)?
    };
    sum.embed_seconds = embed_start.elapsed().as_secs_f64();
    sum.interrupted = stop.load(Ordering::SeqCst);
    if !sum.interrupted {
        let graph_start = Instant::now();
        sum.graph = format!("{:?}", store.refresh_graph(opts.code_dim)?);
        sum.graph_seconds = graph_start.elapsed().as_secs_f64();
    }
    sum.seconds = started.elapsed().as_secs_f64();
    sum.images_per_second = embedded as f64 / sum.embed_seconds.max(1e-9);
    sum.total_indexed = store.catalog.count("images")?;
    store
        .catalog
        .finish_run(run_id, &serde_json::to_string(&sum).expect("json"))?;
    Ok(sum)
}

/// What a run's pipeline reads: its options, the model's manifest, progress and Ctrl-C.
struct Run<'a> {
    opts: &'a IndexOptions,
    manifest: &'a Manifest,
    progress: &'a dyn Progress,
    stop: &'a AtomicBool,
}

/// Decodes batch i+1 on the rayon pool while batch i runs through the network. The first batch
/// decodes while ONNX Runtime opens the model (a quarter of a second for the paper network's
/// cached graph), at the CPU's batch size, since the batch size is the provider's.
fn pipeline(
    store: &mut Store,
    model: &Path,
    work: &[Work],
    run: &Run,
    sum: &mut Summary,
) -> Result<usize> {
    let (opts, stop) = (run.opts, run.stop);
    let first = opts.batch.unwrap_or_else(|| {
        crate::infer::embed::default_batch("CPU", run.manifest.architecture.input)
    });
    std::thread::scope(|s| -> Result<usize> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Decoded>>>(1);
        let (batch_tx, batch_rx) = std::sync::mpsc::sync_channel::<usize>(1);
        let producer = s.spawn(move || decode_ahead(work, first, &batch_rx, &tx, run));
        let mut embedder = Embedder::open(model, &opts.embed)?;
        for said in embedder.notes() {
            run.progress.note(&said);
        }
        sum.provider = Some(embedder.provider.to_string());
        let _ = batch_tx.send(opts.batch.unwrap_or_else(|| embedder.default_batch()));
        let mut embedded = 0;
        let mut at = 0;
        for decoded in rx.iter() {
            let chunk = &work[at..at + decoded.len()];
            at += chunk.len();
            embedded += store_batch(store, &mut embedder, chunk, decoded, run.progress, sum)?;
            run.progress.advance(chunk.len() as u64);
            if stop.load(Ordering::SeqCst) {
                break;
            }
        }
        drop(rx);
        producer.join().expect("decoder thread");
        Ok(embedded)
    })
}

/// Sends `work` decoded in order, a batch at a time: first `first` files, then batches of the
/// size `batch` says once the model is open. Stops at Ctrl-C or when nobody listens.
fn decode_ahead(
    work: &[Work],
    first: usize,
    batch: &Receiver<usize>,
    tx: &SyncSender<Vec<Result<Decoded>>>,
    run: &Run,
) {
    let (mut at, mut size) = (0, first.max(1));
    while at < work.len() && !run.stop.load(Ordering::SeqCst) {
        let chunk = &work[at..(at + size).min(work.len())];
        let decoded = chunk
            .par_iter()
            .map(|w| decode(w, run.manifest, run.opts.max_pixels))
            .collect();
        if tx.send(decoded).is_err() {
            return;
        }
        if at == 0 {
            match batch.recv() {
                Ok(b) => size = b.max(1),
                Err(_) => return,
            }
        }
        at += chunk.len();
    }
}

/// A batch's decodable files and their fc7 vectors ([n, dim]).
pub(crate) type Embedded<'a> = (Vec<(&'a Work, &'a Decoded)>, Vec<f32>);

/// The decodable files of a batch, and their fc7 vectors ([n, dim]).
pub(crate) fn embed_decoded<'a>(
    embedder: &mut Embedder,
    chunk: &'a [Work],
    decoded: &'a [Result<Decoded>],
) -> Result<Embedded<'a>> {
    let ok: Vec<(&Work, &Decoded)> = chunk
        .iter()
        .zip(decoded)
        .filter_map(|(w, d)| Some((w, d.as_ref().ok()?)))
        .collect();
    if ok.is_empty() {
        return Ok((ok, Vec::new()));
    }
    let input: Vec<f32> = ok
        .iter()
        .flat_map(|(_, d)| d.tensor.iter().copied())
        .collect(); // [n, 3, 224, 224]
    let fc7 = embedder.run(&input, ok.len(), false)?.fc7;
    Ok((ok, fc7))
}

/// Embeds the decodable files of one batch and records all of it in one transaction.
fn store_batch(
    store: &mut Store,
    embedder: &mut Embedder,
    chunk: &[Work],
    decoded: Vec<Result<Decoded>>,
    progress: &dyn Progress,
    sum: &mut Summary,
) -> Result<usize> {
    let (ok, fc7) = embed_decoded(embedder, chunk, &decoded)?;
    store.write_batch(&fc7, |b, first| {
        for (i, (w, d)) in ok.iter().enumerate() {
            if let Some(old) = w.replaces {
                b.remove(old)?;
            }
            b.insert(&NewImage {
                path: &w.found.path,
                size: w.found.size,
                mtime_ns: w.found.mtime_ns,
                hash: &d.hash,
                width: d.width,
                height: d.height,
                slot: first + i as i64,
            })?;
        }
        for (w, d) in chunk.iter().zip(&decoded) {
            if let Err(e) = d {
                // A changed file that no longer decodes must not keep its old vector.
                if let Some(old) = w.replaces {
                    b.remove(old)?;
                }
                b.skip(&w.found.path, w.found.size, w.found.mtime_ns, &e.reason())?;
            }
        }
        Ok(())
    })?;
    for (w, d) in chunk.iter().zip(&decoded) {
        match d {
            Ok(_) if w.replaces.is_some() => sum.updated += 1,
            Ok(_) => sum.added += 1,
            Err(e) => {
                progress.note(&format!("skipped {e}"));
                sum.skip(&e.reason(), 1);
            }
        }
    }
    Ok(ok.len())
}

/// A short class of a skip reason for summaries: the text before any detail.
pub fn reason_class(reason: &str) -> String {
    reason
        .split([':', '('])
        .next()
        .unwrap_or(reason)
        .trim()
        .to_string()
}

/// Skip reasons grouped by class ("cannot decode image", "empty file", ...).
pub fn reason_classes(reasons: Vec<(String, i64)>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (r, n) in reasons {
        *out.entry(reason_class(&r)).or_default() += n;
    }
    out
}
