//! The packed training cache: every image of a dataset decoded once (in parallel, with the
//! same decoder, EXIF orientation and bad-input rules as `fc7 index`), resized to the preset's
//! side and centre-squared, and stored as raw 8-bit rows in one file, so that training reads
//! batches from disk instead of holding the dataset in memory.
//!
//! Layout of a pack folder: `pixels.bin` ([rows, side, side, 3] u8, HWC RGB), `moments.bin`
//! (per row: the exact integer sums Σr Σg Σb Σrr Σrg Σrb Σgg Σgb Σbb, nine u64 LE, from which
//! the colour statistics of any subset of rows follow without reading pixels) and `index.json`
//! (format version, side, and per source file its path, label, size, mtime and row or skip
//! reason). `index.json` is written last and removed first, so a pack interrupted while being
//! built is never taken for a complete one. A pack is reused while every source file's size and
//! mtime match; otherwise it is rebuilt. Each pack records its dataset folder (`source`), and
//! building one removes the packs of folders that no longer exist. A build that could not fit
//! on the disk is refused before it decodes anything, and one that fails removes its rows.
//!
//! Raw rows, not JPEG: a row is read with one positioned read and needs no decoding, which is
//! what lets a few cores feed a GPU (FFCV measured raw 256 px at ~1,800 images/s per core and
//! JPEG at ~330). The price is disk: side² × 3 bytes per image (196,608 at 256).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::imaging::{self, View};

const VERSION: u32 = 1;
/// Images decoded together before their rows are appended (bounds the builder's memory).
const CHUNK: usize = 256;

/// One source file of the dataset as it was when packed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the dataset's root.
    pub path: String,
    pub label: usize,
    pub size: u64,
    pub mtime_ns: i64,
    /// Its row in `pixels.bin`, or why it could not be decoded.
    pub row: Option<u64>,
    pub skipped: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Index {
    version: u32,
    side: usize,
    entries: Vec<Entry>,
}

/// An open pack: rows read by position, safe to share between threads.
pub struct Pack {
    pub dir: PathBuf,
    pub side: usize,
    pub entries: Vec<Entry>,
    /// True when this open decoded the dataset (it was missing, stale or of another side).
    pub built: bool,
    pixels: File,
    moments: Vec<[u64; 9]>,
}

/// Reports packing progress as (images done, images in all).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// The default place for packs: $FC7_PACKS, else `packs/` in fc7's cache folder
/// (`runtime::cache_dir`: $FC7_CACHE, else ~/.cache/fc7).
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("FC7_PACKS").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => crate::util::fs::cache_dir().join("packs"),
    }
}

/// The pack folder of dataset `root` at `side` inside `cache`: the root's name, the side and
/// a hash of its absolute path, so two datasets of the same name do not meet.
pub fn pack_dir(cache: &Path, root: &Path, side: usize) -> PathBuf {
    use sha2::{Digest, Sha256};
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let hash = Sha256::digest(abs.as_os_str().as_encoded_bytes());
    let name = abs
        .file_name()
        .map_or("data".into(), |n| n.to_string_lossy());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    cache.join(format!("{name}-{side}-{hex}"))
}

/// Whether `name` has the shape `pack_dir` gives: NAME-SIDE-HEX12.
fn is_pack_name(name: &str) -> bool {
    let mut parts = name.rsplitn(3, '-');
    let (hex, side, rest) = (parts.next(), parts.next(), parts.next());
    hex.is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        && side.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        && rest.is_some_and(|r| !r.is_empty())
}

/// (size, mtime) of each source, or the reason it cannot be read.
fn stat_all(root: &Path, files: &[(PathBuf, usize)]) -> Vec<Entry> {
    files
        .par_iter()
        .map(|(p, label)| {
            let meta = std::fs::metadata(p);
            let rel = p
                .strip_prefix(root)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned();
            let (size, mtime_ns, skipped) = match &meta {
                Ok(m) => (m.len(), crate::imaging::scan::mtime_ns(m), None),
                Err(e) => (0, 0, Some(e.to_string())),
            };
            Entry {
                path: rel,
                label: *label,
                size,
                mtime_ns,
                row: None,
                skipped,
            }
        })
        .collect()
}

