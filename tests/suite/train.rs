//! `fc7 train`: learning on generated classes (through the real binary), export parity with
//! ONNX Runtime, and resume equal to an uninterrupted run.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    error_lines, fc7, json_file, run_ok, run_on_a_small_disk, s, temp_leftovers, Counter, StopAfter,
};
use fc7::train::epoch::Outcome;
use fc7::train::run::TrainOptions;

#[test]
fn quick_preset_learns_generated_classes_and_the_model_indexes() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    common::synthetic_dataset(&data, 5, 200);
    let stem = d.path().join("m");
    // At --lr 0.01 this small set's last epochs swing by several points with the CPU's float
    // rounding (AVX2 and AVX-512 kernels differ); 0.005 learns it on both.
    common::train_quick(&data, &stem, &["--epochs", "8", "--lr", "0.005"]);
    let log = std::fs::read_to_string(d.path().join("m.log.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 8);
    let plot = fc7::imaging::decode_file(&d.path().join("m.png")).unwrap();
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
    fc7::train::dataset::synthetic(dir, 3, 20, 72, 4).unwrap();
}

/// A temporary folder with `small_data` in data/, and the output stem m.
fn small_fixture() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (data, stem) = (d.path().join("data"), d.path().join("m"));
    small_data(&data);
    (d, data, stem)
}

/// `fc7 train DATA` on the quick network on the CPU, writing STEM.*, quietly, with `extra`.
fn quick_cpu<'a>(data: &'a Path, stem: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let base = ["train", s(data), "--preset", "quick", "--device", "cpu"];
    [&base[..], &["--out", s(stem), "--quiet"], extra].concat()
}

fn options(data: &Path, out: &Path, epochs: usize) -> TrainOptions {
    let mut recipe = fc7::train::recipe::preset("quick").unwrap();
    recipe.epochs = epochs;
    recipe.batch = 16;
    TrainOptions {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        recipe,
        resume: false,
        device: fc7::device::Device::Cpu,
        max_steps: None,
        cache: Some(data.join("..").join("cache")),
        gpus: 1,
        asked: fc7::train::recipe::Asked {
            epochs: true,
            anneal_epochs: true,
        },
        ten_crop: true,
    }
}

