//! `fc7 index PHOTOS --index postgres://…`: many writers, one store. Each worker lists its
//! folders (all of them, or its `--shard K/N`), drops what the store already has unchanged,
//! and works through the rest in batches. A file is claimed before it is decoded with a
//! session-level advisory lock on its path (`pg_try_advisory_lock`): a claim another worker
//! holds is put off and tried again after the rest, and a claimed file is looked up once more
//! under its lock, so each image is embedded and stored once however many workers share a
//! folder. A batch's rows land in one transaction before its claims are released; a worker that
//! dies (kill -9, a lost machine) loses its connection, PostgreSQL drops its claims and its
//! open transaction, and the next run or another worker does that batch again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::rows::Skip;
use super::PgIndex;
use crate::error::{Error, Result};
use crate::imaging::scan::Found;
use crate::infer::embed::Embedder;
use crate::search::catalog::path_bytes;
use crate::search::index::Index;
use crate::search::ingest::{decode, Decoded, IndexOptions, Progress, Summary, Work};

mod write;

/// One of N deterministic parts of a listing (`--shard K/N`, K from 0), by a hash of each
/// path, so workers that list the same folders separately split them the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub k: u64,
    pub n: u64,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("--shard {s}: expected K/N with 0 <= K < N (e.g. 0/4)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || k >= n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

fn path_hash(salt: &[u8], path: &std::path::Path) -> u64 {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(path_bytes(path));
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

impl Shard {
    pub fn holds(&self, path: &std::path::Path) -> bool {
        path_hash(b"fc7 shard", path) % self.n == self.k
    }
}

/// The advisory-lock key that claims `path` in `table`.
fn claim_key(table: &str, path: &std::path::Path) -> i64 {
    path_hash(table.as_bytes(), path) as i64
}

/// What the store has for a path: size, mtime, and the skip reason when it is a skipped file.
type Known = (i64, i64, Option<String>);

/// What an index run into a store needs besides the local run's options.
pub struct PgRun<'a> {
    pub opts: &'a IndexOptions,
    pub shard: Option<Shard>,
    /// Fit a new code basis at the end (and recode every row).
    pub refit: bool,
    pub progress: &'a dyn Progress,
    pub stop: &'a AtomicBool,
}

/// Runs one worker's share of the index update.
pub fn run(pg: &PgIndex, r: &PgRun) -> Result<Summary> {
    let started = Instant::now();
    let mut sum = Summary::default();
    let model = match &r.opts.model {
        Some(m) => m.clone(),
        None => pg.model()?,
    };
    let manifest = crate::model::manifest::read_manifest(&model)?;
    pg.bind_model(&model, &manifest)?;
    let (run_id, run_started) = pg.begin_run()?;
    let roots: Vec<PathBuf> = r
        .opts
        .roots
        .iter()
        .map(|p| std::path::absolute(p).map_err(|e| Error::io(p, e)))
        .collect::<Result<_>>()?;
    let scan = crate::imaging::scan::scan(&roots, &r.opts.scan)?;
    for (p, e) in &scan.errors {
        r.progress.note(&format!("skipped {}: {e}", p.display()));
    }
    let files: Vec<Found> = scan
        .files
        .into_iter()
        .filter(|f| r.shard.is_none_or(|s| s.holds(&f.path)))
        .collect();
    let listed: HashSet<Vec<u8>> = files.iter().map(|f| path_bytes(&f.path)).collect();
    let todo = pending(pg, files, &mut sum)?;
    let embed_start = Instant::now();
    let embedded = if todo.is_empty() {
        0
    } else {
        let mut embedder = Embedder::open(&model, &r.opts.embed)?;
        for said in embedder.notes() {
            r.progress.note(&said);
        }
        sum.provider = Some(embedder.provider.to_string());
        let batch = r.opts.batch.unwrap_or_else(|| embedder.default_batch());
        r.progress.start(todo.len() as u64);
        let mut w = write::Writer::new(pg, &mut embedder, &mut sum, r.progress);
        embed_all(&mut w, todo, batch, r)?
    };
    sum.embed_seconds = embed_start.elapsed().as_secs_f64();
    sum.interrupted = r.stop.load(Ordering::SeqCst);
    if !sum.interrupted {
        if r.shard.is_none() {
            sum.removed = pg.remove_gone(&roots, &listed, run_started)?;
        }
        let graph_start = Instant::now();
        let coded = pg.ensure_codes(r.refit)?;
        sum.graph = format!("{coded} codes written");
        sum.graph_seconds = graph_start.elapsed().as_secs_f64();
    }
    sum.seconds = started.elapsed().as_secs_f64();
    sum.images_per_second = embedded as f64 / sum.embed_seconds.max(1e-9);
    sum.total_indexed = pg.count()?;
    pg.finish_run(run_id, &serde_json::to_string(&sum).expect("json"))?;
    Ok(sum)
}

/// The files the store does not have as they are now; files it has unchanged, and skipped
/// files unchanged since they failed, are counted and left alone; files that are not images
/// are recorded as skipped at once.
fn pending(pg: &PgIndex, files: Vec<Found>, sum: &mut Summary) -> Result<Vec<Work>> {
    let mut work = Vec::new();
    let mut not_images = Vec::new();
    for chunk in files.chunks(5000) {
        let known = pg.known(chunk.iter().map(|f| path_bytes(&f.path)).collect())?;
        for f in chunk {
            match known.get(&path_bytes(&f.path)) {
                Some((s, m, None)) if *s == f.size as i64 && *m == f.mtime_ns => sum.unchanged += 1,
                Some((s, m, Some(reason))) if *s == f.size as i64 && *m == f.mtime_ns => {
                    sum.skip(reason, 1)
                }
                _ if !f.looks_like_image => not_images.push(f.clone()),
                _ => work.push(Work {
                    found: f.clone(),
                    replaces: None,
                }),
            }
        }
    }
    if !not_images.is_empty() {
        let skips: Vec<Skip> = not_images
            .iter()
            .map(|f| Skip {
                path: &f.path,
                size: f.size,
                mtime_ns: f.mtime_ns,
                reason: "not an image".into(),
            })
            .collect();
        pg.write_batch(&[], &[], &skips)?;
        sum.skip("not an image", not_images.len());
    }
    Ok(work)
}

/// Works through `todo` in claimed batches, decoding batch i+1 while batch i is embedded and
/// written; files another worker had claimed are tried again until each is done by someone.
fn embed_all(w: &mut write::Writer, mut todo: Vec<Work>, batch: usize, r: &PgRun) -> Result<usize> {
    // Workers sharing a folder start at different places, so they rarely meet.
    let start = (std::process::id() as usize).wrapping_mul(2_654_435_761) % todo.len();
    todo.rotate_left(start);
    let mut queue: VecDeque<Work> = todo.into();
    let (mut embedded, mut waited) = (0, Instant::now());
    loop {
        let mut deferred = Vec::new();
        embedded += pipeline(w, &mut queue, &mut deferred, batch.max(1), r)?;
        if deferred.is_empty() || r.stop.load(Ordering::SeqCst) {
            return Ok(embedded);
        }
        if waited.elapsed() > Duration::from_secs(10) {
            r.progress.note(&format!(
                "waiting for other writers to finish {} files they claimed",
                deferred.len()
            ));
            waited = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
        queue = deferred.into();
    }
}

fn decode_all(
    chunk: &[Work],
    manifest: &crate::model::Manifest,
    max_pixels: u64,
) -> Vec<Result<Decoded>> {
    chunk
        .par_iter()
        .map(|w| decode(w, manifest, max_pixels))
        .collect()
}

/// One pass over `queue`: batch i+1 is claimed and decoded while batch i is embedded and
/// written.
fn pipeline(
    w: &mut write::Writer,
    queue: &mut VecDeque<Work>,
    deferred: &mut Vec<Work>,
    batch: usize,
    r: &PgRun,
) -> Result<usize> {
    let manifest = w.manifest();
    let max_pixels = r.opts.max_pixels;
    let mut embedded = 0;
    let mut cur = w.claim(queue, batch, deferred)?;
    let mut decoded = decode_all(&cur, &manifest, max_pixels);
    while !cur.is_empty() {
        let next = if r.stop.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            w.claim(queue, batch, deferred)?
        };
        let (next_decoded, written) = rayon::join(
            || decode_all(&next, &manifest, max_pixels),
            || w.write(&cur, decoded),
        );
        w.release(&cur)?;
        embedded += written?;
        r.progress.advance(cur.len() as u64);
        (cur, decoded) = (next, next_decoded);
    }
    Ok(embedded)
}

impl PgIndex {
    /// (size, mtime, skip reason) of each of `paths` the store has, as an image (no reason)
    /// or as a skipped file.
    fn known(&self, paths: Vec<Vec<u8>>) -> Result<HashMap<Vec<u8>, Known>> {
        let sql = format!(
            "SELECT path, size, mtime_ns, NULL::text FROM {} WHERE path = ANY($1)
             UNION ALL SELECT path, size, mtime_ns, reason FROM {} WHERE path = ANY($1)",
            self.t("images"),
            self.t("skipped")
        );
        let rows = self.with(|c| c.query(&sql, &[&paths]))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect())
    }

    fn begin_run(&self) -> Result<(i64, SystemTime)> {
        let sql = format!(
            "INSERT INTO {} (host, pid) VALUES ($1, $2) RETURNING id, started_at",
            self.t("runs")
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let pid = std::process::id() as i32;
        let row = self.with(|c| c.query_one(&sql, &[&host.trim(), &pid]))?;
        Ok((row.get(0), row.get(1)))
    }

    fn finish_run(&self, id: i64, summary: &str) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET finished_at = now(), summary = $1 WHERE id = $2",
            self.t("runs")
        );
        self.with(|c| c.execute(&sql, &[&summary, &id])).map(|_| ())
    }

    /// Drops rows and skips under `roots` that this run's full listing did not see and that
    /// were written before it started (a concurrent worker's new rows are not this run's to
    /// judge). Returns the images removed.
    fn remove_gone(
        &self,
        roots: &[PathBuf],
        listed: &HashSet<Vec<u8>>,
        since: SystemTime,
    ) -> Result<usize> {
        let mut removed = 0;
        for root in roots {
            let mut prefix = path_bytes(root);
            if root.is_dir() && prefix.last() != Some(&b'/') {
                prefix.push(b'/');
            }
            let len = prefix.len() as i32;
            for (table, at) in [("images", "indexed_at"), ("skipped", "at")] {
                let t = self.t(table);
                let sql = format!(
                    "SELECT path FROM {t} WHERE substring(path FROM 1 FOR $2) = $1 AND {at} < $3"
                );
                let rows = self.with(|c| c.query(&sql, &[&prefix, &len, &since]))?;
                let gone: Vec<Vec<u8>> = rows
                    .iter()
                    .map(|r| r.get::<_, Vec<u8>>(0))
                    .filter(|p| !listed.contains(p))
                    .collect();
                let del = format!("DELETE FROM {t} WHERE path = ANY($1) AND {at} < $2");
                let n = self.with(|c| c.execute(&del, &[&gone, &since]))?;
                if table == "images" {
                    removed += n as usize;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn shards_split_a_listing_into_disjoint_parts() {
        let paths: Vec<PathBuf> = (0..1000)
            .map(|i| PathBuf::from(format!("/p/{i}.jpg")))
            .collect();
        let shards: Vec<Shard> = (0..4).map(|k| format!("{k}/4").parse().unwrap()).collect();
        let mut sizes = [0; 4];
        for p in &paths {
            let owners: Vec<usize> = (0..4).filter(|&k| shards[k].holds(p)).collect();
            assert_eq!(owners.len(), 1, "{}", p.display());
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| (200..300).contains(&n)), "{sizes:?}");
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_ne!(
            claim_key("a", Path::new("/x")),
            claim_key("b", Path::new("/x"))
        );
    }
}
