//! The index's files through the real binary: vectors stored once and searched through a
//! memory-mapped graph, an index of the previous layout upgraded without re-embedding, crashes
//! (`FC7_FAULT`, which aborts like kill -9) at each step of a write, and queries of indexed
//! images that never open the model.

use crate::common;

use std::path::{Path, PathBuf};

use common::{fc7, json, model, plain_folder, run_ok, s};
use serde_json::Value;

fn index(photos: &Path, idx: &Path, m: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["index", s(photos), "--index", s(idx), "--model", s(m)];
    args.extend_from_slice(&["--json"]);
    args.extend_from_slice(extra);
    json(&run_ok(&args))
}

/// `n` small JPEGs in dir/photos, indexed into dir/idx.
fn indexed(dir: &Path, n: u32) -> (PathBuf, PathBuf) {
    let (root, idx) = (dir.join("photos"), dir.join("idx"));
    plain_folder(&root, n);
    assert_eq!(index(&root, &idx, model(), &[])["added"], n);
    (root, idx)
}

/// (path, distance) of the neighbours of `img`.
fn neighbours(img: &Path, idx: &Path, extra: &[&str]) -> Vec<(String, f64)> {
    let mut args = vec!["query", s(img), "--index", s(idx), "--json", "-k", "5"];
    args.extend_from_slice(extra);
    let r = json(&run_ok(&args))["results"][0].clone();
    r["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let p = n["path"].as_str().unwrap().to_string();
            (p, n["distance"].as_f64().unwrap())
        })
        .collect()
}

fn info(idx: &Path) -> Value {
    json(&run_ok(&["info", "--index", s(idx), "--json"]))
}

fn files(idx: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(idx)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("catalog.sqlite") && n != "lock")
        .collect();
    names.sort();
    names
}

/// Runs `fc7 args` with `FC7_FAULT=point` and checks it died there.
fn crash_at(point: &str, args: &[&str]) {
    let out = fc7().env("FC7_FAULT", point).args(args).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("FC7_FAULT={point}")),
        "did not reach {point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
}

#[test]
fn a_crash_at_each_step_of_a_graph_rebuild_leaves_a_usable_index() {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = indexed(d.path(), 8);
    let img = root.join("img0003.jpg");
    let exact = neighbours(&img, &idx, &["--exact"]);
    assert_eq!(
        neighbours(&img, &idx, &[]),
        exact,
        "graph and brute force agree"
    );
    assert_eq!(files(&idx), ["graph-1.fc7g", "vectors-1.f16"]);
    // Another code size forces a rebuild; die after writing the new graph, then after the
    // catalog switched to it.
    let rebuild = ["index", s(&root), "--index", s(&idx), "--model", s(model())];
    for (point, generation) in [("graph-written", 1), ("graph-switched", 2)] {
        crash_at(point, &[&rebuild[..], &["--code-dim", "4"]].concat());
        assert_eq!(
            neighbours(&img, &idx, &[]),
            exact,
            "after a crash at {point}"
        );
        assert_eq!(info(&idx)["graph"]["generation"], generation, "{point}");
    }
    let sum = index(&root, &idx, model(), &[]);
    assert_eq!(sum["unchanged"], 8, "{sum}");
    let i = info(&idx);
    assert_eq!(i["graph"]["code_dim"], 4, "the chosen size is kept: {i}");
    assert_eq!(neighbours(&img, &idx, &[]), exact);
    assert_eq!(
        files(&idx),
        ["graph-2.fc7g", "vectors-1.f16"],
        "no graph or temporary file left over"
    );
}

#[test]
fn vectors_written_by_a_run_that_died_before_its_commit_are_written_over() {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = indexed(d.path(), 3);
    plain_folder(&root.join("more"), 4);
    crash_at(
        "vectors-appended",
        &["index", s(&root), "--index", s(&idx), "--model", s(model())],
    );
    assert_eq!(info(&idx)["indexed"], 3);
    assert_eq!(info(&idx)["vectors"]["rows"], 3);
    let sum = index(&root, &idx, model(), &[]);
    assert_eq!(
        (sum["added"].as_u64(), sum["unchanged"].as_u64()),
        (Some(4), Some(3))
    );
    let i = info(&idx);
    assert_eq!(i["vectors"]["rows"], 7);
    assert_eq!(
        i["vectors"]["bytes"],
        7 * 4096 * 2,
        "one f16 row per image: {i}"
    );
}

#[test]
fn an_indexed_image_is_queried_without_the_model_and_a_new_one_needs_it() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("m/model.onnx");
    std::fs::create_dir_all(m.parent().unwrap()).unwrap();
    std::fs::copy(model(), &m).unwrap();
    std::fs::copy(model().with_extension("json"), m.with_extension("json")).unwrap();
    let (root, idx) = (d.path().join("photos"), d.path().join("idx"));
    plain_folder(&root, 5);
    index(&root, &idx, &m, &[]);
    let before = neighbours(&root.join("img0001.jpg"), &idx, &[]);
    std::fs::remove_dir_all(m.parent().unwrap()).unwrap();
    assert_eq!(neighbours(&root.join("img0001.jpg"), &idx, &[]), before);
    let outside = d.path().join("new");
    plain_folder(&outside, 1);
    let out = fc7()
        .args(["query", s(&outside.join("img0000.jpg")), "--index", s(&idx)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}.", m.with_extension("").display())),
        "{err}"
    );
}

