//! fc7's home ($FC7_HOME): the defaults every command shares whatever the current folder, and
//! the one-line errors that say what to do when something is missing — nothing left behind.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::{error_lines, json, plain_folder, s};

/// fc7 with `home` as $FC7_HOME, run from `cwd`.
fn fc7_in(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    common::fc7()
        .env("FC7_HOME", home)
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The single error line of a failed run, and the home still empty.
fn fails_in_one_line(out: &Output, home: &Path) -> String {
    assert_eq!(out.status.code(), Some(1));
    let errors = error_lines(out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let left: Vec<_> = std::fs::read_dir(home).unwrap().collect();
    assert!(left.is_empty(), "left behind in the home: {left:?}");
    errors[0].clone()
}

#[test]
fn defaults_meet_in_the_home_from_any_folder() {
    let d = tempfile::tempdir().unwrap();
    let (home, elsewhere, photos) = (
        d.path().join("home"),
        d.path().join("cwd"),
        d.path().join("p"),
    );
    std::fs::create_dir_all(&elsewhere).unwrap();
    plain_folder(&photos, 3);
    ok(fc7_in(&home, &elsewhere, &["model", "init", "--random"]));
    assert!(home.join("models/default.onnx").is_file());
    ok(fc7_in(&home, &elsewhere, &["index", s(&photos), "--quiet"]));
    assert!(home.join("indexes/default/catalog.sqlite").is_file());
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing in the cwd"
    );
    let info = json(&ok(fc7_in(&home, d.path(), &["info", "--json"])));
    assert_eq!(info["home"].as_str(), Some(s(&home)), "{info}");
    assert_eq!(info["indexed"], 3);
    // The caches it names and sizes: here a planted graph and pack under $FC7_CACHE.
    let cache = d.path().join("cache");
    for (file, bytes) in [
        ("optimized/e/model.onnx", 1000),
        ("packs/p/pixels.bin", 5000),
    ] {
        std::fs::create_dir_all(cache.join(file).parent().unwrap()).unwrap();
        std::fs::write(cache.join(file), vec![0u8; bytes]).unwrap();
    }
    let out = common::fc7()
        .env("FC7_HOME", &home)
        .env("FC7_CACHE", &cache)
        .env_remove("FC7_PACKS")
        .args(["info", "--json"])
        .output()
        .unwrap();
    let c = &json(&ok(out))["cache"];
    assert_eq!(c["dir"].as_str(), Some(s(&cache)), "{c}");
    assert_eq!(c["packs"].as_str(), Some(s(&cache.join("packs"))), "{c}");
    assert_eq!(
        (c["optimized_bytes"].as_u64(), c["packs_bytes"].as_u64()),
        (Some(1000), Some(5000))
    );
    let q = json(&ok(fc7_in(
        &home,
        d.path(),
        &["query", s(&photos.join("img0001.jpg")), "--json"],
    )));
    assert_eq!(q["results"][0]["neighbours"][0]["rank"], 0, "{q}");
}

#[test]
fn without_a_model_index_says_how_to_get_one_and_creates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    plain_folder(&d.path().join("p"), 1);
    let out = fc7_in(&home, d.path(), &["index", s(&d.path().join("p"))]);
    let line = fails_in_one_line(&out, &home);
    for want in [
        s(&home.join("models/default.onnx")),
        "fc7 train",
        "fc7 model init --random",
        "--model",
    ] {
        assert!(line.contains(want), "{want} missing from: {line}");
    }
}

#[test]
fn a_missing_folder_to_index_is_named_and_creates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = fc7_in(&home, d.path(), &["index", "/nonexistent/photos"]);
    let line = fails_in_one_line(&out, &home);
    assert_eq!(line, "fc7: /nonexistent/photos: no such file or folder");
}

#[test]
fn querying_before_any_index_says_how_to_build_one() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    plain_folder(&d.path().join("p"), 1);
    let out = fc7_in(
        &home,
        d.path(),
        &["query", s(&d.path().join("p/img0000.jpg"))],
    );
    let line = fails_in_one_line(&out, &home);
    assert!(
        line.contains("no index here yet") && line.contains("fc7 index"),
        "{line}"
    );
}

#[test]
fn a_query_file_that_is_not_an_image_is_named_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    plain_folder(&d.path().join("p"), 2);
    ok(fc7_in(&home, d.path(), &["model", "init", "--random"]));
    ok(fc7_in(
        &home,
        d.path(),
        &["index", s(&d.path().join("p")), "--quiet"],
    ));
    let text = d.path().join("notes.jpg");
    std::fs::write(&text, "not a picture").unwrap();
    let out = fc7_in(&home, d.path(), &["query", s(&text)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(s(&text)) && err.contains("not an image"),
        "{err}"
    );
    // It is decoded before the model opens: the answer needs no ONNX Runtime, and no 240 MB read.
    let out = common::fc7()
        .env("FC7_HOME", &home)
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .current_dir(d.path())
        .args(["query", s(&text)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1)
            && err.contains("not an image")
            && !err.contains("nonexistent"),
        "{err}"
    );
}
