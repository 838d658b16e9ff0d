//! Products whose left operand is mostly zeros, with the zeros skipped: the fully connected
//! layers in training. ReLU and dropout leave 17–19% of fc7's output gradient nonzero through
//! the demo's training and 24–25% of its input (fc6's output), so the input gradient dx = dy·w,
//! the weight gradient dw = dyᵀ·x and the forward y = x·wᵀ need a fifth to a quarter of the
//! dense products' multiply-adds.
//!
//! Each element is still its products summed in k order by fused multiply-adds from zero, the
//! nonzero ones only: the dense chain's bits (`sgemm::product`, `blocks`), because a product
//! with a zero factor adds ±0 to an accumulator that started at +0 and so leaves it as it was
//! (b finite; a NaN or an infinity in b would have spread through the dense chain and is
//! dropped here, when it meets a zero). Each nonzero of a's row scales one row of b: b's rows are
//! contiguous for dx and dw (w, x) and are gathered from wᵀ's columns for the forward.

use rayon::prelude::*;

mod slab;

use super::blocks::BLOCK;
use super::Out;
use crate::util::isa::{self, Path};
use crate::util::matmul::{padded, Mat};
use slab::slab_into;

/// Fraction of nonzeros in a below which skipping pays. `fc7bench sparse-products 4096 4096
/// 128 10 P` held to AVX2 (Zen 5): at 30% nonzero both skipping products still won (dx 18.6
/// against 24.0 ms, dW 12.0 against 18.8), at 50% dx lost (32.5 against 24.0).
pub const SPARSE_BELOW: f64 = 0.4;

/// Columns of c per accumulator block: 8 vector registers of AVX2, so that 8 FMAs are in flight
/// (4 of AVX-512; 128 columns there ran dx in 10.6 ms against 13.1, but AVX-512 keeps gemm's
/// dense dx, and dW did not gain).
const W: usize = 64;
/// Columns of c below which `product` leaves a thread idle (it splits c into `W`-column
/// blocks): narrower layers (fc8's 10 outputs) keep their dense product.
pub const WIDE: usize = 4 * W;
/// Rows of b per slab in `product`: 256 × 256 bytes = 64 KB, an eighth of a Zen 3's
/// second-level cache. `fc7bench sparse-products 4096 4096 128 10 P` held to AVX2 on a Zen 5,
/// dy 18% / 25% nonzero: dx 10.3–11.3 / 13.4 ms against 11.6–11.9 / 14.2–14.5 with 1,024-row
/// slabs, the forward about the same (9.9–10.5 / 11.7–12.1 against 10.9–11.0 / 12.0–12.2);
/// 64-row slabs were slower (6.3 ms at 0% nonzero against 4.0).
const KB: usize = 256;

/// The fraction of a's entries that are not zero.
pub fn density(a: &[f32]) -> f64 {
    let nz = a.iter().filter(|v| **v != 0.0).count();
    nz as f64 / a.len().max(1) as f64
}

/// The path the skipping product takes here, when `a` is sparse enough for it to pay: only
/// with AVX2 or AVX-512, where `mul_add` is an instruction.
pub fn pays(a: &[f32]) -> Option<Path> {
    let path = isa::fastest();
    (path != Path::Base && density(a) < SPARSE_BELOW).then_some(path)
}

/// The nonzeros of each row of a matrix, in column order: row r's are
/// `cols[starts[r]..starts[r + 1]]` with their values in `vals`.
pub(crate) struct Nonzeros {
    starts: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f32>,
}

impl Nonzeros {
    /// Rows `rows` of `a`, read in the order they are stored: along a's rows, or, where a is
    /// stored transposed (the weight gradient's dyᵀ, whose rows are 16 KB apart in fc7's
    /// layers), across them, each nonzero placed in its row by a counting pass first. A `Mat`
    /// is row-major storage read as is or transposed, so one of its strides is 1.
    pub(crate) fn of(a: Mat, rows: std::ops::Range<usize>) -> Nonzeros {
        let (rs, cs) = a.strides();
        let k = a.cols();
        if cs != 1 {
            return Nonzeros::across(a.data(), cs as usize, k, rows);
        }
        let mut nz = Nonzeros {
            starts: vec![0],
            cols: Vec::new(),
            vals: Vec::new(),
        };
        for r in rows {
            let row = &a.data()[r * rs as usize..][..k];
            for (p, &v) in row.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                nz.cols.push(p as u32);
                nz.vals.push(v);
            }
            nz.starts.push(nz.cols.len());
        }
        nz
    }

    /// `of` for a stored transposed: a[r][p] = data[p·ld + r], read storage row by storage row.
    fn across(data: &[f32], ld: usize, k: usize, rows: std::ops::Range<usize>) -> Nonzeros {
        let m = rows.len();
        let stored = |p: usize| &data[p * ld + rows.start..][..m];
        let mut starts = vec![0usize; m + 1];
        for p in 0..k {
            for (r, v) in stored(p).iter().enumerate() {
                starts[r + 1] += usize::from(*v != 0.0);
            }
        }
        for r in 0..m {
            starts[r + 1] += starts[r];
        }
        let (mut next, nnz) = (starts.clone(), starts[m]);
        let (mut cols, mut vals) = (vec![0u32; nnz], vec![0.0f32; nnz]);
        for p in 0..k {
            for (r, &v) in stored(p).iter().enumerate().filter(|(_, v)| **v != 0.0) {
                (cols[next[r]], vals[next[r]]) = (p as u32, v);
                next[r] += 1;
            }
        }
        Nonzeros { starts, cols, vals }
    }

    fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let span = self.starts[r]..self.starts[r + 1];
        (&self.cols[span.clone()], &self.vals[span])
    }

    fn rows(&self) -> usize {
        self.starts.len() - 1
    }
}

