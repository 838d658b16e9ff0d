//! Training AlexNet from scratch. `engine` is the trait of layer operations that the CPU
//! (im2col + GEMM) and CUDA (cuDNN, cuBLAS, NVRTC) engines implement; `network` is the forward
//! and backward pass written once against it; `dataset` reads class folders through the packed
//! cache, `augment` and `feed` turn them into batches; `recipe` holds the settings and presets;
//! `epoch` runs one epoch on an engine, `run` the whole schedule, `guard` stops a run that
//! diverges or stays at chance; `checkpoint` saves it, `export` writes the ONNX model, `plot`
//! draws its curves; `selftest` compares an engine with the CPU one.

pub mod augment;
pub mod checkpoint;
pub mod dataset;
pub mod engine;
pub mod epoch;
pub mod export;
pub mod feed;
pub mod guard;
pub mod metrics;
pub mod network;
pub mod plot;
pub mod progress;
pub mod recipe;
pub mod run;
pub mod selftest;
pub mod throughput;
