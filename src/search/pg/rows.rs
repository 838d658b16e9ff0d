//! A batch of rows into a store: images with their vectors and codes, and skipped files, in one
//! transaction. `fc7 index` writes through it, and so does the benchmark that measures the
//! store's own cost with vectors made beforehand.

use std::path::Path;

use postgres::types::ToSql;

use super::PgIndex;
use crate::error::Result;
use crate::search::catalog::path_bytes;
use crate::search::vectors::encode;

/// An image to store, with what the next run compares to see whether it changed.
pub struct NewRow<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: &'a [u8],
    pub width: u32,
    pub height: u32,
}

/// A batch's columns, as the arrays its statements take.
struct Columns {
    size: Vec<i64>,
    mtime: Vec<i64>,
    hash: Vec<Vec<u8>>,
    width: Vec<i32>,
    height: Vec<i32>,
    fc7: Vec<Vec<u8>>,
}

struct BatchSql {
    drop_images: String,
    insert: String,
    unskip: String,
    skip: String,
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
        let texts: Vec<Option<String>> = match &codes {
            Some(c) => c.texts(fc7).into_iter().map(Some).collect(),
            None => vec![None; rows.len()],
        };
        let generation = codes.as_ref().map(|c| c.generation.to_string());
        let paths: Vec<Vec<u8>> = rows.iter().map(|r| path_bytes(r.path)).collect();
        let cols = Columns {
            size: rows.iter().map(|r| r.size as i64).collect(),
            mtime: rows.iter().map(|r| r.mtime_ns).collect(),
            hash: rows.iter().map(|r| r.hash.to_vec()).collect(),
            width: rows.iter().map(|r| r.width as i32).collect(),
            height: rows.iter().map(|r| r.height as i32).collect(),
            fc7: (0..rows.len())
                .map(|i| encode(&fc7[i * dim..(i + 1) * dim]))
                .collect(),
        };
        let skip_paths: Vec<Vec<u8>> = skips.iter().map(|s| path_bytes(s.path)).collect();
        let skip_size: Vec<i64> = skips.iter().map(|s| s.size as i64).collect();
        let skip_mtime: Vec<i64> = skips.iter().map(|s| s.mtime_ns).collect();
        let reasons: Vec<&str> = skips.iter().map(|s| s.reason.as_str()).collect();
        let sql = self.batch_sql();
        let replaced = self.with(|c| {
            let mut tx = c.transaction()?;
            let replaced: std::collections::HashSet<Vec<u8>> = tx
                .query(&sql.drop_images, &[&paths])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let params: [&(dyn ToSql + Sync); 9] = [
                &paths,
                &cols.size,
                &cols.mtime,
                &cols.hash,
                &cols.width,
                &cols.height,
                &cols.fc7,
                &texts,
                &generation,
            ];
            tx.execute(&sql.insert, &params)?;
            tx.execute(&sql.unskip, &[&paths])?;
            tx.query(&sql.drop_images, &[&skip_paths])?;
            let params: [&(dyn ToSql + Sync); 4] = [&skip_paths, &skip_size, &skip_mtime, &reasons];
            tx.execute(&sql.skip, &params)?;
            crate::util::fault::point("pg-batch-written");
            tx.commit()?;
            Ok(replaced)
        })?;
        crate::util::fault::stall("pg-batch-committed");
        Ok(paths.iter().map(|p| !replaced.contains(p)).collect())
    }

    /// The statements of a batch: each takes whole columns as arrays, so a batch is five
    /// round trips whatever its size.
    fn batch_sql(&self) -> BatchSql {
        let (images, skipped, meta) = (self.t("images"), self.t("skipped"), self.t("meta"));
        BatchSql {
            drop_images: format!("DELETE FROM {images} WHERE path = ANY($1) RETURNING path"),
            insert: format!(
                "INSERT INTO {images} (path, size, mtime_ns, hash, width, height, fc7, code)
                 SELECT u.path, u.size, u.mtime_ns, u.hash, u.width, u.height, u.fc7,
                     CASE WHEN $9::text = (SELECT value FROM {meta} WHERE key = 'pca_generation')
                     THEN u.code::vector END
                 FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::bytea[], $5::int4[],
                     $6::int4[], $7::bytea[], $8::text[])
                     AS u(path, size, mtime_ns, hash, width, height, fc7, code)"
            ),
            unskip: format!("DELETE FROM {skipped} WHERE path = ANY($1)"),
            skip: format!(
                "INSERT INTO {skipped} (path, size, mtime_ns, reason)
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::text[])
                 ON CONFLICT (path) DO UPDATE SET size = EXCLUDED.size,
                     mtime_ns = EXCLUDED.mtime_ns, reason = EXCLUDED.reason, at = now()"
            ),
        }
    }
}