/// c [m × n] = a · b with a's zeros skipped; b stored either way. Parallel over blocks of `W`
/// columns; each block's `KB` rows of b at a time are copied out (`slab_into`) and met by every
/// row of a, whose chains carry on across them in a buffer of the block's columns.
pub fn product(path: Path, a: Mat, b: Mat, c: &mut [f32]) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    assert_eq!(k, b.rows());
    assert!(c.len() >= m * n);
    let nz = Nonzeros::of(a, 0..m);
    // Where each row's nonzeros cross into each slab's rows: [m][slabs + 1], the same for
    // every block of columns.
    let slabs = k.div_ceil(KB);
    let bounds: Vec<usize> = (0..m)
        .flat_map(|r| {
            let ps = nz.row(r).0;
            (0..=slabs).map(|s| ps.partition_point(|&p| (p as usize) < s * KB))
        })
        .collect();
    let out = Out(c.as_mut_ptr());
    (0..n).into_par_iter().step_by(W).for_each(|c0| {
        // This block's columns of c, rows W apart: c's own rows are 16 KB apart in fc7's
        // layers and would share a handful of cache sets.
        let mut acc = vec![0.0f32; m * W];
        let mut buf = Vec::new();
        for (s, k0) in (0..k).step_by(KB).enumerate() {
            slab_into(&mut buf, b, c0, k0..k.min(k0 + KB));
            for r in 0..m {
                let (ps, vs) = nz.row(r);
                let span = bounds[r * (slabs + 1) + s]..bounds[r * (slabs + 1) + s + 1];
                let row = (&ps[span.clone()], &vs[span]);
                let at = acc[r * W..].as_mut_ptr();
                // SAFETY: W floats of this task's own buffer; the path is one this CPU runs.
                unsafe { row_block(path, row, (&buf, k0), (at, W), k0 == 0) };
            }
        }
        let cols = W.min(n - c0);
        for (r, row) in acc.chunks_exact(W).enumerate() {
            // SAFETY: row r's columns c0..c0 + cols of c, written by this task alone.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.at(r * n + c0), cols) };
        }
    });
}

/// a · b a block of `block_rows` rows at a time, a's zeros skipped, handed on as
/// `blocks::fastest_blocks` hands them: `f(state, block, stride)`, one state per block, the
/// block's rows `stride` floats apart. b is copied into slabs once for all blocks.
pub fn blocks<T: Send>(
    path: Path,
    (a, b): (Mat, Mat),
    block_rows: usize,
    states: impl IndexedParallelIterator<Item = T>,
    f: impl Fn(T, &[f32], usize) + Sync,
) {
    let (m, n) = (a.rows(), b.cols());
    assert_eq!(a.cols(), b.rows());
    assert_eq!(b.strides().1, 1, "b's rows are contiguous");
    assert_eq!(states.len(), m.div_ceil(block_rows), "one state per block");
    let slabs: Vec<Vec<f32>> = (0..n)
        .step_by(W)
        .map(|c0| {
            let mut v = Vec::new();
            slab_into(&mut v, b, c0, 0..b.rows());
            v
        })
        .collect();
    let stride = padded(n);
    states.enumerate().for_each(|(blk, state)| {
        let r0 = blk * block_rows;
        let nz = Nonzeros::of(a, r0..m.min(r0 + block_rows));
        // Not cleared: every element handed on is written below.
        let mut c = BLOCK.take();
        c.resize(nz.rows() * stride, 0.0);
        for (slab, c0) in slabs.iter().zip((0..n).step_by(W)) {
            for r in 0..nz.rows() {
                // SAFETY: as in `product`, on this block's own buffer (row stride ≥ n).
                let at = unsafe { c.as_mut_ptr().add(r * stride + c0) };
                unsafe { row_block(path, nz.row(r), (slab, 0), (at, n - c0), true) };
            }
        }
        f(state, &c, stride);
        BLOCK.set(c);
    });
}

