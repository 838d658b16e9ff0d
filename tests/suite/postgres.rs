//! An index in PostgreSQL with pgvector, through the real binary and a real server
//! (`scripts/setup/postgres.sh`, PostgreSQL 16 + pgvector from PyPI's pgserver, on 127.0.0.1):
//! the same answers as an index folder, many writers at once with each image stored once, a
//! writer killed mid-batch, faults as one-line errors, and hostile paths stored exactly.
//!
//! The server comes from $FC7_TEST_PG (scripts/test.sh starts one and stops it); without it
//! each test says in one line that it skips, unless FC7_REQUIRE_PG=1 (CI) makes that a failure.

use crate::common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{error_lines, fc7, json, mixed_folder, model, other_model, plain_folder, run_ok, s};
use serde_json::Value;

/// The test server's URL for table `table`, emptied of an earlier run's rows, or None (with a
/// line saying so) when there is no server.
fn store(table: &str) -> Option<String> {
    match std::env::var("FC7_TEST_PG") {
        Ok(url) if !url.is_empty() => {
            let drop = ["images", "skipped", "meta", "runs", "pca"]
                .map(|t| format!("DROP TABLE IF EXISTS {table}_{t};"))
                .concat();
            connect(&url).batch_execute(&drop).unwrap();
            Some(format!("{url}?table={table}"))
        }
        _ if std::env::var_os("FC7_REQUIRE_PG").is_some() => {
            panic!("FC7_REQUIRE_PG is set but FC7_TEST_PG is not")
        }
        _ => {
            eprintln!("skipped: no PostgreSQL (scripts/test.sh starts one as FC7_TEST_PG)");
            None
        }
    }
}

/// A direct connection, to check what the store holds without going through fc7.
fn connect(url: &str) -> postgres::Client {
    let base = url.split('?').next().unwrap();
    postgres::Client::connect(base, postgres::NoTls).unwrap()
}

fn index(photos: &Path, url: &str, extra: &[&str]) -> Value {
    let out = run_ok(
        &[
            &["index", s(photos), "--index", url, "--model", s(model())],
            &["--device", "cpu", "--json", "--quiet"][..],
            extra,
        ]
        .concat(),
    );
    json(&out)
}

fn query_all(images: &[PathBuf], index: &str) -> Vec<Value> {
    let mut args: Vec<&std::ffi::OsStr> = ["query", "--index", index, "--json", "--device", "cpu"]
        .into_iter()
        .map(std::ffi::OsStr::new)
        .collect();
    args.extend(images.iter().map(|p| p.as_os_str()));
    json(&run_ok(&args))["results"].as_array().unwrap().clone()
}

/// The test server's store for `table` and a folder of `n` small JPEGs: (the temporary
/// folder, the store's URL, the photos); None without a server.
fn store_and_photos(table: &str, n: u32) -> Option<(tempfile::TempDir, String, PathBuf)> {
    let url = store(table)?;
    let d = tempfile::tempdir().unwrap();
    let photos = d.path().join("photos");
    plain_folder(&photos, n);
    Some((d, url, photos))
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(root);
    v.sort();
    v
}

fn walk(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p]
            }
        })
        .collect()
}

#[test]
fn a_store_answers_as_the_index_folder_does() {
    let Some((d, url, photos)) = store_and_photos("same_answers", 80) else {
        return;
    };
    let local = d.path().join("idx");
    index(&photos, s(&local), &[]);
    let sum = index(&photos, &url, &[]);
    assert_eq!(sum["added"], 80, "{sum}");
    let info = json(&run_ok(&["info", "--index", &url, "--json"]));
    assert_eq!(info["indexed"], 80);
    assert_eq!(info["codes"]["rows_without_code"], 0, "{info}");
    // pgvector's graph is built wider than its defaults (m 16, ef_construction 64), which
    // held recall@6 at a million rows to 0.95.
    assert_eq!(info["graph"]["m"], 24, "{info}");
    assert_eq!(info["graph"]["ef_construction"], 200, "{info}");
    let images = files(&photos);
    let (a, b) = (query_all(&images, s(&local)), query_all(&images, &url));
    let (mut same, mut all) = (0, 0);
    for (x, y) in a.iter().zip(&b) {
        let (nx, ny) = (
            x["neighbours"].as_array().unwrap(),
            y["neighbours"].as_array().unwrap(),
        );
        assert_eq!(nx.len(), 7, "itself and six");
        for n in nx {
            all += 1;
            if let Some(m) = ny.iter().find(|m| m["path"] == n["path"]) {
                same += 1;
                let (dx, dy) = (
                    n["distance"].as_f64().unwrap(),
                    m["distance"].as_f64().unwrap(),
                );
                assert!((dx - dy).abs() <= 1e-3 * dx.max(1.0), "{dx} vs {dy}");
            }
        }
    }
    let overlap = same as f64 / all as f64;
    assert!(overlap >= 0.99, "top-6 overlap {overlap}");

    // The gallery over the store answers as `fc7 query` through it does.
    let server = common::gallery::serve(&url, &[]);
    let a = server.addr.as_str();
    assert_eq!(common::gallery::get_json(a, "/api/info")["indexed"], 80);
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_i64().unwrap())
            .collect()
    };
    for r in b.iter().take(5) {
        let id = r["neighbours"][0]["id"].as_i64().unwrap();
        let got = common::gallery::get_json(a, &format!("/api/neighbours/{id}?k=6"));
        let want: Vec<i64> = ids(&r["neighbours"]).into_iter().skip(1).collect();
        assert_eq!(ids(&got["neighbours"]), want, "{got}");
    }
}

