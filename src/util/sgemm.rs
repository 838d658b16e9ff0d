//! fc7's own single-precision matrix product, for long inner dimensions: the fully connected
//! layers' forward and input gradient (y = x·wᵀ and dx = dy·w, k = 4,096 at batch 64). Two
//! reasons over `gemm`: on CPUs with AVX2 only its kernels ran these shapes at under half the
//! FMA peak; and here every element of c is its k products summed in order by fused
//! multiply-adds from zero, so the bits are the same on every path (AVX-512, AVX2, the portable
//! loop), thread count and cache size — gemm's blocking follows the cache sizes it detects.
//!
//! The structure is BLIS's: per block of `KC` k's, b is packed into panels of `nr` columns
//! (k-major) and a into panels of `mr` rows (k-major); the micro-kernel keeps an mr × nr tile
//! of c in registers across a block, loading it before and storing it after, so blocking never
//! splits an element's chain. When b's columns are contiguous in k (the forward's wᵀ, 64 MB),
//! packing it would be a transpose of the largest operand on every call; the product is then
//! computed as cᵀ = bᵀ·aᵀ with bᵀ's rows read in place, and transposed once at the end.

pub mod blocks;
pub mod sparse;

use rayon::prelude::*;

use super::isa::{self, Path};
use super::matmul::{matmul, padded, Mat};

/// k's per block: a 256 × 16 panel of b is 16 KB (AVX2), half the smallest first-level data
/// cache of the CPUs measured (32 KB), and a 256 × 6 panel of a another 6 KB.
const KC: usize = 256;
/// Columns of c per rayon task: a block of b's (256 × 256 floats, 256 KB) and the next one
/// fetched ahead (`Ahead`) fit a core's second-level cache together.
const NC: usize = 256;
/// Row panels of c per rayon task, for tall products (the forward's cᵀ, 4,096 rows).
const PANELS_PER_TASK: usize = 64;

/// c [a.rows × b.cols] = a · b through whichever of this kernel and gemm's runs the CPU
/// engine's products faster on this CPU's widest path: this one with AVX2, gemm's with AVX-512
/// (BENCHMARKS.md, "fc7's own product kernel") and without AVX2 (where the portable loop's FMAs
/// would be library calls on x86-64, and unmeasured elsewhere).
pub fn fastest_product(a: Mat, b: Mat, c: &mut [f32], parallel: bool) {
    match isa::fastest() {
        Path::Avx2 => product(a, b, c, parallel),
        Path::Avx512 | Path::Base => matmul(a, b, c, false, parallel),
    }
}

/// c [a.rows × b.cols] = a · b, each element its products summed in k order by FMAs.
pub fn product(a: Mat, b: Mat, c: &mut [f32], parallel: bool) {
    product_on(isa::fastest(), a, b, c, parallel);
}

/// The register tile (rows, columns) each path's micro-kernel keeps: 16 and 12 accumulators of
/// 32 and 16 registers, so that 8 or more FMAs are in flight.
fn tile(path: Path) -> (usize, usize) {
    match path {
        Path::Avx512 => (8, 32),
        Path::Avx2 => (6, 16),
        Path::Base => (4, 8),
    }
}

/// c's storage, shared by the tasks that each write their own rectangle of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint rectangles of c (see `blocked`, `sparse::product`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The element `offset` floats into c (a method, so that closures capture the whole
    /// `Out`, which is `Sync`, rather than its pointer).
    ///
    /// # Safety
    /// `offset` must lie inside c.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

pub(crate) fn product_on(path: Path, a: Mat, b: Mat, c: &mut [f32], parallel: bool) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    assert_eq!(k, b.rows());
    assert!(c.len() >= m * n);
    assert!(a.data().len() >= m * k && b.data().len() >= k * n);
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    if b.strides().0 != 1 || n == 1 {
        let ld = padded(n);
        if ld == n {
            return blocked(path, a, b, (&mut c[..m * n], n), false, parallel);
        }
        // Rows 4 KB apart put a tile's rows in the same cache sets: computed apart.
        let mut rows = vec![0.0; m * ld];
        blocked(path, a, b, (&mut rows, ld), false, parallel);
        for (dst, src) in c.chunks_mut(n).zip(rows.chunks(ld)) {
            dst.copy_from_slice(&src[..n]);
        }
        return;
    }
    // [n, m] = bᵀ [n, k] · aᵀ [k, m], bᵀ's rows read where they are.
    let mut ct = vec![0.0; n * m];
    blocked(
        path,
        b.transposed(),
        a.transposed(),
        (&mut ct, m),
        true,
        parallel,
    );
    for j0 in (0..n).step_by(16) {
        for (r, row) in c.chunks_mut(n).take(m).enumerate() {
            for (j, v) in row.iter_mut().enumerate().skip(j0).take(16) {
                *v = ct[j * m + r];
            }
        }
    }
}

