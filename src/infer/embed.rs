//! Runs an exported model through ONNX Runtime: one session per process (CUDA execution provider
//! when asked and available, CPU otherwise), fed with batches that `imaging` prepared.

use std::path::{Path, PathBuf};

use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::TensorRef;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::infer::binding::{Host, Staging};
use crate::infer::cache::Prepared;
use crate::model::Manifest;

/// Options for opening a model.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    pub device: Device,
    pub ort_lib: Option<PathBuf>,
    pub threads: usize,
    /// Where ONNX Runtime's optimised graphs are kept (`infer::cache`); None: optimise each time.
    pub cache: Option<PathBuf>,
    /// Run batches through IO binding (`infer::binding`); None: with CUDA only.
    pub io_binding: Option<bool>,
    /// On the CPU, run the LRN and the 3×3 convolutions as fc7's own operators (`infer::lrn`,
    /// `infer::winograd`) instead of the exported graph's standard operators; off only to
    /// compare the two.
    pub own_operators: bool,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            device: Device::Auto,
            ort_lib: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cache: Some(crate::util::fs::cache_dir().join("optimized")),
            io_binding: None,
            own_operators: true,
        }
    }
}

/// One batch's results, row-major: `fc7` is [n, dim], `logits` [n, classes] when the model has them.
pub struct Outputs {
    pub fc7: Vec<f32>,
    pub logits: Option<Vec<f32>>,
}

/// A loaded model ready to embed batches.
pub struct Embedder {
    session: Session,
    pub manifest: Manifest,
    pub model_path: PathBuf,
    /// "CUDA" or "CPU": where the session runs.
    pub provider: &'static str,
    /// Set when `Device::Auto` fell back to the CPU: why.
    pub fallback: Option<String>,
    /// Set when this CPU runs the model below the rate it could (`slow_int8`): what to do.
    pub advice: Option<String>,
    /// Whether the optimised graph came from the cache.
    pub prepared: Prepared,
    /// Where IO binding stages batches (None: plain runs), and the staging once made.
    host: Option<Host>,
    staging: Option<Staging>,
}

fn builder(threads: usize, cpu: bool) -> Result<ort::session::builder::SessionBuilder> {
    let rt = |e: ort::Error| Error::Runtime(e.to_string());
    let (_, env) = crate::infer::runtime::init(None, false)?;
    let b = Session::builder(&env)
        .map_err(rt)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| rt(e.into()))?
        .with_intra_threads(threads)
        .map_err(|e| rt(e.into()))?
        // Decoding threads share the cores with inference; idle workers spinning between
        // nodes take their time (int8 indexing: 6-14% less CPU time without spinning).
        .with_intra_op_spinning(false)
        .map_err(|e| rt(e.into()))?;
    // fc7's operators, for graphs rewritten to use them (and their cached optimised forms);
    // int8 weights beyond ±64 (models quantised before `qdq::WEIGHT_MAX`) turned into uint8 on
    // CPUs without VNNI, whose int8 products would saturate (nothing changes on the others)
    let b = match cpu {
        true => b
            .with_operators(crate::infer::lrn::domain().map_err(rt)?)
            .map_err(|e| rt(e.into()))?
            .with_config_entry("session.x64quantprecision", "1")
            .map_err(|e| rt(e.into()))?,
        false => b,
    };
    // ONNX Runtime's per-node profile (JSON, prefix from the variable), for finding where time goes.
    match std::env::var_os("FC7_ORT_PROFILE") {
        Some(prefix) => b.with_profiling(prefix).map_err(|e| rt(e.into())),
        None => Ok(b),
    }
}

fn commit(mut b: ort::session::builder::SessionBuilder, model: &Path) -> Result<Session> {
    b.commit_from_file(model).map_err(|e| Error::Model {
        path: model.to_path_buf(),
        reason: format!("ONNX Runtime cannot load it: {e}"),
    })
}

/// The CPU sessions' form in the cache's entry names: the settings above change the optimised
/// graph, so entries made without them are not taken for theirs.
const CPU: &str = "CPU/x64quantprecision";

/// A CPU session, its optimised graph from (or saved to) the cache.
/// With `opts.own_operators`, the graph with fc7's operators (`model::onnx::fused`) under its
/// own cache entries; a graph that cannot be rewritten runs as it is.
fn cpu_session(model: &Path, m: &Manifest, opts: &EmbedOptions) -> Result<(Session, Prepared)> {
    use crate::infer::cache::{from_file, session};
    let threads = opts.threads;
    let b = move || builder(threads, true);
    if !opts.own_operators {
        return session(
            opts.cache.as_deref(),
            model,
            &m.onnx_sha256,
            CPU,
            &b,
            &from_file(model),
        );
    };
    let commit = |mut b: ort::session::builder::SessionBuilder| {
        let bytes = std::fs::read(model).map_err(|e| Error::io(model, e))?;
        // a graph that cannot be rewritten runs from the bytes already read
        let arch = &m.architecture;
        let (graph, how) = match crate::model::onnx::fused::with_own_operators(&bytes, arch) {
            Some(fused) => (fused, " with fc7's operators"),
            None => (bytes, ""),
        };
        b.commit_from_memory(&graph).map_err(|e| Error::Model {
            path: model.to_path_buf(),
            reason: format!("ONNX Runtime cannot load it{how}: {e}"),
        })
    };
    session(
        opts.cache.as_deref(),
        model,
        &m.onnx_sha256,
        &format!("{CPU}+fc7/{}", crate::model::onnx::fused::VERSION),
        &b,
        &commit,
    )
}

