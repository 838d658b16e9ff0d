//! `fc7 index` / `fc7 query` / `fc7 info` driven through the real binary on generated folders.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{fc7, json, mixed_folder, model, plain_folder, run_ok, s};
use serde_json::Value;

fn index(photos: &Path, idx: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "index",
        s(photos),
        "--index",
        s(idx),
        "--model",
        s(model()),
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&run_ok(&args))
}

fn query(img: &Path, idx: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["query", s(img), "--index", s(idx), "--json"];
    args.extend_from_slice(extra);
    json(&run_ok(&args))["results"][0].clone()
}

fn neighbour_paths(r: &Value) -> Vec<String> {
    r["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn mixed_folder_indexes_every_valid_image_once_and_lists_bad_ones() {
    let d = tempfile::tempdir().unwrap();
    let photos = mixed_folder(&d.path().join("photos"));
    let idx = d.path().join("idx");
    let sum = index(&photos.root, &idx, &[]);
    assert_eq!(sum["added"], photos.valid.len(), "{sum}");
    assert_eq!(sum["skipped"], photos.bad.len(), "{sum}");
    assert_eq!(sum["total_indexed"], photos.valid.len());
    let reasons = &sum["skip_reasons"];
    assert_eq!(reasons["not an image"], 1);
    assert_eq!(reasons["empty file"], 1);
    assert_eq!(reasons["over the pixel limit"], 1);
    assert_eq!(reasons["cannot decode image"], 2);

    let info = run_ok(&["info", "--index", s(&idx), "--skipped"]);
    let listing = String::from_utf8_lossy(&info.stdout);
    for bad in &photos.bad {
        let line = listing
            .lines()
            .find(|l| l.contains(bad.as_str()))
            .unwrap_or_else(|| panic!("{bad} not listed:\n{listing}"));
        assert!(
            line.split_once(": ").is_some_and(|(_, r)| !r.is_empty()),
            "{line}"
        );
    }
    assert!(
        !listing.contains("secret.jpg"),
        "hidden folders are skipped"
    );
    let info = json(&run_ok(&["info", "--index", s(&idx), "--json"]));
    assert_eq!(info["indexed"], photos.valid.len());
    assert_eq!(info["dimension"], 4096);

    // Each valid image is its own nearest neighbour, graph and exact search agree on the rest.
    for rel in &photos.valid {
        let img = photos.root.join(rel);
        let r = query(&img, &idx, &[]);
        let n = &r["neighbours"][0];
        assert_eq!(
            (n["rank"].as_u64(), n["distance"].as_f64()),
            (Some(0), Some(0.0)),
            "{rel}: {r}"
        );
        assert_eq!(n["path"].as_str().unwrap(), s(&img));
        let exact = query(&img, &idx, &["--exact"]);
        assert_eq!(
            r["neighbours"][1]["path"], exact["neighbours"][1]["path"],
            "{rel}"
        );
        assert_eq!(r["neighbours"].as_array().unwrap().len(), 7);
    }
}

#[test]
fn an_exif_rotated_copy_finds_its_original_first() {
    let d = tempfile::tempdir().unwrap();
    let photos = mixed_folder(&d.path().join("photos"));
    let idx = d.path().join("idx");
    index(&photos.root, &idx, &[]);
    let r = query(
        &photos.root.join("rotation/rotated_exif6.jpg"),
        &idx,
        &["--exclude-self"],
    );
    let paths = neighbour_paths(&r);
    assert!(paths[0].ends_with("rotation/original.jpg"), "{paths:?}");
    assert_eq!(r["neighbours"][0]["rank"], 1);
    let (d1, d2) = (
        r["neighbours"][0]["distance"].as_f64().unwrap(),
        r["neighbours"][1]["distance"].as_f64().unwrap(),
    );
    assert!(
        d1 * 5.0 < d2,
        "the original ({d1}) should be far closer than the next image ({d2})"
    );
}

#[test]
fn an_image_outside_the_index_is_embedded_and_ranked_from_one() {
    let d = tempfile::tempdir().unwrap();
    let photos = mixed_folder(&d.path().join("photos"));
    let idx = d.path().join("idx");
    index(&photos.root, &idx, &[]);
    let outside = d.path().join("copy of stripes.png");
    let stripes = image::open(photos.root.join("stripes.jpg")).unwrap();
    stripes.save(&outside).unwrap();
    let out = run_ok(&[
        "query",
        s(&outside),
        s(&photos.root.join("stripes.jpg")),
        "--index",
        s(&idx),
        "-k",
        "3",
        "--json",
    ]);
    let v = json(&out);
    let first = &v["results"][0];
    assert_eq!(first["indexed"], false);
    assert_eq!(first["neighbours"][0]["rank"], 1);
    assert!(neighbour_paths(first)[0].ends_with("stripes.jpg"));
    assert_eq!(first["neighbours"].as_array().unwrap().len(), 3);
    assert_eq!(v["results"][1]["indexed"], true);
    // A query image that cannot be read is one clear error; the exit code says so.
    let out = fc7()
        .args(["query", "/nonexistent/x.jpg", "--index", s(&idx)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/x.jpg") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn modify_delete_and_rename_between_runs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("photos");
    plain_folder(&root, 8);
    let idx = d.path().join("idx");
    assert_eq!(index(&root, &idx, &[])["added"], 8);
    let again = index(&root, &idx, &[]);
    assert_eq!(
        (
            again["unchanged"].as_u64(),
            again["added"].as_u64(),
            again["provider"].is_null()
        ),
        (Some(8), Some(0), true),
        "{again}"
    );

    let id_of = |p: &Path| query(p, &idx, &[])["neighbours"][0]["id"].as_i64().unwrap();
    let moved_id = id_of(&root.join("img0002.jpg"));
    std::fs::write(
        root.join("img0001.jpg"),
        common::jpeg(&common::picture(99, 200, 150)),
    )
    .unwrap();
    std::fs::remove_file(root.join("img0003.jpg")).unwrap();
    std::fs::create_dir(root.join("renamed")).unwrap();
    std::fs::rename(root.join("img0002.jpg"), root.join("renamed/moved.jpg")).unwrap();
    let sum = index(&root, &idx, &[]);
    let got: Vec<u64> = ["added", "updated", "moved", "removed", "unchanged"]
        .iter()
        .map(|k| sum[k].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![0, 1, 1, 1, 5], "{sum}");
    assert_eq!(sum["total_indexed"], 7);
    assert_eq!(
        id_of(&root.join("renamed/moved.jpg")),
        moved_id,
        "a moved file keeps its vector"
    );
    let r = query(&root.join("img0000.jpg"), &idx, &["-k", "10"]);
    let paths = neighbour_paths(&r);
    assert!(
        !paths
            .iter()
            .any(|p| p.ends_with("img0003.jpg") || p.ends_with("img0002.jpg")),
        "{paths:?}"
    );
    assert_eq!(paths.len(), 7);
}

#[test]
fn another_model_is_refused_unless_reembed() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("photos");
    plain_folder(&root, 3);
    let idx = d.path().join("idx");
    index(&root, &idx, &[]);
    let other = common::other_model(d.path());
    let out = fc7()
        .args(["index", s(&root), "--index", s(&idx), "--model", s(&other)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reembed"));
    let out = run_ok(&[
        "index",
        s(&root),
        "--index",
        s(&idx),
        "--model",
        s(&other),
        "--reembed",
        "--json",
    ]);
    assert_eq!(json(&out)["added"], 3);
}

fn indexed_count(idx: &Path) -> u64 {
    let out = fc7()
        .args(["info", "--index", s(idx), "--json"])
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["indexed"].as_u64())
        .unwrap_or(0)
}

#[test]
fn kill_9_mid_run_then_rerun_loses_and_duplicates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("photos");
    plain_folder(&root, 60);
    let idx = d.path().join("idx");
    let mut child = fc7()
        .args([
            "index",
            s(&root),
            "--index",
            s(&idx),
            "--model",
            s(model()),
            "--batch",
            "2",
            "--quiet",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while indexed_count(&idx) < 4 && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // While it runs: a second writer is refused at once, readers work.
    let second = fc7()
        .args(["index", s(&root), "--index", s(&idx), "--model", s(model())])
        .output()
        .unwrap();
    let q = fc7()
        .args([
            "query",
            s(&root.join("img0000.jpg")),
            "--index",
            s(&idx),
            "--json",
        ])
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another fc7 process"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        q.status.success(),
        "query during a run: {}",
        String::from_utf8_lossy(&q.stderr)
    );

    let partial = indexed_count(&idx);
    assert!((4..60).contains(&partial), "killed run indexed {partial}");
    let sum = index(&root, &idx, &[]);
    assert_eq!(sum["unchanged"].as_u64().unwrap(), partial, "{sum}");
    assert_eq!(sum["added"].as_u64().unwrap() + partial, 60);
    assert_eq!(sum["total_indexed"], 60);
    let r = query(&root.join("img0059.jpg"), &idx, &["-k", "59"]);
    let mut paths = neighbour_paths(&r);
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 60, "every file once");
}

#[test]
fn a_missing_or_damaged_graph_falls_back_and_is_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("photos");
    plain_folder(&root, 6);
    let idx = d.path().join("idx");
    index(&root, &idx, &[]);
    let img = root.join("img0004.jpg");
    let before = neighbour_paths(&query(&img, &idx, &[]));
    for f in std::fs::read_dir(&idx).unwrap() {
        let p = f.unwrap().path();
        if p.to_string_lossy().ends_with(".hnsw.data") {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    assert_eq!(
        neighbour_paths(&query(&img, &idx, &[])),
        before,
        "damaged graph: brute force gives the same answer"
    );
    let sum = index(&root, &idx, &[]);
    assert!(
        sum["graph"].as_str().unwrap().starts_with("Rebuilt"),
        "{sum}"
    );
    assert_eq!(neighbour_paths(&query(&img, &idx, &[])), before);
}

#[test]
fn a_missing_runtime_library_is_a_one_line_error() {
    let d = tempfile::tempdir().unwrap();
    plain_folder(&d.path().join("p"), 1);
    let out = fc7()
        .args([
            "index",
            s(&d.path().join("p")),
            "--index",
            s(&d.path().join("i")),
            "--model",
            s(model()),
        ])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/libonnxruntime.so") && err.trim().lines().count() == 1,
        "{err}"
    );
}