/// c = a · b on rayon tasks that each own a rectangle of c. `in_place`: a's rows are read where
/// they are (all but a short last panel; fast when they are contiguous in k), a panel at a time
/// across every panel of b; otherwise a is packed once and each panel of b meets every panel
/// of a.
fn blocked(path: Path, a: Mat, b: Mat, c: (&mut [f32], usize), in_place: bool, parallel: bool) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let (mr, nr) = tile(path);
    let mut packed_a = Vec::new();
    if !in_place {
        // [m / mr panels][k][mr]
        pack_into(&mut packed_a, a, mr, (0, m), (0, k));
    }
    let (c, ldc) = c;
    assert!(ldc >= n && c.len() >= m.saturating_sub(1) * ldc + n);
    let (mc, out) = (mr * PANELS_PER_TASK, Out(c.as_mut_ptr()));
    let task = |(i0, j0): (usize, usize)| {
        let (rows, cols) = (mc.min(m - i0), NC.min(n - j0));
        let (pa, pb) = (rows.div_ceil(mr), cols.div_ceil(nr));
        let (mut packed_b, mut short) = (Vec::new(), Vec::new());
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            // [cols / nr panels][kc][nr]
            pack_into(&mut packed_b, b.transposed(), nr, (j0, cols), (k0, kc));
            let (outer, inner) = if in_place { (pa, pb) } else { (pb, pa) };
            let ahead = Ahead::new(b, (k0 + kc, KC.min(k - k0 - kc)), (j0, cols));
            for (o, q) in (0..outer).flat_map(|o| (0..inner).map(move |q| (o, q))) {
                ahead.fetch(o * inner + q, outer * inner);
                let (i, p) = if in_place { (o, q) } else { (q, o) };
                let r0 = i0 + i * mr;
                let panel = if !in_place {
                    (packed_a[r0 * k + k0 * mr..].as_ptr(), mr, 1)
                } else if r0 + mr <= m {
                    let (rs, cs) = a.strides();
                    let at = r0 * rs as usize + k0 * cs as usize;
                    (a.data()[at..].as_ptr(), cs as usize, rs as usize)
                } else {
                    if q == 0 {
                        pack_into(&mut short, a, mr, (r0, m - r0), (k0, kc));
                    }
                    (short.as_ptr(), mr, 1)
                };
                let c0 = j0 + p * nr;
                let rect = (r0, mr.min(m - r0), c0, nr.min(n - c0));
                // SAFETY: the rectangle lies inside c's m × n (r0 < m, c0 < n), which this
                // task alone writes; the panels hold kc × mr and kc × nr floats.
                unsafe {
                    let b_panel = packed_b[p * kc * nr..].as_ptr();
                    tile_block(path, (panel, b_panel, kc), out, ldc, rect, k0 == 0)
                };
            }
        }
    };
    let tasks: Vec<(usize, usize)> = (0..m)
        .step_by(mc)
        .flat_map(|i0| (0..n).step_by(NC).map(move |j0| (i0, j0)))
        .collect();
    if parallel {
        tasks.into_par_iter().for_each(task);
    } else {
        tasks.into_iter().for_each(task);
    }
}

/// The part of b that the next block packs, asked of the memory a share at a time while this
/// block computes, so that packing does not wait on it: the input gradient reads all 64 MB of
/// w once a step, and packing it as it arrived cost a quarter of that product (AVX2: 97–131
/// GFLOP/s, 127–150 with this and 256-column tasks). Only for b stored by rows, as w is there.
struct Ahead<'a> {
    data: &'a [f32],
    ld: usize,
    rows: (usize, usize),
    cols: (usize, usize),
}

impl<'a> Ahead<'a> {
    fn new(b: Mat<'a>, rows: (usize, usize), cols: (usize, usize)) -> Self {
        let (rs, cs) = b.strides();
        let rows = if cs == 1 { rows } else { (0, 0) };
        let (data, ld) = (b.data(), rs as usize);
        Ahead {
            data,
            ld,
            rows,
            cols,
        }
    }