fn same_sources(a: &[Entry], b: &[Entry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (&x.path, x.label, x.size, x.mtime_ns) == (&y.path, y.label, y.size, y.mtime_ns)
        })
}

impl Pack {
    /// Opens the pack of `files` (paths under `root`, with labels) at `side`, building it
    /// first when it is missing or any source changed.
    pub fn open_or_build(
        cache: &Path,
        root: &Path,
        files: &[(PathBuf, usize)],
        side: usize,
        progress: Progress,
    ) -> Result<Pack> {
        let dir = pack_dir(cache, root, side);
        let now = stat_all(root, files);
        if let Some(pack) = Self::open(&dir, side)? {
            if same_sources(&pack.entries, &now) {
                return Ok(pack);
            }
        }
        build(&dir, root, now, side, progress)?;
        crate::util::fs::prune_orphans(cache, &dir, &is_pack_name);
        let mut pack = Self::open(&dir, side)?
            .ok_or_else(|| Error::Invalid(format!("{}: pack not written", dir.display())))?;
        pack.built = true;
        Ok(pack)
    }

    /// The complete pack in `dir` at `side`, or None (missing, interrupted, other side or
    /// version). A damaged pack is an error naming the file.
    pub fn open(dir: &Path, side: usize) -> Result<Option<Pack>> {
        let index_path = dir.join("index.json");
        let Ok(bytes) = std::fs::read(&index_path) else {
            return Ok(None);
        };
        let index: Index = match serde_json::from_slice(&bytes) {
            Ok(i) => i,
            Err(_) => return Ok(None),
        };
        if index.version != VERSION || index.side != side {
            return Ok(None);
        }
        let rows = index.entries.iter().filter(|e| e.row.is_some()).count();
        let pixels_path = dir.join("pixels.bin");
        let pixels = File::open(&pixels_path).map_err(|e| Error::io(&pixels_path, e))?;
        let len = pixels
            .metadata()
            .map_err(|e| Error::io(&pixels_path, e))?
            .len();
        let damaged = |what: &Path| Error::Model {
            path: what.to_path_buf(),
            reason: "damaged training pack (wrong size); delete the folder to rebuild it".into(),
        };
        if len != (rows * side * side * 3) as u64 {
            return Err(damaged(&pixels_path));
        }
        let moments_path = dir.join("moments.bin");
        let raw = std::fs::read(&moments_path).map_err(|e| Error::io(&moments_path, e))?;
        if raw.len() != rows * 72 {
            return Err(damaged(&moments_path));
        }
        let moments = raw
            .chunks_exact(72)
            .map(|r| {
                std::array::from_fn(|k| u64::from_le_bytes(r[k * 8..k * 8 + 8].try_into().unwrap()))
            })
            .collect();
        Ok(Some(Pack {
            dir: dir.to_path_buf(),
            side,
            entries: index.entries,
            built: false,
            pixels,
            moments,
        }))
    }

    pub fn row_bytes(&self) -> usize {
        self.side * self.side * 3
    }

    /// Reads row `row` ([side, side, 3] u8) into `out`.
    pub fn read_row(&self, row: u64, out: &mut [u8]) -> Result<()> {
        let n = self.row_bytes();
        self.pixels
            .read_exact_at(&mut out[..n], row * n as u64)
            .map_err(|e| Error::io(self.dir.join("pixels.bin"), e))
    }

    /// The summed colour moments of `rows` (exact, so independent of their order).
    pub fn moments(&self, rows: impl Iterator<Item = u64>) -> ([u64; 9], u64) {
        let mut sum = [0u64; 9];
        let mut pixels = 0u64;
        for r in rows {
            let m = &self.moments[r as usize];
            (0..9).for_each(|k| sum[k] += m[k]);
            pixels += (self.side * self.side) as u64;
        }
        (sum, pixels)
    }

