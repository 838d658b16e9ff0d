//! Training data: a folder of class folders (`DATA/train/<class>/…` with `DATA/val/<class>/…`
//! or `DATA/test/<class>/…`, or `DATA/<class>/…` split by `val_fraction`), read from its packed
//! on-disk cache (`pack`; built on first use) so that memory does not grow with the dataset.
//! Also writes the two datasets fc7 knows: Fashion-MNIST from the Debian package's IDX files,
//! and a generated one (no download, for tests and the demo's fallback).

pub mod pack;
pub mod scenes;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::error::{Error, Result};
use pack::Pack;

/// The images of one split: rows of the pack, each [side, side, 3] (HWC, RGB).
#[derive(Clone)]
pub struct Split {
    pack: Arc<Pack>,
    rows: Vec<u64>,
    pub labels: Vec<usize>,
    pub paths: Vec<PathBuf>,
    pub side: usize,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Bytes of one image.
    pub fn image_bytes(&self) -> usize {
        self.side * self.side * 3
    }
    /// Reads image `i` into `out` (at least `image_bytes()` long).
    fn read(&self, i: usize, out: &mut [u8]) -> Result<()> {
        self.pack.read_row(self.rows[i], out)
    }
    /// Images `idx`, read in parallel: [idx.len(), side, side, 3].
    pub fn read_images(&self, idx: &[usize]) -> Result<Vec<u8>> {
        let n = self.image_bytes();
        let mut out = vec![0u8; idx.len() * n];
        out.par_chunks_mut(n)
            .zip(idx.par_iter())
            .try_for_each(|(o, &i)| self.read(i, o))?;
        Ok(out)
    }
    /// The exact colour moments of every pixel of the split (see `pack`).
    pub fn moments(&self) -> ([u64; 9], u64) {
        self.pack.moments(self.rows.iter().copied())
    }
}

pub struct Dataset {
    pub classes: Vec<String>,
    pub train: Split,
    pub val: Split,
    /// Files that could not be decoded, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    pub pack: Arc<Pack>,
}

/// Visible sub-folder names, sorted: the class names of a class-folder dataset.
pub fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_dir())
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    Ok(out)
}

/// (path, label) of every regular file under `dir/<class>/`.
pub fn listing(dir: &Path, classes: &[String]) -> Vec<(PathBuf, usize)> {
    let mut out = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir.join(class))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|p| (p, label)));
    }
    out
}

/// The split of `indices` into pack rows (skipped files left out).
fn split_of(pack: &Arc<Pack>, root: &Path, indices: &[usize]) -> Split {
    let mut split = Split {
        pack: pack.clone(),
        rows: Vec::new(),
        labels: Vec::new(),
        paths: Vec::new(),
        side: pack.side,
    };
    for &i in indices {
        let e = &pack.entries[i];
        if let Some(row) = e.row {
            split.rows.push(row);
            split.labels.push(e.label);
            split.paths.push(root.join(&e.path));
        }
    }
    split
}

/// Where a dataset's pack lives and how its building is reported.
pub struct Source<'a> {
    pub root: &'a Path,
    pub cache: &'a Path,
    pub progress: pack::Progress<'a>,
}

/// Class names, (path, label) of every file, and the number of training files.
type Listing = (Vec<String>, Vec<(PathBuf, usize)>, Option<usize>);

/// Class names and (path, label) of every file: the training listing then the validation
/// listing, and how many of them are training files (None: no validation images, so
/// `val_fraction` of the training files are drawn for it).
fn list(root: &Path) -> Result<Listing> {
    let train_dir = root.join("train");
    let (classes, files, n_train) = if train_dir.is_dir() {
        let classes = subdirs(&train_dir)?;
        let mut files = listing(&train_dir, &classes);
        let n_train = files.len();
        let val_dir = ["val", "test"]
            .iter()
            .map(|d| root.join(d))
            .find(|d| d.is_dir());
        files.extend(val_dir.map(|d| listing(&d, &classes)).unwrap_or_default());
        let has_val = files.len() > n_train;
        (classes, files, has_val.then_some(n_train))
    } else {
        let classes = subdirs(root)?;
        let files = listing(root, &classes);
        (classes, files, None)
    };
    if classes.len() < 2 || n_train == Some(0) || files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: expected class folders (DATA/train/<class>/ or DATA/<class>/) with images, found {} classes",
            root.display(),
            classes.len()
        )));
    }
    Ok((classes, files, n_train))
}

/// Loads the dataset at `src.root` (module header) at `side`, packing it first if needed.
pub fn load(src: &Source, side: usize, val_fraction: f32, seed: u64) -> Result<Dataset> {
    let (classes, files, n_train) = list(src.root)?;
    let pack = Arc::new(Pack::open_or_build(
        src.cache,
        src.root,
        &files,
        side,
        src.progress,
    )?);
    let (train_idx, val_idx): (Vec<usize>, Vec<usize>) = match n_train {
        Some(n) => ((0..n).collect(), (n..files.len()).collect()),
        None => {
            // The same seeded draw of validation files as the shuffle of the file list it
            // replaces: the permutation depends only on the length and the seed.
            let mut order: Vec<usize> = (0..files.len()).collect();
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let n_val = ((files.len() as f32 * val_fraction).round() as usize).max(1);
            let val = order.split_off(files.len() - n_val);
            order.sort();
            (order, val)
        }
    };
    let skipped = pack
        .entries
        .iter()
        .filter_map(|e| {
            e.skipped
                .as_ref()
                .map(|r| (src.root.join(&e.path), r.clone()))
        })
        .collect();
    Ok(Dataset {
        classes,
        train: split_of(&pack, src.root, &train_idx),
        val: split_of(&pack, src.root, &val_idx),
        skipped,
        pack,
    })
}

pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let bad = |why: &str| Error::Invalid(format!("{}: not an IDX file ({why})", path.display()));
    let be = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if be(0) != Some(magic as usize) {
        return Err(bad("magic"));
    }
    let dims = (magic & 0xFF) as usize;
    let shape: Vec<usize> = (0..dims)
        .map(|d| be(4 + 4 * d).ok_or_else(|| bad("header")))
        .collect::<Result<_>>()?;
    let data = bytes.split_off(4 + 4 * dims);
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad("size"));
    }
    Ok((shape, data))
}

/// Writes Fashion-MNIST as `out/{train,test}/<class>/NNNNN.png` from the Debian package's files.
/// `limit` caps the images per split (0: all). Returns (train, test) counts.
pub fn fashion_mnist(source: &Path, out: &Path, limit: usize) -> Result<(usize, usize)> {
    let file = |name: &str| source.join(name);
    if !file("train-images-idx3-ubyte.gz").is_file() {
        return Err(Error::Invalid(format!(
            "Fashion-MNIST not found in {} (install it: apt-get install dataset-fashion-mnist)",
            source.display()
        )));
    }
    let mut counts = [0; 2];
    for (k, (split, prefix)) in [("train", "train"), ("test", "t10k")].iter().enumerate() {
        let (shape, images) = read_idx(&file(&format!("{prefix}-images-idx3-ubyte.gz")), 0x0803)?;
        let (_, labels) = read_idx(&file(&format!("{prefix}-labels-idx1-ubyte.gz")), 0x0801)?;
        let (n, h, w) = (shape[0], shape[1], shape[2]);
        let n = if limit > 0 { n.min(limit) } else { n };
        for class in FASHION_MNIST_CLASSES {
            std::fs::create_dir_all(out.join(split).join(class)).map_err(|e| Error::io(out, e))?;
        }
        (0..n).into_par_iter().try_for_each(|i| {
            let img = image::GrayImage::from_raw(
                w as u32,
                h as u32,
                images[i * h * w..(i + 1) * h * w].to_vec(),
            )
            .expect("size");
            let p = out
                .join(split)
                .join(FASHION_MNIST_CLASSES[labels[i] as usize % 10])
                .join(format!("{i:05}.png"));
            img.save(&p)
                .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
        })?;
        counts[k] = n;
    }
    Ok((counts[0], counts[1]))
}

/// One generated picture of `class`: each class its own pattern, each picture its own colours,
/// scale, phase and noise.
pub fn synthetic_image(class: usize, side: u32, rng: &mut impl Rng) -> image::RgbImage {
    let fg: [f32; 3] = [
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
    ];
    let bg = fg.map(|c| (c + 128.0) % 256.0);
    let period = rng.random_range(6.0..12.0f32) * side as f32 / 64.0;
    let (phase, r) = (
        rng.random_range(0.0..period),
        rng.random_range(0.25..0.4f32) * side as f32,
    );
    let (cx, cy) = (
        side as f32 * rng.random_range(0.4..0.6f32),
        side as f32 * rng.random_range(0.4..0.6f32),
    );
    image::RgbImage::from_fn(side, side, |x, y| {
        let (u, v) = (x as f32 + phase, y as f32 + phase);
        let on = match class % 6 {
            0 => (u / period) as i32 % 2 == 0,
            1 => (v / period) as i32 % 2 == 0,
            2 => ((u / period) as i32 + (v / period) as i32) % 2 == 0,
            3 => (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r,
            4 => ((u + v) / period) as i32 % 2 == 0,
            _ => (x as f32 - cx).abs() < r * 0.4 || (y as f32 - cy).abs() < r * 0.4,
        };
        let noise =
            ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ (class as u32).wrapping_mul(31))
                % 31) as f32
                - 15.0;
        let c = if on { fg } else { bg };
        image::Rgb(c.map(|v| (v + noise).clamp(0.0, 255.0) as u8))
    })
}

/// Writes `out/{train,val}/class<k>/NNNN.png`: `classes` × `per_class` pictures (a fifth to val).
pub fn synthetic(out: &Path, classes: usize, per_class: usize, side: u32, seed: u64) -> Result<()> {
    let names = ["stripes", "bars", "checks", "disc", "diagonals", "cross"];
    (0..classes * per_class).into_par_iter().try_for_each(|i| {
        let (class, k) = (i % classes, i / classes);
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
        let split = if k % 5 == 4 { "val" } else { "train" };
        let dir = out
            .join(split)
            .join(format!("{}-{}", class, names[class % names.len()]));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let p = dir.join(format!("{k:04}.png"));
        synthetic_image(class, side, &mut rng)
            .save(&p)
            .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
    })
}
