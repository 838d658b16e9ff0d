//! Command-line parsing (clap) and the commands' terminal output. The library below never sees
//! clap types: each command turns its arguments into library options here.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use fc7::embed::{Device, EmbedOptions};
use fc7::ingest::{IndexOptions, Progress, Summary};
use fc7::model::{self, AlexNetConfig, Init};
use fc7::query::{QueryOptions, QueryResult};
use fc7::store::{Store, DEFAULT_DIR};

#[derive(Parser)]
#[command(
    name = "fc7",
    version,
    about = "Find similar photos with AlexNet's fc7 features (Krizhevsky et al. 2012, §6.1)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create models (random initialisation, for trying fc7 before training).
    #[command(subcommand)]
    Model(ModelCmd),
    /// Add photo folders to an index (incremental: only new or changed files are decoded).
    Index(IndexArgs),
    /// Print the nearest indexed images to one or more images.
    Query(QueryArgs),
    /// Show what an index holds.
    Info(InfoArgs),
    /// Train AlexNet from scratch on a folder of class folders, then export it to ONNX.
    Train(TrainArgs),
    /// Export a training checkpoint to ONNX + manifest.
    Export(ExportArgs),
    /// Write a dataset as class folders.
    #[command(subcommand)]
    Dataset(DatasetCmd),
    /// Evaluations of a model.
    #[command(subcommand)]
    Eval(EvalCmd),
    /// Check a training engine (the CUDA one) against the CPU engine, op by op.
    Selftest(crate::selftest_cmd::SelftestArgs),
}

#[derive(Subcommand)]
pub enum EvalCmd {
    /// The paper's Figure 4: test images beside their nearest training images by fc7 distance,
    /// with precision@k (fc7 vs raw pixels), HNSW recall@k and the model's top-1/top-5 error.
    Figure4(Figure4Args),
}

#[derive(Args)]
pub struct Figure4Args {
    #[arg(long, default_value = "models/default.onnx")]
    model: PathBuf,
    /// Training images in class folders.
    #[arg(long)]
    train: PathBuf,
    /// Test images in class folders named like the training ones.
    #[arg(long)]
    test: PathBuf,
    /// Rows of the figure: this many test images drawn with --seed.
    #[arg(long, default_value_t = 5)]
    queries: usize,
    /// Rows of the figure: these test images instead.
    #[arg(long, num_args = 1..)]
    query_files: Vec<PathBuf>,
    #[arg(short, default_value_t = 6)]
    k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Test images behind the metrics, drawn with --seed (0: the whole test set).
    #[arg(long, default_value_t = 2000)]
    max_test: usize,
    #[arg(long, default_value = "figure4")]
    out: PathBuf,
    /// An index of --train built with --model: reuse its vectors and HNSW graph.
    #[arg(long)]
    index: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    rt: RuntimeArgs,
}

