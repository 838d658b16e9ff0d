//! Small shared helpers with no fc7 concepts in them: files (`fs`), drawing (`draw`), matrix
//! products (`matmul`, through the `gemm` crate; `sgemm`, fc7's own kernel), the vector
//! extensions kernels may use (`isa`), crash points for tests (`fault`), remembered file hashes
//! (`stamp`), the allocator's policy for large buffers (`heap`), f32 arrays as little-endian
//! bytes (`le`), Winograd's 3×3 and 5×5 convolutions (`winograd`), which inference and
//! training share, and reading files ahead of a loop that decodes them (`readahead`).

pub mod draw;
pub mod fault;
pub mod fs;
pub mod heap;
pub mod isa;
pub mod le;
pub mod matmul;
pub mod readahead;
pub mod sgemm;
pub mod stamp;
pub mod winograd;
