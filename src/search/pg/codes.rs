//! The PCA codes pgvector's HNSW index is built on: a basis fitted once from a sample of the
//! store's vectors and kept in `T_pca` (every writer and searcher reads the same one), codes
//! for new rows computed with it as they are written, and rows written before the basis existed
//! filled in by whichever worker gets to them first (`FOR UPDATE SKIP LOCKED`, so concurrent
//! workers share the work and a killed one leaves its rows to the next). Refitting is explicit
//! (`fc7 index --refit-codes`): a new basis and every code cleared in one transaction, then the
//! same fill, which a rerun resumes.

use postgres::types::ToSql;

use super::{from_f16_bytes, PgIndex};
use crate::error::Result;
use crate::search::pca::{Pca, FIT_ROWS};
use crate::util::le::{f32s_from_bytes, f32s_to_bytes};

/// Dimensions of the codes (pgvector's `vector(128)` column); a basis of lower rank is padded
/// with zeros, which leaves distances unchanged.
pub const CODE_DIM: usize = 128;

/// Rows a store needs before a basis is fitted; below it every search is exact.
pub const MIN_FIT_ROWS: i64 = 64;

/// Rows whose codes are filled per transaction.
const FILL_BATCH: i64 = 1000;

/// A fitted basis and its generation.
#[derive(Clone, Debug)]
pub struct Codes {
    pub generation: i32,
    pub pca: Pca,
    pub rows: i64,
}

impl Codes {
    /// The codes of `rows` ([n, dim]) as pgvector's text form, one per row.
    pub fn texts(&self, rows: &[f32]) -> Vec<String> {
        let z = self.pca.project(rows); // [n, code_dim]
        z.chunks(self.pca.code_dim.max(1))
            .take(rows.len() / self.pca.dim.max(1))
            .map(vector_text)
            .collect()
    }
}

/// `[a,b,…]` padded with zeros to `CODE_DIM`.
pub fn vector_text(code: &[f32]) -> String {
    let mut s = String::with_capacity(CODE_DIM * 10);
    s.push('[');
    for i in 0..CODE_DIM {
        if i > 0 {
            s.push(',');
        }
        let x = code.get(i).copied().unwrap_or(0.0);
        s.push_str(&format!("{x}"));
    }
    s.push(']');
    s
}

impl PgIndex {
    /// The current basis, read again only when its generation changed.
    pub fn codes(&self) -> Result<Option<Codes>> {
        let generation: Option<i32> = self
            .get_meta("pca_generation")?
            .and_then(|g| g.parse().ok());
        let mut cached = self.codes.lock().expect("codes lock");
        if cached.as_ref().map(|c| c.generation) == generation {
            return Ok(cached.clone());
        }
        let Some(g) = generation else {
            *cached = None;
            return Ok(None);
        };
        let sql = format!(
            "SELECT dim, code_dim, kept, rows, mean, basis FROM {} WHERE generation = $1",
            self.t("pca")
        );
        let row = self.with(|c| c.query_opt(&sql, &[&g]))?;
        *cached = row.map(|r| Codes {
            generation: g,
            pca: Pca {
                dim: r.get::<_, i32>(0) as usize,
                code_dim: r.get::<_, i32>(1) as usize,
                kept: r.get(2),
                mean: f32s_from_bytes(r.get(4)),
                basis: f32s_from_bytes(r.get(5)),
            },
            rows: r.get(3),
        });
        Ok(cached.clone())
    }

    /// Fits a basis when the store has none and enough rows (or always, with `refit`),
    /// then fills every missing code. Returns the rows it coded.
    pub fn ensure_codes(&self, refit: bool) -> Result<usize> {
        let key = format!("{} fit", self.t("pca"));
        self.with(|c| c.execute("SELECT pg_advisory_lock(hashtext($1))", &[&key]))?;
        let fitted = self.fit_if_needed(refit);
        self.with(|c| c.execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key]))?;
        fitted?;
        self.fill_codes()
    }

    fn fit_if_needed(&self, refit: bool) -> Result<()> {
        let have = self.codes()?;
        let rows = self.count_rows()?;
        if (have.is_some() && !refit) || rows < MIN_FIT_ROWS {
            return Ok(());
        }
        // A sample of about FIT_ROWS rows, the same one for the same table contents.
        let pct = (100.0 * 1.5 * FIT_ROWS as f64 / rows as f64).min(100.0);
        let sql = format!(
            "SELECT fc7 FROM {} TABLESAMPLE BERNOULLI ($1::float8) REPEATABLE (7) LIMIT $2",
            self.t("images")
        );
        let sample = self.with(|c| c.query(&sql, &[&pct, &(FIT_ROWS as i64)]))?;
        let flat: Vec<f32> = sample
            .iter()
            .flat_map(|r| from_f16_bytes(r.get(0)))
            .collect();
        let n = sample.len().max(1);
        let dim = flat.len() / n;
        if dim == 0 {
            return Ok(());
        }
        let pca = Pca::fit(&flat, dim, CODE_DIM, 7);
        let generation = have.map_or(1, |c| c.generation + 1);
        let (pca_t, images, meta) = (self.t("pca"), self.t("images"), self.t("meta"));
        let (mean, basis) = (f32s_to_bytes(&pca.mean), f32s_to_bytes(&pca.basis));
        let (d, cd, used) = (dim as i32, pca.code_dim as i32, sample.len() as i64);
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                &format!("INSERT INTO {pca_t} (generation, dim, code_dim, kept, rows, mean, basis) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[&generation, &d, &cd, &pca.kept, &used, &mean, &basis],
            )?;
            if generation > 1 {
                tx.batch_execute(&format!("UPDATE {images} SET code = NULL"))?;
            }
            tx.execute(
                &format!("INSERT INTO {meta} VALUES ('pca_generation', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"),
                &[&generation.to_string()],
            )?;
            tx.commit()
        })
    }

    /// Codes for rows that have none, a batch per transaction, skipping rows another worker
    /// has locked. Returns how many it wrote.
    fn fill_codes(&self) -> Result<usize> {
        let Some(codes) = self.codes()? else {
            return Ok(0);
        };
        let images = self.t("images");
        let pick = format!(
            "SELECT id, fc7 FROM {images} WHERE code IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        );
        let set = format!(
            "UPDATE {images} SET code = u.c::vector FROM unnest($1::int8[], $2::text[]) AS u(id, c)
             WHERE {images}.id = u.id"
        );
        let mut done = 0;
        loop {
            let n = self.with(|c| {
                let mut tx = c.transaction()?;
                let rows = tx.query(&pick, &[&FILL_BATCH])?;
                let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                let flat: Vec<f32> = rows.iter().flat_map(|r| from_f16_bytes(r.get(1))).collect();
                let texts = codes.texts(&flat);
                let params: [&(dyn ToSql + Sync); 2] = [&ids, &texts];
                tx.execute(&set, &params)?;
                tx.commit()?;
                Ok(ids.len())
            })?;
            done += n;
            if n == 0 {
                return Ok(done);
            }
        }
    }

    pub(crate) fn count_rows(&self) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.t("images"));
        self.with(|c| c.query_one(&sql, &[]).map(|r| r.get(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_padded_to_the_column_width() {
        let t = vector_text(&[1.5, -2.0]);
        assert!(t.starts_with("[1.5,-2,0,0"));
        assert_eq!(t.matches(',').count(), CODE_DIM - 1);
    }
}