    /// Bytes on disk (pixels, moments and index).
    pub fn disk_bytes(&self) -> u64 {
        ["pixels.bin", "moments.bin", "index.json"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// The nine colour moments of one image's pixels.
pub fn pixel_moments(rgb: &[u8]) -> [u64; 9] {
    let mut m = [0u64; 9];
    for p in rgb.chunks_exact(3) {
        let (r, g, b) = (p[0] as u64, p[1] as u64, p[2] as u64);
        m[0] += r;
        m[1] += g;
        m[2] += b;
        m[3] += r * r;
        m[4] += r * g;
        m[5] += r * b;
        m[6] += g * g;
        m[7] += g * b;
        m[8] += b * b;
    }
    m
}

/// Bytes a pack of `images` rows at `side` takes at most (pixels and moments).
fn pack_bytes(images: usize, side: usize) -> u64 {
    images as u64 * (side * side * 3 + 72) as u64
}

/// Readies `dir` for a new pack of `images` rows: checks that they fit (counting the space
/// the previous pack's rows give back), then marks the pack incomplete (index first) and frees
/// those rows. A refusal touches nothing.
fn prepare(dir: &Path, root: &Path, images: usize, side: usize) -> Result<()> {
    let rows = ["pixels.bin", "pixels.bin.tmp"];
    let freed: u64 = rows
        .iter()
        .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
        .map(|m| m.len())
        .sum();
    let what = format!("a training pack of {images} images at {side}x{side}");
    crate::util::fs::ensure_room(dir, &what, pack_bytes(images, side).saturating_sub(freed))
        .map_err(|why| Error::Invalid(format!("{why}; or put packs elsewhere with --cache DIR")))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::util::fs::record_source(dir, root);
    for name in ["index.json"].iter().chain(&rows) {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes every source into a new pack in `dir`; a failed build removes its partial rows.
fn build(
    dir: &Path,
    root: &Path,
    mut entries: Vec<Entry>,
    side: usize,
    progress: Progress,
) -> Result<()> {
    prepare(dir, root, entries.len(), side)?;
    let tmp = dir.join("pixels.bin.tmp");
    let moments = write_rows(&tmp, root, &mut entries, side, progress).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    let pixels = dir.join("pixels.bin");
    std::fs::rename(&tmp, &pixels).map_err(|e| Error::io(&pixels, e))?;
    crate::util::fs::atomic_write(&dir.join("moments.bin"), &moments)?;
    let index = Index {
        version: VERSION,
        side,
        entries,
    };
    crate::util::fs::atomic_write(
        &dir.join("index.json"),
        &serde_json::to_vec(&index).expect("index serialises"),
    )
}

/// Decodes `entries` chunk by chunk into rows appended to `tmp` (synced), giving each its row
/// or why it was skipped; returns the rows' moments as bytes.
fn write_rows(
    tmp: &Path,
    root: &Path,
    entries: &mut [Entry],
    side: usize,
    progress: Progress,
) -> Result<Vec<u8>> {
    let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut moments = Vec::new();
    let view = View {
        resize: side as u32,
        crop: side as u32,
    };
    let paths: Vec<Option<PathBuf>> = entries
        .iter()
        .map(|e| e.skipped.is_none().then(|| root.join(&e.path)))
        .collect();
    let sizes: Vec<u64> = entries.iter().map(|e| e.size).collect();
    let (total, mut rows) = (entries.len(), 0u64);
    let file = |i: usize| Some((paths[i].clone()?, sizes[i]));
    crate::util::readahead::reading_ahead(total, file, |reading| -> Result<()> {
        for (at, chunk) in (0..).step_by(CHUNK).zip(entries.chunks_mut(CHUNK)) {
            reading.reached(at);
            let decoded = decode_rows(&paths[at..at + chunk.len()], view);
            for (e, d) in chunk.iter_mut().zip(decoded) {
                match d {
                    Some(Ok((rgb, m))) => {
                        out.write_all(&rgb).map_err(|err| Error::io(tmp, err))?;
                        m.iter()
                            .for_each(|v| moments.extend_from_slice(&v.to_le_bytes()));
                        e.row = Some(rows);
                        rows += 1;
                    }
                    Some(Err(why)) => e.skipped = Some(why),
                    None => {}
                }
            }
            progress(at + chunk.len(), total);
        }
        Ok(())
    })?;
    let file = out
        .into_inner()
        .map_err(|e| Error::io(tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(tmp, e))?;
    Ok(moments)
}

/// Each file decoded at `view` (in parallel): its RGB row and pixel moments, or why it could
/// not be; None for a file the scan already left out.
fn decode_rows(paths: &[Option<PathBuf>], view: View) -> Vec<Option<Decoded>> {
    paths
        .par_iter()
        .map(|p| {
            let p = p.as_ref()?;
            let row = imaging::prepare_file(p, view, imaging::DEFAULT_MAX_PIXELS)
                .map(|img| {
                    let m = pixel_moments(img.rgb.as_raw());
                    (img.rgb.into_raw(), m)
                })
                .map_err(|err| err.reason());
            Some(row)
        })
        .collect()
}

/// A decoded row and its pixel moments, or why the file could not be decoded.
type Decoded = std::result::Result<(Vec<u8>, [u64; 9]), String>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A class-folder dataset of 2 × 6 generated pictures plus one file that is not an image.
    fn dataset(root: &Path) -> Vec<(PathBuf, usize)> {
        crate::train::dataset::synthetic(root, 2, 6, 40, 3).unwrap();
        let bad = root.join("train/0-stripes/zz-broken.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\n not really").unwrap();
        let classes = crate::train::dataset::subdirs(&root.join("train")).unwrap();
        crate::train::dataset::listing(&root.join("train"), &classes)
    }

    fn open(cache: &Path, root: &Path, files: &[(PathBuf, usize)], side: usize) -> Pack {
        Pack::open_or_build(cache, root, files, side, &|_, _| {}).unwrap()
    }

    #[test]
    fn rows_equal_the_decoded_images_and_bad_files_are_skipped_with_a_reason() {
        let d = tempfile::tempdir().unwrap();
        let (root, cache) = (d.path().join("data"), d.path().join("cache"));
        let files = dataset(&root);
        let calls = AtomicUsize::new(0);
        let pack = Pack::open_or_build(&cache, &root, &files, 32, &|_, _| {
            calls.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert!(pack.built && calls.load(Ordering::SeqCst) >= 1);
        assert_eq!(pack.entries.len(), files.len());
        let broken = pack
            .entries
            .iter()
            .find(|e| e.path.ends_with("zz-broken.png"))
            .unwrap();
        assert_eq!(broken.row, None);
        assert!(
            broken.skipped.as_deref().unwrap().contains("decode"),
            "{broken:?}"
        );
        let view = View {
            resize: 32,
            crop: 32,
        };
        let mut row = vec![0u8; pack.row_bytes()];
        for e in pack.entries.iter().filter(|e| e.row.is_some()) {
            let want = imaging::prepare_file(&root.join(&e.path), view, u64::MAX).unwrap();
            pack.read_row(e.row.unwrap(), &mut row).unwrap();
            assert_eq!(row, want.rgb.as_raw().as_slice(), "{}", e.path);
            assert_eq!(
                pack.moments([e.row.unwrap()].into_iter()).0,
                pixel_moments(&row)
            );
        }
        assert!(pack.disk_bytes() > (pack.row_bytes() * 9) as u64);
    }

    #[test]
    fn a_pack_is_reused_until_a_source_changes_or_the_side_differs() {
        let d = tempfile::tempdir().unwrap();
        let (root, cache) = (d.path().join("data"), d.path().join("cache"));
        let files = dataset(&root);
        assert!(open(&cache, &root, &files, 32).built);
        assert!(!open(&cache, &root, &files, 32).built, "reused");
        assert!(
            open(&cache, &root, &files, 24).built,
            "another side, another pack"
        );
        // The same name and size but new content and mtime: rebuilt, with the new pixels.
        let (changed, _) = &files[1];
        let replacement = &files[7].0;
        std::fs::copy(replacement, changed).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(changed)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let pack = open(&cache, &root, &files, 32);
        assert!(pack.built, "a changed source must rebuild the pack");
        let mut a = vec![0u8; pack.row_bytes()];
        let mut b = a.clone();
        let row = |i: usize| pack.entries[i].row.unwrap();
        pack.read_row(row(1), &mut a).unwrap();
        pack.read_row(row(7), &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn building_a_pack_removes_the_packs_of_deleted_datasets_only() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let roots: Vec<PathBuf> = ["kept", "deleted", "new"]
            .iter()
            .map(|n| d.path().join(n))
            .collect();
        let files: Vec<_> = roots.iter().map(|r| dataset(r)).collect();
        let kept = open(&cache, &roots[0], &files[0], 32).dir;
        let deleted = open(&cache, &roots[1], &files[1], 32).dir;
        std::fs::remove_dir_all(&roots[1]).unwrap();
        assert!(deleted.is_dir(), "nothing is pruned until a pack is built");
        open(&cache, &roots[2], &files[2], 32);
        assert!(!deleted.exists(), "the deleted dataset's pack stayed");
        assert!(!open(&cache, &roots[0], &files[0], 32).built && kept.is_dir());
        // A --cache folder the user shares: a folder not named like a pack stays, whatever
        // its `source` file says.
        let theirs = cache.join("notes");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("source"), "/no/such/folder").unwrap();
        std::fs::remove_dir_all(&roots[2]).unwrap();
        open(&cache, &roots[1], &dataset(&roots[1]), 32);
        assert!(theirs.is_dir() && kept.is_dir());
        assert!(!pack_dir(&cache, &roots[2], 32).exists());
        assert!(is_pack_name(
            &pack_dir(&cache, &roots[0], 256)
                .file_name()
                .unwrap()
                .to_string_lossy()
        ));
        assert!(!is_pack_name("a-b-0123456789ab") && !is_pack_name("72-0123456789ab"));
    }

    #[test]
    fn a_pack_that_cannot_fit_is_refused_naming_the_flag_that_moves_it() {
        assert_eq!(pack_bytes(70_000, 72), 70_000 * (72 * 72 * 3 + 72));
        let d = tempfile::tempdir().unwrap();
        let (root, cache) = (d.path().join("data"), d.path().join("cache"));
        let files = dataset(&root);
        let free = crate::util::fs::free_bytes(&cache).unwrap();
        let side = (free as f64 / 3.0 / files.len() as f64).sqrt() as usize + 1;
        let err = Pack::open_or_build(&cache, &root, &files, side, &|_, _| {})
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("images at {side}x{side} needs")) && err.ends_with("--cache DIR"),
            "{err}"
        );
        assert!(!cache.exists(), "a refused pack left its folder");
    }

    #[test]
    fn an_interrupted_build_is_not_taken_for_a_pack() {
        let d = tempfile::tempdir().unwrap();
        let (root, cache) = (d.path().join("data"), d.path().join("cache"));
        let files = dataset(&root);
        let pack = open(&cache, &root, &files, 32);
        // A build stopped before its index was written (kill -9 between rows).
        std::fs::remove_file(pack.dir.join("index.json")).unwrap();
        std::fs::write(pack.dir.join("pixels.bin.tmp"), b"partial").unwrap();
        assert!(Pack::open(&pack.dir, 32).unwrap().is_none());
        assert!(open(&cache, &root, &files, 32).built);
        // Truncated pixels under a complete index: an error naming the file, not bad batches.
        std::fs::File::options()
            .write(true)
            .open(pack.dir.join("pixels.bin"))
            .unwrap()
            .set_len(100)
            .unwrap();
        let err = Pack::open(&pack.dir, 32).err().unwrap().to_string();
        assert!(
            err.contains("pixels.bin") && err.contains("damaged"),
            "{err}"
        );
    }
}
