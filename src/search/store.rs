//! An index folder (`indexes/NAME/`): the catalog, the vector file, the graph file, and a lock
//! file that lets one `fc7 index` run write at a time while queries keep reading. Writes of
//! vectors go through `write_batch`, which makes them durable before the catalog transaction
//! that counts them commits.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::search::catalog::{vectors_json, Catalog, Meta, Writes};
use crate::search::graph::{self, Refresh};
use crate::search::vectors::{self, Appender, Vectors};

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

    /// Opens an existing index for reading; works while an update is running. An index of
    /// the previous layout is upgraded on the way, and its graph rebuilt when nobody is
    /// writing.
    pub fn open_read(dir: &Path) -> Result<Store> {
        let mut store = Store {
            dir: dir.to_path_buf(),
            catalog: Catalog::open(dir, false)?,
            lock: None,
        };
        if store.catalog.upgraded > 0 && store.try_write()? {
            store.refresh_graph(None)?;
            store.lock = None;
        }
        Ok(store)
    }

    /// Takes the write lock if nobody holds it (a reader that wants to repair the graph).
    pub fn try_write(&mut self) -> Result<bool> {
        if self.lock.is_none() {
            self.lock = try_lock(&self.dir)?;
        }
        Ok(self.lock.is_some())
    }

    /// The committed vectors as of now.
    pub fn vectors(&self) -> Result<Vectors> {
        let open = || -> Result<Vectors> {
            let (generation, rows) = self.catalog.vector_file()?;
            Vectors::open(&self.dir, generation, self.dim()?, rows as usize)
        };
        // A compaction may have switched files between reading the catalog and opening.
        open().or_else(|_| open())
    }

    fn dim(&self) -> Result<usize> {
        Ok(self
            .catalog
            .meta(Meta::Dim)?
            .and_then(|d| d.parse().ok())
            .unwrap_or(0))
    }

    /// Appends `vectors` ([n, dim]) durably, then runs `f` with the slot of the first in one
    /// transaction that also counts them: a kill before the commit leaves neither.
    pub fn write_batch<T>(
        &mut self,
        vectors: &[f32],
        f: impl FnOnce(&Writes, i64) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let (generation, rows) = self.catalog.vector_file()?;
        let dim = self.dim()?;
        let n = vectors.len().checked_div(dim).unwrap_or(0);
        let first = if n == 0 {
            rows
        } else {
            Appender::open(&self.dir, generation, dim, rows)?.append(vectors)?
        };
        crate::util::fault::point("vectors-appended");
        let count = vectors_json(generation, rows + n as i64);
        let out = self.catalog.transaction(|w| {
            let out = f(w, first)?;
            w.set_meta(Meta::Vectors, &count)?;
            Ok(out)
        })?;
        crate::util::fault::stall("batch-committed");
        Ok(out)
    }

    /// Forgets every image (before re-embedding with another model) and starts a new, empty
    /// vector file; the old one is removed once the catalog no longer names it.
    pub fn clear_images(&mut self) -> Result<()> {
        let (old, _) = self.catalog.vector_file()?;
        self.catalog.clear_images(old + 1)?;
        let path = self.dir.join(vectors::file_name(old));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// Rewrites the vector file without the rows of deleted images once they are over a
    /// quarter of it: the live rows, in id order, into the next generation, switched to by one
    /// transaction that renumbers the slots and drops the graph (built on the old slots); the
    /// old file goes after. Returns whether it did.
    fn compact_vectors(&mut self) -> Result<bool> {
        let (generation, rows) = self.catalog.vector_file()?;
        let live = self.catalog.slots_after(0)?;
        if (rows - live.len() as i64) * 4 <= rows {
            return Ok(false);
        }
        let view = self.vectors()?;
        let mut out = Appender::open(&self.dir, generation + 1, view.dim(), 0)?;
        for chunk in live.chunks(4096) {
            let data: Vec<f32> = chunk
                .iter()
                .flat_map(|(_, slot)| view.row(*slot).unwrap_or_default())
                .collect();
            let first = out.append(&data)?;
            out.commit(first + chunk.len() as i64);
        }
        crate::util::fault::point("vectors-compacted");
        let count = vectors_json(generation + 1, live.len() as i64);
        self.catalog.transaction(|w| {
            for (slot, (id, _)) in live.iter().enumerate() {
                w.set_slot(*id, slot as i64)?;
            }
            w.set_meta(Meta::Vectors, &count)?;
            w.clear_meta(Meta::Graph)
        })?;
        let old = self.dir.join(vectors::file_name(generation));
        std::fs::remove_file(&old).map_err(|e| Error::io(&old, e))?;
        Ok(true)
    }

    /// Brings the vectors and the graph up to date (with the write lock held): compacts the
    /// vector file when deleted rows crowd it, then refreshes the graph; `code_dim` is
    /// remembered for later rebuilds.
    pub fn refresh_graph(&mut self, code_dim: Option<usize>) -> Result<Refresh> {
        self.compact_vectors()?;
        if let Some(c) = code_dim {
            self.catalog.set_meta(Meta::CodeDim, &c.to_string())?;
        }
        let code_dim = self
            .catalog
            .meta(Meta::CodeDim)?
            .and_then(|c| c.parse().ok())
            .unwrap_or(graph::CODE_DIM);
        graph::refresh(&self.dir, &self.catalog, &self.vectors()?, code_dim)
    }

    /// Size of the current vector file.
    pub fn vector_bytes(&self) -> u64 {
        let (generation, _) = self.catalog.vector_file().unwrap_or((1, 0));
        std::fs::metadata(self.dir.join(vectors::file_name(generation))).map_or(0, |m| m.len())
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
