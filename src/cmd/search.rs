//! The index's commands: `fc7 index` (with a progress bar and a summary of what changed),
//! `fc7 query` and `fc7 info`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use anyhow::{bail, Result};
use clap::Args;

use crate::search::catalog::Meta;
use crate::search::index::{with_index, Index, Location};
use crate::search::ingest::{IndexOptions, Progress, Summary};
use crate::search::pg::ingest::{PgRun, Shard};
use crate::search::pg::PgIndex;
use crate::search::query::{QueryOptions, QueryResult};
use crate::search::store::Store;

use crate::cmd::args::{IndexArg, RuntimeArgs};
use crate::cmd::progress::{Bar, Expected};

#[derive(Args)]
pub struct IndexArgs {
    /// Folders (or files) to index.
    #[arg(required = true)]
    photos: Vec<PathBuf>,
    #[command(flatten)]
    index: IndexArg,
    /// Model to embed with (default: the index's own, else models/default.onnx in fc7's home).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Images per inference batch (default 256 on CUDA; on the CPU 32 at 224 px, up to 128 for smaller inputs).
    #[arg(long)]
    batch: Option<usize>,
    /// Skip paths matching this glob (relative to the folder, or absolute); repeatable.
    #[arg(long)]
    exclude: Vec<String>,
    #[arg(long)]
    follow_symlinks: bool,
    /// Re-embed everything when the index was built with another model.
    #[arg(long)]
    reembed: bool,
    /// Dimensions of the short PCA codes the search graph is built on (kept for later
    /// rebuilds; changing it rebuilds the graph). Default 128.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    code_dim: Option<u16>,
    /// With a PostgreSQL store: index only part K of N of the listing (K from 0), split by a
    /// hash of each path, for workers that do not share a listing (a Slurm array, a Ray task).
    #[arg(long)]
    shard: Option<Shard>,
    /// With a PostgreSQL store: fit the search codes' basis again and recode every row
    /// (resumable: a rerun finishes it).
    #[arg(long)]
    refit_codes: bool,
    #[arg(long)]
    json: bool,
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    rt: RuntimeArgs,
}

#[derive(Args)]
pub struct QueryArgs {
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[arg(short, default_value_t = 6)]
    k: usize,
    #[command(flatten)]
    index: IndexArg,
    /// Brute-force search over every stored vector instead of the HNSW graph.
    #[arg(long)]
    exact: bool,
    /// Graph candidates re-ranked by their full 4096-d vectors (more: slower, closer to
    /// --exact). Default 64, growing with the index past 250,000 rows.
    #[arg(long)]
    candidates: Option<usize>,
    /// Leave the query image itself out of the results when it is indexed.
    #[arg(long)]
    exclude_self: bool,
    #[arg(long)]
    json: bool,
    /// Also draw the results, as Figure 4 does, into this HTML page (thumbnails inlined).
    #[arg(long)]
    html: Option<PathBuf>,
    /// Also draw the results, as Figure 4 does, into this PNG picture.
    #[arg(long)]
    png: Option<PathBuf>,
    #[command(flatten)]
    rt: RuntimeArgs,
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    index: IndexArg,
    /// List every skipped file with its reason.
    #[arg(long)]
    skipped: bool,
    #[arg(long)]
    json: bool,
}

/// `fc7 index`'s progress: the bar on a terminal, and on any output one line saying how long a
/// large folder will take.
struct IndexBar {
    bar: Bar,
    expected: Mutex<Expected>,
}

impl Progress for IndexBar {
    fn start(&self, total: u64) {
        if let Some(b) = &self.bar.0 {
            b.set_length(total);
            b.reset_eta();
        }
        self.expected.lock().expect("progress").start(total);
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar.0 {
            b.inc(n);
        }
        let line = self.expected.lock().expect("progress").advance(n, "images");
        if let Some(line) = line {
            self.bar.line(&line);
        }
    }
    fn note(&self, line: &str) {
        self.bar.line(line);
    }
}

