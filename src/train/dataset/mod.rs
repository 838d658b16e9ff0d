//! Training data: a folder of class folders (`DATA/train/<class>/…` with `DATA/val/<class>/…`
//! or `DATA/test/<class>/…`, or `DATA/<class>/…` split by `val_fraction`), read from its packed
//! on-disk cache (`pack`; built on first use) so that memory does not grow with the dataset.
//! `fashion_mnist`, `synthetic` and `scenes` write the datasets fc7 knows as class folders;
//! `unlabelled` reads any photo folder as exemplar training's surrogate classes.

pub mod fashion_mnist;
pub mod pack;
pub mod scenes;
pub mod synthetic;
pub mod unlabelled;

pub use fashion_mnist::{fashion_mnist, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR};
pub use synthetic::{synthetic, synthetic_image};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
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
    /// The labels of images `idx`, as the engine takes them.
    pub fn labels_of(&self, idx: &[usize]) -> Vec<u32> {
        idx.iter().map(|&i| self.labels[i] as u32).collect()
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
    /// The class folder of each validation image, for an unlabelled folder whose images sit
    /// in class folders (a retrieval score, never trained on).
    pub val_folders: Option<Vec<usize>>,
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
        val_folders: None,
    })
}
