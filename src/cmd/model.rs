//! `fc7 model init --random`: a randomly initialised AlexNet, for trying fc7 before training.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::model::{self, AlexNetConfig, Init};

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
    }
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
