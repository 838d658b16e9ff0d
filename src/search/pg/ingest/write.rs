//! One worker's claims and writes: files claimed with advisory locks before decoding, a
//! batch's images and skips written in one transaction (codes with the store's current basis),
//! and the claims released after the commit.

use std::collections::{HashSet, VecDeque};

use postgres::types::ToSql;

use super::{claim_key, PgIndex};
use crate::error::Result;
use crate::infer::embed::Embedder;
use crate::search::catalog::path_bytes;
use crate::search::ingest::{reason_class, Decoded, Progress, Summary, Work};

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
        let ok: Vec<(&Work, &Decoded)> = chunk
            .iter()
            .zip(&decoded)
            .filter_map(|(w, d)| Some((w, d.as_ref().ok()?)))
            .collect();
        let input: Vec<f32> = ok
            .iter()
            .flat_map(|(_, d)| d.tensor.iter().copied())
            .collect();
        let fc7 = if ok.is_empty() {
            Vec::new()
        } else {
            self.embedder.run(&input, ok.len(), false)?.fc7 // [n, 4096]
        };
        let dim = fc7.len() / ok.len().max(1);
        let codes = self.pg.codes()?;
        let texts = codes.as_ref().map(|c| c.texts(&fc7));
        let generation = codes.as_ref().map(|c| c.generation.to_string());
        let failed: Vec<(&Work, String)> = chunk
            .iter()
            .zip(&decoded)
            .filter_map(|(w, d)| Some((w, d.as_ref().err()?.reason())))
            .collect();
        let (images, skipped, meta) =
            (self.pg.t("images"), self.pg.t("skipped"), self.pg.t("meta"));
        let insert = format!(
            "INSERT INTO {images} (path, size, mtime_ns, hash, width, height, fc7, code)
             VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $9::text =
                 (SELECT value FROM {meta} WHERE key = 'pca_generation') THEN $8::text::vector END)"
        );
        let unskip = format!("DELETE FROM {skipped} WHERE path = $1");
        let drop_image = format!("DELETE FROM {images} WHERE path = $1");
        let skip = format!(
            "INSERT INTO {skipped} (path, size, mtime_ns, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (path) DO UPDATE SET size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns,
             reason = EXCLUDED.reason, at = now()"
        );
        let inserted = self.pg.with(|c| {
            let mut tx = c.transaction()?;
            let (ins, uns) = (tx.prepare(&insert)?, tx.prepare(&unskip)?);
            let old = tx.prepare(&drop_image)?;
            let mut inserted = Vec::with_capacity(ok.len());
            for (i, (w, d)) in ok.iter().enumerate() {
                let p = path_bytes(&w.found.path);
                let v = super::super::to_f16_bytes(&fc7[i * dim..(i + 1) * dim]);
                let code = texts.as_ref().map(|t| t[i].as_str());
                let params: [&(dyn ToSql + Sync); 9] = [
                    &p,
                    &(w.found.size as i64),
                    &w.found.mtime_ns,
                    &d.hash,
                    &(d.width as i32),
                    &(d.height as i32),
                    &v,
                    &code,
                    &generation,
                ];
                // A changed file gets a new id, as in an index folder (thumbnails are cached by id).
                inserted.push(tx.execute(&old, &[&p])? == 0);
                tx.execute(&ins, &params)?;
                tx.execute(&uns, &[&p])?;
            }
            for (w, reason) in &failed {
                let p = path_bytes(&w.found.path);
                tx.execute(&drop_image, &[&p])?;
                tx.execute(
                    &skip,
                    &[&p, &(w.found.size as i64), &w.found.mtime_ns, reason],
                )?;
            }
            crate::util::fault::point("pg-batch-written");
            tx.commit()?;
            Ok(inserted)
        })?;
        self.count(&inserted, chunk, &decoded);
        Ok(ok.len())
    }

    fn count(&mut self, inserted: &[bool], chunk: &[Work], decoded: &[Result<Decoded>]) {
        self.sum.added += inserted.iter().filter(|&&i| i).count();
        self.sum.updated += inserted.iter().filter(|&&i| !i).count();
        for (_, d) in chunk.iter().zip(decoded) {
            if let Err(e) = d {
                self.progress.note(&format!("skipped {e}"));
                self.sum.skipped += 1;
                *self
                    .sum
                    .skip_reasons
                    .entry(reason_class(&e.reason()))
                    .or_default() += 1;
            }
        }
    }
}
