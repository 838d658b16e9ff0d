//! A file's SHA-256 remembered by its identity (inode, size, modification and change times), so
//! that opening a 240 MB model does not hash it again each time: 0.3 s of a cold query on 2
//! cores. The change time cannot be set back by user programs and moves on every write or
//! rename, so a file replaced in place is hashed again. Stamps live in fc7's cache folder; a
//! missing, unreadable or stale stamp only costs the hash.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::util::fs::{atomic_write, cache_dir, sha256_hex};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Stamp {
    inode: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    sha256: String,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64, i128, i128) {
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
    (
        meta.ino(),
        meta.size(),
        ns(meta.mtime(), meta.mtime_nsec()),
        ns(meta.ctime(), meta.ctime_nsec()),
    )
}

/// Where the stamp of `path` lives under `root`.
fn stamp_path(root: &Path, path: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let key = sha256_hex(canonical.as_os_str().as_encoded_bytes());
    root.join(format!("{}.json", &key[..32]))
}

/// SHA-256 of the file at `path` with its bytes, hashing them only when its stamp under `root`
/// does not match. Returns the hash and whether it came from the stamp.
pub fn sha256_of_file_in(root: &Path, path: &Path) -> Result<(String, bool)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let (inode, size, mtime_ns, ctime_ns) = identity(&meta);
    let sp = stamp_path(root, path);
    let known = std::fs::read(&sp)
        .ok()
        .and_then(|b| serde_json::from_slice::<Stamp>(&b).ok())
        .filter(|s| (s.inode, s.size, s.mtime_ns, s.ctime_ns) == (inode, size, mtime_ns, ctime_ns));
    if let Some(s) = known {
        return Ok((s.sha256, true));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha256 = sha256_hex(&bytes);
    let stamp = Stamp {
        inode,
        size,
        mtime_ns,
        ctime_ns,
        sha256: sha256.clone(),
    };
    // A stamp that cannot be written (read-only cache) only means hashing next time.
    let _ = atomic_write(&sp, &serde_json::to_vec(&stamp).expect("stamp serialises"));
    Ok((sha256, false))
}

/// [`sha256_of_file_in`] with the stamps in fc7's cache folder.
pub fn sha256_of_file(path: &Path) -> Result<String> {
    Ok(sha256_of_file_in(&cache_dir().join("stamps"), path)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rewritten_with_the_same_size_and_mtime_is_hashed_again() {
        let d = tempfile::tempdir().unwrap();
        let (root, f) = (d.path().join("stamps"), d.path().join("m.onnx"));
        std::fs::write(&f, b"first").unwrap();
        let (a, stamped) = sha256_of_file_in(&root, &f).unwrap();
        assert!(!stamped);
        assert_eq!(sha256_of_file_in(&root, &f).unwrap(), (a.clone(), true));
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::write(&f, b"other").unwrap();
        let file = std::fs::File::options().write(true).open(&f).unwrap();
        file.set_modified(mtime).unwrap();
        let (b, stamped) = sha256_of_file_in(&root, &f).unwrap();
        assert!(!stamped);
        assert_eq!(b, sha256_hex(b"other"));
        assert_ne!(a, b);
    }
}
