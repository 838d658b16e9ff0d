//! The embedder's session paths. The optimised-graph cache (`infer::cache`) against hostile
//! changes: a model rewritten in place must never be served from the entry of its old version,
//! a damaged entry is rebuilt, and a cached session computes what an uncached one does. IO
//! binding (`infer::binding`, used with CUDA) computes what a plain run does, on the CPU
//! provider, across changing batch sizes and with logits asked for or not. fc7's own LRN
//! operator (`infer::lrn`, which CPU sessions run) computes what ONNX Runtime computes on the
//! exported graph, fp32 and int8.

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
    write_at(path, seed, 67);
}

/// `small()` taking `input` × `input` images.
fn write_at(path: &Path, seed: u64, input: usize) {
    let c = AlexNetConfig { input, ..small() };
    let info = ModelInfo {
        classes: vec![],
        preprocess: Preprocess::imagenet(input as u32),
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

/// fc7 of `x` ([n, 3, 67, 67]) from `model` on the CPU with or without fc7's operators, through
/// a fresh cache at `cache`; and whether the cached graph holds each operator named in `ops`.
fn own_run(
    model: &Path,
    own_operators: bool,
    cache: &Path,
    x: &[f32],
    n: usize,
    ops: &[&[u8]],
) -> (Vec<f32>, Vec<bool>) {
    let opts = EmbedOptions {
        device: Device::Cpu,
        cache: Some(cache.to_path_buf()),
        own_operators,
        ..Default::default()
    };
    let mut e = Embedder::open(model, &opts).unwrap();
    assert_eq!(e.prepared, Prepared::Saved);
    let graph = std::fs::read(entries(cache)[0].join("model.onnx")).unwrap();
    let ours = graph.windows(3).any(|w| w == b"fc7");
    let has = |op: &&[u8]| ours && graph.windows(op.len()).any(|w| w == *op);
    (
        e.run(x, n, false).unwrap().fc7,
        ops.iter().map(has).collect(),
    )
}

fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let norm = b.iter().map(|v| v * v).sum::<f32>().sqrt();
    max_diff(a, b) / (norm / (b.len() as f32).sqrt()).max(1e-12)
}

/// Inputs ×8 so that the LRN's sums move its output by tens of percent (α Σ x² against k = 2),
/// not by rounding: an LRN window shifted by one channel in `infer::lrn` gives 3e-2 here.
#[test]
fn fc7_operators_compute_what_the_exported_graph_does() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("m.onnx");
    write(&model, 4);
    let n = 3;
    let inputs = |side: usize| -> Vec<f32> {
        (0..n * 3 * side * side)
            .map(|i| 8.0 * ((i * 29 % 89) as f32 - 44.0) / 22.0)
            .collect()
    };
    let x = inputs(67);
    let ops: [&[u8]; 2] = [b"Lrn", b"Winograd"];
    // fc7 with and without fc7's operators, which of `ops` each graph holds, and how far apart
    let both = |model: &Path, x: &[f32], tag: &str, ops: &[&[u8]]| {
        let cache = |i: usize| d.path().join(format!("{tag}{i}"));
        let (plain, plain_ops) = own_run(model, false, &cache(1), x, n, ops);
        let (fused, fused_ops) = own_run(model, true, &cache(2), x, n, ops);
        ((plain_ops, fused_ops), rel_diff(&fused, &plain))
    };
    // at 67 × 67, conv3..5 work on 3 × 3 maps, too small for Winograd
    let (held, r) = both(&model, &x, "c", &ops);
    assert_eq!(held, (vec![false, false], vec![true, false]));
    assert!(r < 1e-5, "fp32: {r}");
    // at 224 × 224 they are 13 × 13 (and conv2's 27 × 27, as F(2×2, 5×5)): measured 2.9e-6
    // with both operators (1.5e-6 with only the 3×3 layers); one sign flipped in the Winograd
    // output transform gives 1.2, in its input transform 2.8, in G (the filters' transform) 0.83
    let wide = d.path().join("wide.onnx");
    write_at(&wide, 4, 224);
    let (held, r) = both(&wide, &inputs(224), "w", &ops);
    assert_eq!(held, (vec![false, false], vec![true, true]));
    assert!(r < 1e-5, "fp32 at 224: {r}");

    // int8: DequantizeLinear → Relu → LRN → QuantizeLinear in NHWC as one 8-bit operator
    let cal = d.path().join("cal");
    for i in 0..8 {
        let img = crate::common::picture(40 + i, 120, 100);
        crate::common::write(&cal, &format!("c{i}.jpg"), &crate::common::jpeg(&img));
    }
    let int8 = d.path().join("m-int8.onnx");
    let q = fc7::infer::quantize::QuantizeOptions {
        images: 8,
        threads: 2,
        ort_lib: None,
        max_pixels: u64::MAX,
    };
    fc7::infer::quantize::quantize(&model, &cal, &int8, &q).unwrap();
    // int8 convolutions stay ONNX Runtime's
    let (held, r) = both(&int8, &x, "q", &[b"QLrn", b"Winograd"]);
    assert_eq!(held, (vec![false, false], vec![true, false]));
    // measured 0 here; rounding before QuantizeLinear may move a value by one step of 8 bits
    // elsewhere. A window short of one channel in the NHWC path gives 1.9e-2; fc7.QLrn
    // quantising with x's scale instead of y's, 1.8.
    assert!(r < 5e-3, "int8: {r}");
}
