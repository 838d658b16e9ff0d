//! Walks photo folders (walkdir) and lists the files worth decoding: images recognised by
//! extension or, failing that, by their first bytes. Hidden folders, NAS thumbnail folders and
//! `--exclude` globs are skipped; symbolic links are not followed unless asked (loops are then
//! reported by walkdir and ignored).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use globset::{Glob, GlobSet, GlobSetBuilder};
use walkdir::{DirEntry, WalkDir};

use crate::error::{Error, Result};

const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "jpe", "png", "webp", "gif", "tif", "tiff", "bmp",
];
const SKIPPED_DIRS: [&str; 3] = ["@eaDir", ".thumbnails", "#recycle"];

#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    pub follow_symlinks: bool,
    pub exclude: Vec<String>,
}

/// A file found by a scan, with what the catalog compares to decide whether it changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    /// False when the file has no image extension and its content did not look like an image.
    pub looks_like_image: bool,
}

/// What a scan saw: candidate files and the paths it could not read.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: Vec<Found>,
    pub errors: Vec<(PathBuf, String)>,
}

fn exclude_set(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| Error::Invalid(format!("--exclude {p}: {e}")))?);
    }
    b.build().map_err(|e| Error::Invalid(e.to_string()))
}

fn is_skipped_dir(e: &DirEntry) -> bool {
    let name = e.file_name().to_string_lossy();
    e.depth() > 0
        && e.file_type().is_dir()
        && (name.starts_with('.') || SKIPPED_DIRS.contains(&name.as_ref()))
}

/// Modification time in nanoseconds since the epoch (0 when the platform has none).
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

fn sniffs_as_image(path: &Path) -> bool {
    let mut head = [0u8; 32];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    crate::imaging::sniff(&head[..n]).is_some()
}

/// Fails on the first of `roots` that does not exist, naming it.
pub fn check_roots(roots: &[PathBuf]) -> Result<()> {
    match roots.iter().find(|r| !r.exists()) {
        Some(r) => Err(Error::io(
            r,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        )),
        None => Ok(()),
    }
}

/// Lists every regular file under `roots` (absolute paths), in a stable order.
pub fn scan(roots: &[PathBuf], opts: &ScanOptions) -> Result<Scan> {
    let excludes = exclude_set(&opts.exclude)?;
    let mut out = Scan::default();
    for root in roots {
        let root = std::path::absolute(root).map_err(|e| Error::io(root, e))?;
        check_roots(std::slice::from_ref(&root))?;
        let walker = WalkDir::new(&root)
            .follow_links(opts.follow_symlinks)
            .sort_by_file_name();
        let walker = walker.into_iter().filter_entry(|e| {
            let rel = e.path().strip_prefix(&root).unwrap_or(e.path());
            !is_skipped_dir(e) && !excludes.is_match(rel) && !excludes.is_match(e.path())
        });
        for entry in walker {
            match entry {
                Ok(e) if e.file_type().is_file() => match e.metadata() {
                    Ok(m) => out.files.push(Found {
                        looks_like_image: has_image_extension(e.path())
                            || sniffs_as_image(e.path()),
                        path: e.into_path(),
                        size: m.len(),
                        mtime_ns: mtime_ns(&m),
                    }),
                    Err(err) => out.errors.push((e.into_path(), err.to_string())),
                },
                Ok(_) => {}
                Err(err) if err.loop_ancestor().is_some() => {}
                Err(err) => {
                    let path = err
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| root.clone());
                    out.errors.push((path, err.to_string()));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_excluded_and_non_images_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/.hidden")).unwrap();
        std::fs::create_dir_all(r.join("@eaDir")).unwrap();
        std::fs::create_dir_all(r.join("raw")).unwrap();
        std::fs::write(r.join("a/x.JPG"), b"whatever").unwrap();
        std::fs::write(r.join("a/.hidden/y.jpg"), b"y").unwrap();
        std::fs::write(r.join("@eaDir/t.jpg"), b"t").unwrap();
        std::fs::write(r.join("raw/z.jpg"), b"z").unwrap();
        std::fs::write(r.join("notes.txt"), b"hello").unwrap();
        std::fs::write(
            r.join("noext"),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0],
        )
        .unwrap();
        let opts = ScanOptions {
            follow_symlinks: false,
            exclude: vec!["raw/**".into()],
        };
        let s = scan(&[r.to_path_buf()], &opts).unwrap();
        let names: Vec<(String, bool)> = s
            .files
            .iter()
            .map(|f| {
                (
                    f.path
                        .strip_prefix(r)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    f.looks_like_image,
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("a/x.JPG".into(), true),
                ("noext".into(), true),
                ("notes.txt".into(), false)
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_harmless() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(d.path(), d.path().join("sub/loop")).unwrap();
        std::fs::write(d.path().join("sub/p.png"), b"p").unwrap();
        for follow in [false, true] {
            let opts = ScanOptions {
                follow_symlinks: follow,
                exclude: vec![],
            };
            let s = scan(&[d.path().to_path_buf()], &opts).unwrap();
            assert_eq!(s.files.len(), 1, "follow={follow}");
        }
    }
}
