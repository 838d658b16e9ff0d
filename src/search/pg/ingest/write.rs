//! One worker's claims and writes: files claimed with advisory locks before decoding, a
//! batch's images and skips written in one transaction (codes with the store's current basis),
//! and the claims released after the commit.

use std::collections::{HashSet, VecDeque};

use super::{claim_key, PgIndex};
use crate::error::Result;
use crate::infer::embed::Embedder;
use crate::search::catalog::path_bytes;
use crate::search::ingest::{embed_decoded, Decoded, Progress, Summary, Work};
use crate::search::pg::rows::{NewRow, Skip};

pub struct Writer<'a> {
    pg: &'a PgIndex,
    embedder: &'a mut Embedder,
    sum: &'a mut Summary,
    progress: &'a dyn Progress,
}

impl<'a> Writer<'a> {
    pub fn new(
        pg: &'a PgIndex,
        embedder: &'a mut Embedder,
        sum: &'a mut Summary,
        progress: &'a dyn Progress,
    ) -> Writer<'a> {
        Writer {
            pg,
            embedder,
            sum,
            progress,
        }
    }

    pub fn manifest(&self) -> crate::model::Manifest {
        self.embedder.manifest.clone()
    }

    fn keys(&self, work: &[Work]) -> Vec<i64> {
        work.iter()
            .map(|w| claim_key(&self.pg.target.table, &w.found.path))
            .collect()
    }

    /// Up to `batch` files from `queue` that this worker now holds and the store still lacks;
    /// files claimed by another worker go to `deferred`, files finished by one meanwhile are
    /// dropped.
    pub fn claim(
        &mut self,
        queue: &mut VecDeque<Work>,
        batch: usize,
        deferred: &mut Vec<Work>,
    ) -> Result<Vec<Work>> {
        let mut got = Vec::new();
        while got.len() < batch && !queue.is_empty() {
            let n = (batch - got.len()).min(queue.len());
            let take: Vec<Work> = queue.drain(..n).collect();
            let keys = self.keys(&take);
            let lock = "SELECT k FROM unnest($1::int8[]) AS k WHERE pg_try_advisory_lock(k)";
            let locked: HashSet<i64> = self
                .pg
                .with(|c| c.query(lock, &[&keys]))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mine: Vec<&Work> = take
                .iter()
                .zip(&keys)
                .filter(|(_, k)| locked.contains(k))
                .map(|(w, _)| w)
                .collect();
            let known = self
                .pg
                .known(mine.iter().map(|w| path_bytes(&w.found.path)).collect())?;
            let mut done = Vec::new();
            for (w, k) in take.into_iter().zip(keys) {
                let now = known.get(&path_bytes(&w.found.path));
                if !locked.contains(&k) {
                    deferred.push(w);
                } else if now
                    .is_some_and(|(s, m, _)| *s == w.found.size as i64 && *m == w.found.mtime_ns)
                {
                    done.push(k);
                } else {
                    got.push(w);
                }
            }
            self.unlock(&done)?;
        }
        Ok(got)
    }

    fn unlock(&self, keys: &[i64]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let sql = "SELECT pg_advisory_unlock(k) FROM unnest($1::int8[]) AS k";
        self.pg.with(|c| c.query(sql, &[&keys])).map(|_| ())
    }

    /// Releases the claims on `work` (after its batch committed, or failed).
    pub fn release(&self, work: &[Work]) -> Result<()> {
        self.unlock(&self.keys(work))
    }

    /// Embeds the decodable files of one batch and writes all of it in one transaction.
    pub fn write(&mut self, chunk: &[Work], decoded: Vec<Result<Decoded>>) -> Result<usize> {
        let (ok, fc7) = embed_decoded(self.embedder, chunk, &decoded)?;
        let rows: Vec<NewRow> = ok
            .iter()
            .map(|(w, d)| NewRow {
                path: &w.found.path,
                size: w.found.size,
                mtime_ns: w.found.mtime_ns,
                hash: &d.hash,
                width: d.width,
                height: d.height,
            })
            .collect();
        let skips: Vec<Skip> = chunk
            .iter()
            .zip(&decoded)
            .filter_map(|(w, d)| {
                Some(Skip {
                    path: &w.found.path,
                    size: w.found.size,
                    mtime_ns: w.found.mtime_ns,
                    reason: d.as_ref().err()?.reason(),
                })
            })
            .collect();
        let inserted = self.pg.write_batch(&rows, &fc7, &skips)?;
        self.count(&inserted, chunk, &decoded);
        Ok(ok.len())
    }

    fn count(&mut self, inserted: &[bool], chunk: &[Work], decoded: &[Result<Decoded>]) {
        self.sum.added += inserted.iter().filter(|&&i| i).count();
        self.sum.updated += inserted.iter().filter(|&&i| !i).count();
        for (_, d) in chunk.iter().zip(decoded) {
            if let Err(e) = d {
                self.progress.note(&format!("skipped {e}"));
                self.sum.skip(&e.reason(), 1);
            }
        }
    }
}
