//! `fc7 dataset …`: datasets written as class folders (Fashion-MNIST from its Debian package,
//! generated ones) and the packed training cache built ahead of training.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;

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

pub fn run(c: DatasetCmd) -> Result<i32> {
    match c {
        DatasetCmd::Pack {
            data,
            preset,
            side,
            cache,
        } => pack(&data, &preset, side, cache),
        DatasetCmd::ImagenetLike {
            out,
            classes,
            per_class,
            seed,
        } => {
            crate::train::dataset::scenes::imagenet_like(&out, classes, per_class, seed)?;
            println!(
                "wrote {} generated JPEGs in {classes} classes to {}",
                classes * per_class,
                out.display()
            );
            Ok(0)
        }
        DatasetCmd::FashionMnist { out, source, limit } => {
            let (tr, te) = crate::train::dataset::fashion_mnist(&source, &out, limit)?;
            println!(
                "wrote {tr} training and {te} test images to {}",
                out.display()
            );
            Ok(0)
        }
        DatasetCmd::Synthetic {
            out,
            classes,
            per_class,
            size,
            seed,
        } => {
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

/// One line per tenth of a pack's images (and its last), on stderr.
pub(crate) fn packing_line(done: usize, total: usize) {
    let tenth = (total / 10).max(1);
    if done == total || done / tenth != (done - done.min(256)) / tenth {
        eprintln!("packing: {done} of {total} images decoded");
    }
}

/// `fc7 dataset pack DATA`: builds (or checks) the dataset's pack without training.
fn pack(data: &Path, preset: &str, side: Option<usize>, cache: Option<PathBuf>) -> Result<i32> {
    let side = side.unwrap_or(crate::train::recipe::preset(preset)?.side);
    let cache = cache.unwrap_or_else(crate::train::dataset::pack::default_cache_dir);
    let started = std::time::Instant::now();
    let source = crate::train::dataset::Source {
        root: data,
        cache: &cache,
        progress: &packing_line,
    };
    let d = crate::train::dataset::load(&source, side, 0.1, 0)?;
    crate::cmd::progress::say_skipped(&d.skipped);
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
