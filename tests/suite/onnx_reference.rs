//! The ONNX file fc7 writes, run by ONNX Runtime, against an independent forward pass written
//! here in plain loops (f64) straight from the paper's definitions: grouped convolution, ReLU,
//! LRN b = a / (k + α Σ a²)^β over n neighbouring channels, overlapping 3/2 max-pooling, and
//! fully connected layers.

use fc7::device::Device;
use fc7::infer::embed::{EmbedOptions, Embedder};
use fc7::model::{init_params, AlexNetConfig, Conv, Init, Lrn, Param, Preprocess};

struct T {
    c: usize,
    h: usize,
    w: usize,
    d: Vec<f64>,
}

fn conv(x: &T, p: &Param, b: &Param, k: &Conv) -> T {
    let (o, cg) = (k.out, x.c / k.groups);
    let og = o / k.groups;
    let h = (x.h + 2 * k.pad - k.kernel) / k.stride + 1;
    let w = (x.w + 2 * k.pad - k.kernel) / k.stride + 1;
    let mut d = vec![0.0; o * h * w];
    for oc in 0..o {
        let g = oc / og;
        for oy in 0..h {
            for ox in 0..w {
                let mut s = b.data[oc] as f64;
                for ic in 0..cg {
                    for ky in 0..k.kernel {
                        for kx in 0..k.kernel {
                            let iy = (oy * k.stride + ky) as isize - k.pad as isize;
                            let ix = (ox * k.stride + kx) as isize - k.pad as isize;
                            if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                continue;
                            }
                            let xv = x.d[((g * cg + ic) * x.h + iy as usize) * x.w + ix as usize];
                            let wv =
                                p.data[((oc * cg + ic) * k.kernel + ky) * k.kernel + kx] as f64;
                            s += xv * wv;
                        }
                    }
                }
                d[(oc * h + oy) * w + ox] = s;
            }
        }
    }
    T { c: o, h, w, d }
}

fn relu(mut x: T) -> T {
    x.d.iter_mut().for_each(|v| *v = v.max(0.0));
    x
}

fn lrn(x: T, l: &Lrn) -> T {
    let plane = x.h * x.w;
    let half = l.size / 2;
    let mut d = vec![0.0; x.d.len()];
    for c in 0..x.c {
        let (lo, hi) = (c.saturating_sub(half), (c + half).min(x.c - 1));
        for i in 0..plane {
            let sq: f64 = (lo..=hi).map(|j| x.d[j * plane + i].powi(2)).sum();
            d[c * plane + i] =
                x.d[c * plane + i] / (l.k as f64 + l.alpha as f64 * sq).powf(l.beta as f64);
        }
    }
    T { d, ..x }
}

fn pool(x: T) -> T {
    let (h, w) = ((x.h - 3) / 2 + 1, (x.w - 3) / 2 + 1);
    let mut d = vec![f64::MIN; x.c * h * w];
    for c in 0..x.c {
        for oy in 0..h {
            for ox in 0..w {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let v = x.d[(c * x.h + oy * 2 + ky) * x.w + ox * 2 + kx];
                        let o = &mut d[(c * h + oy) * w + ox];
                        *o = o.max(v);
                    }
                }
            }
        }
    }
    T { c: x.c, h, w, d }
}

fn fc(x: &[f64], w: &Param, b: &Param) -> Vec<f64> {
    let (o, i) = (w.shape[0], w.shape[1]);
    (0..o)
        .map(|r| b.data[r] as f64 + (0..i).map(|c| w.data[r * i + c] as f64 * x[c]).sum::<f64>())
        .collect()
}