fn cuda_session(model: &Path, id: i32, threads: usize) -> Result<Session> {
    let ep = ort::ep::CUDA::default()
        .with_device_id(id)
        .build()
        .error_on_failure();
    let b = builder(threads, false)?
        .with_execution_providers([ep])
        .map_err(|e| Error::Runtime(format!("CUDA unavailable: {e}")))?;
    commit(b, model)
}

/// Images per batch: 256 on CUDA; on the CPU, as many as 32 images of 224 px hold (a batch's
/// tensors stay ~20 MB), between 32 and 128. Small inputs spend more of a batch of 32 in
/// per-node overhead: the 63 px quick model indexed 15-20% faster at 128 (BENCHMARKS.md).
pub fn default_batch(provider: &str, input: usize) -> usize {
    match provider {
        "CUDA" => 256,
        _ => (32 * 224 * 224 / input.max(1).pow(2)).clamp(32, 128),
    }
}

/// On a CPU without VNNI, an int8 model whose weights go beyond ±`qdq::WEIGHT_MAX` (written
/// before fc7 kept them there, so its manifest names no `weight_max`) runs exactly only through
/// ONNX Runtime's uint8 weights (`session.x64quantprecision`), at about half the integer rate:
/// quantising it again gives the fast form.
fn slow_int8(model: &Path, m: &Manifest, vnni: bool) -> Option<String> {
    use crate::model::onnx::qdq::WEIGHT_MAX;
    let max = m.provenance["quantized"]["weight_max"].as_f64();
    let wide = max.is_none_or(|w| w > WEIGHT_MAX as f64);
    (m.precision == crate::model::Precision::Int8 && wide && !vnni).then(|| {
        format!(
            "{} holds int8 weights beyond ±{WEIGHT_MAX}, which this CPU (no VNNI) runs at \
             about half the integer rate to keep them exact; `fc7 model quantize` it again for \
             full speed",
            model.display()
        )
    })
}

impl Embedder {
    /// Opens `model` (its manifest must sit beside it) on the requested device.
    pub fn open(model: &Path, opts: &EmbedOptions) -> Result<Embedder> {
        let manifest = crate::model::manifest::read_manifest(model)?;
        Self::open_read(model, manifest, opts)
    }

    /// Opens `model` whose `manifest` the caller has already read (and checked).
    pub fn open_read(model: &Path, manifest: Manifest, opts: &EmbedOptions) -> Result<Embedder> {
        crate::infer::runtime::init(opts.ort_lib.as_deref(), opts.device != Device::Cpu)?;
        // CUDA sessions are not cached: their start is the device's, not the graph's.
        let uncached = || Prepared::Uncached("CUDA".into());
        let cuda = |id| cuda_session(model, id, opts.threads);
        let ((session, prepared), provider, fallback) = match opts.device {
            Device::Cpu => (cpu_session(model, &manifest, opts)?, "CPU", None),
            Device::Cuda(id) => ((cuda(id)?, uncached()), "CUDA", None),
            Device::Auto => match cuda(0) {
                Ok(s) => ((s, uncached()), "CUDA", None),
                Err(e) => (
                    cpu_session(model, &manifest, opts)?,
                    "CPU",
                    Some(e.to_string()),
                ),
            },
        };
        let advice = (provider == "CPU")
            .then(|| slow_int8(model, &manifest, crate::util::isa::vnni()))
            .flatten();
        Ok(Embedder {
            session,
            manifest,
            model_path: model.to_path_buf(),
            provider,
            fallback,
            advice,
            prepared,
            host: match (opts.io_binding, opts.device, provider) {
                (Some(false), ..) => None,
                (_, Device::Cuda(id), "CUDA") => Some(Host::CudaPinned(id)),
                (_, _, "CUDA") => Some(Host::CudaPinned(0)),
                (Some(true), ..) => Some(Host::Cpu),
                (None, ..) => None,
            },
            staging: None,
        })
    }

