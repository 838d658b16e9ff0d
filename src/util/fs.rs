//! File helpers every wing uses: writes that readers never see half done, content hashes, the
//! cache folder, and the record of what each cache entry was made from (so entries of deleted
//! models and datasets can be removed).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// `stem` with `suffix` appended to its last component (models/m.v2 + ".onnx" →
/// models/m.v2.onnx, where `Path::with_extension` would replace the ".v2").
pub fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, so readers never see a
/// half-written file, even after a crash.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |f| f.write_all(bytes))
}

/// `atomic_write` of a file that `fill` writes in pieces (no copy of it all in memory): `path`
/// is replaced only once every piece is written and synced.
pub fn atomic_write_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let (dir, prefix) = temp_prefix(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// The folder of `path` and the start of its temporary files' names there (`.NAME.tmp-`,
/// the writer's process id follows).
fn temp_prefix(path: &Path) -> (&Path, String) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    (dir, format!(".{name}.tmp-"))
}

/// Removes the temporary files of `path` (`atomic_write`'s) that writers killed mid-write
/// (kill -9, a power cut) left beside it: a checkpoint's is as large as the checkpoint. A file
/// whose writer still runs, or whose process id has been taken again, is left. For large files
/// in small folders (checkpoints, models): it lists the folder.
pub fn remove_abandoned_temps(path: &Path) {
    let (dir, prefix) = temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && writer_alive(&file) == Some(false) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether the process that named a temporary file or folder `.NAME.tmp-PID` (or
/// `.NAME.tmp-PID-N`) still runs: None where the name holds no process id.
pub fn writer_alive(name: &str) -> Option<bool> {
    let pid = name
        .rsplit_once(".tmp-")
        .and_then(|(_, t)| t.split('-').next())
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    Some(Path::new("/proc").join(pid).exists())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes (SHA-256) what it passes on, so that a file written in pieces has its
/// digest without being read again.
pub struct Hashing<W> {
    inner: W,
    sum: Sha256,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            sum: Sha256::new(),
        }
    }

    /// The writer back, and the digest of everything written through it.
    pub fn finish(self) -> (W, [u8; 32]) {
        (self.inner, self.sum.finalize().into())
    }

    /// The digest in lower-case hex, as `sha256_hex` gives it.
    pub fn hex(self) -> String {
        hex(&self.finish().1)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Root of fc7's cache: `$FC7_CACHE`, else `$XDG_CACHE_HOME/fc7`, else `~/.cache/fc7`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FC7_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(p).join("fc7");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("fc7")
}

/// Serialises a path as text, its bytes that are not UTF-8 as U+FFFD: JSON has no other way
/// to carry them, and a file name must not stop a whole answer (serde refuses such paths).
pub fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// The file in a cache entry that records, as raw path bytes, what the entry was made from.
const SOURCE: &str = "source";

/// Records `source` (made absolute where it exists) as what the cache entry `dir` was made
/// from; best effort, as an entry without it is simply never pruned as an orphan.
pub fn record_source(dir: &Path, source: &Path) {
    let abs = std::fs::canonicalize(source)
        .or_else(|_| std::path::absolute(source))
        .unwrap_or_else(|_| source.to_path_buf());
    let _ = std::fs::write(dir.join(SOURCE), abs.as_os_str().as_encoded_bytes());
}

/// What the cache entry `dir` records it was made from, if it records anything.
pub fn recorded_source(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let bytes = std::fs::read(dir.join(SOURCE)).ok()?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// Whether a recorded source is gone: an absolute path (as `record_source` writes) that no
/// longer exists, so the entry made from it is an orphan.
pub fn gone(source: &Path) -> bool {
    source.is_absolute() && !source.exists()
}

/// Removes the entries in `root` (other than `keep`, and only folders whose name `is_entry`
/// accepts: `root` may be a folder the user shares) whose recorded source is `gone`: a deleted
/// model's or dataset's cache would otherwise stay on disk for good.
pub fn prune_orphans(root: &Path, keep: &Path, is_entry: &dyn Fn(&str) -> bool) {
    let Ok(dir) = std::fs::read_dir(root) else {
        return;
    };
    for e in dir.flatten() {
        let path = e.path();
        let orphan = recorded_source(&path).is_some_and(|s| gone(&s));
        if is_entry(&e.file_name().to_string_lossy()) && path != keep && orphan {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Space left free for everything else when fc7 writes something large.
const MARGIN: u64 = 1 << 30;

/// Whether `need` bytes fit in `free` with `MARGIN` to spare; else why not, naming `dir`.
fn check_room(dir: &Path, what: &str, need: u64, free: u64) -> std::result::Result<(), String> {
    if need.saturating_add(MARGIN) <= free {
        return Ok(());
    }
    let gb = |b: u64| b as f64 / 1e9;
    Err(format!(
        "{}: {what} needs {:.1} GB and {:.1} GB are free there ({:.0} GB kept free); free some space",
        dir.display(),
        gb(need),
        gb(free),
        gb(MARGIN)
    ))
}

/// Refuses, before writing, `what` of `need` bytes in `dir` when its filesystem cannot hold it
/// with `MARGIN` to spare: a disk filled half way wastes the minutes spent and leaves other
/// programs no room. Passes where the free space is unknown.
pub fn ensure_room(dir: &Path, what: &str, need: u64) -> std::result::Result<(), String> {
    match free_bytes(dir) {
        Some(free) => check_room(dir, what, need, free),
        None => Ok(()),
    }
}

/// Bytes of the files under `dir` (0 when it does not exist): what a cache folder holds.
pub fn tree_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path` (or its nearest
/// existing ancestor); None where the system does not say.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suffix_is_appended_to_a_stem_that_has_dots() {
        assert_eq!(
            with_suffix(Path::new("models/m.v2"), ".onnx"),
            Path::new("models/m.v2.onnx")
        );
        assert_eq!(
            with_suffix(Path::new("m"), ".log.jsonl"),
            Path::new("m.log.jsonl")
        );
    }

    /// A temporary file that a killed writer left beside a file is removed; one whose writer runs
    /// (pid 1 does), another file's and one without a process id are left.
    #[test]
    fn a_write_removes_what_killed_writers_of_the_same_file_left() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let names = [
            format!(".m.ckpt.tmp-{dead}"),
            ".m.ckpt.tmp-1".to_string(),
            format!(".other.ckpt.tmp-{dead}"),
            ".m.ckpt.tmp-x".to_string(),
        ];
        for n in &names {
            std::fs::write(d.path().join(n), b"half").unwrap();
        }
        let ckpt = d.path().join("m.ckpt");
        atomic_write(&ckpt, b"whole").unwrap();
        remove_abandoned_temps(&ckpt);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec!["m.ckpt".to_string()];
        want.extend(names[1..].iter().cloned());
        want.sort();
        assert_eq!(left, want);
        assert_eq!(writer_alive(".a.tmp-1-3"), Some(true));
        assert_eq!(writer_alive("a.json"), None);
    }

    /// Written through in uneven pieces (one of them empty), the digest is the whole's: the
    /// reference is `sha256sum`'s of the same bytes.
    #[test]
    fn hashing_gives_the_digest_of_what_it_passed_on() {
        let bytes: Vec<u8> = (0..10_000u32).map(|j| (j * 31 % 256) as u8).collect();
        let mut out = Hashing::new(Vec::new());
        for piece in [&bytes[..1], &bytes[1..1], &bytes[1..4097], &bytes[4097..]] {
            out.write_all(piece).unwrap();
        }
        let (written, digest) = out.finish();
        assert!(written == bytes);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let out = std::process::Command::new("sha256sum")
            .arg(file.path())
            .output()
            .expect("sha256sum runs");
        let want = String::from_utf8_lossy(&out.stdout)[..64].to_string();
        assert_eq!(hex(&digest), want);
        assert_eq!(sha256_hex(&bytes), want);
    }

    /// What `df` says is available on the filesystem of `path`, in bytes.
    fn df_available(path: &Path) -> u64 {
        let out = std::process::Command::new("df")
            .args(["-P", "-B1"])
            .arg(path)
            .output()
            .expect("df runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let row = text.lines().nth(1).expect("df prints a row");
        row.split_whitespace().nth(3).unwrap().parse().unwrap()
    }

    #[test]
    fn room_is_refused_naming_the_folder_and_both_sizes() {
        let (dir, need) = (Path::new("/data/packs"), 1_100_000_000);
        assert!(check_room(dir, "p", need, need + MARGIN).is_ok());
        let err = check_room(dir, "a pack", need, need).unwrap_err();
        assert_eq!(
            err,
            "/data/packs: a pack needs 1.1 GB and 1.1 GB are free there (1 GB kept free); \
             free some space"
        );
        assert!(
            check_room(dir, "p", u64::MAX, u64::MAX - 1).is_err(),
            "no overflow"
        );
    }

    #[test]
    fn free_bytes_agrees_with_df_and_answers_for_paths_not_made_yet() {
        let d = tempfile::tempdir().unwrap();
        let ours = free_bytes(d.path()).unwrap();
        let df = df_available(d.path());
        // Other writers share the disk: the two readings are moments apart.
        assert!(ours.abs_diff(df) < 64 << 20, "ours {ours}, df {df}");
        let later = free_bytes(&d.path().join("not/made/yet")).unwrap();
        assert!(later.abs_diff(df) < 64 << 20, "{later} vs {df}");
    }
}
