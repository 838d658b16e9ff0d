//! An index in PostgreSQL with pgvector, for collections that outgrow one machine: any number
//! of `fc7 index` processes on any number of machines fill one store at once, and every
//! machine can query it. The schema is fc7's own, versioned, created on first use:
//!
//! - `T_images`: one row per image — path (bytes, exactly as the file system has them), size,
//!   mtime, partial hash, dimensions, its fc7 vector once (half precision, little-endian
//!   bytes: pgvector 0.6 has no `halfvec`), and its PCA code as `vector(128)` under pgvector's
//!   HNSW index (pgvector indexes at most 2,000 dimensions; the code is what a graph needs);
//! - `T_skipped` (files that could not be indexed, with the reason), `T_runs` (a log of runs),
//!   `T_pca` (the code basis, fitted once from a sample), `T_meta` (model, dimension, schema
//!   version, the latest Figure 4 numbers).
//!
//! `T` is the URL's `?table=` (default `fc7`). Every value travels as a query parameter; the
//! only names put into SQL text are these table names, checked to be plain identifiers.

mod codes;
mod info;
pub mod ingest;
pub mod rows;
mod search;

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::search::catalog::Meta;

pub use codes::{Codes, CODE_DIM};

/// The schema this fc7 writes into `T_meta`'s `schema_version`.
pub const SCHEMA: i64 = 1;

/// pgvector's HNSW build settings for the codes (its defaults are 16 and 64): on a million
/// synthetic rows the defaults held recall@6 at 0.953 with 192 candidates, these at 0.998
/// (BENCHMARKS.md, "Beyond one machine"), for a 14% larger graph and slower inserts.
pub const GRAPH_M: u32 = 24;
pub const GRAPH_EF_CONSTRUCTION: u32 = 200;

/// A parsed `--index postgres://…`: the connection settings (URL first, then the usual `PG*`
/// variables), the table prefix, and the URL as shown to users (no password).
#[derive(Clone, Debug)]
pub struct Target {
    pub config: postgres::Config,
    pub table: String,
    pub shown: String,
}

/// A table name fc7 will put into SQL: a lower-case identifier of at most 40 characters.
fn check_table(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= 40
        && t.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "table name {t:?}: use lower-case letters, digits and _ (at most 40, not starting with a digit)"
    )))
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut table = "fc7".to_string();
        let mut rest = Vec::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("table", t)) => table = t.to_string(),
                _ => rest.push(kv),
            }
        }
        check_table(&table)?;
        let clean = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = postgres::Config::from_str(&clean)
            .map_err(|e| Error::Invalid(format!("{}: {e}", redact(url))))?;
        with_env_defaults(&mut config);
        let shown = show(&config, &table);
        Ok(Target {
            config,
            table,
            shown,
        })
    }
}

/// Fills what the URL left out from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE and
/// PGCONNECT_TIMEOUT, as libpq does (host localhost, user $USER, a 10 s connect timeout).
fn with_env_defaults(c: &mut postgres::Config) {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if c.get_hosts().is_empty() {
        c.host(env("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if c.get_ports().is_empty() {
        if let Some(p) = env("PGPORT").and_then(|p| p.parse().ok()) {
            c.port(p);
        }
    }
    if c.get_user().is_none() {
        c.user(
            env("PGUSER")
                .or_else(|| env("USER"))
                .as_deref()
                .unwrap_or("postgres"),
        );
    }
    if c.get_password().is_none() {
        if let Some(p) = env("PGPASSWORD") {
            c.password(p);
        }
    }
    if c.get_dbname().is_none() {
        if let Some(d) = env("PGDATABASE") {
            c.dbname(&d);
        }
    }
    if c.get_connect_timeout().is_none() {
        let secs = env("PGCONNECT_TIMEOUT")
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        c.connect_timeout(Duration::from_secs(secs));
    }
    c.application_name("fc7");
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((a, h)) => (a, h),
        None => return url.to_string(),
    };
    let user = auth.split(':').next().unwrap_or("");
    format!("{scheme}://{user}@{host}")
}

fn show(c: &postgres::Config, table: &str) -> String {
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}?table={table}",
        c.get_user().unwrap_or(""),
        c.get_dbname().unwrap_or("")
    )
}

/// One connection to a store, with its table names.
pub struct PgIndex {
    client: Mutex<postgres::Client>,
    pub target: Target,
    /// The code basis as last read (`codes::Codes::refresh` keeps it current).
    codes: Mutex<Option<Codes>>,
    /// Graph candidates re-ranked by full vectors (None: grows with the store).
    pub candidates: Option<usize>,
    pub exact: bool,
}