    /// What a command should tell its user on opening: the fallback to the CPU, and advice.
    pub fn notes(&self) -> impl Iterator<Item = String> + '_ {
        let why = self
            .fallback
            .iter()
            .map(|w| format!("running on the CPU: {w}"));
        why.chain(self.advice.iter().map(|a| format!("note: {a}")))
    }

    /// Side of the square input the model takes.
    pub fn input_size(&self) -> usize {
        self.manifest.architecture.input
    }

    pub fn dim(&self) -> usize {
        self.manifest.embedding_dim
    }

    /// Images per batch when none is asked for; see [`default_batch`].
    pub fn default_batch(&self) -> usize {
        default_batch(self.provider, self.input_size())
    }

    /// Runs `n` images laid out as [n, 3, S, S] through the network.
    pub fn run(&mut self, batch: &[f32], n: usize, want_logits: bool) -> Result<Outputs> {
        let s = self.input_size();
        if batch.len() != n * 3 * s * s {
            return Err(Error::Invalid(format!(
                "batch of {} floats is not [{n}, 3, {s}, {s}]",
                batch.len()
            )));
        }
        if self.host.is_some() {
            return self.run_bound(batch, n, want_logits);
        }
        let rt = |e: ort::Error| Error::Runtime(e.to_string());
        let input = TensorRef::from_array_view(([n, 3, s, s], batch)).map_err(rt)?;
        let m = self.manifest.clone();
        let (emb_name, logit_name) = (m.embedding_output.clone(), m.logits_output.clone());
        let outputs = self
            .session
            .run(ort::inputs![m.input.as_str() => input])
            .map_err(rt)?;
        let extract = |name: &str| -> Result<Vec<f32>> {
            let v = outputs
                .get(name)
                .ok_or_else(|| Error::Runtime(format!("model has no output '{name}'")))?;
            let (_, data) = v.try_extract_tensor::<f32>().map_err(rt)?;
            Ok(data.to_vec())
        };
        let fc7 = extract(&emb_name)?;
        if fc7.len() != n * m.embedding_dim {
            let want = n * m.embedding_dim;
            return Err(Error::Runtime(format!(
                "output '{emb_name}' has {} values, expected {want}",
                fc7.len()
            )));
        }
        let logits = match (want_logits, logit_name) {
            (true, Some(name)) => Some(extract(&name)?),
            _ => None,
        };
        Ok(Outputs { fc7, logits })
    }

    /// [`Embedder::run`] through IO binding, staging made for this batch size on first use.
    fn run_bound(&mut self, batch: &[f32], n: usize, want_logits: bool) -> Result<Outputs> {
        let rt = |e: ort::Error| Error::Runtime(e.to_string());
        let m = &self.manifest;
        let mut outputs = vec![(m.embedding_output.clone(), m.embedding_dim)];
        if let (true, Some(name)) = (want_logits, &m.logits_output) {
            outputs.push((name.clone(), m.architecture.classes));
        }
        let fresh = self
            .staging
            .as_ref()
            .is_none_or(|st| st.batch_size() != n || st.outputs() != outputs);
        if fresh {
            let host = self.host.expect("binding chosen");
            let side = self.input_size();
            let st = Staging::new(&self.session, host, &m.input, side, n, &outputs).map_err(rt)?;
            self.staging = Some(st);
        }
        let st = self.staging.as_mut().expect("made above");
        let mut got = st.run(&mut self.session, batch).map_err(rt)?.into_iter();
        let fc7 = got.next().expect("fc7 is bound");
        Ok(Outputs {
            fc7,
            logits: got.next(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(precision: crate::model::Precision, quantized: serde_json::Value) -> Manifest {
        Manifest {
            format: 1,
            input: "image".into(),
            input_shape: vec![],
            embedding_output: "fc7".into(),
            embedding_dim: 4096,
            logits_output: None,
            classes: vec![],
            preprocess: crate::model::Preprocess::imagenet(224),
            architecture: crate::model::AlexNetConfig::paper(0, 2),
            provenance: serde_json::json!({ "quantized": quantized }),
            onnx_sha256: String::new(),
            precision,
        }
    }

    /// Advice only for an int8 model with weights beyond ±64 (or not known to be within them) on
    /// a CPU without VNNI.
    #[test]
    fn slow_int8_is_said_only_for_wide_int8_weights_without_vnni() {
        use crate::model::Precision::{Fp32, Int8};
        let m = Path::new("m.onnx");
        let old = manifest(Int8, serde_json::json!({ "from": "x" }));
        let new = manifest(Int8, serde_json::json!({ "weight_max": 64.0 }));
        let wide = manifest(Int8, serde_json::json!({ "weight_max": 127.0 }));
        let fp32 = manifest(Fp32, serde_json::Value::Null);
        let said = slow_int8(m, &old, false).unwrap();
        assert!(
            said.starts_with("m.onnx holds int8 weights beyond ±64"),
            "{said}"
        );
        assert!(slow_int8(m, &wide, false).is_some());
        for (mm, vnni) in [(&old, true), (&new, false), (&new, true), (&fp32, false)] {
            assert_eq!(
                slow_int8(m, mm, vnni),
                None,
                "{:?} vnni {vnni}",
                mm.provenance
            );
        }
    }

    #[test]
    fn default_batch_grows_for_small_inputs_within_its_bounds() {
        use super::default_batch;
        assert_eq!(default_batch("CUDA", 63), 256);
        assert_eq!(default_batch("CPU", 224), 32);
        assert_eq!(default_batch("CPU", 448), 32);
        assert_eq!(default_batch("CPU", 160), 62);
        assert_eq!(default_batch("CPU", 112), 128);
        assert_eq!(default_batch("CPU", 63), 128);
    }
}
