//! The weight gradients' product, dw = dyᵀ·x with k the batch size, handed on a block of rows
//! at a time through fc7's kernel: b (x) is packed once for all blocks rather than once per
//! block, and each block is computed on one thread and handed to the caller's update while
//! it is in cache. Same contract and the same bits as `matmul::matmul_blocks` (each element
//! its k products summed in order by FMAs, which both kernels do for k up to 256), which with
//! AVX2 only ran these shapes at about half the FMA peak.

use rayon::prelude::*;

use super::{pack_into, tile, tile_block, Out, KC};
use crate::util::isa::{self, Path};
use crate::util::matmul::{matmul_blocks, padded, Mat, BLOCK_ROWS};

thread_local! {
    /// Each thread's block of rows being handed on, kept between calls (also `sparse::blocks`').
    pub(super) static BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows per block that `fastest_blocks` hands on: for fc7's kernel a whole number of its tiles,
/// so that none is computed on a copy, and about 1 MB of 4,096-float rows (AVX-512: 8 tiles of
/// 8 rows; AVX2: 10 of 6); matrixmultiply's `BLOCK_ROWS` otherwise.
pub fn block_rows() -> usize {
    rows_on(isa::fastest())
}

fn rows_on(path: Path) -> usize {
    match path {
        Path::Avx512 => 64,
        Path::Avx2 => 60,
        Path::Base => BLOCK_ROWS,
    }
}

/// a · b a block of `block_rows()` rows at a time, handed on as `matmul_blocks` does (its
/// contract: `f(state, block, stride)`, one state per block), through fc7's kernel with AVX2
/// or AVX-512 (BENCHMARKS.md, "The weight gradients through fc7's kernel": faster on both) and
/// matrixmultiply's on other CPUs, where the portable loop's FMAs may be library calls.
pub fn fastest_blocks<T: Send>(
    a: Mat,
    b: Mat,
    states: impl IndexedParallelIterator<Item = T>,
    f: impl Fn(T, &[f32], usize) + Sync,
) {
    match isa::fastest() {
        Path::Base => matmul_blocks(a, b, states, f),
        path => blocks_on(path, a, b, states, f),
    }
}

pub(crate) fn blocks_on<T: Send>(
    path: Path,
    a: Mat,
    b: Mat,
    states: impl IndexedParallelIterator<Item = T>,
    f: impl Fn(T, &[f32], usize) + Sync,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    assert_eq!(k, b.rows());
    let block_rows = rows_on(path);
    assert_eq!(states.len(), m.div_ceil(block_rows), "one state per block");
    let (mr, nr) = tile(path);
    let stride = padded(n);
    // Per block of k's: b as [n / nr panels][kc][nr], shared by every block of rows.
    let kblocks: Vec<(usize, usize)> = (0..k).step_by(KC).map(|k0| (k0, KC.min(k - k0))).collect();
    let packed_b: Vec<Vec<f32>> = kblocks
        .iter()
        .map(|&(k0, kc)| {
            let mut v = Vec::new();
            pack_into(&mut v, b.transposed(), nr, (0, n), (k0, kc));
            v
        })
        .collect();
    states.enumerate().for_each(|(blk, state)| {
        let r0 = blk * block_rows;
        let rows = block_rows.min(m - r0);
        // Not cleared: the first block of k's writes every element handed on (a 1 MB memset
        // per block was work for nothing); only an empty inner dimension hands on zeros.
        let mut c = BLOCK.take();
        c.resize(rows * stride, 0.0);
        if kblocks.is_empty() {
            c.fill(0.0);
        }
        let mut packed_a = Vec::new();
        for (&(k0, kc), pb) in kblocks.iter().zip(&packed_b) {
            // [rows / mr panels][kc][mr]
            pack_into(&mut packed_a, a, mr, (r0, rows), (k0, kc));
            for (p, c0) in (0..n).step_by(nr).enumerate() {
                for (i, i0) in (0..rows).step_by(mr).enumerate() {
                    let panel = (packed_a[i * kc * mr..].as_ptr(), mr, 1);
                    let rect = (i0, mr.min(rows - i0), c0, nr.min(n - c0));
                    // SAFETY: the rectangle lies inside this block's rows × n of c (row stride
                    // `stride` ≥ n), which this thread alone owns; the panels hold kc × mr and
                    // kc × nr floats; `path` comes from isa, so this CPU runs it.
                    unsafe {
                        let b_panel = pb[p * kc * nr..].as_ptr();
                        let out = Out(c.as_mut_ptr());
                        tile_block(path, (panel, b_panel, kc), out, stride, rect, k0 == 0)
                    };
                }
            }
        }
        f(state, &c, stride);
        BLOCK.set(c);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::matmul::tests::random;
    use crate::util::matmul::ALIASED_ROW;
    use crate::util::sgemm::tests::{bits, chain};

    /// Every path gives the definition's bits, block by block, for the weight gradient's layout
    /// (a = dyᵀ read from dy's storage), on shapes off every tile size with a short last block,
    /// k across none, one and two blocks, and rows that are padded; so does matrixmultiply for k up
    /// to 256, so the two kernels train the same model.
    #[test]
    fn every_path_and_matrixmultiply_give_the_chains_bits_block_by_block() {
        for (m, n, k) in [
            (130, 37, 64),
            (70, ALIASED_ROW, 5),
            (65, 20, KC + 3),
            (61, 9, 0),
        ] {
            let (dy, x) = (random(k * m, 5), random(k * n, 6));
            let (a, b) = (Mat::t(&dy, k, m), Mat::new(&x, k, n));
            let want = bits(&chain(a, b));
            let check = |name: &str, got: Vec<f32>| {
                assert!(bits(&got) == want, "{name} {m}×{n}, k = {k}");
            };
            let store = |out: &mut [f32], block: &[f32], stride: usize| {
                for (d, s) in out.chunks_mut(n).zip(block.chunks(stride)) {
                    d.copy_from_slice(&s[..n]);
                }
            };
            for path in isa::runnable() {
                let mut got = vec![f32::NAN; m * n];
                let states = got.par_chunks_mut(rows_on(path) * n);
                blocks_on(path, a, b, states, store);
                check(&format!("{path:?}"), got);
            }
            if k > 256 {
                // matrixmultiply adds its blocks of 256 k's to c: chains split there.
                continue;
            }
            let mut got = vec![f32::NAN; m * n];
            let states = got.par_chunks_mut(BLOCK_ROWS * n);
            matmul_blocks(a, b, states, store);
            check("matrixmultiply", got);
        }
    }
}
