//! ONNX Runtime's optimised form of a model, kept so that later sessions skip the optimisation
//! and the 240 MB protobuf parse: 0.75 s → 0.22 s for the paper network on 2 cores. The first
//! session of a model saves the graph ONNX Runtime optimised (weights in a `.data` file beside
//! it, memory-mapped when loaded); later ones load that with optimisation off.
//!
//! An entry is named by everything its contents depend on: the model's SHA-256, the runtime's
//! build (version and commit), the provider, and for the CPU this machine's instruction set
//! (the saved graph holds NCHWc nodes laid out for it). A changed model or runtime therefore
//! never meets an old entry; entries are written to a temporary folder and renamed into place,
//! and one that fails to load is deleted and built again. Entries of replaced or deleted
//! models are removed, and beyond the eight most recently used the least recent go.

use std::path::{Path, PathBuf};

use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use crate::error::{Error, Result};
use crate::util::fs::{record_source, recorded_source, sha256_hex};

/// Where a session's graph came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Prepared {
    /// Loaded from the cache, already optimised.
    Cached,
    /// Optimised now and saved for next time.
    Saved,
    /// Optimised now, not saved (cache off, or why saving failed).
    Uncached(String),
}

const GRAPH: &str = "model.onnx";
const WEIGHTS: &str = "model.onnx.data";

/// The instruction-set flags of this CPU (the first `flags` line of /proc/cpuinfo).
fn cpu_flags() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("flags"))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The entry name for a model with `sha256` under `runtime` (ONNX Runtime's build string) and
/// `provider` on a machine with `machine` flags.
pub fn entry_name(sha256: &str, runtime: &str, provider: &str, machine: &str) -> String {
    let key = sha256_hex(format!("{sha256}\n{runtime}\n{provider}\n{machine}").as_bytes());
    format!("{}-{}", &sha256[..16.min(sha256.len())], &key[..16])
}

fn runtime_error(model: &Path, e: impl std::fmt::Display) -> Error {
    Error::Model {
        path: model.to_path_buf(),
        reason: format!("ONNX Runtime cannot load it: {e}"),
    }
}

/// Loads the optimised graph in `entry` with optimisation off.
fn load(builder: SessionBuilder, entry: &Path) -> std::result::Result<Session, String> {
    let mut b = builder
        .with_optimization_level(GraphOptimizationLevel::Disable)
        .map_err(|e| e.to_string())?;
    b.commit_from_file(entry.join(GRAPH))
        .map_err(|e| e.to_string())
}

/// Makes a session from a builder: `model`'s graph, or the form of it the caller runs.
pub type Commit<'a> = &'a dyn Fn(SessionBuilder) -> Result<Session>;

/// Optimises `model`, saving the result in a fresh folder that becomes `entry` when complete.
/// A save that fails (a full disk, a file-size limit: ONNX Runtime then fails the whole
/// session) costs only the cache: the session is made again without saving.
fn save(
    builder: &dyn Fn() -> Result<SessionBuilder>,
    model: &Path,
    commit: Commit,
    entry: &Path,
) -> Result<(Session, Prepared)> {
    let parent = entry.parent().expect("entry has a parent");
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{n}",
        entry.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = std::fs::create_dir_all(&tmp) {
        let s = commit(builder()?)?;
        return Ok((s, Prepared::Uncached(format!("{}: {e}", tmp.display()))));
    }
    let rt = |e: ort::Error| runtime_error(model, e);
    let b = builder()?
        .with_optimized_model_path(tmp.join(GRAPH))
        .map_err(|e| rt(e.into()))?
        .with_config_entry(
            "session.optimized_model_external_initializers_file_name",
            WEIGHTS,
        )
        .map_err(|e| rt(e.into()))?
        .with_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes",
            "1024",
        )
        .map_err(|e| rt(e.into()))?;
    let session = match commit(b) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            let s = commit(builder()?)?;
            return Ok((
                s,
                Prepared::Uncached(format!("saving the optimised graph: {e}")),
            ));
        }
    };
    record_source(&tmp, model);
    let done = tmp.join(GRAPH).is_file() && std::fs::rename(&tmp, entry).is_ok();
    if !done {
        let _ = std::fs::remove_dir_all(&tmp);
        let why = format!("could not save the optimised graph in {}", parent.display());
        return Ok((session, Prepared::Uncached(why)));
    }
    Ok((session, Prepared::Saved))
}

/// Commits `model`'s file as it is.
pub fn from_file(model: &Path) -> impl Fn(SessionBuilder) -> Result<Session> + '_ {
    move |mut b: SessionBuilder| {
        b.commit_from_file(model)
            .map_err(|e| runtime_error(model, e))
    }
}

/// A session for `model` (SHA-256 `sha256`) on `provider`, through the cache at `root` when
/// given. `builder` makes a builder with the provider and threads already set; `commit` makes
/// the session from one (`from_file`, or a rewritten graph: `provider` names the form, so each
/// form has its own entries).
pub fn session(
    root: Option<&Path>,
    model: &Path,
    sha256: &str,
    provider: &str,
    builder: &dyn Fn() -> Result<SessionBuilder>,
    commit: Commit,
) -> Result<(Session, Prepared)> {
    let Some(root) = root else {
        let s = commit(builder()?)?;
        return Ok((s, Prepared::Uncached("cache off".into())));
    };
    let machine = if provider.starts_with("CPU") {
        cpu_flags()
    } else {
        String::new()
    };
    let entry: PathBuf = root.join(entry_name(sha256, ort::info(), provider, &machine));
    if entry.join(GRAPH).is_file() {
        match load(builder()?, &entry) {
            Ok(s) => {
                mark_used(&entry);
                return Ok((s, Prepared::Cached));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&entry);
            }
        }
    }
    prune(root, model, sha256, &entry);
    evict(root, KEEP - 1);
    save(builder, model, commit, &entry)
}

