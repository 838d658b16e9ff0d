//! Finds and loads the ONNX Runtime shared library at run time (ort's `load-dynamic`), so fc7
//! builds with no download: the library comes from the official PyPI wheel, unpacked by
//! `scripts/setup/ort.sh` into a cache folder. Order: `--ort-lib`, `ORT_DYLIB_PATH`, the cache.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::util::fs::cache_dir;

/// The ONNX Runtime release fc7 is built and tested against.
pub const ORT_VERSION: &str = include_str!("../../scripts/setup/ORT_VERSION").trim_ascii();

/// The library a setup run leaves in the cache for the CPU or the GPU (CUDA) build.
pub fn cached_library(gpu: bool) -> PathBuf {
    let flavour = if gpu { "gpu" } else { "cpu" };
    cache_dir()
        .join(format!("onnxruntime-{ORT_VERSION}-{flavour}"))
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// Picks the library to load. With `prefer_gpu` the CUDA build in the cache wins over the CPU one.
pub fn locate(explicit: Option<&Path>, prefer_gpu: bool) -> Result<PathBuf> {
    let from_env = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(p) = explicit.map(Path::to_path_buf).or(from_env) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Runtime(format!(
                "library {} does not exist (from --ort-lib or ORT_DYLIB_PATH)",
                p.display()
            )))
        };
    }
    let order = if prefer_gpu {
        [true, false]
    } else {
        [false, true]
    };
    order
        .iter()
        .map(|&gpu| cached_library(gpu))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Runtime(format!(
                "library not found in {}: run scripts/setup/ort.sh (add --gpu for CUDA), \
                 or point --ort-lib / ORT_DYLIB_PATH at libonnxruntime.so",
                cache_dir().display()
            ))
        })
}

/// Why `path` did not load, saying what fc7 needs when it is the wrong release.
fn load_error(path: &Path, e: ort::LoadDynamicError) -> String {
    match e {
        ort::LoadDynamicError::BadVersion { version_str, .. } => format!(
            "{} is ONNX Runtime {version_str}, too old for fc7, which is built and tested \
             against {ORT_VERSION} (scripts/setup/ort.sh installs it)",
            path.display()
        ),
        e => format!("cannot load {}: {e}", path.display()),
    }
}

type Loaded = std::result::Result<(PathBuf, ort::environment::Environment), String>;
static LOADED: OnceLock<Loaded> = OnceLock::new();

/// Loads ONNX Runtime once per process and creates its environment; later calls return the
/// first outcome.
pub fn init(
    explicit: Option<&Path>,
    prefer_gpu: bool,
) -> Result<(PathBuf, ort::environment::Environment)> {
    LOADED
        .get_or_init(|| {
            let path = locate(explicit, prefer_gpu).map_err(|e| match e {
                Error::Runtime(why) => why,
                e => e.to_string(),
            })?;
            let builder = ort::init_from(&path).map_err(|e| load_error(&path, e))?;
            let env = builder
                .with_name("fc7")
                .build()
                .map_err(|e| format!("cannot start: {e}"))?;
            Ok((path, env))
        })
        .clone()
        .map_err(Error::Runtime)
}