pub fn index(a: IndexArgs, stop: &AtomicBool) -> Result<i32> {
    crate::imaging::scan::check_roots(&a.photos)?;
    let mut opts = IndexOptions {
        roots: a.photos.clone(),
        model: a.model.clone(),
        embed: a.rt.embed(),
        batch: a.batch,
        scan: crate::imaging::scan::ScanOptions {
            follow_symlinks: a.follow_symlinks,
            exclude: a.exclude.clone(),
        },
        reembed: a.reembed,
        max_pixels: a.rt.max_pixels,
        code_dim: a.code_dim.map(usize::from),
    };
    let progress = IndexBar {
        bar: Bar::new(
            a.quiet || a.json,
            "{bar:40} {pos}/{len} {per_sec} ETA {eta}",
        ),
        expected: Mutex::new(Expected::default()),
    };
    let p: &dyn Progress = if a.quiet { &() } else { &progress };
    let sum = match a.index.location() {
        Location::Folder(dir) => {
            if a.shard.is_some() || a.refit_codes {
                bail!("--shard and --refit-codes are for a PostgreSQL store (--index postgres://…): an index folder takes one writer");
            }
            opts.model = Some(crate::search::ingest::find_model(&dir, a.model.as_deref())?);
            let mut store = Store::open_for_update(&dir)?;
            crate::search::ingest::run(&mut store, &opts, p, stop)?
        }
        Location::Postgres(url) => {
            if a.reembed {
                bail!("--reembed: a PostgreSQL store keeps one model's vectors; index into another table (?table=NAME)");
            }
            let pg = PgIndex::open(&url)?;
            let model = a.model.clone().map_or_else(|| pg.model(), Ok)?;
            opts.model = Some(crate::search::ingest::existing_model(model)?);
            let run = PgRun {
                opts: &opts,
                shard: a.shard,
                refit: a.refit_codes,
                progress: p,
                stop,
            };
            crate::search::pg::ingest::run(&pg, &run)?
        }
    };
    progress.bar.finish();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&sum)?);
    } else if !a.quiet {
        print_summary(&sum);
    }
    Ok(if sum.interrupted { 130 } else { 0 })
}

fn print_summary(s: &Summary) {
    let reasons: Vec<String> = s
        .skip_reasons
        .iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    let skipped = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join(", "))
    };
    eprintln!(
        "added {}, updated {}, moved {}, removed {}, unchanged {}, skipped {}{}; {} indexed in all",
        s.added, s.updated, s.moved, s.removed, s.unchanged, s.skipped, skipped, s.total_indexed
    );
    let provider = s
        .provider
        .as_deref()
        .map(|p| format!(" on {p}"))
        .unwrap_or_default();
    eprintln!(
        "{:.1} s ({:.1} s decoding + embedding at {:.1} images/s{provider}, {:.1} s updating the graph{})",
        s.seconds,
        s.embed_seconds,
        s.images_per_second,
        s.graph_seconds,
        if s.graph.ends_with("codes written") { format!(": {}", s.graph) } else { String::new() }
    );
    if s.interrupted {
        eprintln!("interrupted: what was embedded is saved; run the same command to resume");
    }
}

/// The results as Figure 4's grid: each query beside its neighbours (itself left out), frames
/// green where a neighbour is in the query's folder.
fn draw(results: &[QueryResult], html: Option<&Path>, png: Option<&Path>) -> Result<()> {
    use crate::eval::figure::{self, Row, Tile};
    if html.is_none() && png.is_none() {
        return Ok(());
    }
    let folder = |p: &Path| {
        let parent = p.parent().and_then(Path::file_name).unwrap_or_default();
        parent.to_string_lossy().into_owned()
    };
    let tile = |path: &Path, distance| Tile {
        path: path.to_path_buf(),
        class: folder(path),
        distance,
    };
    let rows: Vec<Row> = results
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| Row {
            query: tile(&r.query, None),
            neighbours: r
                .neighbours
                .iter()
                .filter(|n| n.rank > 0)
                .map(|n| tile(&n.path, Some(n.distance)))
                .collect(),
        })
        .collect();
    let thumbs = figure::thumbnails(&rows);
    if let Some(p) = html {
        figure::write_html(
            p,
            &rows,
            &thumbs,
            "fc7 query: nearest images by fc7 distance",
        )?;
    }
    if let Some(p) = png {
        figure::write_png(p, &rows, &thumbs)?;
    }
    Ok(())
}

pub fn query(a: QueryArgs) -> Result<i32> {
    let opts = QueryOptions {
        k: a.k,
        exclude_self: a.exclude_self,
        embed: a.rt.embed(),
        max_pixels: a.rt.max_pixels,
    };
    let results = with_index(&a.index.location(), a.exact, a.candidates, |i| {
        crate::search::query::query(i, &a.images, &opts)
    })?;
    draw(&results, a.html.as_deref(), a.png.as_deref())?;
    if a.json {
        let out = serde_json::json!({"index": a.index.path, "exact": a.exact, "k": a.k, "results": results});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_results(&results);
    }
    Ok(if results.iter().any(|r| r.error.is_some()) {
        1
    } else {
        0
    })
}

