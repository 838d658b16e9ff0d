//! `fc7 eval figure4`: arguments, and the metrics table printed beside the figure.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::cmd::args::RuntimeArgs;

#[derive(Args)]
pub struct Figure4Args {
    /// The model (default: models/default.onnx in fc7's home).
    #[arg(long, default_value_os_t = crate::home::default_model())]
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
    /// An index of --train built with --model (a folder or postgres://…): reuse its vectors
    /// and search it for the recall figure.
    #[arg(long)]
    index: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    rt: RuntimeArgs,
}

pub fn figure4(a: Figure4Args) -> Result<i32> {
    let opts = crate::eval::Figure4Options {
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
        index: a
            .index
            .as_deref()
            .map(crate::search::index::Location::parse),
    };
    let crate::eval::Figure4 {
        rows,
        metrics: m,
        skipped,
    } = crate::eval::figure4(&opts)?;
    crate::cmd::progress::say_skipped(&skipped);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(0);
    }
    println!(
        "Figure 4: {} rows of {} neighbours in {}",
        rows.len(),
        m.k,
        a.out.display()
    );
    println!(
        "{} training images, {} test images behind the metrics ({} skipped)",
        m.train_images, m.test_images, m.skipped_images
    );
    print_metrics(&m);
    Ok(0)
}

fn print_metrics(m: &crate::eval::Metrics) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0));
    let k = m.k;
    let rows = [
        ("metric".to_string(), "value".to_string()),
        (
            format!("precision@{k} of class, fc7 neighbours"),
            format!("{:.4}", m.fc7_precision_at_k),
        ),
        (
            format!("precision@{k} of class, raw-pixel neighbours"),
            format!("{:.4}", m.pixel_precision_at_k),
        ),
        (
            format!("HNSW recall@{k} vs exact"),
            format!("{:.4}", m.hnsw_recall_at_k),
        ),
        ("top-1 error, centre crop".into(), pct(m.top1_error_centre)),
        ("top-5 error, centre crop".into(), pct(m.top5_error_centre)),
        ("top-1 error, 10 crops".into(), pct(m.top1_error_10crop)),
        ("top-5 error, 10 crops".into(), pct(m.top5_error_10crop)),
    ];
    for (name, value) in rows {
        println!("{name:<44} {value:>10}");
    }
}
