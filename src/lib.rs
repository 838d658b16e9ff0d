//! fc7: AlexNet's last hidden layer (fc7) as an image similarity search, after §6.1 and Figure 4
//! of Krizhevsky, Sutskever & Hinton (2012).
//!
//! The crate is in wings, each a folder, and a wing uses only the wings before it (checked by
//! `tests/suite/layout.rs`):
//!
//! 1. shared — `error`, `util` (atomic files, drawing, cache folders), `device` (the one
//!    CPU/CUDA choice), `home` (the data folder of models and indexes), `model` (architecture, manifest, ONNX writer), `imaging` (finding image
//!    files and turning one into an input tensor);
//! 2. `infer` (ONNX Runtime: library lookup, the embedder) and `train` (engines, network,
//!    recipe, data, the training run, checkpoints, self-test), side by side, neither using the
//!    other;
//! 3. `search` — the index folder: SQLite catalog, the f16 vector file, the memory-mapped
//!    graph over PCA codes, exact k-NN, `fc7 index` and `fc7 query`;
//! 4. `eval` — Figure 4 and its metrics;
//! 5. `serve` — the web gallery over an index (`fc7 serve`);
//! 6. `cmd` — the command line; the only wing that sees clap.

pub mod cmd;
pub mod device;
pub mod error;
pub mod eval;
pub mod home;
pub mod imaging;
pub mod infer;
pub mod model;
pub mod search;
pub mod serve;
pub mod train;
pub mod util;

pub use error::{Error, Result};
