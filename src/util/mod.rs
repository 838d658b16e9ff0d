//! Small shared helpers with no fc7 concepts in them: files (`fs`), drawing (`draw`),
//! matrix products (`matmul`, through the `gemm` crate) and crash points for tests (`fault`).

pub mod draw;
pub mod fault;
pub mod fs;
pub mod matmul;
