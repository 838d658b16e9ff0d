//! `fc7 index` / `fc7 query` / `fc7 info` driven through the real binary on generated folders.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    error_lines, fc7, json, mixed_folder, model, plain_folder, run_ok, run_on_a_small_disk_with, s,
    temp_leftovers,
};
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

/// `mixed_folder` in dir/photos, indexed into dir/idx.
fn indexed_mixed_folder(dir: &Path) -> (common::Photos, PathBuf) {
    let photos = mixed_folder(&dir.join("photos"));
    let idx = dir.join("idx");
    index(&photos.root, &idx, &[]);
    (photos, idx)
}

/// A new temporary folder with `n` small JPEGs in photos/, indexed into idx/ (all `n` added).
fn indexed_folder(n: u32) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = (d.path().join("photos"), d.path().join("idx"));
    plain_folder(&root, n);
    assert_eq!(index(&root, &idx, &[])["added"], n);
    (d, root, idx)
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
    let (photos, idx) = indexed_mixed_folder(d.path());
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
    let (photos, idx) = indexed_mixed_folder(d.path());
    let outside = d.path().join("copy of stripes.png");
    let stripes = fc7::imaging::decode_file(&photos.root.join("stripes.jpg")).unwrap();
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
    // A byte-for-byte copy outside the index is embedded at query time: its nearest neighbour
    // is the original, at the distance half-precision storage leaves (each component within
    // 2^-11 of itself, ~5e-4 of the vector's length at most) — over a thousand times nearer
    // than any other image — so query-time and index-time embedding agree.
    let copy = d.path().join("copy.jpg");
    std::fs::copy(photos.root.join("stripes.jpg"), &copy).unwrap();
    let r = query(&copy, &idx, &[]);
    assert_eq!(r["indexed"], false, "{r}");
    assert!(neighbour_paths(&r)[0].ends_with("stripes.jpg"), "{r}");
    let d = |i: usize| r["neighbours"][i]["distance"].as_f64().unwrap();
    assert!(d(0) < 1e-3 * d(1), "{r}");
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
    let (_d, root, idx) = indexed_folder(8);
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
    let (d, root, idx) = indexed_folder(3);
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

/// `fc7 index` of 60 small JPEGs in batches of two, each commit held 300 ms so that the run
/// outlives what the test does to it on any machine, returned once `rows` rows are saved.
fn index_in_background(root: &Path, idx: &Path, rows: u64, stdout: Stdio) -> std::process::Child {
    plain_folder(root, 60);
    let child = fc7()
        .args(["index", s(root), "--index", s(idx), "--model", s(model())])
        .args(["--batch", "2", "--quiet", "--json"])
        .env("FC7_STALL", "batch-committed")
        .env("FC7_STALL_MS", "300")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while indexed_count(idx) < rows && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// A rerun after an interrupted run embeds exactly what is missing, and every file is found once.
fn rerun_completes(root: &Path, idx: &Path, partial: u64) {
    let sum = index(root, idx, &[]);
    assert_eq!(sum["unchanged"].as_u64().unwrap(), partial, "{sum}");
    assert_eq!(sum["added"].as_u64().unwrap() + partial, 60);
    assert_eq!(sum["total_indexed"], 60);
    let r = query(&root.join("img0059.jpg"), idx, &["-k", "59"]);
    let mut paths = neighbour_paths(&r);
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 60, "every file once");
}

#[test]
fn kill_9_mid_run_then_rerun_loses_and_duplicates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = (d.path().join("photos"), d.path().join("idx"));
    let mut child = index_in_background(&root, &idx, 4, Stdio::null());
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
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        second.status.code(),
        Some(1),
        "second writer (first still running: {still_running}): {}",
        String::from_utf8_lossy(&second.stderr)
    );
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
    rerun_completes(&root, &idx, partial);
}