#[derive(Args)]
pub struct TrainArgs {
    /// DATA/train/<class>/… (+ DATA/val or DATA/test), or DATA/<class>/… split by --val-fraction.
    pub data: PathBuf,
    /// Output stem: writes STEM.onnx, STEM.json, STEM.ckpt, STEM.log.jsonl, STEM.png.
    #[arg(long, default_value = "models/default")]
    pub out: PathBuf,
    /// paper (the 2012 recipe, 224×224, 90 epochs) or quick (small convolutions, 63×63, 4 epochs).
    #[arg(long, default_value = "paper")]
    pub preset: String,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// 2: the paper's two-column layout (groups in conv2, conv4, conv5); 1: one column.
    #[arg(long)]
    pub columns: Option<usize>,
    #[arg(long)]
    pub val_fraction: Option<f32>,
    /// Continue from STEM.ckpt.
    #[arg(long)]
    pub resume: bool,
    /// auto (the GPU when the CUDA engine loads, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    checkpoint: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
pub enum DatasetCmd {
    /// Fashion-MNIST from the Debian package dataset-fashion-mnist, as OUT/{train,test}/<class>/.
    FashionMnist {
        out: PathBuf,
        #[arg(long, default_value = fc7::dataset::FASHION_MNIST_DIR)]
        source: PathBuf,
        /// At most this many images per split (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Generated pictures, one pattern per class (no download needed).
    Synthetic {
        out: PathBuf,
        #[arg(long, default_value_t = 5)]
        classes: usize,
        #[arg(long, default_value_t = 100)]
        per_class: usize,
        #[arg(long, default_value_t = 72)]
        size: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Write a randomly initialised AlexNet (ONNX + manifest).
    Init(InitArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Random weights (the only kind `init` makes; train for a real model).
    #[arg(long, required = true)]
    random: bool,
    /// paper: N(0, 0.01) weights and the paper's biases (fc7 then barely varies between images);
    /// he: Kaiming-normal weights, zero biases (random features that tell images apart).
    #[arg(long, default_value = "he")]
    init: Init,
    #[arg(long, default_value = "models/random.onnx")]
    out: PathBuf,
    /// Output classes of fc8 (0: no logits output).
    #[arg(long, default_value_t = 1000)]
    classes: usize,
    /// Two-column (grouped) layout as in the paper, or 1 for a single column.
    #[arg(long, default_value_t = 2)]
    columns: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Clone)]
pub struct RuntimeArgs {
    /// auto (CUDA if it loads, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: Device,
    /// ONNX Runtime library (else $ORT_DYLIB_PATH, else the cache of scripts/setup-ort.sh).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Inference threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Refuse images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = fc7::imaging::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

impl RuntimeArgs {
    fn embed(&self) -> EmbedOptions {
        let mut o = EmbedOptions {
            device: self.device,
            ort_lib: self.ort_lib.clone(),
            ..Default::default()
        };
        if let Some(t) = self.threads {
            o.threads = t;
        }
        o
    }
}

#[derive(Args)]
pub struct IndexArgs {
    /// Folders (or files) to index.
    #[arg(required = true)]
    photos: Vec<PathBuf>,
    #[arg(long, default_value = DEFAULT_DIR)]
    index: PathBuf,
    /// Model to embed with (default: the index's own, else models/default.onnx).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Images per inference batch (default 32 on CPU, 256 on CUDA).
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
    #[arg(long, default_value = DEFAULT_DIR)]
    index: PathBuf,
    /// Brute-force search over every stored vector instead of the HNSW graph.
    #[arg(long)]
    exact: bool,
    /// Leave the query image itself out of the results when it is indexed.
    #[arg(long)]
    exclude_self: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    rt: RuntimeArgs,
}

#[derive(Args)]
pub struct InfoArgs {
    #[arg(long, default_value = DEFAULT_DIR)]
    index: PathBuf,
    /// List every skipped file with its reason.
    #[arg(long)]
    skipped: bool,
    #[arg(long)]
    json: bool,
}

/// Runs a parsed command; `Ok(code)` is the process exit code.
pub fn run(cli: Cli, stop: Arc<AtomicBool>) -> Result<i32> {
    match cli.command {
        Command::Model(ModelCmd::Init(a)) => model_init(a),
        Command::Index(a) => index(a, &stop),
        Command::Query(a) => query(a),
        Command::Info(a) => info(a),
        Command::Train(a) => crate::train_cmd::train(a, &stop),
        Command::Export(a) => {
            let st = fc7::train::export_checkpoint(&a.checkpoint, &a.out)?;
            println!(
                "wrote {} (epoch {}, {} classes)",
                a.out.display(),
                st.epoch,
                st.classes.len()
            );
            Ok(0)
        }
        Command::Eval(EvalCmd::Figure4(a)) => figure4(a),
        Command::Selftest(a) => crate::selftest_cmd::selftest(a),
        Command::Dataset(DatasetCmd::FashionMnist { out, source, limit }) => {
            let (tr, te) = fc7::dataset::fashion_mnist(&source, &out, limit)?;
            println!(
                "wrote {tr} training and {te} test images to {}",
                out.display()
            );
            Ok(0)
        }
        Command::Dataset(DatasetCmd::Synthetic {
            out,
            classes,
            per_class,
            size,
            seed,
        }) => {
            fc7::dataset::synthetic(&out, classes, per_class, size, seed)?;
            println!(
                "wrote {} generated pictures in {classes} classes to {}",
                classes * per_class,
                out.display()
            );
            Ok(0)
        }
    }
}

fn model_init(a: InitArgs) -> Result<i32> {
    let config = AlexNetConfig::paper(a.classes, a.columns);
    let params = model::init_params(&config, a.init, a.seed);
    let info = fc7::onnx::ModelInfo {
        classes: (0..a.classes).map(|i| format!("class{i}")).collect(),
        preprocess: model::Preprocess::imagenet(config.input as u32),
        provenance: serde_json::json!({"trained": false, "init": a.init, "seed": a.seed}),
    };
    let m = fc7::onnx::write_model(&a.out, &config, &params, info)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {} (random {:?} init, sha256 {})",
        a.out.display(),
        a.init,
        &m.onnx_sha256[..16]
    );
    Ok(0)
}

/// An indicatif bar on stderr when it is a terminal; plain lines otherwise.
struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.reset_eta();
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
    fn note(&self, line: &str) {
        match &self.0 {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

fn bar(quiet: bool) -> Bar {
    if quiet || !std::io::stderr().is_terminal() {
        return Bar(None);
    }
    let b = ProgressBar::new(0);
    let style =
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} ETA {eta}").expect("template");
    b.set_style(style);
    Bar(Some(b))
}

fn index(a: IndexArgs, stop: &AtomicBool) -> Result<i32> {
    let mut store = Store::open_for_update(&a.index)?;
    let opts = IndexOptions {
        roots: a.photos.clone(),
        model: a.model.clone(),
        embed: a.rt.embed(),
        batch: a.batch,
        scan: fc7::scan::ScanOptions {
            follow_symlinks: a.follow_symlinks,
            exclude: a.exclude.clone(),
        },
        reembed: a.reembed,
        max_pixels: a.rt.max_pixels,
    };
    let progress = bar(a.quiet || a.json);
    let p: &dyn Progress = if a.quiet {
        &fc7::ingest::Silent
    } else {
        &progress
    };
    let sum = fc7::ingest::run(&mut store, &opts, p, stop)?;
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
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
        "{:.1} s ({:.1} s decoding + embedding at {:.1} images/s{provider}, {:.1} s updating the graph)",
        s.seconds, s.embed_seconds, s.images_per_second, s.graph_seconds
    );
    if s.interrupted {
        eprintln!("interrupted: what was embedded is saved; run the same command to resume");
    }
}

fn query(a: QueryArgs) -> Result<i32> {
    let store = Store::open_read(&a.index)?;
    let opts = QueryOptions {
        k: a.k,
        exact: a.exact,
        exclude_self: a.exclude_self,
        embed: a.rt.embed(),
        max_pixels: a.rt.max_pixels,
    };
    let results = fc7::query::query(&store, &a.images, &opts)?;
    if a.json {
        let out =
            serde_json::json!({"index": a.index, "exact": a.exact, "k": a.k, "results": results});
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

fn info(a: InfoArgs) -> Result<i32> {
    let store = Store::open_read(&a.index)?;
    let c = &store.catalog;
    let graph = fc7::index::graph_meta(c)?;
    let last = c.last_run()?;
    let out = serde_json::json!({
        "index": a.index,
        "schema_version": c.schema_version()?,
        "indexed": c.count("images")?,
        "skipped": c.count("skipped")?,
        "skip_reasons": skip_classes(c)?,
        "model": c.meta("model_path")?,
        "model_sha256": c.meta("model_sha256")?,
        "dimension": c.meta("dim")?.and_then(|d| d.parse::<usize>().ok()),
        "graph": graph.as_ref().map(|g| serde_json::json!({"generation": g.generation, "points": g.points, "newer_rows": c.count_after(g.max_id).unwrap_or(0)})),
        "bytes_on_disk": store.disk_bytes(),
        "last_run": last.map(|r| serde_json::json!({
            "started": r.started,
            "finished": r.finished,
            "summary": r.summary.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()),
        })),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (k, v) in out.as_object().expect("object") {
            if k != "last_run" && k != "skip_reasons" {
                println!("{k:>15}: {}", v.to_string().trim_matches('"'));
            }
        }
        for (r, n) in skip_classes(c)? {
            println!("{:>15}  {n} {r}", "");
        }
    }
    if a.skipped {
        for (p, r) in c.skipped_list()? {
            println!("{}: {r}", p.display());
        }
    }
    Ok(0)
}

/// Skip reasons grouped by class ("cannot decode image", "empty file", ...).
fn skip_classes(c: &fc7::catalog::Catalog) -> Result<std::collections::BTreeMap<String, i64>> {
    let mut out = std::collections::BTreeMap::new();
    for (r, n) in c.skip_reasons()? {
        *out.entry(fc7::ingest::reason_class(&r)).or_default() += n;
    }
    Ok(out)
}

fn figure4(a: Figure4Args) -> Result<i32> {
    let opts = fc7::eval::Figure4Options {
        model: a.model,
        train: a.train,
        test: a.test,
        queries: a.queries,
        query_files: a.query_files,
        k: a.k,
        seed: a.seed,
        out: a.out.clone(),
        embed: a.rt.embed(),
        max_test: a.max_test,
        index: a.index,
    };
    let (rows, m) = fc7::eval::figure4(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(0);
    }
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0));
    println!(
        "Figure 4: {} rows of {} neighbours in {}",
        rows.len(),
        m.k,
        a.out.display()
    );
    println!(
        "{} training images, {} test images behind the metrics",
        m.train_images, m.test_images
    );
    println!("{:<44} {:>10}", "metric", "value");
    println!(
        "{:<44} {:>10.4}",
        format!("precision@{} of class, fc7 neighbours", m.k),
        m.fc7_precision_at_k
    );
    println!(
        "{:<44} {:>10.4}",
        format!("precision@{} of class, raw-pixel neighbours", m.k),
        m.pixel_precision_at_k
    );
    println!(
        "{:<44} {:>10.4}",
        format!("HNSW recall@{} vs exact", m.k),
        m.hnsw_recall_at_k
    );
    println!(
        "{:<44} {:>10}",
        "top-1 error, centre crop",
        pct(m.top1_error_centre)
    );
    println!(
        "{:<44} {:>10}",
        "top-5 error, centre crop",
        pct(m.top5_error_centre)
    );
    println!(
        "{:<44} {:>10}",
        "top-1 error, 10 crops",
        pct(m.top1_error_10crop)
    );
    println!(
        "{:<44} {:>10}",
        "top-5 error, 10 crops",
        pct(m.top5_error_10crop)
    );
    Ok(0)
}
