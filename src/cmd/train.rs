//! `fc7 train` on the terminal: turns the arguments into a recipe and shows progress.

use std::sync::atomic::AtomicBool;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cmd::TrainArgs;
use crate::device::Device;
use crate::train::checkpoint::EpochRecord;
use crate::train::epoch::Outcome;
use crate::train::progress::TrainProgress;
use crate::train::run::TrainOptions;

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
    fn packing(&self, done: usize, total: usize) {
        packing_line(done, total);
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
    let mut r = crate::train::recipe::preset(&a.preset)?;
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
    r.init = a.init.unwrap_or(r.init);
    let opts = TrainOptions {
        data: a.data,
        out: a.out.clone(),
        recipe: r,
        resume: a.resume,
        device,
        max_steps: a.max_steps,
        cache: a.cache,
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
    let res = crate::train::run::train(&opts, &progress, stop)?;
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
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

/// One line per tenth of a pack's images (and its last), on stderr.
fn packing_line(done: usize, total: usize) {
    let tenth = (total / 10).max(1);
    if done == total || done / tenth != (done - done.min(256)) / tenth {
        eprintln!("packing: {done} of {total} images decoded");
    }
}

/// `fc7 dataset pack DATA`: builds (or checks) the dataset's pack without training.
pub fn pack(
    data: &std::path::Path,
    preset: &str,
    side: Option<usize>,
    cache: Option<std::path::PathBuf>,
) -> Result<i32> {
    let side = side.unwrap_or(crate::train::recipe::preset(preset)?.side);
    let cache = cache.unwrap_or_else(crate::train::dataset::pack::default_cache_dir);
    let started = std::time::Instant::now();
    let source = crate::train::dataset::Source {
        root: data,
        cache: &cache,
        progress: &packing_line,
    };
    let d = crate::train::dataset::load(&source, side, 0.1, 0)?;
    for (p, r) in &d.skipped {
        eprintln!("skipped {}: {r}", p.display());
    }
    let images = d.pack.entries.iter().filter(|e| e.row.is_some()).count();
    println!(
        "{} {}: {images} images ({} skipped) at {side}x{side}, {:.2} GB, {:.1} s",
        if d.pack.built { "packed" } else { "up to date" },
        d.pack.dir.display(),
        d.skipped.len(),
        d.pack.disk_bytes() as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}
