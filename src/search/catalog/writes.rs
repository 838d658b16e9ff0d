//! The catalog's writes: one transaction per batch of files, so that a crash or kill -9 leaves
//! either all of a batch's rows (new rows with their vector slots, the vector file's row count,
//! moves, removals, skips) or none of them.

use std::path::Path;

use rusqlite::params;

use super::{now_secs, path_bytes, Catalog, Meta};
use crate::error::{Error, Result};

/// A new row: a file and the slot of its vector in the vector file.
pub struct NewImage<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub slot: i64,
}

impl Catalog {
    /// Runs `f` in one transaction: all of it lands, or none (also across a crash).
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Writes) -> rusqlite::Result<T>) -> Result<T> {
        let path = self.path.clone();
        let err = |source| Error::Catalog {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let out = f(&Writes { tx: &tx }).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }
}

/// The writes one transaction may make.
pub struct Writes<'a> {
    pub(super) tx: &'a rusqlite::Transaction<'a>,
}

impl Writes<'_> {
    pub fn insert(&self, img: &NewImage) -> rusqlite::Result<i64> {
        let p = path_bytes(img.path);
        self.tx
            .execute("DELETE FROM skipped WHERE path = ?1", [&p])?;
        self.tx.execute(
            "INSERT INTO images(path, size, mtime_ns, hash, width, height, indexed_at, slot)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                p,
                img.size as i64,
                img.mtime_ns,
                img.hash,
                img.width,
                img.height,
                now_secs(),
                img.slot
            ],
        )?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Points an existing row at a new path (a moved or renamed file keeps its vector and id).
    pub fn move_to(&self, id: i64, path: &Path, mtime_ns: i64) -> rusqlite::Result<()> {
        let p = path_bytes(path);
        self.tx
            .execute("DELETE FROM skipped WHERE path = ?1", [&p])?;
        self.tx
            .execute(
                "UPDATE images SET path = ?1, mtime_ns = ?2 WHERE id = ?3",
                params![p, mtime_ns, id],
            )
            .map(|_| ())
    }

    pub fn set_meta(&self, key: Meta, value: &str) -> rusqlite::Result<()> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
                [key.key(), value],
            )
            .map(|_| ())
    }

    pub fn clear_meta(&self, key: Meta) -> rusqlite::Result<()> {
        self.tx
            .execute("DELETE FROM meta WHERE key = ?1", [key.key()])
            .map(|_| ())
    }

    /// Gives row `id` vector slot `slot` (when the vector file is rewritten).
    pub fn set_slot(&self, id: i64, slot: i64) -> rusqlite::Result<()> {
        self.tx
            .execute("UPDATE images SET slot = ?1 WHERE id = ?2", [slot, id])
            .map(|_| ())
    }

    pub fn remove(&self, id: i64) -> rusqlite::Result<()> {
        self.tx
            .execute("DELETE FROM images WHERE id = ?1", [id])
            .map(|_| ())
    }

    pub fn skip(
        &self,
        path: &Path,
        size: u64,
        mtime_ns: i64,
        reason: &str,
    ) -> rusqlite::Result<()> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO skipped(path, size, mtime_ns, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![path_bytes(path), size as i64, mtime_ns, reason, now_secs()],
            )
            .map(|_| ())
    }

    pub fn forget_skipped(&self, path: &[u8]) -> rusqlite::Result<()> {
        self.tx
            .execute("DELETE FROM skipped WHERE path = ?1", [path])
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(d.path(), true).unwrap();
        let r = c.transaction(|b| {
            b.skip(Path::new("/a"), 1, 1, "bad")?;
            Err::<(), _>(rusqlite::Error::InvalidQuery)
        });
        assert!(r.is_err());
        assert_eq!(c.count("skipped").unwrap(), 0);
    }
}
