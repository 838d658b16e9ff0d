//! Training data: a folder of class folders (`DATA/train/<class>/…` with `DATA/val/<class>/…`
//! or `DATA/test/<class>/…`, or `DATA/<class>/…` split by `val_fraction`), decoded once in
//! parallel through `imaging` (shorter side → `side`, centre `side`×`side` crop) into an 8-bit
//! cache. Also writes the two datasets fc7 knows: Fashion-MNIST from the Debian package's IDX
//! files, and a generated one (no download, for tests and the demo's fallback).

use std::io::Read;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::imaging::{self, View};

/// Decoded images of one split: `pixels` is [n, side, side, 3] (HWC, RGB).
#[derive(Clone, Debug, Default)]
pub struct Split {
    pub pixels: Vec<u8>,
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
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.side * self.side * 3;
        &self.pixels[i * n..(i + 1) * n]
    }
}

pub struct Dataset {
    pub classes: Vec<String>,
    pub train: Split,
    pub val: Split,
    /// Files that could not be decoded, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
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

fn decode(
    files: Vec<(PathBuf, usize)>,
    side: usize,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Split {
    let view = View {
        resize: side as u32,
        crop: side as u32,
    };
    let decoded: Vec<_> = files
        .par_iter()
        .map(|(p, _)| imaging::prepare_file(p, view, imaging::DEFAULT_MAX_PIXELS))
        .collect();
    let mut split = Split {
        side,
        ..Default::default()
    };
    for ((path, label), d) in files.into_iter().zip(decoded) {
        match d {
            Ok(img) => {
                split.pixels.extend_from_slice(img.rgb.as_raw());
                split.labels.push(label);
                split.paths.push(path);
            }
            Err(e) => skipped.push((path, e.reason())),
        }
    }
    split
}

/// Loads `root` as described in the module header.
pub fn load(root: &Path, side: usize, val_fraction: f32, seed: u64) -> Result<Dataset> {
    let train_dir = root.join("train");
    let (classes, mut train_files, val_files) = if train_dir.is_dir() {
        let classes = subdirs(&train_dir)?;
        let val_dir = ["val", "test"]
            .iter()
            .map(|d| root.join(d))
            .find(|d| d.is_dir());
        let val = val_dir.map(|d| listing(&d, &classes)).unwrap_or_default();
        (classes.clone(), listing(&train_dir, &classes), val)
    } else {
        let classes = subdirs(root)?;
        (classes.clone(), listing(root, &classes), Vec::new())
    };
    if classes.len() < 2 || train_files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: expected class folders (DATA/train/<class>/ or DATA/<class>/) with images, found {} classes",
            root.display(),
            classes.len()
        )));
    }
    let val_files = if val_files.is_empty() {
        train_files.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let n_val = ((train_files.len() as f32 * val_fraction).round() as usize).max(1);
        let val = train_files.split_off(train_files.len() - n_val);
        train_files.sort();
        val
    } else {
        val_files
    };
    let mut skipped = Vec::new();
    let train = decode(train_files, side, &mut skipped);
    let val = decode(val_files, side, &mut skipped);
    Ok(Dataset {
        classes,
        train,
        val,
        skipped,
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
