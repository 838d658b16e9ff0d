//! `fc7 train --self-supervised` (instance discrimination with a memory bank) on unlabelled
//! folders: a small run tells its images apart and moves its bank, resumes bit for bit with the
//! bank in its checkpoint, writes a model without the embedding head that says how it was
//! trained, and refuses bad settings in one line.

use crate::common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::{jpeg, json_file, picture, run_ok, s, write, Counter, StopAfter};
use fc7::train::epoch::Outcome;
use fc7::train::exemplar::Exemplar;
use fc7::train::instance::Instance;
use fc7::train::run::TrainOptions;

/// `n` distinct pictures, some in a nested folder, plus a text file and a truncated JPEG.
fn photos(root: &Path, n: u32) {
    for i in 0..n {
        let dir = if i % 3 == 0 { "trips/" } else { "" };
        write(
            root,
            &format!("{dir}p{i:03}.jpg"),
            &jpeg(&picture(i * 5 + 2, 130, 120)),
        );
    }
    write(root, "notes.txt", b"not a picture");
    write(root, "broken.jpg", &jpeg(&picture(4, 100, 100))[..200]);
}

fn options(photos: &Path, out: &Path, epochs: usize) -> TrainOptions {
    let mut recipe = fc7::train::recipe::preset("quick").unwrap();
    recipe.batch = 16;
    let ex = Exemplar {
        epoch_views: 384,
        ..Exemplar::default()
    };
    let objective = Instance {
        negatives: 8,
        temperature: 0.2,
        ..Instance::default()
    };
    let mut recipe = fc7::train::recipe::instance(recipe, ex, objective);
    recipe.epochs = epochs;
    recipe.anneal_epochs = 0;
    TrainOptions {
        data: photos.to_path_buf(),
        out: out.to_path_buf(),
        recipe,
        resume: false,
        device: fc7::device::Device::Cpu,
        max_steps: None,
        cache: Some(photos.join("..").join("cache")),
        gpus: 1,
        asked: fc7::train::recipe::Asked {
            epochs: true,
            anneal_epochs: true,
        },
        ten_crop: true,
    }
}

/// 24 images, 2 views each, 384 views an epoch (8 passes) at batch 16: 24 steps an epoch, with
/// the default reconstruction term. The straight run's bank moved from its seeded start and
/// its loss fell; a run stopped in its second epoch and resumed ends with the same bank,
/// weights and validation, bit for bit.
#[test]
fn a_run_moves_its_bank_learns_and_resumes_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("photos");
    photos(&data, 24);
    let straight = fc7::train::run::train(
        &options(&data, &d.path().join("a"), 3),
        &(),
        &AtomicBool::new(false),
    )
    .unwrap();
    let st = &straight.state;
    assert_eq!((st.steps, st.classes.len()), (72, 24));
    let start = fc7::train::instance::random_bank(24, 128, st.recipe.seed);
    assert_eq!(st.bank.len(), start.len());
    let moved = st
        .bank
        .chunks(128)
        .zip(start.chunks(128))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        moved, 24,
        "every image's bank row moves (never updated: 0 move)"
    );
    // The loss logged is the instance loss (chance: ln 23, its pair, 14 views and 8 rows);
    // held-out views scored against 24 bank rows by chance lose ln 24.
    let last = st.history.last().unwrap();
    assert!(last.train_loss < 0.8 * 23f32.ln(), "{:?}", st.history);
    assert!(last.val_loss < 0.95 * 24f32.ln(), "{:?}", st.history);

    let stop = AtomicBool::new(false);
    let progress = StopAfter::new(30, &stop);
    let b = d.path().join("b");
    let first = fc7::train::run::train(&options(&data, &b, 3), &progress, &stop).unwrap();
    assert_eq!(first.outcome, Outcome::Interrupted);
    assert_eq!(first.state.epoch, 1);
    let mut opts = options(&data, &b, 3);
    opts.resume = true;
    let resumed = fc7::train::run::train(&opts, &(), &AtomicBool::new(false)).unwrap();
    assert_eq!(resumed.state.steps, 72);
    assert!(
        resumed.state.bank == st.bank,
        "the bank differs after resume"
    );
    let sha = |stem: &str| json_file(&d.path().join(format!("{stem}.json")))["onnx_sha256"].clone();
    assert_eq!(sha("a"), sha("b"), "weights differ after resume");
    assert_eq!(resumed.state.history, {
        let mut h = st.history.clone();
        h.iter_mut()
            .zip(&resumed.state.history)
            .for_each(|(a, b)| (a.seconds, a.images_per_second) = (b.seconds, b.images_per_second));
        h
    });
}