/// A PostgreSQL error as one line: the server's message, else the client's.
pub fn db_err(target: &Target, e: postgres::Error) -> Error {
    let reason = match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => {
            let mut line = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                line = format!("{line}: {s}");
                src = s.source();
            }
            line
        }
    };
    Error::Store {
        store: target.shown.clone(),
        reason,
    }
}

impl PgIndex {
    /// Connects for writing, creating fc7's schema (and the vector extension) on first use.
    pub fn open(url: &str) -> Result<PgIndex> {
        PgIndex::connect(url, true)
    }

    /// Connects to an existing store (query, serve, info, export, evaluation): one that is
    /// not there is an error, not an empty store made on the way.
    pub fn open_read(url: &str) -> Result<PgIndex> {
        PgIndex::connect(url, false)
    }

    fn connect(url: &str, create: bool) -> Result<PgIndex> {
        let target = Target::parse(url)?;
        let client = target
            .config
            .connect(postgres::NoTls)
            .map_err(|e| db_err(&target, e))?;
        let pg = PgIndex {
            client: Mutex::new(client),
            target,
            codes: Mutex::new(None),
            candidates: None,
            exact: false,
        };
        pg.create_schema(create)?;
        Ok(pg)
    }

    /// Runs `f` with the connection, mapping its error to one line.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut c = self.client.lock().expect("connection lock");
        f(&mut c).map_err(|e| db_err(&self.target, e))
    }

    /// `T_suffix`: a table of this store.
    pub(crate) fn t(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.target.table)
    }

    fn create_schema(&self, create: bool) -> Result<()> {
        // Only a store that is not there yet is created: the DDL locks tables that running
        // writers use. Two first writers are serialised by the lock the DDL starts with.
        let images = self.t("images");
        let exists: bool = self.with(|c| {
            c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&images])
                .map(|r| r.get(0))
        })?;
        if !exists && !create {
            return Err(
                self.refuse("no index here yet (`fc7 index PHOTOS --index URL` builds one)".into())
            );
        }
        if !exists {
            self.create_tables()?;
        }
        let version: i64 = self
            .get_meta("schema_version")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if version > SCHEMA {
            return Err(self.refuse(format!(
                "schema version {version} is newer than this fc7 understands ({SCHEMA})"
            )));
        }
        Ok(())
    }

    fn create_tables(&self) -> Result<()> {
        let has_vector =
            self.with(|c| c.query_opt("SELECT 1 FROM pg_extension WHERE extname = 'vector'", &[]))?;
        if has_vector.is_none() {
            self.with(|c| c.batch_execute("CREATE EXTENSION IF NOT EXISTS vector"))
                .map_err(|e| Error::Store {
                    store: self.target.shown.clone(),
                    reason: format!(
                        "the database has no pgvector extension and fc7 cannot create it ({}); \
                         a superuser can run CREATE EXTENSION vector",
                        match e {
                            Error::Store { reason, .. } => reason,
                            other => other.to_string(),
                        }
                    ),
                })?;
        }
        let t = &self.target.table;
        let ddl = format!(
            "SELECT pg_advisory_xact_lock(hashtext('fc7 schema {t}'));
             CREATE TABLE IF NOT EXISTS {t}_meta (key text PRIMARY KEY, value text NOT NULL);
             CREATE TABLE IF NOT EXISTS {t}_images (
                 id bigserial PRIMARY KEY, path bytea NOT NULL UNIQUE, size bigint NOT NULL,
                 mtime_ns bigint NOT NULL, hash bytea NOT NULL, width integer NOT NULL,
                 height integer NOT NULL, indexed_at timestamptz NOT NULL DEFAULT now(),
                 fc7 bytea NOT NULL, code vector({CODE_DIM}));
             -- vectors do not compress: store them out of line without trying
             ALTER TABLE {t}_images ALTER COLUMN fc7 SET STORAGE EXTERNAL;
             CREATE INDEX IF NOT EXISTS {t}_images_code ON {t}_images
                 USING hnsw (code vector_l2_ops)
                 WITH (m = {GRAPH_M}, ef_construction = {GRAPH_EF_CONSTRUCTION});
             CREATE INDEX IF NOT EXISTS {t}_images_uncoded ON {t}_images (id) WHERE code IS NULL;
             CREATE TABLE IF NOT EXISTS {t}_skipped (path bytea PRIMARY KEY, size bigint NOT NULL,
                 mtime_ns bigint NOT NULL, reason text NOT NULL,
                 at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {t}_runs (id bigserial PRIMARY KEY,
                 started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz,
                 host text, pid integer, summary text);
             CREATE TABLE IF NOT EXISTS {t}_pca (generation integer PRIMARY KEY,
                 dim integer NOT NULL, code_dim integer NOT NULL, kept real NOT NULL,
                 rows bigint NOT NULL, mean bytea NOT NULL, basis bytea NOT NULL,
                 fitted_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO {t}_meta VALUES ('schema_version', '{SCHEMA}') ON CONFLICT DO NOTHING;"
        );
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.batch_execute(&ddl)?;
            tx.commit()
        })
    }

    pub(crate) fn refuse(&self, reason: String) -> Error {
        Error::Store {
            store: self.target.shown.clone(),
            reason,
        }
    }

    pub(crate) fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let sql = format!("SELECT value FROM {} WHERE key = $1", self.t("meta"));
        Ok(self.with(|c| c.query_opt(&sql, &[&key]))?.map(|r| r.get(0)))
    }

    pub(crate) fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            self.t("meta")
        );
        self.with(|c| c.execute(&sql, &[&key, &value])).map(|_| ())
    }

    /// Records `model` as the store's model, or refuses it when the store holds vectors of
    /// another one (checked and set under one lock, so two first writers cannot disagree).
    pub fn bind_model(&self, model: &std::path::Path, m: &crate::model::Manifest) -> Result<()> {
        let abs = std::path::absolute(model).map_err(|e| Error::io(model, e))?;
        let meta = self.t("meta");
        let pre = serde_json::to_string(&m.preprocess).expect("json");
        let sha = m.onnx_sha256.clone();
        let found: Option<String> = self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&meta])?;
            let sql = format!("SELECT value FROM {meta} WHERE key = 'model_sha256'");
            let found: Option<String> = tx.query_opt(&sql, &[])?.map(|r| r.get(0));
            if found.is_none() || found.as_deref() == Some(sha.as_str()) {
                let put = format!(
                    "INSERT INTO {meta} VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                );
                let dim = m.embedding_dim.to_string();
                for (k, v) in [
                    (Meta::ModelSha256, sha.as_str()),
                    (Meta::ModelPath, &abs.to_string_lossy()),
                    (Meta::Dim, dim.as_str()),
                    (Meta::Preprocess, pre.as_str()),
                ] {
                    tx.execute(&put, &[&k.key(), &v])?;
                }
            }
            tx.commit()?;
            Ok(found)
        })?;
        match found {
            Some(s) if s != sha => Err(self.refuse(format!(
                "holds vectors of another model (sha256 {}…) than {}; one store takes one model: \
                 name another table with ?table=NAME",
                &s[..12.min(s.len())],
                model.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Bytes the store's tables and indexes take in the database.
    pub fn disk_bytes(&self) -> Result<i64> {
        let sql = "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
             WHERE c.relkind = 'r' AND c.relname LIKE $1";
        let like = format!("{}\\_%", self.target.table);
        self.with(|c| c.query_one(sql, &[&like]).map(|r| r.get(0)))
    }
}

/// The stored half-precision bytes back to f32.
pub fn from_f16_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_tables_and_passwords() {
        let t = Target::parse("postgres://me:secret@db.example:6543/photos?table=team_a").unwrap();
        assert_eq!(t.table, "team_a");
        assert_eq!(t.shown, "postgres://me@db.example:6543/photos?table=team_a");
        assert!(!t.shown.contains("secret"));
        assert_eq!(t.config.get_password(), Some(&b"secret"[..]));
        let d = Target::parse("postgresql://me@h/db").unwrap();
        assert_eq!(d.table, "fc7");
        for bad in ["x;drop", "A", "1a", "a-b", ""] {
            let url = format!("postgres://me@h/db?table={bad}");
            assert!(Target::parse(&url).is_err(), "{bad}");
        }
        assert_eq!(redact("postgres://me:pw@h/db"), "postgres://me@h/db");
    }

    #[test]
    fn half_bytes_round_trip() {
        let v = [0.0f32, 1.5, -2.25, 1000.0];
        assert_eq!(from_f16_bytes(&crate::search::vectors::encode(&v)), v);
    }
}
