//! An unlabelled photo folder as exemplar training's dataset: every image found (as
//! `fc7 index` finds them), or `surrogates` of them drawn with the seed when there are more,
//! is a class of its own. Only the drawn images are decoded, into a pack of their own
//! (`exemplar/` in the pack cache, so a class-folder pack of the same folder is not replaced),
//! which is what lets a folder of 100k+ photos train without holding it in memory.
//! Validation draws up to `VAL_SURROGATES` of the surrogates again (their held-out views are
//! made by the trainer). When the folder's images sit in class folders, their classes are kept
//! for a retrieval score; they are never trained on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{Error, Result};
use crate::imaging::scan::{scan, ScanOptions};
use crate::train::dataset::pack::Pack;
use crate::train::dataset::{subdirs, Dataset, Source, Split};

/// Surrogates validated at each epoch's end.
pub const VAL_SURROGATES: usize = 1000;

/// Files left out, each with the reason.
type Skipped = Vec<(PathBuf, String)>;

/// The image files under `root` (absolute), and the files skipped before decoding.
fn images(root: &Path) -> Result<(Vec<PathBuf>, Skipped)> {
    let found = scan(&[root.to_path_buf()], &ScanOptions::default())?;
    let mut skipped = found.errors;
    let mut images = Vec::new();
    for f in found.files {
        if f.looks_like_image {
            images.push(f.path);
        } else {
            skipped.push((
                f.path,
                "not an image (neither its name nor its content)".into(),
            ));
        }
    }
    Ok((images, skipped))
}

/// The class-folder index of each of `paths` (under `root`), when `root` holds at least two
/// visible folders, every path lies in one of them, and they hold seven images a class on
/// average (a folder an image, as in a dump of albums, scores nothing).
fn folder_classes(root: &Path, paths: &[PathBuf]) -> Result<Option<Vec<usize>>> {
    let folders = subdirs(root)?;
    if folders.len() < 2 {
        return Ok(None);
    }
    let class_of = |p: &PathBuf| {
        let first = p.strip_prefix(root).ok()?.components().next()?;
        let name = first.as_os_str().to_string_lossy();
        let in_folder = p.strip_prefix(root).ok()?.components().count() > 1;
        folders
            .iter()
            .position(|f| *f == name)
            .filter(|_| in_folder)
    };
    let groups: Option<Vec<usize>> = paths.iter().map(class_of).collect();
    // Precision@6 of class needs classes of at least seven images, on average.
    Ok(groups.filter(|g| {
        let distinct: std::collections::BTreeSet<_> = g.iter().collect();
        g.len() >= 7 * distinct.len()
    }))
}

/// Loads `src.root` as surrogate classes (module header), packing the drawn images at `side`.
pub fn load(src: &Source, side: usize, surrogates: usize, seed: u64) -> Result<Dataset> {
    let root = std::path::absolute(src.root).map_err(|e| Error::io(src.root, e))?;
    let (mut picked, mut skipped) = images(&root)?;
    if picked.len() > surrogates {
        picked.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        picked.truncate(surrogates);
        picked.sort();
    }
    let files: Vec<(PathBuf, usize)> = picked.into_iter().map(|p| (p, 0)).collect();
    let cache = src.cache.join("exemplar");
    let pack = Arc::new(Pack::open_or_build(
        &cache,
        &root,
        &files,
        side,
        src.progress,
    )?);
    let mut train = Split {
        pack: pack.clone(),
        rows: Vec::new(),
        labels: Vec::new(),
        paths: Vec::new(),
        side: pack.side,
    };
    for e in &pack.entries {
        match (e.row, &e.skipped) {
            (Some(row), _) => {
                train.labels.push(train.rows.len());
                train.rows.push(row);
                train.paths.push(root.join(&e.path));
            }
            (None, why) => skipped.push((root.join(&e.path), why.clone().unwrap_or_default())),
        }
    }
    if train.len() < 2 {
        return Err(Error::Invalid(format!(
            "{}: exemplar training needs at least 2 readable images, found {}",
            src.root.display(),
            train.len()
        )));
    }
    let mut val_idx: Vec<usize> = (0..train.len()).collect();
    val_idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x7A1));
    val_idx.truncate(VAL_SURROGATES);
    val_idx.sort();
    let val = Split {
        pack: pack.clone(),
        rows: val_idx.iter().map(|&i| train.rows[i]).collect(),
        labels: val_idx.iter().map(|&i| train.labels[i]).collect(),
        paths: val_idx.iter().map(|&i| train.paths[i].clone()).collect(),
        side: pack.side,
    };
    let folders = folder_classes(&root, &val.paths)?;
    let classes = train
        .paths
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap_or(p).display().to_string())
        .collect();
    Ok(Dataset {
        classes,
        train,
        val,
        skipped,
        pack,
        val_folders: folders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_fn(20, 16, |x, y| {
            image::Rgb([shade, (x * 9) as u8, (y * 11) as u8])
        })
        .save(path)
        .unwrap();
    }

    fn load_dir(root: &Path, cache: &Path, surrogates: usize) -> Dataset {
        let src = Source {
            root,
            cache,
            progress: &|_, _| {},
        };
        load(&src, 8, surrogates, 1).unwrap()
    }

    #[test]
    fn each_image_is_a_class_drawn_when_too_many_and_class_folders_are_kept_aside() {
        let d = tempfile::tempdir().unwrap();
        let (root, cache) = (d.path().join("photos"), d.path().join("cache"));
        let classes = [["cats"; 7], ["dogs"; 7]].concat();
        for (i, class) in classes.iter().enumerate() {
            png(&root.join(class).join(format!("{i:02}.png")), i as u8 * 15);
        }
        std::fs::write(root.join("dogs/list.txt"), "not a picture").unwrap();
        let data = load_dir(&root, &cache, 100);
        assert_eq!(data.classes.len(), 14);
        assert_eq!(
            (&*data.classes[0], &*data.classes[13]),
            ("cats/00.png", "dogs/13.png")
        );
        assert_eq!(data.train.labels, (0..14).collect::<Vec<_>>());
        assert_eq!(data.val.labels, data.train.labels);
        assert_eq!(data.val_folders, Some([[0; 7], [1; 7]].concat()));
        assert_eq!(data.skipped.len(), 1);
        assert!(
            data.skipped[0].0.ends_with("dogs/list.txt"),
            "{:?}",
            data.skipped
        );
        // Each class's row is its own image.
        let mut a = vec![0u8; data.train.image_bytes()];
        data.train.read(4, &mut a).unwrap();
        assert_eq!(a[0], 60);

        // Fewer surrogates than images: a seeded draw, the same each time, whose 3 images
        // are too few for classes of 7; a single class folder has no classes to score.
        let three = load_dir(&root, &cache, 3);
        assert_eq!(three.classes.len(), 3);
        assert_eq!(three.classes, load_dir(&root, &cache, 3).classes);
        assert_eq!(three.val_folders, None);
        assert_eq!(load_dir(&root.join("cats"), &cache, 100).val_folders, None);
    }
}
