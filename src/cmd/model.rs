//! `fc7 model init --random`: a randomly initialised AlexNet, for trying fc7 before training;
//! `fc7 model quantize`: an int8 copy of a trained model for CPUs; `fc7 model convert`: an fp16
//! copy for GPUs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::cmd::args::RuntimeArgs;
use crate::infer::quantize::QuantizeOptions;
use crate::model::{self, AlexNetConfig, Init};

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Write a randomly initialised AlexNet (ONNX + manifest).
    Init(InitArgs),
    /// Write an int8 copy of a model for CPUs, calibrated on a folder of your images
    /// (ONNX Runtime's integer kernels; about 4× smaller).
    Quantize(QuantizeArgs),
    /// Write a half-precision (fp16) copy of a model, for GPUs' tensor cores.
    Convert(ConvertArgs),
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The fp32 model fc7 wrote (its manifest beside it).
    model: PathBuf,
    /// The precision to write (fp16; int8 is `fc7 model quantize`).
    #[arg(long, value_parser = ["fp16"])]
    precision: String,
    /// Where to write it (default: MODEL-fp16.onnx beside MODEL).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct QuantizeArgs {
    /// The fp32 model fc7 wrote (its manifest beside it).
    model: PathBuf,
    /// A folder of images like the ones you will index (subfolders are searched).
    #[arg(long)]
    calibrate: PathBuf,
    /// Where to write the int8 model (default: MODEL-int8.onnx beside MODEL).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How many images to calibrate on, drawn evenly over the folder.
    #[arg(long, default_value_t = 256)]
    images: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
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
    /// Where to write it (default: models/default.onnx in fc7's home, the model `fc7 index`
    /// uses when none is named).
    #[arg(long, default_value_os_t = crate::home::default_model())]
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

pub fn run(c: ModelCmd) -> Result<i32> {
    match c {
        ModelCmd::Init(a) => init(a),
        ModelCmd::Quantize(a) => quantize(a),
        ModelCmd::Convert(a) => convert(a),
    }
}

/// `MODEL` with `-suffix` added to its stem.
fn beside(model: &std::path::Path, suffix: &str) -> PathBuf {
    let stem = model.file_stem().unwrap_or_default().to_string_lossy();
    model.with_file_name(format!("{stem}-{suffix}.onnx"))
}

fn convert(a: ConvertArgs) -> Result<i32> {
    let out = a.out.unwrap_or_else(|| beside(&a.model, &a.precision));
    let m = crate::model::onnx::half::convert(&a.model, &out)
        .with_context(|| format!("converting {}", a.model.display()))?;
    println!(
        "wrote {} ({}, sha256 {})",
        out.display(),
        m.precision,
        &m.onnx_sha256[..16]
    );
    Ok(0)
}

fn quantize(a: QuantizeArgs) -> Result<i32> {
    let out = a.out.clone().unwrap_or_else(|| beside(&a.model, "int8"));
    let embed = a.runtime.embed();
    let opts = QuantizeOptions {
        images: a.images.max(1),
        threads: embed.threads,
        ort_lib: embed.ort_lib,
        max_pixels: a.runtime.max_pixels,
    };
    let r = crate::infer::quantize::quantize(&a.model, &a.calibrate, &out, &opts)
        .with_context(|| format!("quantising {}", a.model.display()))?;
    crate::cmd::progress::say_skipped(&r.skipped);
    println!(
        "wrote {} (int8, {:.1} MB from {:.1} MB; calibrated on {} images, {} skipped; sha256 {})",
        out.display(),
        r.bytes.1 as f64 / 1e6,
        r.bytes.0 as f64 / 1e6,
        r.calibrated_on,
        r.skipped.len(),
        &r.manifest.onnx_sha256[..16]
    );
    Ok(0)
}

fn init(a: InitArgs) -> Result<i32> {
    let config = AlexNetConfig::paper(a.classes, a.columns);
    let params = model::init_params(&config, a.init, a.seed);
    let info = crate::model::manifest::ModelInfo {
        classes: (0..a.classes).map(|i| format!("class{i}")).collect(),
        preprocess: model::Preprocess::imagenet(config.input as u32),
        provenance: serde_json::json!({"trained": false, "init": a.init, "seed": a.seed}),
    };
    let m = crate::model::manifest::write_model(&a.out, &config, &params, info)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {} (random {:?} init, sha256 {})",
        a.out.display(),
        a.init,
        &m.onnx_sha256[..16]
    );
    Ok(0)
}
