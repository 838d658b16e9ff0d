//! The catalog's schema and how an open brings a file to it: the first schema's tables, WAL
//! mode, and each migration applied once even when several processes open a new catalog at
//! the same moment (`fc7 info` or `fc7 query` while `fc7 index` creates it).

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::{Catalog, SCHEMA};
use crate::error::{Error, Result};

/// The first schema; `PRAGMA user_version` records the version a catalog is at.
const MIGRATIONS: [&str; 1] = [r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash BLOB NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    indexed_at INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX images_hash ON images(hash, size);
CREATE TABLE skipped (
    path BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    summary TEXT
);
"#];

/// Puts the catalog in WAL mode. Switching takes the file exclusively, and SQLite answers
/// "database is locked" at once, without waiting, while another process opening the same new
/// catalog holds it: so the switch is tried again for up to the busy timeout.
pub(super) fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let start = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            done => return done,
        }
    }
}

/// How long an open waits for another process's lock on the catalog.
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Catalog {
    /// A write transaction that holds the lock from its start (IMMEDIATE), and the schema
    /// version read under it: no other process can change the schema until this one commits
    /// or drops it, so each step that reads the version here is applied once.
    pub(super) fn locked_version(&mut self) -> Result<(Transaction<'_>, i64)> {
        let path = self.path.clone();
        let db = |source| Error::Catalog {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let version = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        Ok((tx, version))
    }

    /// Brings the schema up to `MIGRATIONS.len()`, each step under `locked_version`, so
    /// processes opening a new catalog at once apply it once.
    pub(super) fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let db = |source| Error::Catalog {
            path: path.clone(),
            source,
        };
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let (tx, version) = self.locked_version()?;
            if version > SCHEMA {
                return Err(Error::Index {
                    path: path.clone(),
                    reason: format!("schema version {version} is newer than this fc7 understands"),
                });
            }
            if version > i as i64 {
                continue;
            }
            tx.execute_batch(sql)
                .and_then(|_| tx.pragma_update(None, "user_version", i + 1))
                .and_then(|_| tx.commit())
                .map_err(db)?;
        }
        Ok(())
    }
}
