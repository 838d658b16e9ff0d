//! Training AlexNet from scratch. `engine` is the trait of layer operations that the CPU
//! (im2col + GEMM) and CUDA (cuDNN, cuBLAS, NVRTC) engines implement; `network` is the forward
//! and backward pass written once against it; `dataset` reads class folders (or, for exemplar
//! training, any photo folder) through the packed cache; `augment` (the paper's crops) and
//! `exemplar` (warped, recoloured views of each image, its own class) make the views that
//! `batch` assembles and `feed` prefetches; `instance` is self-supervised training's loss and
//! memory bank; `recipe` holds the settings and presets; `step` the weights and one SGD step,
//! `seeds` the seed mixer behind every draw; `epoch` runs one epoch on an engine (or, through
//! `parallel`, several GPUs in data parallel),
//! `validation` scores it, `epoch_end` closes it (validation, log, schedule), `run` the whole
//! schedule, `guard` stops a run that diverges or stays at chance; `checkpoint` saves it (`cadence`: at which
//! epochs' ends), `export` writes the ONNX
//! model, `plot` draws its curves; `selftest` compares an engine with the CPU one.

pub mod augment;
pub mod batch;
pub mod cadence;
pub mod checkpoint;
pub mod dataset;
pub mod engine;
pub mod epoch;
mod epoch_end;
pub mod exemplar;
pub mod export;
pub mod feed;
pub mod guard;
pub mod instance;
pub mod metrics;
pub mod network;
pub mod parallel;
pub mod plot;
pub mod progress;
pub mod recipe;
pub mod run;
pub mod seeds;
pub mod selftest;
pub mod step;
pub mod throughput;
pub mod validation;