#[test]
fn ctrl_c_stops_indexing_with_130_keeps_what_was_embedded_and_rerun_resumes() {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = (d.path().join("photos"), d.path().join("idx"));
    let child = index_in_background(&root, &idx, 4, Stdio::piped());
    assert!(std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sum = json(&out);
    assert_eq!(sum["interrupted"], true, "{sum}");
    let partial = indexed_count(&idx);
    assert!(
        (4..60).contains(&partial),
        "interrupted run indexed {partial}"
    );
    assert_eq!(sum["total_indexed"].as_u64(), Some(partial), "{sum}");
    rerun_completes(&root, &idx, partial);
}

#[test]
fn a_missing_or_damaged_graph_falls_back_and_is_rebuilt() {
    let (_d, root, idx) = indexed_folder(6);
    let img = root.join("img0004.jpg");
    let before = neighbour_paths(&query(&img, &idx, &[]));
    for f in std::fs::read_dir(&idx).unwrap() {
        let p = f.unwrap().path();
        if p.to_string_lossy().ends_with(".fc7g") {
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

/// `fc7 index` of one image in dir/p into dir/i, with `extra` flags and ORT_DYLIB_PATH.
fn index_one_image(dir: &Path, extra: &[&str], ort_dylib_path: &str) -> std::process::Output {
    plain_folder(&dir.join("p"), 1);
    fc7()
        .args(["index", s(&dir.join("p")), "--index", s(&dir.join("i"))])
        .args(["--model", s(model())])
        .args(extra)
        .env("ORT_DYLIB_PATH", ort_dylib_path)
        .output()
        .unwrap()
}

#[test]
fn a_missing_runtime_library_is_a_one_line_error() {
    let d = tempfile::tempdir().unwrap();
    let out = index_one_image(d.path(), &[], "/nonexistent/libonnxruntime.so");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/libonnxruntime.so") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert_eq!(err.matches("ONNX Runtime:").count(), 1, "{err}");
}

/// A stand-in for an old ONNX Runtime: a shared library whose `OrtGetApiBase` reports 1.16.3,
/// built with the system C compiler (which building fc7 needs anyway).
fn old_runtime(dir: &Path) -> std::path::PathBuf {
    let c = dir.join("old.c");
    std::fs::write(
        &c,
        r#"typedef struct { const void *(*get_api)(unsigned); const char *(*version)(void); } Base;
static const void *get_api(unsigned v) { (void)v; return 0; }
static const char *version(void) { return "1.16.3"; }
static const Base base = { get_api, version };
const Base *OrtGetApiBase(void) { return &base; }
"#,
    )
    .unwrap();
    let lib = dir.join("libonnxruntime.so.1.16.3");
    let ok = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o", s(&lib), s(&c)])
        .status()
        .unwrap();
    assert!(ok.success(), "cc could not build the stand-in library");
    lib
}

#[test]
fn a_runtime_of_the_wrong_version_is_named_with_the_one_needed() {
    let d = tempfile::tempdir().unwrap();
    let lib = old_runtime(d.path());
    let out = index_one_image(d.path(), &["--ort-lib", s(&lib)], "");
    assert_eq!(out.status.code(), Some(1));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let want = fc7::infer::runtime::ORT_VERSION;
    assert!(
        errors[0].contains(s(&lib)) && errors[0].contains("1.16.3") && errors[0].contains(want),
        "{errors:?}"
    );
}

#[test]
fn a_full_disk_stops_indexing_in_one_line_and_the_next_run_completes() {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = (d.path().join("photos"), d.path().join("idx"));
    plain_folder(&root, 60);
    // Files of at most 300 KiB: room for the first batches' 8 KiB vectors, not for all 60,
    // nor for the 200 MB optimised graph, which an empty graph cache makes it try to save first
    // (a failed save must cost only the cache).
    let args = ["index", s(&root), "--index", s(&idx), "--model", s(model())];
    let (cache, ort) = (
        d.path().join("cache"),
        fc7::infer::runtime::cached_library(false),
    );
    let env = [
        ("FC7_CACHE", cache.as_os_str()),
        ("ORT_DYLIB_PATH", ort.as_os_str()),
    ];
    let small = [&args[..], &["--batch", "8", "--quiet"]].concat();
    let out = run_on_a_small_disk_with(300, &small, &env);
    assert_eq!(out.status.code(), Some(1));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(s(&idx)), "names the index: {errors:?}");
    let saved: Vec<_> = std::fs::read_dir(cache.join("optimized"))
        .unwrap()
        .collect();
    assert!(saved.is_empty(), "the failed save left {saved:?}");
    let partial = indexed_count(&idx);
    assert!(partial < 60, "stopped early ({partial})");
    assert!(temp_leftovers(&idx).is_empty());
    rerun_completes(&root, &idx, partial);
}

#[test]
fn read_only_destinations_are_one_line_errors_naming_them() {
    let d = tempfile::tempdir().unwrap();
    plain_folder(&d.path().join("p"), 2);
    let ro = d.path().join("ro");
    let Some(_guard) = common::ReadOnly::new(&ro) else {
        return;
    };
    let model_out = ro.join("m.onnx");
    let idx = ro.join("idx");
    for args in [
        vec!["model", "init", "--random", "--out", s(&model_out)],
        vec![
            "index",
            s(&d.path().join("p")),
            "--index",
            s(&idx),
            "--model",
            s(model()),
        ],
    ] {
        let out = fc7().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let errors = error_lines(&out);
        assert_eq!(errors.len(), 1, "{args:?}: {errors:?}");
        assert!(errors[0].contains(s(&ro)), "{errors:?}");
    }
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn query_draws_its_results_as_html_and_png() {
    let (d, root, idx) = indexed_folder(8);
    let odd = root.join("a&b <x>.jpg");
    std::fs::copy(root.join("img0003.jpg"), &odd).unwrap();
    index(&root, &idx, &[]);
    let (html, png) = (d.path().join("q.html"), d.path().join("q.png"));
    let out = run_ok(&[
        "query",
        s(&odd),
        "--index",
        s(&idx),
        "--json",
        "--html",
        s(&html),
        "--png",
        s(&png),
    ]);
    let r = &json(&out)["results"][0];
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("a&amp;b &lt;x&gt;.jpg") && !page.contains("<x>"),
        "escaped"
    );
    assert_eq!(
        page.matches("<img ").count(),
        1 + 6,
        "the query and six neighbours"
    );
    for n in r["neighbours"].as_array().unwrap().iter().skip(1) {
        let label = format!("{:.3}", n["distance"].as_f64().unwrap());
        assert!(page.contains(&label), "distance {label} drawn");
    }
    let pic = fc7::imaging::decode_file(&png).unwrap();
    let w = 7 * fc7::eval::figure::CELL_W + 8;
    assert_eq!(
        (pic.width(), pic.height()),
        (w, fc7::eval::figure::CELL_H + 8)
    );
}

#[test]
fn exported_vectors_read_back_as_the_index_holds_them() {
    let (d, root, idx) = indexed_folder(5);
    let out = d.path().join("export");
    run_ok(&["export-vectors", "--index", s(&idx), "--out", s(&out)]);
    let npy = std::fs::read(out.join("vectors.npy")).unwrap();
    let header_len = 10 + u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = std::str::from_utf8(&npy[10..header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (5, 4096)"),
        "{header}"
    );
    let data: Vec<f32> = npy[header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), 5 * 4096);
    let lines: Vec<Value> = std::fs::read_to_string(out.join("metadata.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    // Each exported row is its file's vector: querying the file (its stored vector) with
    // --exact finds itself at 0, and the distance to another row matches the exported rows'.
    let row = |i: usize| &data[i * 4096..(i + 1) * 4096];
    let path = |i: usize| lines[i]["path"].as_str().unwrap().to_string();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["row"], i);
        assert!(path(i).starts_with(s(&root)), "{l}");
    }
    let r = query(Path::new(&path(0)), &idx, &["--exact", "-k", "4"]);
    for n in r["neighbours"].as_array().unwrap().iter().skip(1) {
        let j = (0..5)
            .find(|&j| path(j) == n["path"].as_str().unwrap())
            .unwrap();
        let want: f32 = row(0)
            .iter()
            .zip(row(j))
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        let got = n["distance"].as_f64().unwrap() as f32;
        assert!(
            (got - want).abs() <= 1e-3 * want.max(1.0),
            "row {j}: {got} vs {want}"
        );
    }
}

/// Each file's exported vector, by path.
fn exported(dir: &Path, idx: &Path) -> HashMap<String, Vec<f32>> {
    let out = dir.join("export");
    run_ok(&["export-vectors", "--index", s(idx), "--out", s(&out)]);
    let npy = std::fs::read(out.join("vectors.npy")).unwrap();
    let header_len = 10 + u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let data: Vec<f32> = npy[header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let meta = std::fs::read_to_string(out.join("metadata.jsonl")).unwrap();
    meta.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| {
            let row = l["row"].as_u64().unwrap() as usize;
            let v = data[row * 4096..(row + 1) * 4096].to_vec();
            (l["path"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[test]
fn small_batches_give_each_file_its_own_vector_around_bad_files() {
    // Batches of 3 cut the mixed folder's good and bad files at many places; the first batch is
    // decoded while the model opens. Every file must still get the vector of one whole-folder batch.
    let d = tempfile::tempdir().unwrap();
    let (photos, whole) = indexed_mixed_folder(d.path());
    let small = d.path().join("small");
    let sum = index(&photos.root, &small, &["--batch", "3"]);
    assert_eq!(sum["added"], photos.valid.len(), "{sum}");
    assert_eq!(sum["skipped"], photos.bad.len(), "{sum}");
    let want = exported(&d.path().join("w"), &whole);
    let got = exported(&d.path().join("s"), &small);
    assert_eq!(got.len(), photos.valid.len());
    for (path, v) in &got {
        let w = &want[path];
        let err = v
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = w.iter().map(|x| x.abs()).fold(0f32, f32::max);
        assert!(
            err <= 1e-4 * scale.max(1.0),
            "{path}: off by {err} of {scale}"
        );
    }
}
