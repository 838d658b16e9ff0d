//! `fc7 train`: learning on generated classes (through the real binary), export parity with
//! ONNX Runtime, and resume equal to an uninterrupted run.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{fc7, json_file, run_ok, s};
use fc7::train::{TrainOptions, TrainProgress};

#[test]
fn quick_preset_learns_generated_classes_and_the_model_indexes() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    run_ok(&[
        "dataset",
        "synthetic",
        s(&data),
        "--classes",
        "5",
        "--per-class",
        "200",
    ]);
    let stem = d.path().join("m");
    run_ok(&[
        "train",
        s(&data),
        "--preset",
        "quick",
        "--epochs",
        "8",
        "--out",
        s(&stem),
        "--quiet",
    ]);
    let log = std::fs::read_to_string(d.path().join("m.log.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 8);
    let plot = image::open(d.path().join("m.png")).unwrap();
    assert_eq!((plot.width(), plot.height()), (800, 300));
    let loss = |i: usize| epochs[i]["train_loss"].as_f64().unwrap();
    assert!(loss(7) < 0.5 * loss(0), "training loss should fall: {log}");
    let best = epochs
        .iter()
        .map(|e| e["val_top1_error"].as_f64().unwrap())
        .fold(1.0, f64::min);
    assert!(
        best <= 0.10,
        "validation accuracy {} < 90%: {log}",
        1.0 - best
    );

    let manifest = json_file(&d.path().join("m.json"));
    assert_eq!(manifest["embedding_dim"], 4096);
    assert_eq!(manifest["classes"].as_array().unwrap().len(), 5);
    assert_eq!(manifest["provenance"]["recipe"]["preset"], "quick");
    assert!(
        manifest["provenance"]["metrics"]["val_top1_error_10crop"]
            .as_f64()
            .unwrap()
            <= 0.15
    );
    // The trained model drives the index: a validation picture's nearest training pictures
    // are mostly of its class.
    let idx = d.path().join("idx");
    run_ok(&[
        "index",
        s(&data.join("train")),
        "--index",
        s(&idx),
        "--model",
        s(&d.path().join("m.onnx")),
        "--quiet",
    ]);
    let class_dir = std::fs::read_dir(data.join("val"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let query = std::fs::read_dir(&class_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = run_ok(&["query", s(&query), "--index", s(&idx), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let class = class_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let same = v["results"][0]["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["path"].as_str().unwrap().contains(&format!("/{class}/")))
        .count();
    assert!(
        same >= 4,
        "only {same} of 6 neighbours share the class {class}: {v}"
    );
}

fn small_data(dir: &Path) {
    fc7::dataset::synthetic(dir, 3, 20, 72, 4).unwrap();
}

fn options(data: &Path, out: &Path, epochs: usize) -> TrainOptions {
    let mut recipe = fc7::recipe::preset("quick").unwrap();
    recipe.epochs = epochs;
    recipe.batch = 16;
    TrainOptions {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        recipe,
        resume: false,
        device: fc7::embed::Device::Cpu,
    }
}

#[test]
fn exported_model_matches_the_engine_in_onnx_runtime() {
    let d = tempfile::tempdir().unwrap();
    small_data(&d.path().join("data"));
    let stem = d.path().join("m");
    let res = fc7::train::train(
        &options(&d.path().join("data"), &stem, 1),
        &fc7::train::Quiet,
        &AtomicBool::new(false),
    )
    .unwrap();
    let (state, params, _) = fc7::checkpoint::load(&d.path().join("m.ckpt")).unwrap();
    assert_eq!(state.epoch, 1);
    let cfg = &state.config;
    let n = 3;
    let x: Vec<f32> = (0..n * 3 * cfg.input * cfg.input)
        .map(|i| ((i * 2654435761usize) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let tensors: Vec<Vec<f32>> = params.into_iter().map(|p| p.data).collect();
    let engine = fc7::network::forward(
        &fc7::cpu::Cpu,
        cfg,
        &tensors,
        x.clone(),
        n,
        fc7::network::Mode::Eval,
    )
    .unwrap();
    let opts = fc7::embed::EmbedOptions {
        device: fc7::embed::Device::Cpu,
        ..Default::default()
    };
    let mut e = fc7::embed::Embedder::open(res.model.as_ref().unwrap(), &opts).unwrap();
    let ort = e.run(&x, n, true).unwrap();
    for (name, a, b) in [
        ("fc7", &engine.fc7, &ort.fc7),
        (
            "logits",
            engine.logits.as_ref().unwrap(),
            ort.logits.as_ref().unwrap(),
        ),
    ] {
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{name} all zero");
        let worst = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{name}: max |engine - onnxruntime| = {worst}, scale {scale}"
        );
    }
}

/// Raises the stop flag after `after` batches, as Ctrl-C would.
struct StopAfter<'a> {
    after: usize,
    seen: AtomicUsize,
    stop: &'a AtomicBool,
}

impl TrainProgress for StopAfter<'_> {
    fn batch(&self, _: usize, _: f32, _: f32, _: f32) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn resuming_after_an_interruption_equals_an_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    small_data(&data);
    let straight = fc7::train::train(
        &options(&data, &d.path().join("a"), 2),
        &fc7::train::Quiet,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(!straight.interrupted);

    let stop = AtomicBool::new(false);
    // 48 training images at batch 16: 3 batches an epoch; stop inside the second epoch.
    let progress = StopAfter {
        after: 4,
        seen: AtomicUsize::new(0),
        stop: &stop,
    };
    let first =
        fc7::train::train(&options(&data, &d.path().join("b"), 2), &progress, &stop).unwrap();
    assert!(first.interrupted);
    assert_eq!((first.state.epoch, first.state.next_batch), (1, 1));
    let mut opts = options(&data, &d.path().join("b"), 2);
    opts.resume = true;
    let resumed = fc7::train::train(&opts, &fc7::train::Quiet, &AtomicBool::new(false)).unwrap();
    let sha = |stem: &str| {
        let m = json_file(&d.path().join(format!("{stem}.json")));
        m["onnx_sha256"].as_str().unwrap().to_string()
    };
    assert_eq!(
        sha("a"),
        sha("b"),
        "weights after resume differ from the uninterrupted run"
    );
    assert_eq!(straight.state.history.len(), resumed.state.history.len());
    // The quick preset anneals its last epoch, also across the interruption.
    let lrs: Vec<f32> = resumed.state.history.iter().map(|r| r.lr).collect();
    assert_eq!(lrs, [0.01, 0.01 / 10.0]);
    assert_eq!(
        straight.state.history[1].val_loss,
        resumed.state.history[1].val_loss
    );
}

#[test]
fn recipe_flags_reach_the_manifest_and_bad_values_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    small_data(&data);
    let stem = d.path().join("m");
    for (flag, value) in [("--dropout", "1"), ("--momentum", "1"), ("--batch", "0")] {
        let out = fc7()
            .args(["train", s(&data), "--preset", "quick", "--out", s(&stem)])
            .args([flag, value, "--device", "cpu", "--quiet"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {err}");
        assert!(err.contains(flag), "the error should name {flag}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!d.path().join("m.ckpt").exists());
    }
    run_ok(&[
        "train",
        s(&data),
        "--preset",
        "quick",
        "--epochs",
        "1",
        "--batch",
        "16",
        "--dropout",
        "0.25",
        "--momentum",
        "0.8",
        "--weight-decay",
        "0.001",
        "--pca-std",
        "0",
        "--max-lr-drops",
        "1",
        "--anneal-epochs",
        "0",
        "--device",
        "cpu",
        "--out",
        s(&stem),
        "--quiet",
    ]);
    let manifest = json_file(&d.path().join("m.json"));
    let r = &manifest["provenance"]["recipe"];
    assert_eq!(r["dropout"], 0.25);
    assert_eq!(r["momentum"].as_f64().unwrap() as f32, 0.8);
    assert_eq!(r["weight_decay"].as_f64().unwrap() as f32, 0.001);
    assert_eq!(
        (r["pca_std"].as_f64(), r["max_lr_drops"].as_u64()),
        (Some(0.0), Some(1))
    );
    assert_eq!(r["anneal_epochs"], 0);
    // Without annealing, the single epoch ran at the full learning rate.
    let log = std::fs::read_to_string(d.path().join("m.log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["lr"].as_f64().unwrap() as f32, 0.01);
}
