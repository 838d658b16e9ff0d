//! The command line: clap parsing and dispatch. Each command's module owns its arguments,
//! turns them into library options and prints the outcome; `args` holds the flags several
//! commands share and `progress` the one progress bar. Only this folder sees clap.

mod args;
mod dataset;
mod eval;
mod model;
mod progress;
mod search;
mod selftest;
mod serve;
mod train;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd::dataset::DatasetCmd;
use crate::cmd::eval::Figure4Args;
use crate::cmd::model::ModelCmd;
use crate::cmd::search::{ExportVectorsArgs, IndexArgs, InfoArgs, QueryArgs};
use crate::cmd::selftest::SelftestArgs;
use crate::cmd::serve::ServeArgs;
use crate::cmd::train::{ExportArgs, TrainArgs};

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
    /// Browse an index in a web browser: pick or drop an image, click neighbours.
    Serve(ServeArgs),
    /// Write an index's vectors as vectors.npy (float32 [N, D]) + metadata.jsonl, for faiss,
    /// Qdrant, Milvus and the like.
    ExportVectors(ExportVectorsArgs),
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
    Selftest(SelftestArgs),
}

#[derive(Subcommand)]
pub enum EvalCmd {
    /// The paper's Figure 4: test images beside their nearest training images by fc7 distance,
    /// with precision@k (fc7 vs raw pixels), HNSW recall@k and the model's top-1/top-5 error.
    Figure4(Figure4Args),
}

/// An error and its causes as one line, each cause added only when the text before does not
/// already say it (fc7's errors name their source in their own message).
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !line.contains(&c) {
            line = format!("{line}: {c}");
        }
    }
    line
}

/// Runs a parsed command; `Ok(code)` is the process exit code.
pub fn run(cli: Cli, stop: Arc<AtomicBool>) -> Result<i32> {
    match cli.command {
        Command::Model(c) => model::run(c),
        Command::Index(a) => search::index(a, &stop),
        Command::Query(a) => search::query(a),
        Command::Info(a) => search::info(a),
        Command::Serve(a) => serve::serve(a, stop),
        Command::ExportVectors(a) => search::export_vectors(a),
        Command::Train(a) => train::train(a, &stop),
        Command::Export(a) => train::export(a),
        Command::Eval(EvalCmd::Figure4(a)) => eval::figure4(a),
        Command::Selftest(a) => selftest::selftest(a),
        Command::Dataset(c) => dataset::run(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_error_line_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder");
        let e = anyhow::Error::from(crate::Error::io("/x/photos", io));
        assert_eq!(error_line(&e), "/x/photos: no such file or folder");
        let denied = std::io::Error::from_raw_os_error(13);
        let e = Err::<(), _>(crate::Error::io("/ro/m.onnx", denied))
            .context("writing /ro/m.onnx")
            .unwrap_err();
        assert_eq!(
            error_line(&e),
            "writing /ro/m.onnx: /ro/m.onnx: Permission denied (os error 13)"
        );
    }
}