    /// Step `t` of `steps`: its share of the rows, every cache line of their columns.
    #[inline(always)]
    fn fetch(&self, t: usize, steps: usize) {
        let (r0, rn) = self.rows;
        for r in r0 + t * rn / steps..r0 + (t + 1) * rn / steps {
            let row = &self.data[r * self.ld + self.cols.0..][..self.cols.1];
            for line in row.chunks(16) {
                // SAFETY: a prefetch of an address inside a live slice; it never faults.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch::<_MM_HINT_T0>(line.as_ptr() as *const i8)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = line;
            }
        }
    }
}

/// Rows `rows.0..rows.0 + rows.1` and columns `cols.0..` (`cols.1` of them) of `m` into `v` as
/// panels of `w` rows, column-major within a panel ([panels][cols][w]), the last panel padded
/// with zeros. The source is read along whichever of its dimensions is contiguous.
fn pack_into(v: &mut Vec<f32>, m: Mat, w: usize, rows: (usize, usize), cols: (usize, usize)) {
    let ((r0, rn), (c0, cn)) = (rows, cols);
    v.clear();
    v.resize(rn.div_ceil(w) * cn * w, 0.0);
    let (rs, cs) = m.strides();
    let (rs, cs) = (rs as usize, cs as usize);
    if rs == 1 {
        // Each column's rows are contiguous: read a column whole, `w` rows into each panel
        // (column by column, so that the reads run along the storage).
        for cc in 0..cn {
            let at = r0 + (c0 + cc) * cs;
            for (p, src) in m.data()[at..at + rn].chunks(w).enumerate() {
                copy_run(&mut v[(p * cn + cc) * w..], src);
            }
        }
        return;
    }
    for (p, panel) in v.chunks_mut(cn * w).enumerate() {
        let (first, height) = (r0 + p * w, w.min(rn - p * w));
        // Each row's columns are contiguous: read a row, write it every `w`.
        for rr in 0..height {
            let at = (first + rr) * rs + c0;
            let src = &m.data()[at..at + cn];
            for (d, s) in panel[rr..].iter_mut().step_by(w).zip(src) {
                *d = *s;
            }
        }
    }
}

/// `src` to the start of `dst`; the tile widths' lengths inline (a call per 128 bytes was a
/// quarter of the input gradient's time).
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
        dst[..N].copy_from_slice(&src[..N]);
    }
    match src.len() {
        32 => fixed::<32>(dst, src),
        16 => fixed::<16>(dst, src),
        8 => fixed::<8>(dst, src),
        n => dst[..n].copy_from_slice(src),
    }
}

/// Where the micro-kernel reads a panel of a's rows: (start, step between k's, step between
/// rows) — a packed panel ([kc][mr]: mr, 1) or the matrix itself (1, its row length).
type Panel = (*const f32, usize, usize);

/// One mr × nr tile of c over one block of k: b's panel is [kc][nr]; `rect` is (first row,
/// rows, first column, columns) of c, smaller than the tile at c's edges, where the kernel runs
/// on a copy. `first`: the block starts the chains (from zero, not from c).
///
/// # Safety
/// `rect` must lie inside c (row stride `ldc`), written by no one else meanwhile; the panels
/// must hold kc k's of mr rows and of nr columns; the path must be one this CPU runs.
unsafe fn tile_block(
    path: Path,
    (a, b, kc): (Panel, *const f32, usize),
    c: Out,
    ldc: usize,
    (r0, rows, c0, cols): (usize, usize, usize, usize),
    first: bool,
) {
    let (mr, nr) = tile(path);
    let at = c.0.add(r0 * ldc + c0);
    if rows == mr && cols == nr {
        return kernel(path, kc, a, b, (at, ldc), first);
    }
    let mut part = [0.0f32; 8 * 32];
    if !first {
        for r in 0..rows {
            copy_run(
                &mut part[r * nr..],
                std::slice::from_raw_parts(at.add(r * ldc), cols),
            );
        }
    }
    kernel(path, kc, a, b, (part.as_mut_ptr(), nr), first);
    for r in 0..rows {
        copy_run(
            std::slice::from_raw_parts_mut(at.add(r * ldc), cols),
            &part[r * nr..][..cols],
        );
    }
}