/// out[..min(W, cols)] = Σ over the row's nonzeros (p, v) of v · slab[p − k0], in p order,
/// carried on from out's values unless `first`.
///
/// # Safety
/// `out` must hold min(W, cols) floats, written by no one else meanwhile; `path` must be one
/// this CPU runs.
unsafe fn row_block(
    path: Path,
    nz: (&[u32], &[f32]),
    slab: (&[f32], usize),
    (out, cols): (*mut f32, usize),
    first: bool,
) {
    let mut acc = [0.0f32; W];
    let cols = W.min(cols);
    if !first {
        std::ptr::copy_nonoverlapping(out, acc.as_mut_ptr(), cols);
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => chain_avx512(nz, slab, &mut acc),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => chain_avx2(nz, slab, &mut acc),
        _ => chain(nz, slab, &mut acc),
    }
    std::ptr::copy_nonoverlapping(acc.as_ptr(), out, cols);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chain_avx512(nz: (&[u32], &[f32]), slab: (&[f32], usize), acc: &mut [f32; W]) {
    chain(nz, slab, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chain_avx2(nz: (&[u32], &[f32]), slab: (&[f32], usize), acc: &mut [f32; W]) {
    chain(nz, slab, acc)
}

/// `W` accumulators, `acc = v·slab[p − k0][j] + acc` rounded once, nonzero by nonzero.
#[inline(always)]
fn chain((cols, vals): (&[u32], &[f32]), (slab, k0): (&[f32], usize), acc: &mut [f32; W]) {
    let mut sum = *acc;
    for (&p, &v) in cols.iter().zip(vals) {
        let row: &[f32; W] = slab[(p as usize - k0) * W..][..W]
            .try_into()
            .expect("W floats");
        for (s, bj) in sum.iter_mut().zip(row) {
            *s = v.mul_add(*bj, *s);
        }
    }
    *acc = sum;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::matmul::tests::{random, stored_transposed};
    use crate::util::sgemm::tests::{bits, chain};

    /// `random` with all but `percent`% of its entries zeroed, and row 1 all zeros.
    fn sparse_random(len: usize, cols: usize, percent: u64, seed: u64) -> Vec<f32> {
        let mut v = random(len, seed);
        for (j, x) in v.iter_mut().enumerate() {
            let h = (j as u64 ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            if h % 100 >= percent || j / cols == 1 {
                *x = 0.0;
            }
        }
        v
    }

    /// The definition's bits on every path this CPU runs, with b stored both ways (rows
    /// contiguous as w for dx, columns contiguous as the forward's wᵀ): columns off the
    /// accumulator width and off the 8 × 8 transposes, k across one, two and three slabs and off
    /// a multiple of 8, an all-zero row, dense and sparse rows.
    #[test]
    fn skipping_zeros_gives_the_dense_chains_bits() {
        for (m, n, k, percent) in [
            (7, 33, 5, 50),
            (5, 2 * W + 3, 2 * KB + 17, 20),
            (4, W + 8, 2 * KB, 30),
            (3, W, 9, 100),
        ] {
            let (a, b) = (sparse_random(m * k, k, percent, 1), random(k * n, 2));
            let bt = stored_transposed(&b, k, n);
            let a = Mat::new(&a, m, k);
            let (b, bt) = (Mat::new(&b, k, n), Mat::t(&bt, n, k));
            let want = bits(&chain(a, b));
            for (path, b) in isa::runnable().into_iter().flat_map(|p| [(p, b), (p, bt)]) {
                let mut c = vec![f32::NAN; m * n];
                product(path, a, b, &mut c);
                let how = if b.strides().1 == 1 {
                    "rows"
                } else {
                    "columns"
                };
                assert!(
                    bits(&c) == want,
                    "{path:?} {m}×{n}, k = {k}, b's {how} contiguous"
                );
            }
        }
    }

    /// The weight gradient's layout (a = dyᵀ read from dy's storage), blocks of rows with a
    /// short last one, handed on with their stride: the definition's bits, block by block.
    #[test]
    fn blocks_hand_on_the_dense_chains_bits() {
        let (n, o, i, rows) = (9, 70, 2 * W + 5, 32);
        let (dy, x) = (sparse_random(n * o, o, 25, 3), random(n * i, 4));
        let (a, b) = (Mat::t(&dy, n, o), Mat::new(&x, n, i));
        let want = bits(&chain(a, b));
        for path in isa::runnable() {
            let mut got = vec![f32::NAN; o * i];
            blocks(
                path,
                (a, b),
                rows,
                got.par_chunks_mut(rows * i),
                |out, blk, stride| {
                    for (d, s) in out.chunks_mut(i).zip(blk.chunks(stride)) {
                        d.copy_from_slice(&s[..i]);
                    }
                },
            );
            assert!(bits(&got) == want, "{path:?}");
        }
    }

    #[test]
    fn density_counts_the_nonzeros() {
        assert_eq!(density(&[0.0, 1.0, -0.0, 2.0]), 0.5);
        assert_eq!(density(&[]), 0.0);
    }
}