fn print_results(results: &[QueryResult]) {
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            println!();
        }
        if let Some(e) = &r.error {
            eprintln!("error: {e}");
            continue;
        }
        println!("{}", r.query.display());
        for n in &r.neighbours {
            println!("{:>3}  {:>10.4}  {}", n.rank, n.distance, n.path.display());
        }
    }
}

#[derive(Args)]
pub struct ExportVectorsArgs {
    #[command(flatten)]
    index: IndexArg,
    /// Folder to write vectors.npy and metadata.jsonl into.
    #[arg(long)]
    out: PathBuf,
}

pub fn export_vectors(a: ExportVectorsArgs) -> Result<i32> {
    let e = with_index(&a.index.location(), true, None, |i| {
        crate::search::export::export_vectors(i, &a.out)
    })?;
    println!(
        "wrote {} vectors of {} dimensions to {} and their paths to {}",
        e.rows,
        e.dim,
        e.vectors.display(),
        e.metadata.display()
    );
    Ok(0)
}

pub fn info(a: InfoArgs) -> Result<i32> {
    let dir = match a.index.location() {
        Location::Folder(dir) => dir,
        Location::Postgres(url) => {
            let pg = PgIndex::open_read(&url)?;
            return print_info(
                pg.info()?,
                a.json,
                a.skipped.then(|| pg.skipped_list()).transpose()?,
            );
        }
    };
    let store = Store::open_read(&dir)?;
    let c = &store.catalog;
    let graph = crate::search::graph::graph_meta(c)?;
    let (_, vector_rows) = c.vector_file()?;
    let last = c.last_run()?;
    let out = serde_json::json!({
        "home": crate::home::dir(),
        "cache": cache_use(),
        "index": dir,
        "schema_version": c.schema_version()?,
        "indexed": c.count("images")?,
        "skipped": c.count("skipped")?,
        "skip_reasons": crate::search::ingest::reason_classes(c.skip_reasons()?),
        "model": c.meta(Meta::ModelPath)?,
        "model_sha256": c.meta(Meta::ModelSha256)?,
        "dimension": c.meta(Meta::Dim)?.and_then(|d| d.parse::<usize>().ok()),
        "graph": graph.as_ref().map(|g| serde_json::json!({
            "generation": g.generation,
            "points": g.points,
            "newer_rows": c.count_after(g.max_id).unwrap_or(0),
            "code_dim": g.code_dim,
            "variance_kept": g.kept,
            "bytes": g.bytes,
        })),
        "vectors": serde_json::json!({
            "rows": vector_rows,
            "precision": "f16",
            "bytes": store.vector_bytes(),
        }),
        "figure4": c.meta(Meta::Figure4)?.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()),
        "bytes_on_disk": store.disk_bytes(),
        "last_run": last.map(|r| serde_json::json!({
            "started": r.started,
            "finished": r.finished,
            "summary": r.summary.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()),
        })),
    });
    let skipped = a.skipped.then(|| c.skipped_list()).transpose()?;
    print_info(out, a.json, skipped)
}

/// Where fc7's caches are and what they hold: the optimised graphs and the training packs
/// (each bounded, see README; shown so their disk use is never a surprise).
fn cache_use() -> serde_json::Value {
    use crate::util::fs::{cache_dir, tree_bytes};
    let (cache, packs) = (
        cache_dir(),
        crate::train::dataset::pack::default_cache_dir(),
    );
    serde_json::json!({
        "dir": cache,
        "optimized_bytes": tree_bytes(&cache.join("optimized")),
        "packs": packs,
        "packs_bytes": tree_bytes(&packs),
    })
}

/// Prints `fc7 info`'s facts (as JSON, or a line each) and, when asked, every skipped file.
fn print_info(
    out: serde_json::Value,
    json: bool,
    skipped: Option<Vec<(PathBuf, String)>>,
) -> Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (k, v) in out.as_object().expect("object") {
            if k != "last_run" && k != "skip_reasons" {
                println!("{k:>15}: {}", v.to_string().trim_matches('"'));
            }
        }
        for (r, n) in out["skip_reasons"].as_object().into_iter().flatten() {
            println!("{:>15}  {n} {r}", "");
        }
    }
    for (p, r) in skipped.into_iter().flatten() {
        println!("{}: {r}", p.display());
    }
    Ok(0)
}