#[test]
fn figure4_through_a_store_equals_figure4_through_a_folder() {
    let Some(url) = store("figure4") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    common::synthetic_dataset(&d.path().join("data"), 3, 30);
    let train = d.path().join("data/train");
    let local = d.path().join("idx");
    index(&train, s(&local), &[]);
    index(&train, &url, &[]);
    let metrics = |idx: &str, out: &str| {
        let out = d.path().join(out);
        run_ok(&[
            "eval",
            "figure4",
            "--model",
            s(model()),
            "--train",
            s(&train),
            "--test",
            s(&d.path().join("data/val")),
            "--index",
            idx,
            "--out",
            s(&out),
            "--device",
            "cpu",
            "--json",
        ]);
        common::json_file(&out.join("metrics.json"))
    };
    let (a, b) = (metrics(s(&local), "fa"), metrics(&url, "fb"));
    for k in [
        "fc7_precision_at_k",
        "pixel_precision_at_k",
        "hnsw_recall_at_k",
        "test_images",
    ] {
        assert_eq!(a[k], b[k], "{k}");
    }
    let info = json(&run_ok(&["info", "--index", &url, "--json"]));
    assert_eq!(
        info["figure4"]["fc7_precision_at_k"],
        b["fc7_precision_at_k"]
    );
}