/// fc7 and logits of one image by the plain loops above.
fn reference(cfg: &AlexNetConfig, params: &[Param], image: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let get = |n: &str| params.iter().find(|p| p.name == n).unwrap();
    let mut x = T {
        c: 3,
        h: cfg.input,
        w: cfg.input,
        d: image.iter().map(|&v| v as f64).collect(),
    };
    for (i, k) in cfg.convs.iter().enumerate() {
        let n = i + 1;
        x = relu(conv(
            &x,
            get(&format!("conv{n}.w")),
            get(&format!("conv{n}.b")),
            k,
        ));
        if n <= 2 {
            if let Some(l) = &cfg.lrn {
                x = lrn(x, l);
            }
        }
        if matches!(n, 1 | 2 | 5) {
            x = pool(x);
        }
    }
    let relu_v = |v: Vec<f64>| v.into_iter().map(|a| a.max(0.0)).collect::<Vec<_>>();
    let h6 = relu_v(fc(&x.d, get("fc6.w"), get("fc6.b")));
    let h7 = relu_v(fc(&h6, get("fc7.w"), get("fc7.b")));
    let logits = fc(&h7, get("fc8.w"), get("fc8.b"));
    (h7, logits)
}

fn small_config() -> AlexNetConfig {
    let c = Conv::new;
    AlexNetConfig {
        input: 99,
        convs: [
            c(8, 11, 4, 2, 1),
            c(16, 5, 1, 2, 2),
            c(12, 3, 1, 1, 1),
            c(12, 3, 1, 1, 2),
            c(8, 3, 1, 1, 2),
        ],
        hidden: 48,
        classes: 5,
        lrn: Some(Lrn {
            size: 5,
            alpha: 0.05,
            beta: 0.75,
            k: 2.0,
        }),
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
    assert!(
        want.iter().filter(|v| **v != 0.0).count() > want.len() / 4,
        "{what}: reference mostly zero"
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 * scale,
            "{what}[{i}]: onnxruntime {g} vs reference {w} (scale {scale})"
        );
    }
}

#[test]
fn onnx_runtime_matches_a_plain_reference_forward_pass() {
    let cfg = small_config();
    // A strong alpha makes LRN matter; He weights keep activations alive through 7 layers.
    let mut params = init_params(&cfg, Init::He, 11);
    for p in params.iter_mut().filter(|p| p.name.ends_with(".b")) {
        p.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = ((i % 7) as f32 - 3.0) * 0.05);
    }
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("small.onnx");
    let info = fc7::model::manifest::ModelInfo {
        classes: vec![],
        preprocess: Preprocess::imagenet(99),
        provenance: serde_json::json!({}),
    };
    fc7::model::manifest::write_model(&path, &cfg, &params, info).unwrap();

    let n = 2;
    let side = cfg.input;
    let input: Vec<f32> = (0..n * 3 * side * side)
        .map(|i| (((i * 7919) % 2001) as f32 / 1000.0) - 1.0)
        .collect();
    let opts = EmbedOptions {
        device: Device::Cpu,
        ..Default::default()
    };
    let mut e = Embedder::open(&path, &opts).expect("ONNX Runtime (run scripts/setup/ort.sh)");
    let out = e.run(&input, n, true).unwrap();
    let logits = out.logits.unwrap();
    for i in 0..n {
        let img = &input[i * 3 * side * side..(i + 1) * 3 * side * side];
        let (h7, lg) = reference(&cfg, &params, img);
        assert_close("fc7", &out.fc7[i * 48..(i + 1) * 48], &h7);
        assert_close("logits", &logits[i * 5..(i + 1) * 5], &lg);
    }
}

#[test]
fn manifest_records_the_contract_and_detects_a_changed_file() {
    let cfg = small_config();
    let params = init_params(&cfg, Init::Paper, 1);
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("m.onnx");
    let info = fc7::model::manifest::ModelInfo {
        classes: vec!["a".into()],
        preprocess: Preprocess::imagenet(99),
        provenance: serde_json::json!({"x": 1}),
    };
    let m = fc7::model::manifest::write_model(&path, &cfg, &params, info).unwrap();
    let back = fc7::model::manifest::read_manifest(&path).unwrap();
    assert_eq!(back, m);
    assert_eq!(
        (
            back.input.as_str(),
            back.embedding_output.as_str(),
            back.embedding_dim
        ),
        ("image", "fc7", 48)
    );
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = fc7::model::manifest::read_manifest(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256"), "{err}");
}