/// # Safety
/// As `tile_block`'s, for a whole tile.
unsafe fn kernel(
    path: Path,
    kc: usize,
    a: Panel,
    b: *const f32,
    c: (*mut f32, usize),
    first: bool,
) {
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => kernel_avx512(kc, a, b, c, first),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => kernel_avx2(kc, a, b, c, first),
        _ => chains::<4, 8>(kc, a, b, c, first),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512(kc: usize, a: Panel, b: *const f32, c: (*mut f32, usize), first: bool) {
    chains::<8, 32>(kc, a, b, c, first);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(kc: usize, a: Panel, b: *const f32, c: (*mut f32, usize), first: bool) {
    chains::<6, 16>(kc, a, b, c, first);
}

/// The micro-kernel: an MR × NR tile of accumulators, each `acc = a[r]·b[j] + acc` rounded
/// once (`mul_add`), k by k. Compiled inside each path's `target_feature` function, the tile
/// lives in that path's vector registers.
#[inline(always)]
unsafe fn chains<const MR: usize, const NR: usize>(
    kc: usize,
    (a, k_step, row_step): Panel,
    b: *const f32,
    (c, ldc): (*mut f32, usize),
    first: bool,
) {
    let mut acc = [[0.0f32; NR]; MR];
    if !first {
        for (r, row) in acc.iter_mut().enumerate() {
            std::ptr::copy_nonoverlapping(c.add(r * ldc), row.as_mut_ptr(), NR);
        }
    }
    let rows: [*const f32; MR] = std::array::from_fn(|r| a.add(r * row_step));
    for p in 0..kc {
        let bv = &*(b.add(p * NR) as *const [f32; NR]);
        for (row, src) in acc.iter_mut().zip(rows) {
            let x = *src.add(p * k_step);
            for (s, bj) in row.iter_mut().zip(bv) {
                *s = x.mul_add(*bj, *s);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        std::ptr::copy_nonoverlapping(row.as_ptr(), c.add(r * ldc), NR);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::util::matmul::tests::random;
    use crate::util::matmul::ALIASED_ROW;

    /// The definition: each element's k products summed in order, each FMA rounded once.
    pub(crate) fn chain(a: Mat, b: Mat) -> Vec<f32> {
        let mut out = vec![0.0; a.rows() * b.cols()];
        for r in 0..a.rows() {
            for c in 0..b.cols() {
                out[r * b.cols() + c] =
                    (0..a.cols()).fold(0.0f32, |s, i| a.get(r, i).mul_add(b.get(i, c), s));
            }
        }
        out
    }

    pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn the_chain_is_the_product() {
        // [[1, 2], [3, 4]] · [[5, 6], [7, 8]], by hand.
        let (a, b) = ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]);
        let want = [19.0, 22.0, 43.0, 50.0];
        assert_eq!(chain(Mat::new(&a, 2, 2), Mat::new(&b, 2, 2)), want);
        let mut c = [0.0; 4];
        product(Mat::new(&a, 2, 2), Mat::new(&b, 2, 2), &mut c, false);
        assert_eq!(c, want);
        // b given as its transpose's storage.
        product(
            Mat::new(&a, 2, 2),
            Mat::t(&[5.0, 7.0, 6.0, 8.0], 2, 2),
            &mut c,
            true,
        );
        assert_eq!(c, want);
    }

    #[test]
    fn every_path_gives_the_chains_bits_at_every_edge() {
        // Rows and columns off every tile size, k across one, two and three blocks, b stored
        // both ways (the forward's wᵀ and the input gradient's w), serial and parallel; 1,024
        // columns are computed into padded rows.
        for (m, n, k) in [
            (7, 33, 5),
            (5, ALIASED_ROW, 40),
            (64, 600, 300),
            (13, 1030, 2 * KC + 17),
            (1, 9, 1),
        ] {
            let (x, w) = (random(m * k, 1), random(k * n, 2));
            for b in [Mat::new(&w, k, n), Mat::t(&w, n, k)] {
                let a = Mat::new(&x, m, k);
                let want = bits(&chain(a, b));
                for path in isa::runnable() {
                    for parallel in [false, true] {
                        let mut c = vec![f32::NAN; m * n];
                        product_on(path, a, b, &mut c, parallel);
                        assert!(bits(&c) == want, "{path:?} {m}×{n}, k = {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_transposed_and_an_empty_inner_dimension() {
        let (m, n, k) = (9, 40, 70);
        let (at, b) = (random(k * m, 3), random(k * n, 4));
        let (a, b) = (Mat::t(&at, k, m), Mat::new(&b, k, n));
        let mut c = vec![0.0; m * n];
        product(a, b, &mut c, true);
        assert!(bits(&c) == bits(&chain(a, b)));
        let mut c = vec![1.0; 6];
        product(Mat::new(&[], 2, 0), Mat::new(&[], 0, 3), &mut c, true);
        assert_eq!(c, [0.0; 6]);
    }
}