/// The schema-1 catalog fc7 wrote before this layout: vectors as f32 blobs in `images`.
const SCHEMA_1: &str = r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (id INTEGER PRIMARY KEY AUTOINCREMENT, path BLOB NOT NULL UNIQUE,
  size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, hash BLOB NOT NULL, width INTEGER NOT NULL,
  height INTEGER NOT NULL, indexed_at INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE INDEX images_hash ON images(hash, size);
CREATE TABLE skipped (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
  reason TEXT NOT NULL, at INTEGER NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at INTEGER NOT NULL,
  finished_at INTEGER, summary TEXT);
PRAGMA user_version = 1;
"#;

/// An index of the previous layout holding the rows and vectors of `idx`, with the hnsw_rs
/// graph files it had (their contents do not matter: the upgrade drops them).
fn old_layout_copy(idx: &Path, old: &Path) {
    let out = old.with_extension("export");
    run_ok(&["export-vectors", "--index", s(idx), "--out", s(&out)]);
    let npy = std::fs::read(out.join("vectors.npy")).unwrap();
    let data = &npy[10 + u16::from_le_bytes([npy[8], npy[9]]) as usize..];
    std::fs::create_dir_all(old).unwrap();
    let src = rusqlite::Connection::open(idx.join("catalog.sqlite")).unwrap();
    let dst = rusqlite::Connection::open(old.join("catalog.sqlite")).unwrap();
    dst.execute_batch(SCHEMA_1).unwrap();
    let mut meta = src
        .prepare("SELECT key, value FROM meta WHERE key <> 'graph' AND key <> 'vectors'")
        .unwrap();
    for row in meta
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (k, v) = row.unwrap();
        dst.execute("INSERT INTO meta VALUES (?1, ?2)", [k, v])
            .unwrap();
    }
    let mut rows = src
        .prepare("SELECT id, path, size, mtime_ns, hash, width, height, indexed_at FROM images ORDER BY id")
        .unwrap();
    let mut q = rows.query([]).unwrap();
    let mut i = 0;
    while let Some(r) = q.next().unwrap() {
        let v: Vec<u8> = data[i * 4096 * 4..(i + 1) * 4096 * 4].to_vec();
        dst.execute(
            "INSERT INTO images VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                r.get::<_, i64>(0).unwrap(),
                r.get::<_, Vec<u8>>(1).unwrap(),
                r.get::<_, i64>(2).unwrap(),
                r.get::<_, i64>(3).unwrap(),
                r.get::<_, Vec<u8>>(4).unwrap(),
                r.get::<_, i64>(5).unwrap(),
                r.get::<_, i64>(6).unwrap(),
                r.get::<_, i64>(7).unwrap(),
                v
            ],
        )
        .unwrap();
        i += 1;
    }
    dst.execute(
        "INSERT INTO meta VALUES ('graph', ?1)",
        [r#"{"generation":1,"max_id":6,"points":6,"graph_bytes":5,"data_bytes":5}"#],
    )
    .unwrap();
    for f in ["graph-1.hnsw.graph", "graph-1.hnsw.data"] {
        std::fs::write(old.join(f), b"hnsw!").unwrap();
    }
}

#[test]
fn an_index_of_the_previous_layout_is_upgraded_without_re_embedding() {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = indexed(d.path(), 6);
    let old = d.path().join("old");
    old_layout_copy(&idx, &old);
    let img = root.join("img0002.jpg");
    let want = neighbours(&img, &idx, &["--exact"]);
    // Killed while upgrading: the old catalog is untouched, and the next open upgrades it.
    crash_at("upgrade-vectors-written", &["info", "--index", s(&old)]);
    let version = |p: &Path| -> i64 {
        rusqlite::Connection::open(p.join("catalog.sqlite"))
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&old), 1);
    assert_eq!(
        neighbours(&img, &old, &[]),
        want,
        "the upgraded index answers as before"
    );
    assert_eq!(version(&old), 2);
    let i = info(&old);
    assert_eq!(
        (i["indexed"].as_u64(), i["vectors"]["rows"].as_u64()),
        (Some(6), Some(6)),
        "{i}"
    );
    assert_eq!(
        files(&old),
        ["graph-1.fc7g", "vectors-1.f16"],
        "old graph files gone"
    );
    let cols: Vec<String> = rusqlite::Connection::open(old.join("catalog.sqlite"))
        .unwrap()
        .prepare("SELECT name FROM pragma_table_info('images')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    assert!(!cols.contains(&"vector".to_string()), "{cols:?}");
    let sum = index(&root, &old, model(), &[]);
    assert_eq!(
        (sum["added"].as_u64(), sum["unchanged"].as_u64()),
        (Some(0), Some(6)),
        "{sum}"
    );
}

#[test]
fn rows_of_deleted_images_are_dropped_from_the_vector_file_even_after_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = indexed(d.path(), 8);
    for i in [0, 2, 4, 5, 7] {
        std::fs::remove_file(root.join(format!("img{i:04}.jpg"))).unwrap();
    }
    let img = root.join("img0003.jpg");
    let reindex = ["index", s(&root), "--index", s(&idx), "--model", s(model())];
    crash_at("vectors-compacted", &reindex);
    let exact = neighbours(&img, &idx, &["--exact"]);
    assert_eq!(exact.len(), 3, "{exact:?}");
    assert_eq!(neighbours(&img, &idx, &[]), exact, "usable after the crash");
    let sum = index(&root, &idx, model(), &[]);
    assert_eq!(sum["unchanged"], 3, "{sum}");
    let i = info(&idx);
    assert_eq!(i["vectors"]["rows"], 3, "{i}");
    assert_eq!(i["vectors"]["bytes"], 3 * 4096 * 2, "{i}");
    assert_eq!(neighbours(&img, &idx, &[]), exact);
    assert_eq!(neighbours(&img, &idx, &["--exact"]), exact);
    let gen = i["graph"]["generation"].as_i64().unwrap();
    assert_eq!(
        files(&idx),
        [format!("graph-{gen}.fc7g"), "vectors-2.f16".into()]
    );
}
