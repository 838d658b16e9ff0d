//! An index folder (`indexes/NAME/`): the catalog, the graph files, and a lock file that lets
//! one `fc7 index` run write at a time while queries keep reading.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::search::catalog::Catalog;

const LOCK: &str = "lock";

pub struct Store {
    pub dir: PathBuf,
    pub catalog: Catalog,
    lock: Option<File>,
}

fn try_lock(dir: &Path) -> Result<Option<File>> {
    let path = dir.join(LOCK);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match f.try_lock() {
        Ok(()) => {
            let _ = f.set_len(0);
            let _ = write!(f, "{}", std::process::id());
            Ok(Some(f))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

impl Store {
    /// Opens (creating) an index for writing; fails at once if another process is writing it.
    pub fn open_for_update(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock = try_lock(dir)?.ok_or_else(|| {
            let pid = std::fs::read_to_string(dir.join(LOCK)).unwrap_or_default();
            Error::Index {
                path: dir.to_path_buf(),
                reason: format!(
                    "another fc7 process (pid {}) is updating it; wait for it to finish",
                    pid.trim()
                ),
            }
        })?;
        Ok(Store {
            dir: dir.to_path_buf(),
            catalog: Catalog::open(dir, true)?,
            lock: Some(lock),
        })
    }

    /// Opens an existing index for reading; works while an update is running.
    pub fn open_read(dir: &Path) -> Result<Store> {
        Ok(Store {
            dir: dir.to_path_buf(),
            catalog: Catalog::open(dir, false)?,
            lock: None,
        })
    }

    /// Takes the write lock if nobody holds it (a reader that wants to repair the graph).
    pub fn try_write(&mut self) -> Result<bool> {
        if self.lock.is_none() {
            self.lock = try_lock(&self.dir)?;
        }
        Ok(self.lock.is_some())
    }

    /// Bytes on disk of everything in the folder.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}
