//! fc7: AlexNet's last hidden layer (fc7) as an image similarity search, after §6.1 and Figure 4
//! of Krizhevsky, Sutskever & Hinton (2012).
//!
//! `model` defines the network, `onnx` writes it, `embed` runs it through ONNX Runtime
//! (`runtime` finds the library), `imaging` turns files into inputs, `scan` finds them,
//! `catalog` (SQLite) stores vectors, `fingerprint` recognises moved files, `index` (HNSW)
//! searches them, `store` ties an index folder together, `ingest` runs `fc7 index`, and `query`
//! answers `fc7 query`.
//!
//! Training: `engine` is the trait of layer operations that `cpu` (im2col + GEMM) and `cuda`
//! (cuDNN, cuBLAS, NVRTC) implement; `network` is AlexNet's forward/backward written once
//! against it; `session` keeps a run's weights on an engine; `dataset` reads class folders
//! through `pack` (the packed on-disk cache), and `feed` and `augment` turn them into batches;
//! `recipe` holds the recipe and its presets, `train` runs it, `guard` stops it when it
//! diverges or stays at chance, `checkpoint` saves it, `plot`
//! draws its curves; `selftest` compares an engine with the CPU one. `eval` and `figure`
//! reproduce the paper's Figure 4.

pub mod augment;
pub mod catalog;
pub mod checkpoint;
pub mod cpu;
pub mod cuda;
pub mod dataset;
pub mod embed;
pub mod engine;
pub mod error;
pub mod eval;
pub mod feed;
pub mod figure;
pub mod fingerprint;
pub mod guard;
pub mod imaging;
pub mod index;
pub mod ingest;
pub mod model;
pub mod network;
pub mod onnx;
pub mod pack;
pub mod plot;
pub mod query;
pub mod recipe;
pub mod runtime;
pub mod scan;
pub mod scenes;
pub mod selftest;
pub mod session;
pub mod store;
pub mod train;

pub use error::{Error, Result};