#[test]
fn exported_model_matches_the_engine_in_onnx_runtime() {
    let d = tempfile::tempdir().unwrap();
    small_data(&d.path().join("data"));
    let stem = d.path().join("m");
    let res = fc7::train::run::train(
        &options(&d.path().join("data"), &stem, 1),
        &(),
        &AtomicBool::new(false),
    )
    .unwrap();
    let ckpt = d.path().join("m.ckpt");
    let (state, params, _) = fc7::train::checkpoint::load(&ckpt).unwrap();
    assert_eq!(state.epoch, 1);
    // The header alone (what picks a resumed run's engine) says what the whole file does.
    let head = fc7::train::checkpoint::state_of(&ckpt).expect("a header");
    assert_eq!((head.recipe, head.epoch), (state.recipe.clone(), 1));
    let cut = d.path().join("cut.ckpt");
    std::fs::write(&cut, &std::fs::read(&ckpt).unwrap()[..20]).unwrap();
    assert!(fc7::train::checkpoint::state_of(&cut).is_none());
    let cfg = &state.config;
    let n = 3;
    let x: Vec<f32> = (0..n * 3 * cfg.input * cfg.input)
        .map(|i| ((i * 2654435761usize) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let tensors: Vec<Vec<f32>> = params.into_iter().map(|p| p.data).collect();
    let engine = fc7::train::network::forward(
        &fc7::train::engine::cpu::Cpu,
        cfg,
        &tensors,
        x.clone(),
        n,
        fc7::train::network::Mode::Eval,
    )
    .unwrap();
    let opts = fc7::infer::embed::EmbedOptions {
        device: fc7::device::Device::Cpu,
        ..Default::default()
    };
    let mut e = fc7::infer::embed::Embedder::open(res.model.as_ref().unwrap(), &opts).unwrap();
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

#[test]
fn resume_without_a_checkpoint_says_it_starts_fresh_and_max_steps_stops_with_one() {
    let (d, data, _) = small_fixture();
    let mut opts = options(&data, &d.path().join("m"), 2);
    opts.resume = true;
    opts.max_steps = Some(2);
    let counted = Counter::default();
    let res = fc7::train::run::train(&opts, &counted, &AtomicBool::new(false)).unwrap();
    let notes = counted.notes.lock().unwrap().clone();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("no checkpoint") && n.contains("starts fresh")),
        "{notes:?}"
    );
    assert_eq!(res.outcome, Outcome::StepLimit);
    assert_eq!(counted.batches.load(Ordering::SeqCst), 2);
    assert!(d.path().join("m.ckpt").is_file() && !d.path().join("m.onnx").exists());
    // The checkpoint holds those two steps; resuming goes on from the third, to the end of
    // the checkpoint's 2 epochs when --epochs is not given (not the preset's 4), and says
    // nothing of an --anneal-epochs it was not given either.
    opts.max_steps = None;
    (opts.recipe.epochs, opts.asked.epochs) = (4, false);
    (opts.recipe.anneal_epochs, opts.asked.anneal_epochs) = (3, false);
    let counted = Counter::default();
    let res = fc7::train::run::train(&opts, &counted, &AtomicBool::new(false)).unwrap();
    assert_eq!((res.outcome, res.state.steps), (Outcome::Finished, 6));
    assert_eq!(counted.batches.load(Ordering::SeqCst), 4);
    assert_eq!(res.state.recipe.anneal_epochs, 1);
    let notes = counted.notes.lock().unwrap().clone();
    assert!(
        !notes.iter().any(|n| n.contains("not applied")),
        "{notes:?}"
    );
    assert!(d.path().join("m.onnx").is_file());
}

#[test]
fn resuming_after_an_interruption_equals_an_uninterrupted_run() {
    let (d, data, _) = small_fixture();
    let watched = Counter::default();
    let straight = fc7::train::run::train(
        &options(&data, &d.path().join("a"), 2),
        &watched,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(straight.outcome, Outcome::Finished);
    assert_eq!(straight.state.steps, 6);
    // The first epoch's end writes a checkpoint, and so does the last, even where it follows the
    // first sooner than `cadence` would write one in the middle of a run.
    assert_eq!(*watched.checkpoints.lock().unwrap(), [1, 2]);

    let stop = AtomicBool::new(false);
    // 48 training images at batch 16: 3 batches an epoch; stop inside the second epoch. A
    // step is reported once the next one is queued, so the stop raised at the fourth report
    // comes with five steps taken.
    let progress = StopAfter::new(4, &stop);
    let first =
        fc7::train::run::train(&options(&data, &d.path().join("b"), 2), &progress, &stop).unwrap();
    assert_eq!(first.outcome, Outcome::Interrupted);
    assert_eq!((first.state.epoch, first.state.next_batch), (1, 2));
    assert_eq!(first.state.steps, 5);
    let mut opts = options(&data, &d.path().join("b"), 2);
    opts.resume = true;
    // The resumed run takes only the step left, and says nothing about starting fresh.
    let counted = Counter::default();
    let resumed = fc7::train::run::train(&opts, &counted, &AtomicBool::new(false)).unwrap();
    assert_eq!(counted.batches.load(Ordering::SeqCst), 1);
    assert_eq!(*counted.checkpoints.lock().unwrap(), [2]);
    let notes = counted.notes.lock().unwrap().clone();
    assert!(!notes.iter().any(|n| n.contains("fresh")), "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.ends_with("1 of 2 epochs done and 2 batches of epoch 2")),
        "{notes:?}"
    );
    assert_eq!(resumed.state.steps, 6);
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
    let (d, data, stem) = small_fixture();
    let refused = [
        ("--dropout", "1"),
        ("--momentum", "1"),
        ("--batch", "0"),
        ("--precision", "bf16"),
        ("--gpus", "2"),
    ];
    for (flag, value) in refused {
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
    let recipe = [
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
        "--init",
        "caffe",
        "--device",
        "cpu",
        "--no-ten-crop",
    ];
    let out = common::train_quick(&data, &stem, &recipe);
    let manifest = json_file(&d.path().join("m.json"));
    // Without the 10 crops the model and the last line give the centre crop's error.
    let metrics = &manifest["provenance"]["metrics"];
    assert!(metrics["val_top1_error_10crop"].is_null(), "{metrics}");
    let centre = metrics["val_top1_error_centre"]
        .as_f64()
        .expect("the centre crop's") as f32;
    let said = format!(
        "validation top-1 error {:.2}% on the centre crop",
        centre * 100.0
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&said),
        "{said}: {out:?}"
    );
    assert_eq!(manifest["provenance"]["recipe"]["init"], "caffe");
    let r = &manifest["provenance"]["recipe"];
    assert_eq!(r["dropout"], 0.25);
    assert_eq!(r["momentum"].as_f64().unwrap() as f32, 0.8);
    assert_eq!(r["weight_decay"].as_f64().unwrap() as f32, 0.001);
    assert_eq!(
        (r["pca_std"].as_f64(), r["max_lr_drops"].as_u64()),
        (Some(0.0), Some(1))
    );
    assert_eq!(r["anneal_epochs"], 0);
    assert_eq!(r["precision"], "tf32", "the default, recorded");
    // Without annealing, the single epoch ran at the full learning rate.
    let log = std::fs::read_to_string(d.path().join("m.log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["lr"].as_f64().unwrap() as f32, 0.01);
}

/// Runs `fc7 train` on `data` with `args`, expecting failure; returns stderr.
fn train_fails(data: &Path, stem: &Path, args: &[&str]) -> String {
    let out = fc7().args(quick_cpu(data, stem, args)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

/// The one error line of a failed run (progress lines aside).
fn error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("fc7: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    lines[0]
}

#[test]
fn a_network_at_chance_stops_the_run_and_leaves_no_model() {
    let (d, data, stem) = small_fixture();
    // The paper's initialisation gives every image nearly the same fc7, so every prediction is
    // one class; at this rate nothing moves. 48 training images at batch 4: 12 steps an epoch,
    // so the guard (from 100 steps on) judges at the end of epoch 9.
    let err = train_fails(
        &data,
        &stem,
        &[
            "--init", "paper", "--lr", "1e-6", "--batch", "4", "--epochs", "12",
        ],
    );
    let line = error_line(&err);
    assert!(
        line.contains("still at chance after 108 steps (9 epochs)") && line.contains("--init he"),
        "{err}"
    );
    assert!(!d.path().join("m.onnx").exists() && !d.path().join("m.json").exists());
    // Before the guard could judge, the plateau rule left the rate alone: the network was at
    // chance, not on a plateau.
    let log = std::fs::read_to_string(d.path().join("m.log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 8);
    for line in log.lines() {
        let lr = serde_json::from_str::<serde_json::Value>(line).unwrap()["lr"].as_f64();
        assert!((lr.unwrap() - 1e-6).abs() < 1e-9, "{log}");
    }
}

#[test]
fn a_diverging_run_stops_on_its_first_non_finite_loss_and_keeps_its_checkpoint() {
    let (d, data, stem) = small_fixture();
    // Step 1's loss is computed before its update, so it is finite; the update at this rate
    // makes step 2's infinite.
    let args = ["--lr", "1e30", "--batch", "4", "--epochs", "1"];
    let first = [&["--max-steps", "1"][..], &args].concat();
    let out = fc7()
        .args(quick_cpu(&data, &stem, &first))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ckpt = d.path().join("m.ckpt");
    let saved = std::fs::read(&ckpt).unwrap();
    let err = train_fails(&data, &stem, &[&args[..], &["--resume"]].concat());
    let line = error_line(&err);
    assert!(
        line.contains("epoch 1, batch 2 (the run diverged)") && line.contains("lower --lr"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        saved,
        "the checkpoint changed"
    );
    assert!(!d.path().join("m.onnx").exists());
}

#[test]
fn a_damaged_checkpoint_is_refused_in_one_line_naming_it() {
    let (d, data, stem) = small_fixture();
    let args = ["--batch", "4", "--epochs", "2"];
    run_ok(&quick_cpu(
        &data,
        &stem,
        &[&["--max-steps", "3"][..], &args].concat(),
    ));
    // The dataset's pack went where $FC7_PACKS says.
    let packs: Vec<String> = std::fs::read_dir(common::pack_cache())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(packs.iter().any(|p| p.starts_with("data-72-")), "{packs:?}");
    let ckpt = d.path().join("m.ckpt");
    let good = std::fs::read(&ckpt).unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let truncated = good[..good.len() - 100].to_vec();
    for damaged in [flipped, truncated] {
        std::fs::write(&ckpt, &damaged).unwrap();
        let err = train_fails(&data, &stem, &[&args[..], &["--resume"]].concat());
        let line = error_line(&err);
        assert!(
            line.contains("m.ckpt") && line.contains("checksum"),
            "{err}"
        );
        assert_eq!(std::fs::read(&ckpt).unwrap(), damaged, "left as found");
    }
    std::fs::write(&ckpt, &good).unwrap();
    run_ok(&quick_cpu(
        &data,
        &stem,
        &[&["--resume"][..], &args].concat(),
    ));
    assert!(d.path().join("m.onnx").is_file());
}

/// `fc7 ARGS` started, its standard error read up to the first line starting with `prefix`;
/// the lines after it are left to read.
fn started_until(
    args: &[&str],
    prefix: &str,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::io::BufRead;
    let mut child = fc7()
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    for line in &mut lines {
        if line.unwrap().starts_with(prefix) {
            break;
        }
    }
    (child, lines)
}

#[test]
fn ctrl_c_saves_a_checkpoint_exits_130_and_resume_finishes_the_run() {
    let (d, data, stem) = small_fixture();
    let train = quick_cpu(&data, &stem, &["--batch", "4", "--epochs", "3"]);
    let (mut child, lines) = started_until(&train, "epoch   1");
    // SIGINT, as Ctrl-C sends it, while epoch 2 runs (an epoch here takes about a second).
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert_eq!(child.wait().unwrap().code(), Some(130), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("interrupted at epoch 2")),
        "{rest:?}"
    );
    assert!(d.path().join("m.ckpt").is_file() && !d.path().join("m.onnx").exists());
    let out = run_ok(&[&train[..], &["--resume"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("starts fresh"), "{err}");
    let log = std::fs::read_to_string(d.path().join("m.log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(d.path().join("m.onnx").is_file());
}

/// kill -9 in the middle of a run (no handler runs): the checkpoint left is a whole one, from the
/// last epoch's end that wrote one (`cadence`: the first always). A resumed run killed while it
/// writes its own checkpoint (`FC7_FAULT`) leaves that one as it was, and the next `--resume`
/// finishes the run, every epoch in its log, and removes the half-written file.
#[test]
fn kill_9_mid_run_or_mid_checkpoint_leaves_a_checkpoint_that_resume_finishes() {
    let (d, data, stem) = small_fixture();
    let train = quick_cpu(&data, &stem, &["--batch", "8", "--epochs", "5"]);
    // The reader kept open until the kill, so that the run never writes to a closed pipe.
    let (mut child, _lines) = started_until(&train, "epoch   2");
    child.kill().unwrap();
    child.wait().unwrap();
    let ckpt = d.path().join("m.ckpt");
    let (state, _, _) = fc7::train::checkpoint::load(&ckpt).expect("a whole checkpoint");
    assert!(
        (1..5).contains(&state.epoch),
        "saved at epoch {}",
        state.epoch
    );
    let saved = std::fs::read(&ckpt).unwrap();

    let resume = [&train[..], &["--resume"]].concat();
    let out = fc7()
        .args(&resume)
        .env("FC7_FAULT", "checkpoint-written-but-its-checksum")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        saved,
        "the checkpoint before"
    );
    // (Two, where the kill above landed inside a checkpoint of its own.)
    assert!(!temp_leftovers(d.path()).is_empty(), "the half-written one");

    let out = run_ok(&resume);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("starts fresh"), "{err}");
    // It says where it goes on from: the checkpoint's epoch, not the last one printed.
    let from = format!("{} of 5 epochs done", state.epoch);
    assert!(
        err.lines()
            .any(|l| l.contains("--resume: going on from") && l.contains(&from)),
        "{err}"
    );
    let log = std::fs::read_to_string(d.path().join("m.log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 5, "{log}");
    assert!(d.path().join("m.onnx").is_file());
    assert!(temp_leftovers(d.path()).is_empty());
}

#[test]
fn a_full_disk_at_a_checkpoint_is_one_error_and_keeps_the_previous_checkpoint() {
    let (d, data, stem) = small_fixture();
    let args = [
        "train",
        s(&data),
        "--out",
        s(&stem),
        "--quiet",
        "--preset",
        "quick",
        "--device",
        "cpu",
        "--batch",
        "8",
        "--epochs",
        "2",
    ];
    run_ok(&[&args[..], &["--max-steps", "3"]].concat());
    let ckpt = d.path().join("m.ckpt");
    let good = std::fs::read(&ckpt).unwrap();
    // Half the checkpoint's size: the log and the curves still fit, the next checkpoint not.
    let kib = good.len() as u64 / 2048;
    assert!(
        kib > 300,
        "checkpoint of {} bytes is too small for this test",
        good.len()
    );
    let out = run_on_a_small_disk(kib, &[&args[..], &["--resume"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("m.ckpt"),
        "names the checkpoint: {errors:?}"
    );
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        good,
        "the previous checkpoint is kept"
    );
    assert!(temp_leftovers(d.path()).is_empty());
    assert!(!d.path().join("m.onnx").exists());
    run_ok(&[&args[..], &["--resume"]].concat());
    let log = std::fs::read_to_string(d.path().join("m.log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(d.path().join("m.onnx").is_file());
}

#[test]
fn resume_on_a_dataset_with_other_classes_is_refused_and_keeps_the_checkpoint() {
    let (d, data, stem) = small_fixture();
    let args = ["--device", "cpu", "--batch", "8", "--epochs", "2"];
    common::train_quick(&data, &stem, &[&args[..], &["--max-steps", "2"]].concat());
    let before = std::fs::read(d.path().join("m.ckpt")).unwrap();
    let other = d.path().join("other");
    fc7::train::dataset::synthetic(&other, 4, 10, 72, 5).unwrap();
    let err = train_fails(&other, &stem, &[&args[2..], &["--resume"]].concat());
    assert!(error_line(&err).contains("classes differ"), "{err}");
    assert_eq!(std::fs::read(d.path().join("m.ckpt")).unwrap(), before);
}
