//! The PostgreSQL store measured against an index folder holding the same rows:
//!   pg-load LOCAL URL N     the first N rows of index folder LOCAL (vectors made beforehand,
//!                           e.g. by synth-index) written into the store at URL through fc7's
//!                           own batch writer: rows/s, the code basis fitted after 20,000 rows
//!   pg-recall LOCAL URL N K recall@K against exact search and per-query p50/p95, for the store
//!                           and for the folder, each with its default candidates, on N rows
//!                           sampled from LOCAL (the same vectors are in both)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fc7::search::index::Index;
use fc7::search::pg::rows::NewRow;
use fc7::search::pg::PgIndex;
use fc7::search::store::Store;

/// Rows per transaction, as `fc7 index` writes them on a GPU.
const BATCH: usize = 256;

pub fn load(local: &Path, url: &str, n: usize) {
    let store = Store::open_read(local).unwrap();
    let view = store.vectors().unwrap();
    let pg = PgIndex::open(url).unwrap();
    let dim = view.dim().to_string();
    pg.set_meta(fc7::search::catalog::Meta::Dim, &dim).unwrap();
    let rows = store.catalog.slots_after(0).unwrap();
    let t = Instant::now();
    let mut coded_at = None;
    for (b, chunk) in rows[..n.min(rows.len())].chunks(BATCH).enumerate() {
        let paths: Vec<PathBuf> = chunk
            .iter()
            .map(|(id, _)| store.catalog.path_of(*id).unwrap().unwrap())
            .collect();
        let fc7: Vec<f32> = chunk
            .iter()
            .flat_map(|(_, s)| view.row(*s).unwrap())
            .collect();
        let new: Vec<NewRow> = paths
            .iter()
            .map(|p| NewRow {
                path: p,
                size: 1,
                mtime_ns: 1,
                hash: &[0],
                width: 1,
                height: 1,
            })
            .collect();
        pg.write_batch(&new, &fc7, &[]).unwrap();
        if coded_at.is_none() && (b + 1) * BATCH >= fc7::search::pca::FIT_ROWS {
            let c = Instant::now();
            pg.ensure_codes(false).unwrap();
            coded_at = Some(c.elapsed().as_secs_f64());
        }
    }
    let c = Instant::now();
    pg.ensure_codes(false).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "pg-load rows={} seconds={s:.1} rows_per_s={:.0} fit_and_code_first_s={:.1} final_codes_s={:.1} bytes={}",
        pg.count().unwrap(),
        n as f64 / s,
        coded_at.unwrap_or(0.0),
        c.elapsed().as_secs_f64(),
        pg.disk_bytes().unwrap()
    );
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

/// Recall and latency of one back end; `id_of` maps its hits to LOCAL's ids.
fn measure(
    name: &str,
    index: &dyn Index,
    sample: &[(i64, Vec<f32>)],
    truth: &[Vec<i64>],
    k: usize,
    id_of: &dyn Fn(&fc7::search::index::Hit) -> i64,
) {
    let (mut hit, mut ms) = (0, Vec::new());
    for ((id, v), want) in sample.iter().zip(truth) {
        let t = Instant::now();
        let got = index.nearest(v, k + 1).unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let want: Vec<&i64> = want.iter().filter(|w| *w != id).take(k).collect();
        hit += got
            .iter()
            .map(id_of)
            .filter(|g| g != id && want.contains(&g))
            .count();
    }
    println!(
        "pg-recall backend={name} rows={} queries={} k={k} recall={:.4} p50_ms={:.2} p95_ms={:.2}",
        index.count().unwrap(),
        sample.len(),
        hit as f64 / (sample.len() * k) as f64,
        percentile(&mut ms, 0.5),
        percentile(&mut ms, 0.95)
    );
}

/// Recall and latency of the folder and the store on the same rows, at their default candidates
/// and then at each of `candidates`.
pub fn recall(local: &Path, url: &str, n: usize, k: usize, candidates: &[usize]) {
    let store = Store::open_read(local).unwrap();
    let sample = super::sample_rows(&store, n);
    let dim = sample[0].1.len();
    let flat: Vec<f32> = sample.iter().flat_map(|s| s.1.iter().copied()).collect();
    let truth = super::exact_ids(&store, &flat, dim, k + 1);
    let by_path: HashMap<PathBuf, i64> = store
        .catalog
        .page(0, usize::MAX >> 1)
        .unwrap()
        .into_iter()
        .map(|(id, p)| (p, id))
        .collect();
    let mut pg = PgIndex::open_read(url).unwrap();
    for c in std::iter::once(None).chain(candidates.iter().copied().map(Some)) {
        let label = c.map_or("default".to_string(), |c| c.to_string());
        let folder = fc7::search::searcher::Searcher::open(&store, false, c).unwrap();
        measure(
            &format!("folder candidates={label}"),
            &folder,
            &sample,
            &truth,
            k,
            &|h| h.0,
        );
        pg.candidates = c;
        measure(
            &format!("postgres candidates={label}"),
            &pg,
            &sample,
            &truth,
            k,
            &|h| by_path[&h.2],
        );
    }
}