/// Entries kept at most (~220 MB each for the paper network): a sweep of models kept on disk
/// would otherwise keep one each for good.
const KEEP: usize = 8;

/// Records that `entry` was just used (its folder's modification time), for `evict`.
fn mark_used(entry: &Path) {
    if let Ok(f) = std::fs::File::open(entry) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Whether `name` has the shape `entry_name` gives (16 hex digits, '-', 16 hex digits).
fn is_entry_name(name: &str) -> bool {
    let hex = |h: &str| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit());
    name.split_once('-').is_some_and(|(a, b)| hex(a) && hex(b))
}

/// Removes the least recently used complete entries in `root` beyond the `keep` most recent.
fn evict(root: &Path, keep: usize) {
    let Ok(dir) = std::fs::read_dir(root) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = dir
        .flatten()
        .filter(|e| is_entry_name(&e.file_name().to_string_lossy()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, path) in entries.iter().skip(keep) {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Removes the entries this one replaces: those of the same model file (recorded in each
/// entry's `source`) or the same model hash, made for another model version, runtime or machine;
/// and those whose model file is gone (a deleted or temporary model's 200 MB would otherwise stay
/// for good: a moved model pays one optimisation again).
fn prune(root: &Path, model: &Path, sha256: &str, keep: &Path) {
    let prefix = &sha256[..16.min(sha256.len())];
    let source = std::fs::canonicalize(model).unwrap_or_else(|_| model.to_path_buf());
    let Ok(dir) = std::fs::read_dir(root) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let recorded = recorded_source(&e.path());
        let same_file = recorded.as_ref() == Some(&source);
        let orphan = recorded.as_deref().is_some_and(crate::util::fs::gone);
        let abandoned = name.starts_with('.') && crate::util::fs::writer_alive(&name) != Some(true);
        let replaced = (name.starts_with(prefix) || same_file || orphan) && !name.starts_with('.');
        if (replaced && e.path() != keep) || abandoned {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_change_with_model_runtime_provider_and_machine() {
        let base = entry_name("ab12", "1.31.1 commit x", "CPU", "avx2");
        for other in [
            entry_name("ab13", "1.31.1 commit x", "CPU", "avx2"),
            entry_name("ab12", "1.32.0 commit y", "CPU", "avx2"),
            entry_name("ab12", "1.31.1 commit x", "CUDA", "avx2"),
            entry_name("ab12", "1.31.1 commit x", "CPU", "avx512f"),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(base, entry_name("ab12", "1.31.1 commit x", "CPU", "avx2"));
    }

    #[test]
    fn the_least_recently_used_entries_go_first_and_a_use_counts() {
        let d = tempfile::tempdir().unwrap();
        let name = |i: u64| format!("{i:016x}-{:016x}", i * 7);
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..10 {
            let e = d.path().join(name(i));
            std::fs::create_dir(&e).unwrap();
            let at = hour_ago + std::time::Duration::from_secs(i * 60);
            std::fs::File::open(&e).unwrap().set_modified(at).unwrap();
        }
        // Neither a folder being saved nor one that is not an entry is counted or removed.
        let saving = format!(".{}.tmp-1-0", name(10));
        for other in [saving.as_str(), "notes"] {
            std::fs::create_dir(d.path().join(other)).unwrap();
            std::fs::File::open(d.path().join(other))
                .unwrap()
                .set_modified(hour_ago)
                .unwrap();
        }
        mark_used(&d.path().join(name(0)));
        evict(d.path(), 4);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![saving.clone(), "notes".into()];
        want.extend([0, 7, 8, 9].map(name));
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn pruning_drops_entries_of_replaced_and_deleted_models_only() {
        let d = tempfile::tempdir().unwrap();
        let (root, models) = (d.path().join("cache"), d.path().join("models"));
        std::fs::create_dir_all(&models).unwrap();
        let entry = |name: &str, source: &Path| {
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(root.join(name).join(GRAPH), b"g").unwrap();
            record_source(&root.join(name), source);
        };
        let (this, other, gone) = (
            models.join("a.onnx"),
            models.join("b.onnx"),
            models.join("c.onnx"),
        );
        std::fs::write(&this, b"a").unwrap();
        std::fs::write(&other, b"b").unwrap();
        let this = std::fs::canonicalize(&this).unwrap();
        let other = std::fs::canonicalize(&other).unwrap();
        entry("aaaa-new", &this);
        entry("9999-old-version-of-a", &this);
        entry("bbbb-1", &other);
        entry(
            "cccc-1",
            &std::fs::canonicalize(&models).unwrap().join("c.onnx"),
        );
        assert!(!gone.exists());
        prune(&root, &this, "aaaa", &root.join("aaaa-new"));
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["aaaa-new", "bbbb-1"]);
    }
}
