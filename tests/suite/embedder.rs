//! The embedder's session paths. The optimised-graph cache (`infer::cache`) against hostile
//! changes: a model rewritten in place must never be served from the entry of its old version,
//! a damaged entry is rebuilt, and a cached session computes what an uncached one does. IO
//! binding (`infer::binding`, used with CUDA) computes what a plain run does, on the CPU
//! provider, across changing batch sizes and with logits asked for or not.

use std::path::{Path, PathBuf};

use fc7::device::Device;
use fc7::infer::cache::Prepared;
use fc7::infer::embed::{EmbedOptions, Embedder};
use fc7::model::manifest::{write_model, ModelInfo};
use fc7::model::{init_params, AlexNetConfig, Init, Preprocess};

fn small() -> AlexNetConfig {
    let mut c = AlexNetConfig::paper(3, 2);
    c.input = 67;
    c.hidden = 64;
    c
}

fn write(path: &Path, seed: u64) {
    let c = small();
    let info = ModelInfo {
        classes: vec![],
        preprocess: Preprocess::imagenet(67),
        provenance: serde_json::json!({"seed": seed}),
    };
    write_model(path, &c, &init_params(&c, Init::He, seed), info).unwrap();
}

/// fc7 of a fixed input under `model`, and where the session's graph came from.
fn run(model: &Path, cache: Option<PathBuf>) -> (Vec<f32>, Prepared) {
    let opts = EmbedOptions {
        device: Device::Cpu,
        cache,
        ..Default::default()
    };
    let mut e = Embedder::open(model, &opts).unwrap();
    let x: Vec<f32> = (0..3 * 67 * 67)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    (e.run(&x, 1, false).unwrap().fc7, e.prepared.clone())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn entries(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn a_changed_model_is_never_served_from_its_old_entry() {
    let d = tempfile::tempdir().unwrap();
    let (model, cache) = (d.path().join("m.onnx"), d.path().join("cache"));
    write(&model, 1);
    let (plain1, _) = run(&model, None);
    let (first, how) = run(&model, Some(cache.clone()));
    assert_eq!(how, Prepared::Saved);
    let (again, how) = run(&model, Some(cache.clone()));
    assert_eq!(how, Prepared::Cached);
    assert!(max_diff(&plain1, &first) < 1e-5 && max_diff(&plain1, &again) < 1e-5);

    write(&model, 2);
    let (plain2, _) = run(&model, None);
    assert!(
        max_diff(&plain1, &plain2) > 1e-2,
        "the two models must differ"
    );
    let (after, how) = run(&model, Some(cache.clone()));
    assert_eq!(how, Prepared::Saved, "served from the old model's entry");
    assert!(max_diff(&plain2, &after) < 1e-5);
    assert_eq!(entries(&cache).len(), 1, "the old entry is removed");

    // Damaged weights: the entry is dropped and built again, with the right answer.
    let data = entries(&cache)[0].join("model.onnx.data");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (rebuilt, how) = run(&model, Some(cache.clone()));
    assert_eq!(how, Prepared::Saved);
    assert!(max_diff(&plain2, &rebuilt) < 1e-5);
}

#[test]
fn io_binding_computes_what_a_plain_run_does() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("m.onnx");
    write(&model, 3);
    let open = |io_binding| {
        let opts = EmbedOptions {
            device: Device::Cpu,
            cache: None,
            io_binding: Some(io_binding),
            ..Default::default()
        };
        Embedder::open(&model, &opts).unwrap()
    };
    let (mut plain, mut bound) = (open(false), open(true));
    let per = 3 * 67 * 67;
    let x: Vec<f32> = (0..5 * per)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 20.0)
        .collect();
    for (n, logits) in [(2, true), (2, false), (3, false), (3, true), (5, true)] {
        let (a, b) = (
            plain.run(&x[..n * per], n, logits).unwrap(),
            bound.run(&x[..n * per], n, logits).unwrap(),
        );
        assert_eq!(a.fc7.len(), n * 64);
        assert!(max_diff(&a.fc7, &b.fc7) < 1e-6, "batch {n}");
        assert_eq!(a.logits.is_some(), b.logits.is_some());
        if let (Some(la), Some(lb)) = (a.logits, b.logits) {
            assert_eq!(la.len(), n * 3);
            assert!(max_diff(&la, &lb) < 1e-6, "logits, batch {n}");
        }
    }
}
