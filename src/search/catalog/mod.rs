//! The index's source of truth: one SQLite file (bundled SQLite, WAL) holding every indexed
//! image's path, file facts and the slot of its fc7 vector in the vector file (`vectors`), the
//! files skipped and why, the model the index was built with, and a log of runs. The graph is
//! derived from it and the vectors, and can always be rebuilt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};

mod meta;
mod runs;
mod schema;
mod upgrade;
mod writes;

pub use meta::{vectors_json, Meta};
pub use runs::Run;

pub use writes::{NewImage, Writes};

use schema::{set_wal, BUSY_TIMEOUT};

pub const FILE: &str = "catalog.sqlite";

/// The schema version this fc7 writes: 2 moved the vectors out of the catalog (`upgrade`).
pub const SCHEMA: i64 = 2;

/// An indexed file as the catalog knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Known {
    pub id: i64,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: Vec<u8>,
}

pub struct Catalog {
    conn: Connection,
    pub path: PathBuf,
    /// Vectors this open moved out of a schema-1 catalog (`upgrade`).
    pub upgraded: i64,
}

pub fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

pub fn bytes_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Catalog {
    /// Opens (creating if asked) `dir/catalog.sqlite` and brings its schema up to date.
    pub fn open(dir: &Path, create: bool) -> Result<Catalog> {
        let path = dir.join(FILE);
        if !create && !path.exists() {
            return Err(Error::Index {
                path: dir.to_path_buf(),
                reason: "no index here yet (`fc7 index PHOTOS --index DIR` builds one)".into(),
            });
        }
        if create {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db = |source| Error::Catalog {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        set_wal(&conn).map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        let mut cat = Catalog {
            conn,
            path,
            upgraded: 0,
        };
        cat.migrate()?;
        if cat.schema_version()? < SCHEMA {
            cat.upgraded = upgrade::to_2(&mut cat, dir)?;
        }
        Ok(cat)
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Catalog {
            path: self.path.clone(),
            source,
        }
    }

    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    pub fn meta(&self, key: Meta) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key.key()], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_meta(&self, key: Meta, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
                [key.key(), value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every indexed file, by path bytes.
    pub fn known(&self) -> Result<HashMap<Vec<u8>, Known>> {
        let mut st = self
            .conn
            .prepare("SELECT path, id, size, mtime_ns, hash FROM images")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    Known {
                        id: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        mtime_ns: r.get(3)?,
                        hash: r.get(4)?,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Skipped files with the size and mtime they had when they failed.
    pub fn skipped(&self) -> Result<HashMap<Vec<u8>, (u64, i64, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT path, size, mtime_ns, reason FROM skipped")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    (r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?),
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    pub fn count(&self, table: &str) -> Result<i64> {
        let sql = match table {
            "images" => "SELECT COUNT(*) FROM images",
            "skipped" => "SELECT COUNT(*) FROM skipped",
            _ => "SELECT COUNT(*) FROM runs",
        };
        self.conn
            .query_row(sql, [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Rows with an id above `after`: those newer than the graph.
    pub fn count_after(&self, after: i64) -> Result<i64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM images WHERE id > ?1", [after], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))
    }

    pub fn max_id(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM images", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// (id, vector slot) of every image with `id > after`, in id order.
    pub fn slots_after(&self, after: i64) -> Result<Vec<(i64, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, slot FROM images WHERE id > ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// The path of image `id`, if it is still indexed.
    pub fn path_of(&self, id: i64) -> Result<Option<PathBuf>> {
        self.conn
            .query_row("SELECT path FROM images WHERE id = ?1", [id], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()
            .map(|p| p.map(|b| bytes_path(&b)))
            .map_err(|e| self.err(e))
    }

    /// Path and vector slot of image `id`, if it is still indexed.
    pub fn slot_of_id(&self, id: i64) -> Result<Option<(PathBuf, i64)>> {
        self.conn
            .query_row("SELECT path, slot FROM images WHERE id = ?1", [id], |r| {
                Ok((bytes_path(&r.get::<_, Vec<u8>>(0)?), r.get(1)?))
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` images with ids above `after`, in id order: (id, path).
    pub fn page(&self, after: i64, limit: usize) -> Result<Vec<(i64, PathBuf)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, path FROM images WHERE id > ?1 ORDER BY id LIMIT ?2")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![after, limit as i64], |r| {
                Ok((r.get(0)?, bytes_path(&r.get::<_, Vec<u8>>(1)?)))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// (id, vector slot) of `path` if it is indexed with this size and mtime.
    pub fn slot_of(&self, path: &Path, size: u64, mtime_ns: i64) -> Result<Option<(i64, i64)>> {
        self.conn
            .query_row(
                "SELECT id, slot FROM images WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3",
                params![path_bytes(path), size as i64, mtime_ns],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Forgets every image, skip and the graph (before re-embedding with another model), and
    /// starts vector file `generation` with no rows.
    pub fn clear_images(&mut self, generation: i64) -> Result<()> {
        let vectors = meta::vectors_json(generation, 0);
        self.transaction(|w| {
            w.tx.execute_batch(
                "DELETE FROM images; DELETE FROM skipped; DELETE FROM meta WHERE key = 'graph';",
            )?;
            w.set_meta(Meta::Vectors, &vectors)
        })
    }

    pub fn clear_meta(&self, key: Meta) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE key = ?1", [key.key()])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Skip reasons and how many files have each.
    pub fn skip_reasons(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT reason, COUNT(*) FROM skipped GROUP BY reason ORDER BY 2 DESC")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Skipped files and their reasons, by path.
    pub fn skipped_list(&self) -> Result<Vec<(PathBuf, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT path, reason FROM skipped ORDER BY path")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((bytes_path(&r.get::<_, Vec<u8>>(0)?), r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes that open a new index at once (`fc7 info` or `fc7 query` while `fc7 index`
    /// creates it) each bring the schema up to date: the first creates it, the rest find it.
    #[test]
    fn openers_racing_on_a_new_catalog_all_succeed() {
        for _ in 0..20 {
            let d = tempfile::tempdir().unwrap();
            let errors: Vec<String> = std::thread::scope(|s| {
                let openers: Vec<_> = (0..6)
                    .map(|_| s.spawn(|| Catalog::open(d.path(), true).err()))
                    .collect();
                openers
                    .into_iter()
                    .filter_map(|o| o.join().unwrap().map(|e| e.to_string()))
                    .collect()
            });
            assert!(errors.is_empty(), "{errors:?}");
            let c = Catalog::open(d.path(), false).unwrap();
            assert_eq!(c.schema_version().unwrap(), SCHEMA);
        }
    }

    #[test]
    fn rows_round_trip_and_ids_are_never_reused() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(d.path(), true).unwrap();
        let img = |p: &'static str| NewImage {
            path: Path::new(p),
            size: 10,
            mtime_ns: 7,
            hash: b"h",
            width: 3,
            height: 4,
            slot: 7,
        };
        let a = c.transaction(|b| b.insert(&img("/x/a.jpg"))).unwrap();
        c.transaction(|b| b.remove(a)).unwrap();
        let b = c.transaction(|b| b.insert(&img("/x/b.jpg"))).unwrap();
        assert!(b > a, "AUTOINCREMENT must not reuse {a}");
        assert_eq!(
            c.slot_of(Path::new("/x/b.jpg"), 10, 7).unwrap(),
            Some((b, 7))
        );
        assert!(c.slot_of(Path::new("/x/b.jpg"), 11, 7).unwrap().is_none());
        drop(c);
        let c = Catalog::open(d.path(), false).unwrap();
        assert_eq!(c.count("images").unwrap(), 1);
    }
}
