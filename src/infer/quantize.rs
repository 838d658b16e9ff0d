//! `fc7 model quantize`: an fp32 model fc7 wrote, calibrated on a folder of the user's images
//! and written again as int8 (`model::onnx::qdq`). Calibration runs the fp32 graph through ONNX
//! Runtime with its intermediate activations as extra outputs, so the ranges are those of the
//! very computation being approximated; each range is the clip that minimises the squared
//! error of uint8 rounding over a sample of the activation's values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::imaging::scan::{scan, ScanOptions};
use crate::model::manifest::{write_onnx, ModelInfo, DOC};
use crate::model::onnx::qdq::{calibration_points, to_int8_onnx_bytes, Ranges, WEIGHT_MAX};
use crate::model::onnx::{read::fp32_model, to_onnx_with_outputs};
use crate::model::{Manifest, Precision, Preprocess, Standardise};

/// How to calibrate.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// Images drawn (evenly over the sorted file list) from the calibration folder.
    pub images: usize,
    pub threads: usize,
    pub ort_lib: Option<PathBuf>,
    pub max_pixels: u64,
}

/// What a quantisation did.
pub struct QuantizeReport {
    pub manifest: Manifest,
    pub calibrated_on: usize,
    /// Files that could not be decoded, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    pub ranges: Ranges,
    pub bytes: (u64, u64),
}

const BATCH: usize = 16;
const SAMPLE_PER_BATCH: usize = 1 << 15;

/// The range of the network's input: every channel's (0 − mean) / std to (255 / scale − mean) /
/// std; standardised per image, what the calibration images span (a bound from the smallest
/// deviation would spend the 8 bits on ±50 for inputs that stay within a few units).
fn input_range(p: &Preprocess, inputs: &[Vec<f32>]) -> (f32, f32) {
    match p.standardise {
        Standardise::Channels => (0..3).fold((f32::MAX, f32::MIN), |(lo, hi), c| {
            let a = (0.0 - p.mean[c]) / p.std[c];
            let b = (255.0 / p.scale - p.mean[c]) / p.std[c];
            (lo.min(a.min(b)), hi.max(a.max(b)))
        }),
        Standardise::Image => inputs
            .iter()
            .flatten()
            .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v))),
    }
}

/// Values seen at one activation: the largest, and a strided sample.
#[derive(Default)]
struct Seen {
    max: f32,
    sample: Vec<f32>,
}

impl Seen {
    fn add(&mut self, values: &[f32]) {
        self.max = values.iter().fold(self.max, |m, &v| m.max(v));
        let stride = values.len().div_ceil(SAMPLE_PER_BATCH).max(1);
        self.sample.extend(values.iter().step_by(stride));
    }

    /// Σ (x − uint8 rounding of x with scale c / 255)² over the sample.
    fn squared_error(&self, c: f32) -> f64 {
        let s = c / 255.0;
        let e = |x: f32| ((x / s).round().min(255.0) * s - x) as f64;
        self.sample.iter().map(|&x| e(x).powi(2)).sum()
    }

    /// The clip c (a fraction of the largest value) whose uint8 rounding, scale c / 255, has
    /// the least squared error over the sample.
    fn clip(&self) -> f32 {
        if self.max <= 0.0 {
            return 1.0;
        }
        (20..=100)
            .map(|pct| self.max * pct as f32 / 100.0)
            .map(|c| (c, self.squared_error(c)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(self.max, |(c, _)| c)
    }
}

/// Decodes up to `want` images spread evenly over `files`, going on past failures.
fn calibration_inputs(
    files: &[PathBuf],
    pre: &Preprocess,
    want: usize,
    max_pixels: u64,
) -> (Vec<Vec<f32>>, Vec<(PathBuf, String)>) {
    let stride = (files.len() / want.max(1)).max(1);
    let order: Vec<&PathBuf> = (0..stride)
        .flat_map(|start| files.iter().skip(start).step_by(stride))
        .collect();
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for chunk in order.chunks(want.max(1)) {
        let need = want - good.len();
        let decoded: Vec<_> = chunk[..need.min(chunk.len())]
            .par_iter()
            .map(|p| (p, crate::imaging::input_from_file(p, pre, max_pixels)))
            .collect();
        for (p, r) in decoded {
            match r {
                Ok(input) => good.push(input.tensor),
                Err(e) => bad.push(((*p).clone(), e.to_string())),
            }
        }
        if good.len() >= want {
            break;
        }
    }
    (good, bad)
}

/// The image files under `folder`, sorted, or why there are none.
fn calibration_files(folder: &Path) -> Result<Vec<PathBuf>> {
    if !folder.is_dir() {
        return Err(Error::Invalid(format!(
            "calibration folder {} does not exist or is not a folder",
            folder.display()
        )));
    }
    let found = scan(&[folder.to_path_buf()], &ScanOptions::default())?;
    let mut files: Vec<PathBuf> = found
        .files
        .into_iter()
        .filter(|f| f.looks_like_image)
        .map(|f| f.path)
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "calibration folder {} holds no images",
            folder.display()
        )));
    }
    Ok(files)
}

