//! fc7's integration tests, one test binary: the real `fc7` binary on hostile fixture folders,
//! the library's training and embedding runs, ONNX Runtime parity, the PostgreSQL store, the
//! web gallery and the source layout. One binary links fc7 once instead of thirteen times, and
//! its tests share the two cores as one pool.

mod common;

mod embedder;
mod exemplar;
mod figure4;
mod home;
mod index_layout;
mod index_query;
mod layout;
mod onnx_reference;
mod packs;
mod postgres;
mod precision;
mod self_supervised;
mod serve;
mod train;
