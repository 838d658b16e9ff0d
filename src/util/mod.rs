//! Small shared helpers with no fc7 concepts in them: files (`fs`), drawing (`draw`),
//! matrix products (`matmul`, through the `gemm` crate), crash points for tests (`fault`) and
//! remembered file hashes (`stamp`).

pub mod draw;
pub mod fault;
pub mod fs;
pub mod matmul;
pub mod stamp;