/// Runs the fp32 network with its calibration points as outputs over `inputs`; the ranges.
fn measure(
    manifest: &Manifest,
    graph: &[u8],
    inputs: &[Vec<f32>],
    threads: usize,
) -> Result<Ranges> {
    use ort::session::{builder::GraphOptimizationLevel, Session};
    let rt = |e: ort::Error| Error::Runtime(e.to_string());
    let (_, env) = crate::infer::runtime::init(None, false)?;
    let mut session = Session::builder(&env)
        .map_err(rt)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| rt(e.into()))?
        .with_intra_threads(threads)
        .map_err(|e| rt(e.into()))?
        .commit_from_memory(graph)
        .map_err(rt)?;
    let points = calibration_points(&manifest.architecture);
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let s = manifest.architecture.input;
    for batch in inputs.chunks(BATCH) {
        let flat: Vec<f32> = batch.concat();
        let x = ort::value::TensorRef::from_array_view(([batch.len(), 3, s, s], flat.as_slice()))
            .map_err(rt)?;
        let out = session
            .run(ort::inputs![manifest.input.as_str() => x])
            .map_err(rt)?;
        for p in &points {
            let v = out
                .get(p.as_str())
                .ok_or_else(|| Error::Runtime(format!("calibration graph lacks '{p}'")))?;
            let (_, data) = v.try_extract_tensor::<f32>().map_err(rt)?;
            seen.entry(p.clone()).or_default().add(data);
        }
    }
    Ok(Ranges {
        input: input_range(&manifest.preprocess, inputs),
        clip: seen.iter().map(|(k, s)| (k.clone(), s.clip())).collect(),
    })
}

/// Quantises the fp32 `model` on images from `calibrate` and writes the int8 model to `out`.
pub fn quantize(
    model: &Path,
    calibrate: &Path,
    out: &Path,
    opts: &QuantizeOptions,
) -> Result<QuantizeReport> {
    // The folder first: refusing a wrong one need not read a 240 MB model.
    let files = calibration_files(calibrate)?;
    let (manifest, params, size) = fp32_model(model, "quantise")?;
    let config = &manifest.architecture;
    crate::infer::runtime::init(opts.ort_lib.as_deref(), false)?;
    let (inputs, skipped) =
        calibration_inputs(&files, &manifest.preprocess, opts.images, opts.max_pixels);
    if inputs.is_empty() {
        return Err(Error::Invalid(format!(
            "none of the {} images in {} could be decoded (first: {}: {})",
            files.len(),
            calibrate.display(),
            skipped[0].0.display(),
            skipped[0].1
        )));
    }
    let points = calibration_points(config);
    let names: Vec<&str> = points.iter().map(String::as_str).collect();
    let graph = to_onnx_with_outputs(config, &params, DOC, &names)?;
    let ranges = measure(&manifest, &graph, &inputs, opts.threads)?;
    let int8 = to_int8_onnx_bytes(config, &params, &ranges, DOC)?;
    let provenance = serde_json::json!({
        "quantized": {
            "from": model.display().to_string(),
            "from_sha256": manifest.onnx_sha256,
            "calibration_folder": calibrate.display().to_string(),
            "calibration_images": inputs.len(),
            "calibration_skipped": skipped.len(),
            "method": "QDQ; int8 weights within ±weight_max, one scale per output channel; \
                       uint8 activations, static ranges clipped for least squared rounding error",
            "weight_max": WEIGHT_MAX,
            "ranges": ranges,
        },
        "source": manifest.provenance,
    });
    let info = ModelInfo {
        classes: manifest.classes.clone(),
        preprocess: manifest.preprocess.clone(),
        provenance,
    };
    let written = write_onnx(out, &int8, config, info, Precision::Int8)?;
    Ok(QuantizeReport {
        manifest: written,
        calibrated_on: inputs.len(),
        skipped,
        ranges,
        bytes: (size, int8.len() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_trims_a_long_tail_and_keeps_a_dense_range() {
        // Exponentially distributed values (as ReLU activations roughly are): the largest of
        // 100,000 is ~12 while most lie below 3, so rounding error is least with the tail cut.
        let n = 100_000;
        let tail: Vec<f32> = (0..n)
            .map(|i| -(1.0 - (i as f64 + 0.5) / n as f64).ln() as f32)
            .collect();
        let mut s = Seen::default();
        s.add(&tail);
        let c = s.clip();
        assert!(c < 0.9 * s.max, "clip {c} of {}", s.max);
        assert!(s.squared_error(c) < 0.9 * s.squared_error(s.max));
        // Evenly spread values keep (nearly) their whole range.
        let mut u = Seen::default();
        u.add(&(0..n).map(|i| i as f32 / n as f32).collect::<Vec<_>>());
        assert!(u.clip() > 0.95, "clip {}", u.clip());
    }

    #[test]
    fn input_range_spans_every_channel() {
        let p = Preprocess::imagenet(224);
        let inputs = [vec![-7.0, 9.0]];
        let (lo, hi) = input_range(&p, &inputs);
        assert!((lo - (-0.485 / 0.229)).abs() < 1e-5, "{lo}");
        assert!((hi - (1.0 - 0.406) / 0.225).abs() < 1e-5, "{hi}");
        // Standardised per image: what the calibration inputs span.
        let own = Preprocess {
            standardise: Standardise::Image,
            ..p
        };
        let inputs = [vec![-1.5, 0.25], vec![2.75, 0.0]];
        assert_eq!(input_range(&own, &inputs), (-1.5, 2.75));
    }
}
