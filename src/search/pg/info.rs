//! `fc7 info --index postgres://…`: what a store holds, in the same shape as an index
//! folder's facts where they mean the same thing.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{PgIndex, SCHEMA};
use crate::error::Result;
use crate::search::catalog::bytes_path;
use crate::search::catalog::Meta;
use crate::search::index::Index;

impl PgIndex {
    pub fn info(&self) -> Result<Value> {
        let (images, skipped, runs) = (self.t("images"), self.t("skipped"), self.t("runs"));
        let reasons = format!("SELECT reason, COUNT(*) FROM {skipped} GROUP BY reason");
        let counts = format!(
            "SELECT (SELECT COUNT(*) FROM {skipped}), (SELECT COUNT(*) FROM {images} WHERE code IS NULL)"
        );
        let last = format!(
            "SELECT extract(epoch FROM started_at)::bigint, extract(epoch FROM finished_at)::bigint,
             host, pid, summary FROM {runs} ORDER BY id DESC LIMIT 1"
        );
        let (reasons, counts, last) = self.with(|c| {
            Ok((
                c.query(&reasons, &[])?,
                c.query_one(&counts, &[])?,
                c.query_opt(&last, &[])?,
            ))
        })?;
        let reasons = crate::search::ingest::reason_classes(
            reasons.iter().map(|r| (r.get(0), r.get(1))).collect(),
        );
        let codes = self.codes()?;
        let graph = self.graph_settings()?;
        let meta = |k: Meta| self.meta(k);
        Ok(json!({
            "index": self.location(),
            "schema_version": SCHEMA,
            "indexed": self.count()?,
            "skipped": counts.get::<_, i64>(0),
            "skip_reasons": reasons,
            "model": meta(Meta::ModelPath)?,
            "model_sha256": meta(Meta::ModelSha256)?,
            "dimension": meta(Meta::Dim)?.and_then(|d| d.parse::<usize>().ok()),
            "codes": codes.map(|c| json!({
                "generation": c.generation,
                "code_dim": c.pca.code_dim,
                "variance_kept": c.pca.kept,
                "fitted_on_rows": c.rows,
                "rows_without_code": counts.get::<_, i64>(1),
            })),
            "graph": graph,
            "vectors": json!({"precision": "f16"}),
            "figure4": meta(Meta::Figure4)?.and_then(|t| serde_json::from_str::<Value>(&t).ok()),
            "bytes_on_disk": self.disk_bytes()?,
            "last_run": last.map(|r| json!({
                "started": r.get::<_, Option<i64>>(0),
                "finished": r.get::<_, Option<i64>>(1),
                "host": r.get::<_, Option<String>>(2),
                "pid": r.get::<_, Option<i32>>(3),
                "summary": r.get::<_, Option<String>>(4)
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok()),
            })),
        }))
    }

    /// The code index's HNSW build settings (`m`, `ef_construction`), pgvector's defaults
    /// where the index was built without them (stores made before fc7 chose its own).
    fn graph_settings(&self) -> Result<Value> {
        let sql = "SELECT reloptions FROM pg_class WHERE oid = to_regclass($1)";
        let name = format!("{}_code", self.t("images"));
        let row = self.with(|c| c.query_opt(sql, &[&name]))?;
        let opts: Vec<String> = row.and_then(|r| r.get(0)).unwrap_or_default();
        let get = |key: &str, default: u32| {
            opts.iter()
                .find_map(|o| o.strip_prefix(key)?.strip_prefix('=')?.parse::<u32>().ok())
                .unwrap_or(default)
        };
        Ok(json!({"m": get("m", 16), "ef_construction": get("ef_construction", 64)}))
    }

    /// Skipped files and their reasons, by path.
    pub fn skipped_list(&self) -> Result<Vec<(PathBuf, String)>> {
        let sql = format!(
            "SELECT path, reason FROM {} ORDER BY path",
            self.t("skipped")
        );
        let rows = self.with(|c| c.query(&sql, &[]))?;
        Ok(rows
            .iter()
            .map(|r| (bytes_path(r.get(0)), r.get(1)))
            .collect())
    }
}
