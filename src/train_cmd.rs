//! `fc7 train` on the terminal: turns the arguments into a recipe and shows progress.

use std::sync::atomic::AtomicBool;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::TrainArgs;
use fc7::checkpoint::EpochRecord;
use fc7::embed::Device;
use fc7::train::{TrainOptions, TrainProgress};

struct Bar {
    bar: Option<ProgressBar>,
}

impl TrainProgress for Bar {
    fn engine(&self, describe: &str) {
        eprintln!("engine: {describe}");
    }
    fn note(&self, line: &str) {
        eprintln!("note: {line}");
    }
    fn loaded(
        &self,
        train: usize,
        val: usize,
        classes: usize,
        skipped: &[(std::path::PathBuf, String)],
    ) {
        for (p, r) in skipped {
            eprintln!("skipped {}: {r}", p.display());
        }
        eprintln!(
            "{train} training and {val} validation images in {classes} classes ({} skipped)",
            skipped.len()
        );
    }
    fn epoch_start(&self, epoch: usize, batches: usize) {
        if let Some(b) = &self.bar {
            b.set_length(batches as u64);
            b.set_position(0);
            b.set_prefix(format!("epoch {}", epoch + 1));
            b.reset_eta();
        }
    }
    fn batch(&self, done: usize, loss: f32, error: f32, rate: f32) {
        if let Some(b) = &self.bar {
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
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

pub fn train(a: TrainArgs, stop: &AtomicBool) -> Result<i32> {
    let device: Device = match a.device.parse() {
        Ok(d) => d,
        Err(why) => bail!("--device: {why}"),
    };
    let mut r = fc7::recipe::preset(&a.preset)?;
    r.epochs = a.epochs.unwrap_or(r.epochs);
    r.batch = a.batch.unwrap_or(r.batch);
    r.lr = a.lr.unwrap_or(r.lr);
    r.seed = a.seed.unwrap_or(r.seed);
    r.columns = a.columns.unwrap_or(r.columns);
    r.val_fraction = a.val_fraction.unwrap_or(r.val_fraction);
    r.anneal_epochs = a.anneal_epochs.unwrap_or(r.anneal_epochs);
    r.momentum = a.momentum.unwrap_or(r.momentum);
    r.weight_decay = a.weight_decay.unwrap_or(r.weight_decay);
    r.dropout = a.dropout.unwrap_or(r.dropout);
    r.pca_std = a.pca_std.unwrap_or(r.pca_std);
    r.max_lr_drops = a.max_lr_drops.unwrap_or(r.max_lr_drops);
    let opts = TrainOptions {
        data: a.data,
        out: a.out.clone(),
        recipe: r,
        resume: a.resume,
        device,
    };
    let bar = (!a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} ETA {eta}")
                .expect("template"),
        );
        b
    });
    let progress = Bar { bar };
    let res = fc7::train::train(&opts, &progress, stop)?;
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    if res.interrupted {
        eprintln!(
            "interrupted at epoch {}, batch {}: checkpoint saved; rerun with --resume",
            res.state.epoch + 1,
            res.state.next_batch
        );
        return Ok(130);
    }
    if let (Some(m), Some(e)) = (&res.model, res.ten_crop_top1_error) {
        eprintln!(
            "wrote {} ({:.1} min; validation top-1 error {:.2}% with 10 crops)",
            m.display(),
            res.state.seconds / 60.0,
            e * 100.0
        );
    }
    Ok(0)
}
