//! A batch of rows into a store: images with their vectors and codes, and skipped files, in one
//! transaction. `fc7 index` writes through it, and so does the benchmark that measures the
//! store's own cost with vectors made beforehand.

use std::path::Path;

use postgres::types::ToSql;

use super::{to_f16_bytes, PgIndex};
use crate::error::Result;
use crate::search::catalog::path_bytes;

/// An image to store, with what the next run compares to see whether it changed.
pub struct NewRow<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: &'a [u8],
    pub width: u32,
    pub height: u32,
}

/// A file that could not be indexed, and why.
pub struct Skip<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub mtime_ns: i64,
    pub reason: String,
}

impl PgIndex {
    /// Writes `rows` with their vectors `fc7` ([rows, dim]) and `skips`, all or nothing. A row
    /// whose path the store had replaces it under a new id (as an index folder does), and a
    /// skipped file loses any row it had. Codes are computed with the current basis and kept
    /// only if no refit replaced it meanwhile. Returns, per row, whether its path was new.
    pub fn write_batch(&self, rows: &[NewRow], fc7: &[f32], skips: &[Skip]) -> Result<Vec<bool>> {
        let dim = fc7.len() / rows.len().max(1);
        let codes = self.codes()?;
        let texts = codes.as_ref().map(|c| c.texts(fc7));
        let generation = codes.as_ref().map(|c| c.generation.to_string());
        let (images, skipped, meta) = (self.t("images"), self.t("skipped"), self.t("meta"));
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
        let new = self.with(|c| {
            let mut tx = c.transaction()?;
            let (ins, uns) = (tx.prepare(&insert)?, tx.prepare(&unskip)?);
            let old = tx.prepare(&drop_image)?;
            let mut new = Vec::with_capacity(rows.len());
            for (i, r) in rows.iter().enumerate() {
                let p = path_bytes(r.path);
                let v = to_f16_bytes(&fc7[i * dim..(i + 1) * dim]);
                let code = texts.as_ref().map(|t| t[i].as_str());
                let params: [&(dyn ToSql + Sync); 9] = [
                    &p,
                    &(r.size as i64),
                    &r.mtime_ns,
                    &r.hash,
                    &(r.width as i32),
                    &(r.height as i32),
                    &v,
                    &code,
                    &generation,
                ];
                new.push(tx.execute(&old, &[&p])? == 0);
                tx.execute(&ins, &params)?;
                tx.execute(&uns, &[&p])?;
            }
            for s in skips {
                let p = path_bytes(s.path);
                tx.execute(&old, &[&p])?;
                let params: [&(dyn ToSql + Sync); 4] =
                    [&p, &(s.size as i64), &s.mtime_ns, &s.reason];
                tx.execute(&skip, &params)?;
            }
            crate::util::fault::point("pg-batch-written");
            tx.commit()?;
            Ok(new)
        })?;
        crate::util::fault::stall("pg-batch-committed");
        Ok(new)
    }
}