/// Without --epochs, 24 images at 48 views an epoch (one pass of each, two views a pass) plan
/// 150 epochs, so that each is shown 150 times (1.2 million images would take 50,000), the last
/// 16 annealed, and say so; resumed without --epochs, the run keeps them.
#[test]
fn a_small_folder_without_epochs_plans_to_see_as_many_images_as_a_large_one() {
    let d = tempfile::tempdir().unwrap();
    let (data, stem) = (d.path().join("photos"), d.path().join("m"));
    photos(&data, 24);
    let mut opts = options(&data, &stem, 20);
    opts.recipe.anneal_epochs = 2;
    opts.recipe.exemplar.as_mut().unwrap().epoch_views = 48;
    opts.asked = fc7::train::recipe::Asked::default();
    opts.max_steps = Some(1);
    let notes = Counter::default();
    let first = fc7::train::run::train(&opts, &notes, &AtomicBool::new(false)).unwrap();
    let r = &first.state.recipe;
    assert_eq!((r.epochs, r.anneal_epochs), (150, 16));
    let said = notes.notes.lock().unwrap().clone();
    assert!(
        said.iter().any(|n| n
            .starts_with("150 epochs for 24 images, each shown 150 times (3600 in all)")
            && n.contains("--epochs")),
        "{said:?}"
    );
    // Resumed with a momentum asked that the checkpoint's recipe does not have: that alone is
    // named as not applied, not the epoch counts planned.
    opts.resume = true;
    opts.recipe.momentum = 0.8;
    let notes = Counter::default();
    let resumed = fc7::train::run::train(&opts, &notes, &AtomicBool::new(false)).unwrap();
    assert_eq!((resumed.state.steps, resumed.state.recipe.epochs), (2, 150));
    let said = notes.notes.lock().unwrap().clone();
    let kept: Vec<&String> = said.iter().filter(|n| n.contains("not applied")).collect();
    assert_eq!(kept.len(), 1, "{said:?}");
    assert!(kept[0].ends_with(": momentum 0.9 (asked 0.8)"), "{said:?}");
}

#[test]
fn the_binary_trains_a_folder_with_bad_files_and_exports_without_the_head() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("photos");
    photos(&data, 20);
    let stem = d.path().join("m");
    let out = run_ok(&[
        "train",
        s(&data),
        "--self-supervised",
        "--preset",
        "quick",
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--epoch-views",
        "80",
        "--temperature",
        "0.3",
        "--negatives",
        "16",
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
    assert!(err.contains("20 images told apart"), "{err}");
    let manifest = json_file(&d.path().join("m.json"));
    let ss = &manifest["provenance"]["exemplar"]["self_supervised"];
    assert_eq!(ss["temperature"], 0.3f32 as f64, "{manifest}");
    assert_eq!(
        (ss["negatives"].clone(), ss["dim"].clone()),
        (16.into(), 128.into())
    );
    assert_eq!(ss["reconstruct"], 50.0, "the default term: {manifest}");
    assert_eq!(ss["target"], "hog", "the default target: {manifest}");
    let lr = manifest["provenance"]["recipe"]["lr"].as_f64().unwrap();
    assert!(
        (lr - 0.001).abs() < 1e-8,
        "its rate, a tenth of the preset's: {lr}"
    );
    assert_eq!(manifest["embedding_dim"], 4096);
    assert!(
        manifest["logits_output"].is_null(),
        "exported without the head: {manifest}"
    );
    assert_eq!(manifest["preprocess"]["standardise"], "image", "{manifest}");
    dimmer_copy_is_its_source(d.path(), &data, &stem);

    let refuse = |extra: &[&str]| {
        let out = common::fc7()
            .args(["train", s(&data), "--preset", "quick", "--device", "cpu"])
            .args(["--out", s(&d.path().join("x")), "--quiet"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = refuse(&["--self-supervised", "--temperature", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--temperature must be positive"), "{err}");
    let (code, err) = refuse(&["--self-supervised", "--reconstruct=-1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--reconstruct must be 0 or more"), "{err}");
    let (code, err) = refuse(&["--self-supervised", "--reconstruct-target", "pixels"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"pixels\" is not a target: thumbnail or hog"),
        "{err}"
    );
    let (code, err) = refuse(&["--temperature", "0.1"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _) = refuse(&["--self-supervised", "--exemplar"]);
    assert_eq!(code, Some(2));
    let (code, err) = refuse(&["--exemplar", "--negatives", "9"]);
    assert_eq!(
        code,
        Some(2),
        "--negatives is self-supervised training's: {err}"
    );
    assert!(!d.path().join("x.onnx").exists());
}

/// Adds a PNG photo to `photos`, indexes them with the model at `stem` and queries a copy of
/// that PNG at 0.6 of its exposure: standardised per image, as the model was trained, the copy
/// is the same input but for 8-bit rounding, so it lies far nearer its source than any other
/// picture does (0.1 of the way to the next; with the manifest's standardisation ignored the
/// source was not among the two nearest).
fn dimmer_copy_is_its_source(dir: &Path, photos: &Path, stem: &Path) {
    let source = fc7::imaging::decode_file(&photos.join("p004.jpg")).unwrap();
    source.save(photos.join("source.png")).unwrap();
    let idx = dir.join("idx");
    let model = stem.with_extension("onnx");
    run_ok(&[
        "index",
        s(photos),
        "--index",
        s(&idx),
        "--model",
        s(&model),
        "--quiet",
    ]);
    let mut copy = source;
    copy.pixels_mut()
        .for_each(|p| p.0 = p.0.map(|c| (c as f32 * 0.6).round() as u8));
    let query = dir.join("dimmer.png");
    copy.save(&query).unwrap();
    let out = run_ok(&["query", s(&query), "--index", s(&idx), "-k", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = &v["results"][0]["neighbours"];
    assert!(
        n[0]["path"].as_str().unwrap().ends_with("source.png"),
        "{v}"
    );
    let (d0, d1) = (
        n[0]["distance"].as_f64().unwrap(),
        n[1]["distance"].as_f64().unwrap(),
    );
    assert!(d0 < 0.3 * d1, "source at {d0}, next at {d1}");
}
