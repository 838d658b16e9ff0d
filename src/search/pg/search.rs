//! Searching a store: pgvector's HNSW index gives the nearest codes, their full fc7 vectors
//! re-rank them exactly (the same rule as `knn`: nearest first, ties by the lower id), and rows
//! that have no code yet are searched exactly — the same answer as an index folder's
//! `Searcher`, through the same `Index` interface.

use std::path::{Path, PathBuf};

use super::codes::vector_text;
use super::{from_f16_bytes, PgIndex};
use crate::error::Result;
use crate::search::catalog::{bytes_path, path_bytes, Meta};
use crate::search::index::{default_candidates, Hit, Index};
use crate::search::knn;

/// pgvector's largest `hnsw.ef_search`.
const MAX_EF: usize = 1000;

impl PgIndex {
    /// (id, path, distance) of the rows pgvector's graph finds nearest to `code`, and of every
    /// row without a code.
    fn candidates(&self, q: &[f32], code: Option<String>, take: usize) -> Result<Vec<Hit>> {
        let images = self.t("images");
        let uncoded = format!("SELECT id, path, fc7 FROM {images} WHERE code IS NULL");
        let by_code = format!(
            "SELECT id, path, fc7 FROM {images} WHERE code IS NOT NULL
             ORDER BY code <-> $1::text::vector LIMIT $2"
        );
        let ef = format!("SET LOCAL hnsw.ef_search = {}", take.clamp(40, MAX_EF));
        let rows = self.with(|c| {
            let mut tx = c.transaction()?;
            let mut rows = tx.query(&uncoded, &[])?;
            if let Some(code) = &code {
                tx.batch_execute(&ef)?;
                rows.extend(tx.query(&by_code, &[code, &(take as i64)])?);
            }
            tx.commit()?;
            Ok(rows)
        })?;
        Ok(hits(&rows, q))
    }

    fn take(&self, want: usize) -> Result<usize> {
        let c = match self.candidates {
            Some(c) => c,
            None => default_candidates(self.estimated_rows()?),
        };
        Ok(c.max(want).max(1))
    }

    /// The row count PostgreSQL's statistics give (no scan), or the exact one before the
    /// table was first analysed: enough to choose how many candidates to re-rank.
    fn estimated_rows(&self) -> Result<i64> {
        let images = self.t("images");
        let sql = "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)";
        let est: Option<i64> = self
            .with(|c| c.query_opt(sql, &[&images]))?
            .map(|r| r.get(0));
        match est {
            Some(n) if n >= 0 => Ok(n),
            _ => self.count_rows(),
        }
    }
}

/// Rows of (id, path, fc7) as hits: their exact distances to `q`.
fn hits(rows: &[postgres::Row], q: &[f32]) -> Vec<Hit> {
    rows.iter()
        .map(|r| {
            let v = from_f16_bytes(r.get(2));
            (r.get(0), knn::l2(q, &v), bytes_path(r.get(1)))
        })
        .collect()
}

impl Index for PgIndex {
    fn location(&self) -> String {
        self.target.shown.clone()
    }

    fn nearest(&self, q: &[f32], want: usize) -> Result<Vec<Hit>> {
        let mut hits = if self.exact {
            let sql = format!("SELECT id, path, fc7 FROM {}", self.t("images"));
            hits(&self.with(|c| c.query(&sql, &[]))?, q)
        } else {
            let code = self
                .codes()?
                .filter(|c| c.pca.dim == q.len())
                .map(|c| vector_text(&c.pca.project(q)));
            self.candidates(q, code, self.take(want)?)?
        };
        hits.sort_by(|a, b| knn::nearer(&(a.0, a.1), &(b.0, b.1)));
        hits.dedup_by_key(|h| h.0);
        hits.truncate(want);
        Ok(hits)
    }

    fn stored(&self, path: &Path, size: u64, mtime_ns: i64) -> Result<Option<(i64, Vec<f32>)>> {
        let sql = format!(
            "SELECT id, fc7 FROM {} WHERE path = $1 AND size = $2 AND mtime_ns = $3",
            self.t("images")
        );
        let p = path_bytes(path);
        let row = self.with(|c| c.query_opt(&sql, &[&p, &(size as i64), &mtime_ns]))?;
        Ok(row.map(|r| (r.get(0), from_f16_bytes(r.get(1)))))
    }

    fn row_of(&self, id: i64) -> Result<Option<(PathBuf, Vec<f32>)>> {
        let sql = format!("SELECT path, fc7 FROM {} WHERE id = $1", self.t("images"));
        let row = self.with(|c| c.query_opt(&sql, &[&id]))?;
        Ok(row.map(|r| (bytes_path(r.get(0)), from_f16_bytes(r.get(1)))))
    }

    fn path_of(&self, id: i64) -> Result<Option<PathBuf>> {
        let sql = format!("SELECT path FROM {} WHERE id = $1", self.t("images"));
        let row = self.with(|c| c.query_opt(&sql, &[&id]))?;
        Ok(row.map(|r| bytes_path(r.get(0))))
    }

    fn page(&self, after: i64, limit: usize) -> Result<Vec<(i64, PathBuf)>> {
        let sql = format!(
            "SELECT id, path FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
            self.t("images")
        );
        let rows = self.with(|c| c.query(&sql, &[&after, &(limit as i64)]))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), bytes_path(r.get(1))))
            .collect())
    }

    fn count(&self) -> Result<i64> {
        self.count_rows()
    }

    fn vectors_page(&self, after: i64, limit: usize) -> Result<Vec<(i64, PathBuf, Vec<f32>)>> {
        let sql = format!(
            "SELECT id, path, fc7 FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
            self.t("images")
        );
        let rows = self.with(|c| c.query(&sql, &[&after, &(limit as i64)]))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), bytes_path(r.get(1)), from_f16_bytes(r.get(2))))
            .collect())
    }

    fn meta(&self, key: Meta) -> Result<Option<String>> {
        self.get_meta(key.key())
    }

    fn set_meta(&self, key: Meta, value: &str) -> Result<()> {
        self.put_meta(key.key(), value)
    }

    fn approximate(&self) -> bool {
        !self.exact && matches!(self.codes(), Ok(Some(_)))
    }
}
