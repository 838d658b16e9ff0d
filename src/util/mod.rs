//! Small shared helpers with no fc7 concepts in them: files (`fs`), drawing (`draw`) and
//! matrix products (`matmul`, through the `gemm` crate).

pub mod draw;
pub mod fs;
pub mod matmul;
