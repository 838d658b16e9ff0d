//! The one interface `fc7 query`, `fc7 serve` and Figure 4 search through, whichever back end
//! holds the index: an index folder on this machine (`Searcher` over a `Store`) or a table in
//! PostgreSQL with pgvector (`pg::PgIndex`), named by `Location`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Manifest;
use crate::search::catalog::Meta;

/// A search result: row id, Euclidean distance, path.
pub type Hit = (i64, f32, PathBuf);

/// Where an index lives, as `--index` names it: a folder, or a `postgres://` (or
/// `postgresql://`) URL, optionally with `?table=NAME`.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    Folder(PathBuf),
    Postgres(String),
}

impl Location {
    pub fn parse(arg: &Path) -> Location {
        match arg.to_str() {
            Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
                Location::Postgres(s.to_string())
            }
            _ => Location::Folder(arg.to_path_buf()),
        }
    }
}

/// What query, serve and evaluation ask of an index.
pub trait Index {
    /// The index as a user names it (a folder, or the database URL without its password).
    fn location(&self) -> String;
    /// The `want` nearest rows to `q` ([dim]), nearest first, ties by the lower id.
    fn nearest(&self, q: &[f32], want: usize) -> Result<Vec<Hit>>;
    /// The stored vector of `path` and its id, if it is indexed with this size and mtime.
    fn stored(&self, path: &Path, size: u64, mtime_ns: i64) -> Result<Option<(i64, Vec<f32>)>>;
    /// The path and stored vector of row `id`.
    fn row_of(&self, id: i64) -> Result<Option<(PathBuf, Vec<f32>)>>;
    fn path_of(&self, id: i64) -> Result<Option<PathBuf>>;
    /// Up to `limit` rows with ids above `after`, in id order.
    fn page(&self, after: i64, limit: usize) -> Result<Vec<(i64, PathBuf)>>;
    /// Rows indexed.
    fn count(&self) -> Result<i64>;

    /// Up to `limit` rows with ids above `after`, in id order, with their vectors.
    fn vectors_page(&self, after: i64, limit: usize) -> Result<Vec<(i64, PathBuf, Vec<f32>)>> {
        let mut out = Vec::new();
        for (id, _) in self.page(after, limit)? {
            if let Some((path, v)) = self.row_of(id)? {
                out.push((id, path, v));
            }
        }
        Ok(out)
    }
    fn meta(&self, key: Meta) -> Result<Option<String>>;
    fn set_meta(&self, key: Meta, value: &str) -> Result<()>;
    /// Whether searches go through an approximate graph (else every one is exact).
    fn approximate(&self) -> bool;

    /// Refuses `model` when the index holds vectors of another model.
    fn check_model(&self, model: &Path, manifest: &Manifest) -> Result<()> {
        match self.meta(Meta::ModelSha256)? {
            Some(sha) if sha != manifest.onnx_sha256 => Err(Error::Index {
                path: PathBuf::from(self.location()),
                reason: format!(
                    "built with another model (sha256 {}…, {}) than {}",
                    &sha[..12.min(sha.len())],
                    self.meta(Meta::ModelPath)?.unwrap_or_default(),
                    model.display()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The index's own model, else the home's default.
    fn model(&self) -> Result<PathBuf> {
        Ok(self
            .meta(Meta::ModelPath)?
            .map_or_else(crate::home::default_model, PathBuf::from))
    }
}

/// Opens the index at `loc` for reading and runs `f` with it; `exact` searches every row,
/// `candidates` (unset: `default_candidates`) are re-ranked by full vectors.
pub fn with_index<T>(
    loc: &Location,
    exact: bool,
    candidates: Option<usize>,
    f: impl FnOnce(&dyn Index) -> Result<T>,
) -> Result<T> {
    match loc {
        Location::Folder(dir) => {
            let store = crate::search::store::Store::open_read(dir)?;
            f(&crate::search::searcher::Searcher::open(
                &store, exact, candidates,
            )?)
        }
        Location::Postgres(url) => {
            let mut pg = crate::search::pg::PgIndex::open_read(url)?;
            pg.exact = exact;
            pg.candidates = candidates;
            f(&pg)
        }
    }
}

/// The number of graph candidates re-ranked by full vectors when the user did not choose:
/// `searcher::CANDIDATES` up to 250,000 rows, then 64 more for each doubling, since a fixed
/// number of short-code candidates holds a smaller share of the true neighbours as the index
/// grows (BENCHMARKS.md, "Recall at every size").
pub fn default_candidates(rows: i64) -> usize {
    let base = crate::search::searcher::CANDIDATES;
    if rows <= 250_000 {
        return base;
    }
    let doublings = (rows as f64 / 250_000.0).log2().ceil() as usize;
    base + 64 * doublings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_by_scheme() {
        let pg = "postgres://u@h:5/db?table=t";
        assert_eq!(
            Location::parse(Path::new(pg)),
            Location::Postgres(pg.into())
        );
        let url = "postgresql://h/db";
        assert_eq!(
            Location::parse(Path::new(url)),
            Location::Postgres(url.into())
        );
        let dir = Path::new("indexes/postgres");
        assert_eq!(Location::parse(dir), Location::Folder(dir.into()));
    }

    #[test]
    fn candidates_grow_with_the_index() {
        assert_eq!(default_candidates(60_000), 64);
        assert_eq!(default_candidates(250_000), 64);
        assert_eq!(default_candidates(500_000), 128);
        assert_eq!(default_candidates(1_000_000), 192);
        assert_eq!(default_candidates(1_000_000_000), 64 + 64 * 12);
    }
}
