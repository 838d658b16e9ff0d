//! The index folder and what answers from it: `store` opens a folder (SQLite `catalog` of
//! files and vectors, typed meta, the HNSW `graph`), `fingerprint` recognises moved files,
//! `knn` is the exact search everything approximate is checked against, `ingest` runs
//! `fc7 index`, `query` answers `fc7 query` and `export` writes the vectors for other stores.

pub mod catalog;
pub mod export;
pub mod fingerprint;
pub mod graph;
pub mod index;
pub mod ingest;
pub mod knn;
pub mod pca;
pub mod pg;
pub mod query;
pub mod searcher;
pub mod store;
pub mod vectors;

// The vector and graph files are little endian and read in place through memory maps.
#[cfg(target_endian = "big")]
compile_error!("fc7's index files are little endian and are read in place");
