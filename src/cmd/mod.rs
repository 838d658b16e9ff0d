//! Command-line parsing (clap) and dispatch. The library below never sees clap types: each
//! command's module (`store_cmd`, `train_cmd`, `eval_cmd`, `selftest_cmd`) turns its arguments
//! into library options and prints its output; the small commands live here.

mod eval;
mod selftest;
mod store;
mod train;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::infer::embed::{Device, EmbedOptions};
use crate::model::{self, AlexNetConfig, Init};

use crate::cmd::eval::Figure4Args;
use crate::cmd::store::{IndexArgs, InfoArgs, QueryArgs};

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
    Selftest(crate::cmd::selftest::SelftestArgs),
}

#[derive(Subcommand)]
pub enum EvalCmd {
    /// The paper's Figure 4: test images beside their nearest training images by fc7 distance,
    /// with precision@k (fc7 vs raw pixels), HNSW recall@k and the model's top-1/top-5 error.
    Figure4(Figure4Args),
}

#[derive(Args)]
pub struct TrainArgs {
    /// DATA/train/<class>/… (+ DATA/val or DATA/test), or DATA/<class>/… split by --val-fraction.
    pub data: PathBuf,
    /// Output stem: writes STEM.onnx, STEM.json, STEM.ckpt, STEM.log.jsonl, STEM.png.
    #[arg(long, default_value = "models/default")]
    pub out: PathBuf,
    /// paper (the 2012 recipe, 224×224, 90 epochs) or quick (small convolutions, 63×63, 4 epochs, the last at lr/10).
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
    /// Run the last N epochs at a tenth of --lr (paper: 0, the plateau rule alone; quick: 1).
    #[arg(long)]
    pub anneal_epochs: Option<usize>,
    /// SGD momentum (paper: 0.9).
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Weight decay in the paper's update v ← m·v − wd·ε·w − ε·∂L/∂w (paper: 5e-4).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Dropout probability on fc6 and fc7 (paper: 0.5).
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Standard deviation of the PCA colour shift's α (paper: 0.1; 0 turns it off).
    #[arg(long)]
    pub pca_std: Option<f32>,
    /// How many times the plateau rule may divide the learning rate by 10 (paper: 3).
    #[arg(long)]
    pub max_lr_drops: Option<usize>,
    /// Initial weights: he (Kaiming-normal, zero biases; both presets' default), paper
    /// (N(0, 0.01), biases 1: stays at chance on Fashion-MNIST) or caffe (biases 0.1).
    #[arg(long)]
    pub init: Option<Init>,
    /// Stop after this many SGD steps, saving a checkpoint (smoke runs, benchmarks).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Folder for the dataset's packed cache (default: $FC7_CACHE, else ~/.cache/fc7/packs).
    #[arg(long)]
    pub cache: Option<PathBuf>,
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
    /// Decode a class-folder dataset once into its packed training cache (what `fc7 train`
    /// builds on first use), at the side of a preset or of --side.
    Pack {
        data: PathBuf,
        /// paper (256) or quick (72).
        #[arg(long, default_value = "paper")]
        preset: String,
        #[arg(long)]
        side: Option<usize>,
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Fashion-MNIST from the Debian package dataset-fashion-mnist, as OUT/{train,test}/<class>/.
    FashionMnist {
        out: PathBuf,
        #[arg(long, default_value = crate::train::dataset::FASHION_MNIST_DIR)]
        source: PathBuf,
        /// At most this many images per split (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// An ImageNet-shaped generated dataset: CLASSES folders of ~500×375 JPEGs (for rehearsing
    /// training at scale).
    ImagenetLike {
        out: PathBuf,
        #[arg(long, default_value_t = 1000)]
        classes: usize,
        #[arg(long, default_value_t = 128)]
        per_class: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
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
    pub device: Device,
    /// ONNX Runtime library (else $ORT_DYLIB_PATH, else the cache of scripts/setup-ort.sh).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Inference threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Refuse images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = crate::imaging::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

impl RuntimeArgs {
    pub fn embed(&self) -> EmbedOptions {
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

/// Runs a parsed command; `Ok(code)` is the process exit code.
pub fn run(cli: Cli, stop: Arc<AtomicBool>) -> Result<i32> {
    match cli.command {
        Command::Model(ModelCmd::Init(a)) => model_init(a),
        Command::Index(a) => crate::cmd::store::index(a, &stop),
        Command::Query(a) => crate::cmd::store::query(a),
        Command::Info(a) => crate::cmd::store::info(a),
        Command::Train(a) => crate::cmd::train::train(a, &stop),
        Command::Export(a) => {
            let st = crate::train::run::export_checkpoint(&a.checkpoint, &a.out)?;
            println!(
                "wrote {} (epoch {}, {} classes)",
                a.out.display(),
                st.epoch,
                st.classes.len()
            );
            Ok(0)
        }
        Command::Eval(EvalCmd::Figure4(a)) => crate::cmd::eval::figure4(a),
        Command::Selftest(a) => crate::cmd::selftest::selftest(a),
        Command::Dataset(DatasetCmd::Pack {
            data,
            preset,
            side,
            cache,
        }) => crate::cmd::train::pack(&data, &preset, side, cache),
        Command::Dataset(DatasetCmd::ImagenetLike {
            out,
            classes,
            per_class,
            seed,
        }) => {
            crate::train::dataset::scenes::imagenet_like(&out, classes, per_class, seed)?;
            println!(
                "wrote {} generated JPEGs in {classes} classes to {}",
                classes * per_class,
                out.display()
            );
            Ok(0)
        }
        Command::Dataset(DatasetCmd::FashionMnist { out, source, limit }) => {
            let (tr, te) = crate::train::dataset::fashion_mnist(&source, &out, limit)?;
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
            crate::train::dataset::synthetic(&out, classes, per_class, size, seed)?;
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
    let info = crate::model::onnx::ModelInfo {
        classes: (0..a.classes).map(|i| format!("class{i}")).collect(),
        preprocess: model::Preprocess::imagenet(config.input as u32),
        provenance: serde_json::json!({"trained": false, "init": a.init, "seed": a.seed}),
    };
    let m = crate::model::onnx::write_model(&a.out, &config, &params, info)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {} (random {:?} init, sha256 {})",
        a.out.display(),
        a.init,
        &m.onnx_sha256[..16]
    );
    Ok(0)
}
