//! Matrix products through the `gemm` crates (as candle uses; only the f32 kernels are built), and
//! `matrixmultiply` for those with a short inner dimension, on row-major storage viewed as
//! possibly transposed matrices: the CPU engine's layers and exact k-NN's distances.

use rayon::prelude::*;

/// A logical rows × cols matrix over row-major storage, optionally transposed.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    trans: bool,
}

impl<'a> Mat<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            trans: false,
        }
    }
    /// The transpose of a row-major `stored_rows` × `stored_cols` matrix.
    pub fn t(data: &'a [f32], stored_rows: usize, stored_cols: usize) -> Self {
        Mat {
            data,
            rows: stored_cols,
            cols: stored_rows,
            trans: true,
        }
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The same storage read as this matrix's transpose.
    pub fn transposed(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            trans: !self.trans,
            ..self
        }
    }
    pub(crate) fn data(&self) -> &'a [f32] {
        self.data
    }
    /// Element (r, c), for tests' reference products.
    #[cfg(test)]
    pub(crate) fn get(&self, r: usize, c: usize) -> f32 {
        let (rs, cs) = self.strides();
        self.data[r * rs as usize + c * cs as usize]
    }
    pub(crate) fn strides(&self) -> (isize, isize) {
        if self.trans {
            (1, self.rows as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

/// Rows of c written per padded block (`ALIASED_ROW`): 128 rows of 4,096 floats are 2 MB,
/// which stays in the last-level cache between the product and the copy out.
const PADDED_BLOCK_ROWS: usize = 128;
/// Rows per block that `matmul_blocks` hands on: 64 rows of 4,096 floats are 1 MB, a core's
/// second-level cache on the CPUs measured, so what reads the block finds it there (32 rows
/// were slower: the right-hand side is packed again for every block).
pub const BLOCK_ROWS: usize = 64;
/// Row lengths that are a multiple of this many floats (4 KB) put the rows of c's tiles in the
/// same cache sets; such products run 2–3× slower (fc7's [4096, 4096] gradient: 45 → 15 ms on
/// a 2-core EPYC), so they are computed into rows padded by `ROW_PAD`.
pub(crate) const ALIASED_ROW: usize = 1024;
const ROW_PAD: usize = 16;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// c [a.rows × b.cols] = (acc ? c : 0) + a · b.
pub fn matmul(a: Mat, b: Mat, c: &mut [f32], acc: bool, parallel: bool) {
    assert_eq!(a.cols, b.rows);
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(c.len() >= m * n && a.data.len() >= m * k && b.data.len() >= k * n);
    if padded(n) == n || m < 2 {
        // SAFETY: the asserts above bound every index gemm touches by the slices' lengths.
        unsafe { gemm(a, b, 0, m, c.as_mut_ptr(), n, acc, parallel) };
        return;
    }
    let stride = padded(n);
    // Taken out rather than borrowed: a parallel product's thread may run other rayon work
    // meanwhile, which can call matmul again (it then gets a buffer of its own).
    let mut scratch = SCRATCH.take();
    let rows = m.min(PADDED_BLOCK_ROWS);
    scratch.resize(rows * stride, 0.0);
    for r0 in (0..m).step_by(rows) {
        let r = rows.min(m - r0);
        let block = &mut c[r0 * n..(r0 + r) * n];
        if acc {
            for (dst, src) in scratch.chunks_mut(stride).zip(block.chunks(n)) {
                dst[..n].copy_from_slice(src);
            }
        }
        // SAFETY: rows r0..r0+r of a exist (r0 + r ≤ m) and scratch holds r rows of `stride`.
        unsafe { gemm(a, b, r0, r, scratch.as_mut_ptr(), stride, acc, parallel) };
        for (dst, src) in block.chunks_mut(n).zip(scratch.chunks(stride)) {
            dst.copy_from_slice(&src[..n]);
        }
    }
    SCRATCH.set(scratch);
}

/// The row stride a product with rows of `n` floats is computed into.
pub(crate) fn padded(n: usize) -> usize {
    if n.is_multiple_of(ALIASED_ROW) {
        n + ROW_PAD
    } else {
        n
    }
}

/// a · b, `BLOCK_ROWS` rows at a time on rayon's threads, each block handed to `f` while it is
/// still in cache and never stored whole: `f(state, block, stride)` gets the block's item of
/// `states` (the k-th for rows k·BLOCK_ROWS..) and its rows, row j at `block[j·stride..]`,
/// `b.cols` long.
///
/// For products with a short inner dimension (weight gradients summed over a batch: k is the
/// batch size), each block on one thread through `matrixmultiply`, whose AVX2 kernel runs
/// these shapes 1.4× faster than gemm's (an AVX-512 CPU: as fast). Training takes
/// `sgemm::blocks` instead on CPUs with AVX2 or AVX-512, faster still; this is the rest's.
/// Each element is the k products summed in order, so the values do not depend on the thread
/// count, and for batch-sized k (up to 256) they are gemm's bit for bit on both kinds of kernel
/// (a test checks): training results did not change with the switch.
pub fn matmul_blocks<T: Send>(
    a: Mat,
    b: Mat,
    states: impl IndexedParallelIterator<Item = T>,
    f: impl Fn(T, &[f32], usize) + Sync,
) {
    assert_eq!(a.cols, b.rows);
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(a.data.len() >= m * k && b.data.len() >= k * n);
    assert_eq!(states.len(), m.div_ceil(BLOCK_ROWS), "one state per block");
    let stride = padded(n);
    let ((a_rs, a_cs), (b_rs, b_cs)) = (a.strides(), b.strides());
    states.enumerate().for_each(|(blk, state)| {
        let (r0, mut scratch) = (blk * BLOCK_ROWS, SCRATCH.take());
        let r = BLOCK_ROWS.min(m - r0);
        scratch.resize(r * stride, 0.0);
        // SAFETY: rows r0..r0+r of a exist (r0 < m; the asserts above bound a's and b's
        // elements by their slices) and scratch holds r rows of `stride` ≥ n floats.
        unsafe {
            matrixmultiply::sgemm(
                r,
                k,
                n,
                1.0,
                a.data.as_ptr().offset(r0 as isize * a_rs),
                a_rs,
                a_cs,
                b.data.as_ptr(),
                b_rs,
                b_cs,
                0.0,
                scratch.as_mut_ptr(),
                stride as isize,
                1,
            )
        };
        f(state, &scratch, stride);
        SCRATCH.set(scratch);
    });
}

/// Rows [r0, r0 + rows) of a · b into row-major dst with row stride `stride`.
///
/// # Safety
/// dst must hold `rows` rows of `stride` ≥ b.cols floats, and a must have rows r0 + rows.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    a: Mat,
    b: Mat,
    r0: usize,
    rows: usize,
    dst: *mut f32,
    stride: usize,
    acc: bool,
    parallel: bool,
) {
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let par = if parallel {
        gemm_common::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm_common::Parallelism::None
    };
    gemm_f32::gemm::f32::get_gemm_fn()(
        rows,
        b.cols,
        a.cols,
        dst,
        1,
        stride as isize,
        acc,
        a.data.as_ptr().offset(r0 as isize * a_rs),
        a_cs,
        a_rs,
        b.data.as_ptr(),
        b_cs,
        b_rs,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    );
}

/// Dot products of every row of `a` [n, dim] with every row of `b` [m, dim]: [n, m].
pub fn dot_rows(a: &[f32], b: &[f32], dim: usize) -> Vec<f32> {
    let mut out = Vec::new();
    dot_rows_into(a, b, dim, &mut out);
    out
}

/// `dot_rows` written over `out`, resized to [n, m]: a caller that runs it block after block
/// keeps one buffer instead of faulting in fresh pages for each.
pub fn dot_rows_into(a: &[f32], b: &[f32], dim: usize, out: &mut Vec<f32>) {
    let (n, m) = (a.len() / dim, b.len() / dim);
    out.resize(n * m, 0.0);
    matmul(Mat::new(a, n, dim), Mat::t(b, m, dim), out, false, true);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Values in [−1, 1) from a fixed LCG.
    pub(crate) fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The storage of b [k × n]'s transpose, so that `Mat::t(&it, n, k)` reads b.
    pub(crate) fn stored_transposed(b: &[f32], k: usize, n: usize) -> Vec<f32> {
        (0..n * k).map(|q| b[(q % k) * n + q / k]).collect()
    }

    fn naive(a: Mat, b: Mat) -> Vec<f64> {
        let at = |m: &Mat, r: usize, c: usize| m.get(r, c) as f64;
        let mut out = vec![0.0; a.rows * b.cols];
        for r in 0..a.rows {
            for c in 0..b.cols {
                out[r * b.cols + c] = (0..a.cols).map(|i| at(&a, r, i) * at(&b, i, c)).sum();
            }
        }
        out
    }

    fn close(got: &[f32], want: &[f64]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() < 1e-4 * w.abs().max(1.0),
                "[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn padded_products_equal_the_plain_sum_with_transposes_and_accumulation() {
        // 130 rows of 1,024 columns: the padded path, two blocks (128 + 2 rows).
        let (m, n, k) = (130, ALIASED_ROW, 5);
        let at = random(k * m, 1);
        let b = random(k * n, 2);
        let (a, b) = (Mat::t(&at, k, m), Mat::new(&b, k, n));
        let want = naive(a, b);
        let mut c = vec![7.0f32; m * n];
        matmul(a, b, &mut c, false, true);
        close(&c, &want);
        // Accumulating: c + a·b, on every row of both blocks.
        let plus_one: Vec<f64> = want.iter().map(|v| v + 1.0).collect();
        let mut c = vec![1.0f32; m * n];
        matmul(a, b, &mut c, true, false);
        close(&c, &plus_one);
    }

    #[test]
    fn blocks_equal_the_plain_sum_and_follow_their_states() {
        // 150 rows of 1,024 columns (padded stride), k = 7: three blocks, the last of 22 rows.
        let (m, n, k) = (150, ALIASED_ROW, 7);
        let (at, b) = (random(k * m, 5), random(k * n, 6));
        let (a, b) = (Mat::t(&at, k, m), Mat::new(&b, k, n));
        let mut c = vec![0.0f32; m * n];
        let blocks: Vec<usize> = (0..m.div_ceil(BLOCK_ROWS)).collect();
        let states = c.par_chunks_mut(BLOCK_ROWS * n).zip(blocks);
        matmul_blocks(a, b, states, |(dst, blk), g, stride| {
            assert_eq!(dst.len(), BLOCK_ROWS.min(m - blk * BLOCK_ROWS) * n);
            for (d, g) in dst.chunks_mut(n).zip(g.chunks(stride)) {
                d.copy_from_slice(&g[..n]);
            }
        });
        close(&c, &naive(a, b));
    }

    #[test]
    fn blocks_equal_gemm_bit_for_bit_for_batch_sized_inner_dimensions() {
        for (m, n, k) in [(100, ALIASED_ROW, 64), (64, 300, 128), (70, 64, 256)] {
            let (at, b) = (random(k * m, 7), random(k * n, 8));
            let (a, b) = (Mat::t(&at, k, m), Mat::new(&b, k, n));
            let mut want = vec![0.0f32; m * n];
            matmul(a, b, &mut want, false, false);
            let mut got = vec![0.0f32; m * n];
            let states = got.par_chunks_mut(BLOCK_ROWS * n);
            matmul_blocks(a, b, states, |dst, g, stride| {
                for (d, g) in dst.chunks_mut(n).zip(g.chunks(stride)) {
                    d.copy_from_slice(&g[..n]);
                }
            });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&got) == bits(&want), "{m}×{n}, k = {k}");
        }
    }

    #[test]
    fn unpadded_products_equal_the_plain_sum() {
        let (m, n, k) = (3, 5, 4);
        let a = random(m * k, 3);
        let bt = random(n * k, 4);
        let (a, b) = (Mat::new(&a, m, k), Mat::t(&bt, n, k));
        let mut c = vec![0.0f32; m * n];
        matmul(a, b, &mut c, false, false);
        close(&c, &naive(a, b));
        assert_eq!(
            dot_rows(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0], 2),
            vec![3.0, 7.0]
        );
    }
}
