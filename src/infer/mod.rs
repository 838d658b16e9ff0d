//! Inference: the exported ONNX model run through ONNX Runtime. `runtime` finds and loads the
//! library (no download at run time), `embed` turns batches of input tensors into fc7 vectors
//! (and logits) on the CPU or CUDA provider (the CPU with fc7's own LRN operator, `lrn`), `cache` keeps ONNX Runtime's optimised graphs for a
//! fast start, `binding` feeds CUDA from page-locked memory; `quantize` writes an int8 model calibrated on the
//! user's images.

pub mod binding;
pub mod cache;
pub mod embed;
pub mod lrn;
pub mod qlrn;
pub mod quantize;
pub mod runtime;
pub mod winograd;