fn spawn_index(photos: &Path, url: &str, env: &[(&str, &str)]) -> std::process::Child {
    let mut c = fc7();
    c.args(["index", s(photos), "--index", url, "--model", s(model())])
        .args(["--device", "cpu", "--json", "--quiet", "--batch", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(out)
}

/// (rows, distinct paths) in the store's `table` (0 before fc7 has created it).
fn rows(url: &str, table: &str) -> (i64, i64) {
    let t = url.split("table=").nth(1).unwrap();
    let q = format!("SELECT COUNT(*), COUNT(DISTINCT path) FROM {t}_{table}");
    connect(url)
        .query_one(&q, &[])
        .map_or((0, 0), |r| (r.get(0), r.get(1)))
}

#[test]
fn three_writers_at_once_store_each_image_once() {
    let Some(url) = store("three_writers") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let photos = mixed_folder(&d.path().join("photos"));
    plain_folder(&d.path().join("photos/plain"), 40);
    let valid = photos.valid.len() as u64 + 40;
    let workers: Vec<_> = (0..3)
        .map(|_| spawn_index(&photos.root, &url, &[]))
        .collect();
    let sums: Vec<Value> = workers
        .into_iter()
        .map(|w| summary(&w.wait_with_output().unwrap()))
        .collect();
    let count = |k: &str| sums.iter().map(|s| s[k].as_u64().unwrap()).sum::<u64>();
    // Each image embedded by exactly one worker: none re-embedded what another stored.
    assert_eq!(count("added"), valid, "{sums:?}");
    assert_eq!(count("updated"), 0, "{sums:?}");
    assert_eq!(rows(&url, "images"), (valid as i64, valid as i64));
    assert_eq!(rows(&url, "skipped").0, photos.bad.len() as i64);
    let listed = run_ok(&["info", "--index", &url, "--skipped"]);
    for bad in &photos.bad {
        let line = format!("{}:", photos.root.join(bad).display());
        let n = String::from_utf8_lossy(&listed.stdout)
            .matches(&line)
            .count();
        assert_eq!(n, 1, "{bad} listed once with its reason");
    }
}

#[test]
fn a_writer_killed_mid_batch_loses_only_that_batch_and_a_rerun_completes() {
    let Some((d, url, photos)) = store_and_photos("killed", 30) else {
        return;
    };
    let first = index(&photos, &url, &["--batch", "4"]);
    assert_eq!(first["added"], 30);
    let more = d.path().join("photos/more");
    plain_folder(&more, 12);
    // The first batch of new files aborts (as kill -9 would) after its rows are written and
    // before its commit.
    let killed = spawn_index(&photos, &url, &[("FC7_FAULT", "pg-batch-written")])
        .wait_with_output()
        .unwrap();
    assert!(!killed.status.success());
    assert_eq!(
        rows(&url, "images").0,
        30,
        "the batch in flight was not committed"
    );
    let rerun = index(&photos, &url, &[]);
    assert_eq!(rerun["added"], 12, "{rerun}");
    assert_eq!(rerun["unchanged"], 30);
    // The dead worker's claims went with its connection, or the rerun would still be waiting.
    assert_eq!(rows(&url, "images"), (42, 42));
}

fn one_line_failure(out: &Output, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = error_lines(out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(needle), "{lines:?} lacks {needle:?}");
    for pw in [":fc7@", ":plain@", ":wrong@"] {
        assert!(!lines[0].contains(pw), "a password shown: {lines:?}");
    }
}

#[test]
fn faults_are_one_line_errors_that_keep_committed_rows() {
    let Some((d, url, photos)) = store_and_photos("faults", 6) else {
        return;
    };
    index(&photos, &url, &[]);
    let run = |index: &str, m: &Path| {
        fc7()
            .args([
                "index",
                s(&photos),
                "--index",
                index,
                "--model",
                s(m),
                "--device",
                "cpu",
            ])
            .output()
            .unwrap()
    };
    let other = other_model(d.path());
    one_line_failure(&run(&url, &other), "another model");
    assert_eq!(rows(&url, "images").0, 6, "rows kept");
    let wrong = url.replacen(":fc7@", ":wrong@", 1);
    one_line_failure(&run(&wrong, model()), "password authentication failed");
    // A closed port on this machine: nothing listens on port 1.
    let host = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    let closed = url.replacen(host, "127.0.0.1:1", 1);
    one_line_failure(&run(&closed, model()), "127.0.0.1:1");
    let plain = url
        .replacen("fc7:fc7@", "fc7plain:plain@", 1)
        .replacen("/fc7?", "/fc7plain?", 1);
    one_line_failure(&run(&plain, model()), "pgvector");
    // A reader of a store that is not there says so, and makes none.
    let never = url.replacen("table=faults", "table=never_made", 1);
    let q = fc7()
        .args(["query", s(&photos.join("img0000.jpg")), "--index", &never])
        .output()
        .unwrap();
    one_line_failure(&q, "no index here yet");
    let made: bool = connect(&url)
        .query_one("SELECT to_regclass('never_made_images') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!made, "a query created a store");
}

#[test]
fn hostile_paths_are_stored_and_returned_exactly() {
    let Some((_d, url, photos)) = store_and_photos("hostile_paths", 2) else {
        return;
    };
    let img = std::fs::read(photos.join("img0000.jpg")).unwrap();
    let names: Vec<&[u8]> = vec![
        b"it's \"quoted\".jpg",
        b"a'; DROP TABLE hostile_paths_images; --.jpg",
        b"new\nline.jpg",
        b"bytes \xff\xfe\x80.jpg",
        b"back\\slash $1 %s.jpg",
    ];
    let mut want: Vec<Vec<u8>> = vec![];
    for n in &names {
        let p = photos.join(std::ffi::OsStr::from_bytes(n));
        std::fs::write(&p, &img).unwrap();
        want.push(p.as_os_str().as_bytes().to_vec());
    }
    let sum = index(&photos, &url, &[]);
    assert_eq!(sum["added"], 7, "{sum}");
    let mut c = connect(&url);
    let stored: Vec<Vec<u8>> = c
        .query("SELECT path FROM hostile_paths_images", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for w in &want {
        assert!(
            stored.contains(w),
            "{:?} not stored exactly",
            String::from_utf8_lossy(w)
        );
    }
    // Found again by its own path: the stored row answers as the query itself.
    let q = photos.join(std::ffi::OsStr::from_bytes(names[3]));
    let r = &query_all(&[q], &url)[0];
    assert_eq!(r["indexed"], true, "{r}");
}

/// PostgreSQL stopped in the middle of a run: the run fails in one line, what it committed
/// stays, and a rerun against the restarted server completes. A server of this test's own.
#[test]
fn a_server_stopped_mid_run_fails_in_one_line_and_the_rerun_completes() {
    if store("unused").is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let server = Server::start(&d.path().join("pg"));
    let url = format!("{}?table=stopped", server.url);
    let photos = d.path().join("photos");
    plain_folder(&photos, 40);
    let child = spawn_index(
        &photos,
        &url,
        &[("FC7_STALL", "pg-batch-committed"), ("FC7_STALL_MS", "300")],
    );
    let start = Instant::now();
    while rows(&url, "images").0 < 8 && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    let out = child.wait_with_output().unwrap();
    one_line_failure(&out, "?table=stopped");
    let server = Server::start(&d.path().join("pg"));
    let url = format!("{}?table=stopped", server.url);
    let partial = rows(&url, "images").0;
    assert!((8..40).contains(&partial), "{partial}");
    let rerun = index(&photos, &url, &[]);
    assert_eq!(rerun["unchanged"].as_i64().unwrap(), partial);
    assert_eq!(rows(&url, "images"), (40, 40));
}

/// A PostgreSQL server of one test's own, stopped when dropped.
struct Server {
    dir: PathBuf,
    url: String,
}

impl Server {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup/postgres.sh")
    }

    fn start(dir: &Path) -> Server {
        let out = Command::new("bash")
            .arg(Self::script())
            .args(["start", s(dir)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string();
        Server {
            dir: dir.to_path_buf(),
            url,
        }
    }

    fn stop(&self) {
        let st = Command::new("bash")
            .arg(Self::script())
            .args(["stop", s(&self.dir)])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
