//! `fc7 train --exemplar` on unlabelled folders with bad files in them, through the binary:
//! a small run learns its surrogate classes, writes a model without fc8 that says what it is,
//! and that model indexes and finds an edited copy's source; bad input is refused in a line.

use crate::common;

use std::path::Path;

use common::{fc7, jpeg, json_file, picture, run_ok, s, write};

/// `n` distinct pictures, half of them in a nested folder, plus a text file and a truncated
/// JPEG that must be skipped with their reasons.
fn scenes(root: &Path, n: u32) {
    for i in 0..n {
        let dir = if i % 2 == 0 { "" } else { "trips/2024/" };
        let img = picture(i * 7 + 1, 150 + (i % 5) * 20, 140);
        write(root, &format!("{dir}p{i:03}.jpg"), &jpeg(&img));
    }
    write(root, "notes.txt", b"the list of places we went");
    write(root, "broken.jpg", &jpeg(&picture(3, 120, 120))[..300]);
}

fn log(stem_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(stem_dir.join("m.log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_exemplar_run_learns_its_surrogates_and_its_model_finds_an_edited_copy() {
    let d = tempfile::tempdir().unwrap();
    let photos = d.path().join("photos");
    scenes(&photos, 30);
    let stem = d.path().join("m");
    let out = run_ok(&[
        "train",
        s(&photos),
        "--exemplar",
        "--preset",
        "quick",
        "--device",
        "cpu",
        "--epochs",
        "4",
        "--epoch-views",
        "960",
        "--out",
        s(&stem),
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    for bad in ["notes.txt: not an image", "broken.jpg: "] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("skipped ") && l.contains(bad)),
            "{bad}: {err}"
        );
    }
    assert!(
        err.contains("30 training and 30 validation images in 30 classes (2 skipped)"),
        "{err}"
    );
    // 15 steps an epoch: after the 10th, one line with the expected duration (stderr is not a
    // terminal here, so there is no bar and no ETA of its own).
    let expected: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("expected: about"))
        .collect();
    assert_eq!(expected.len(), 1, "{err}");
    assert!(
        expected[0].contains("more for 4 epochs at ")
            && expected[0].contains("images/s on this machine (CPU"),
        "{err}"
    );
    // Chance is 29/30 wrong; the held-out views (never trained on) are mostly recognised.
    let epochs = log(d.path());
    let last = &epochs[3];
    assert!(
        last["val_top1_error"].as_f64().unwrap() <= 0.5,
        "{epochs:?}"
    );
    let loss = |e: &serde_json::Value| e["train_loss"].as_f64().unwrap();
    assert!(loss(last) < 0.5 * loss(&epochs[0]), "{epochs:?}");

    let manifest = json_file(&d.path().join("m.json"));
    let ex = &manifest["provenance"]["exemplar"];
    assert_eq!(ex["surrogate_classes"], 30, "{manifest}");
    assert_eq!(ex["views"]["epoch_views"], 960);
    assert_eq!(
        manifest["provenance"]["recipe"]["exemplar"]["zoom"],
        1.2f32 as f64
    );
    assert!(
        manifest["logits_output"].is_null(),
        "exported without fc8: {manifest}"
    );
    assert_eq!(manifest["classes"].as_array().map(Vec::len), Some(0));
    assert_eq!(manifest["preprocess"]["standardise"], "image", "{manifest}");

    // An edited copy (mirrored, darker) of a picture finds it first.
    let idx = d.path().join("idx");
    let model = d.path().join("m.onnx");
    run_ok(&[
        "index",
        s(&photos),
        "--index",
        s(&idx),
        "--model",
        s(&model),
        "--quiet",
    ]);
    let mut copy = image::imageops::flip_horizontal(&picture(12 * 7 + 1, 170, 140));
    copy.pixels_mut()
        .for_each(|p| p.0 = p.0.map(|c| (c as f32 * 0.8) as u8));
    let query = d.path().join("edited.jpg");
    std::fs::write(&query, jpeg(&copy)).unwrap();
    let out = run_ok(&["query", s(&query), "--index", s(&idx), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = v["results"][0]["neighbours"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first.ends_with("p012.jpg"), "{v}");
}

#[test]
fn exemplar_flags_and_unusable_folders_are_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let photos = d.path().join("photos");
    write(&photos, "only.jpg", &jpeg(&picture(1, 100, 100)));
    write(&photos, "readme.txt", b"one picture only");
    let stem = d.path().join("m");
    let train = |extra: &[&str]| {
        let out = fc7()
            .args(["train", s(&photos), "--preset", "quick", "--device", "cpu"])
            .args(["--out", s(&stem), "--quiet"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = train(&["--zoom", "1.5"]);
    assert_eq!(code, Some(2), "--zoom needs --exemplar: {err}");
    assert!(err.contains("--exemplar"), "{err}");
    let (code, err) = train(&["--exemplar", "--zoom", "9"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("fc7: ") && l.contains("--zoom must be in [1, 4]")),
        "{err}"
    );
    let (code, err) = train(&["--exemplar"]);
    assert_eq!(code, Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("fc7: "))
        .unwrap_or_default();
    assert!(
        line.contains("photos: exemplar training needs at least 2 readable images, found 1"),
        "{err}"
    );
    assert!(!d.path().join("m.onnx").exists());
}
