//! `fc7 train` on the terminal: turns the arguments into a recipe and shows progress.

use std::sync::atomic::AtomicBool;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::cmd::args::{ExemplarArgs, RecipeArgs};
use crate::cmd::progress::Bar;
use crate::device::Device;
use crate::train::checkpoint::EpochRecord;
use crate::train::epoch::Outcome;
use crate::train::progress::TrainProgress;
use crate::train::run::TrainOptions;

impl TrainProgress for Bar {
    fn engine(&self, describe: &str) {
        eprintln!("engine: {describe}");
    }
    fn note(&self, line: &str) {
        eprintln!("note: {line}");
    }
    fn packing(&self, done: usize, total: usize) {
        crate::cmd::dataset::packing_line(done, total);
    }
    fn loaded(
        &self,
        train: usize,
        val: usize,
        classes: usize,
        skipped: &[(std::path::PathBuf, String)],
    ) {
        crate::cmd::progress::say_skipped(skipped);
        eprintln!(
            "{train} training and {val} validation images in {classes} classes ({} skipped)",
            skipped.len()
        );
    }
    fn epoch_start(&self, epoch: usize, batches: usize) {
        if let Some(b) = &self.0 {
            b.set_length(batches as u64);
            b.set_position(0);
            b.set_prefix(format!("epoch {}", epoch + 1));
            b.reset_eta();
        }
    }
    fn batch(&self, done: usize, loss: f32, error: f32, rate: f32) {
        if let Some(b) = &self.0 {
            b.set_position(done as u64);
            b.set_message(format!(
                "loss {loss:.3}  error {:.1}%  {rate:.0} img/s",
                error * 100.0
            ));
        }
    }
    fn epoch_end(&self, r: &EpochRecord) {
        let line = format!(
            "epoch {:>3}  lr {:.0e}  train loss {:.3} error {:.2}%  val loss {:.3} top-1 {:.2}% top-5 {:.2}%  {:.0} img/s  {:.0} s",
            r.epoch, r.lr, r.train_loss, r.train_error * 100.0, r.val_loss, r.val_top1_error * 100.0, r.val_top5_error * 100.0, r.images_per_second, r.seconds
        );
        match r.folder_precision_at_6 {
            Some(p) => self.line(&format!("{line}  class-folder P@6 {p:.3}")),
            None => self.line(&line),
        }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// DATA/train/<class>/… (+ DATA/val or DATA/test), or DATA/<class>/… split by --val-fraction;
    /// with --exemplar, any folder of images.
    pub data: PathBuf,
    /// Output stem: writes STEM.onnx, STEM.json, STEM.ckpt, STEM.log.jsonl, STEM.png
    /// (default: models/default in fc7's home, the model `fc7 index` uses when none is named).
    #[arg(long, default_value_os_t = crate::home::models().join("default"))]
    pub out: PathBuf,
    /// paper (the 2012 recipe, 224×224, 90 epochs) or quick (small convolutions, 63×63, 4 epochs, the last at lr/10).
    #[arg(long, default_value = "paper")]
    pub preset: String,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    #[command(flatten)]
    pub exemplar: ExemplarArgs,
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
    pub device: Device,
    /// Train on N GPUs in data parallel, from --device's GPU on: each takes 1/N of every batch
    /// and NCCL sums the gradients (libnccl.so.2 loaded at run time).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub gpus: u32,
    /// Skip the 10-crop evaluation after the last epoch (ten passes over the validation set;
    /// `fc7 eval figure4` measures it too): the model then records the centre crop's error only.
    #[arg(long)]
    pub no_ten_crop: bool,
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn train(a: TrainArgs, stop: &AtomicBool) -> Result<i32> {
    let mut r = crate::train::recipe::preset(&a.preset)?;
    r = a.exemplar.apply(r);
    a.recipe.apply(&mut r);
    let opts = TrainOptions {
        data: a.data,
        out: a.out.clone(),
        recipe: r,
        resume: a.resume,
        device: a.device,
        max_steps: a.max_steps,
        cache: a.cache,
        gpus: a.gpus as usize,
        asked: crate::train::recipe::Asked {
            epochs: a.recipe.epochs.is_some(),
            anneal_epochs: a.recipe.anneal_epochs.is_some(),
        },
        ten_crop: !a.no_ten_crop,
    };
    let progress = Bar::new(a.quiet, "{prefix} {bar:30} {pos}/{len} {msg} ETA {eta}");
    let res = crate::train::run::train(&opts, &progress, stop)?;
    progress.finish();
    let st = &res.state;
    let at = format!(
        "epoch {}, batch {} (step {}; {:.0} images/s over {:.0} s of training)",
        st.epoch + 1,
        st.next_batch,
        st.steps,
        (st.steps * st.recipe.batch) as f64 / st.seconds.max(1e-9),
        st.seconds
    );
    match res.outcome {
        Outcome::Interrupted => {
            eprintln!("interrupted at {at}: checkpoint saved; rerun with --resume");
            return Ok(130);
        }
        Outcome::StepLimit => {
            eprintln!("stopped at {at} (--max-steps): checkpoint saved; --resume continues");
            return Ok(0);
        }
        Outcome::Finished => {}
    }
    say_written(&res);
    Ok(0)
}

/// The last line of a finished run: the model written, and its validation error (the 10 crops'
/// or the centre crop's for classes; the held-out views' for exemplar or self-supervised runs).
fn say_written(res: &crate::train::run::TrainResult) {
    let st = &res.state;
    let centre = st.history.last().map(|r| r.val_top1_error);
    let error = match (res.ten_crop_top1_error, centre) {
        (Some(e), _) => Some(format!("{:.2}% with 10 crops", e * 100.0)),
        (None, Some(e)) if st.recipe.exemplar.is_none() => {
            Some(format!("{:.2}% on the centre crop", e * 100.0))
        }
        _ => None,
    };
    if let (Some(m), Some(error)) = (&res.model, error) {
        eprintln!(
            "wrote {} ({:.1} min; validation top-1 error {error})",
            m.display(),
            st.seconds / 60.0,
        );
    }
    if let (Some(m), Some(last), true) =
        (&res.model, st.history.last(), st.recipe.exemplar.is_some())
    {
        let folders = last
            .folder_precision_at_6
            .map(|p| format!("; precision@6 of class folder {p:.3}"))
            .unwrap_or_default();
        let what = match st.recipe.instance {
            Some(_) => "images told apart",
            None => "surrogate classes",
        };
        eprintln!(
            "wrote {} ({:.1} min; {} {what}, held-out views top-1 error {:.2}%{folders})",
            m.display(),
            st.seconds / 60.0,
            st.classes.len(),
            last.val_top1_error * 100.0
        );
    }
}

pub fn export(a: ExportArgs) -> Result<i32> {
    let st = crate::train::export::export_checkpoint(&a.checkpoint, &a.out)?;
    println!(
        "wrote {} (epoch {}, {} classes)",
        a.out.display(),
        st.epoch,
        st.classes.len()
    );
    Ok(0)
}
