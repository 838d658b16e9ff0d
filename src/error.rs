//! The library's error type: every variant names the file or thing it concerns, so one line
//! printed by the CLI is enough for a user to act on.

use std::path::PathBuf;

/// The message of the first failed check of `checks` (a condition that must hold, and what
/// to tell the user when it does not): how settings (`Recipe`, `Exemplar`, `Instance`) refuse
/// values, naming the flag.
pub fn first_refusal(checks: &[(bool, &str)]) -> std::result::Result<(), String> {
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, why)) => Err(why.to_string()),
        None => Ok(()),
    }
}

/// Errors from the fc7 library. Per-file variants (`Decode`, `TooLarge`, ...) are recoverable:
/// the indexer records them as skipped files and carries on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot decode image: {reason}", path.display())]
    Decode { path: PathBuf, reason: String },
    #[error("{}: not an image (unrecognised content)", path.display())]
    NotImage { path: PathBuf },
    #[error("{}: image is {width}x{height}, over the {limit}-pixel limit", path.display())]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit: u64,
    },
    #[error("{}: empty file", path.display())]
    Empty { path: PathBuf },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("{}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    #[error("index {}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
    #[error("catalog {}: {source}", path.display())]
    Catalog {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// A database-backed index (PostgreSQL), named by its URL without the password.
    #[error("store {store}: {reason}")]
    Store { store: String, reason: String },
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("{0}")]
    Invalid(String),
    /// A run that diverged or does not learn: stopped, with what to try.
    #[error("training stopped: {0}")]
    Training(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True for errors that concern one input file and must not stop a run.
    pub fn is_per_file(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Decode { .. }
                | Error::NotImage { .. }
                | Error::TooLarge { .. }
                | Error::Empty { .. }
        )
    }

    /// The reason alone, without the path: what the catalog stores for a skipped file.
    pub fn reason(&self) -> String {
        match self {
            Error::Io { source, .. } => source.to_string(),
            Error::Decode { reason, .. } => format!("cannot decode image: {reason}"),
            Error::NotImage { .. } => "not an image".to_string(),
            Error::TooLarge {
                width,
                height,
                limit,
                ..
            } => format!("over the pixel limit ({width}x{height} > {limit})"),
            Error::Empty { .. } => "empty file".to_string(),
            other => other.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
