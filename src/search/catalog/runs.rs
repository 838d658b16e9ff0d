//! The log of `fc7 index` runs in the catalog: when each started and ended and its summary, so
//! `fc7 info` can tell an interrupted run from a finished one.

use rusqlite::{params, OptionalExtension};

use super::{now_secs, Catalog};
use crate::error::Result;

/// One `fc7 index` run: start and end (seconds since the epoch) and its summary as JSON; a run
/// without an end was interrupted.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub started: i64,
    pub finished: Option<i64>,
    pub summary: Option<String>,
}

impl Catalog {
    pub fn begin_run(&self) -> Result<i64> {
        self.conn
            .execute("INSERT INTO runs(started_at) VALUES (?1)", [now_secs()])
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run: i64, summary: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?1, summary = ?2 WHERE id = ?3",
                params![now_secs(), summary, run],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The latest run.
    pub fn last_run(&self) -> Result<Option<Run>> {
        self.conn
            .query_row(
                "SELECT started_at, finished_at, summary FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(Run {
                        started: r.get(0)?,
                        finished: r.get(1)?,
                        summary: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}
