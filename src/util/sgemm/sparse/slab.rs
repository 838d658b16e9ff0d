//! Slabs: the rows of b that a block of `W` columns of a sparse product reads, copied out of
//! b into a [rows][W] buffer so that they lie together in cache, whichever way b is stored.

use super::W;
use crate::util::isa;
use crate::util::matmul::Mat;

/// Rows `rows` and columns c0..c0 + W of b (fewer at the right edge, zero-padded to W) as
/// [rows][W], into `v`: b's rows are 16 KB apart in fc7's layers, so read in place they would
/// share a handful of cache sets. b may be stored either way: rows contiguous (copied) or
/// columns contiguous (the forward's wᵀ: transposed on the way).
pub(super) fn slab_into(v: &mut Vec<f32>, b: Mat, c0: usize, rows: std::ops::Range<usize>) {
    let (n, (rs, cs)) = (b.cols(), b.strides());
    let cols = W.min(n - c0);
    // Every row's first `cols` floats are written below: only a right edge's padding is cleared.
    v.resize(rows.len() * W, 0.0);
    if cols < W {
        v.chunks_exact_mut(W).for_each(|row| row[cols..].fill(0.0));
    }
    if cs == 1 {
        let ld = rs as usize;
        for (p, dst) in rows.zip(v.chunks_exact_mut(W)) {
            dst[..cols].copy_from_slice(&b.data()[p * ld + c0..][..cols]);
        }
    } else {
        transpose_into(v, b, c0, cols, rows);
    }
}

/// The strided case of `slab_into`: b [k, n] stored as bᵀ (its columns contiguous), so
/// v[q][j] = b[k0 + q][c0 + j] gathers across columns; whole 8 × 8 blocks through registers
/// with AVX2 (`transpose_blocks`), the ragged edges one by one.
fn transpose_into(v: &mut [f32], b: Mat, c0: usize, cols: usize, rows: std::ops::Range<usize>) {
    let (ld, k0, len) = (b.strides().1 as usize, rows.start, rows.len());
    let at = c0 * ld + k0;
    let (j8, q8) = transpose_blocks(v, &b.data()[at..], ld, (cols, len));
    for j in 0..cols {
        let from = if j < j8 { q8 } else { 0 };
        for q in from..len {
            v[q * W + j] = b.data()[at + j * ld + q];
        }
    }
}

/// v[q][j] = src[j·ld + q] for j < j8 and q < q8, the largest multiples of 8 within
/// (cols, len), when the CPU has AVX2; returns (j8, q8), (0, 0) where nothing was done.
#[cfg(target_arch = "x86_64")]
fn transpose_blocks(
    v: &mut [f32],
    src: &[f32],
    ld: usize,
    (cols, len): (usize, usize),
) -> (usize, usize) {
    if !isa::avx2() {
        return (0, 0);
    }
    let (j8, q8) = (cols / 8 * 8, len / 8 * 8);
    if j8 == 0 || q8 == 0 {
        return (0, 0);
    }
    assert!((j8 - 1) * ld + q8 <= src.len() && (q8 - 1) * W + j8 <= v.len());
    for j in (0..j8).step_by(8) {
        for q in (0..q8).step_by(8) {
            // SAFETY: both 8 × 8 blocks lie inside the slices (asserted for the last ones);
            // the CPU has AVX2.
            unsafe { transpose8(src[j * ld + q..].as_ptr(), ld, v[q * W + j..].as_mut_ptr()) };
        }
    }
    (j8, q8)
}

#[cfg(not(target_arch = "x86_64"))]
fn transpose_blocks(_: &mut [f32], _: &[f32], _: usize, _: (usize, usize)) -> (usize, usize) {
    (0, 0)
}

/// dst[r][c] = src[c][r] for an 8 × 8 block: src's rows `ld` floats apart, dst's `W`.
///
/// # Safety
/// Both blocks must be in bounds; the CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose8(src: *const f32, ld: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
    let mut r = [_mm256_setzero_ps(); 8];
    for (i, v) in r.iter_mut().enumerate() {
        *v = _mm256_loadu_ps(src.add(i * ld));
    }
    // Closures would not inherit this function's target features: written out.
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let s = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for i in 0..4 {
        _mm256_storeu_ps(
            dst.add(i * W),
            _mm256_permute2f128_ps::<0x20>(s[i], s[i + 4]),
        );
        _mm256_storeu_ps(
            dst.add((i + 4) * W),
            _mm256_permute2f128_ps::<0x31>(s[i], s[i + 4]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::matmul::tests::{random, stored_transposed};

    /// A slab is b's rows and W columns, zero-padded at the right edge, the same from b stored
    /// either way; a buffer reused from a slab before (here NaNs) leaves no trace. Sizes reach
    /// past whole 8 × 8 blocks in both directions.
    #[test]
    fn slabs_hold_bs_rows_and_columns_whichever_way_b_is_stored() {
        let (k, n) = (27, W + 11);
        let b = random(k * n, 5);
        let bt = stored_transposed(&b, k, n);
        for (c0, rows) in [(0, 3..27), (W, 0..9), (8, 1..2)] {
            let cols = W.min(n - c0);
            let at = |p: usize, j: usize| if j < cols { b[p * n + c0 + j] } else { 0.0 };
            let want: Vec<f32> = rows
                .clone()
                .flat_map(|p| (0..W).map(move |j| at(p, j)))
                .collect();
            for stored in [Mat::new(&b, k, n), Mat::t(&bt, n, k)] {
                let mut v = vec![f32::NAN; 2 * k * W];
                slab_into(&mut v, stored, c0, rows.clone());
                assert!(
                    v == want,
                    "c0 {c0}, rows {rows:?}, strides {:?}",
                    stored.strides()
                );
            }
        }
    }
}
