//! Bilinear (antialiased) resampling of 8-bit RGB with a crop, in integers: weights computed in
//! f64 as Pillow computes them (a triangle widened by the scale when shrinking, normalised),
//! rounded to i16 at the finest precision that fits, each output the clamped sum of its taps
//! from half a unit, shifted. Rows are resampled first (over the columns the second pass reads),
//! then columns: the other order would differ in the last bit. This is fast_image_resize's
//! `Convolution(Bilinear)` arithmetic, which fc7 used before, pixel for pixel, so packs, models
//! and Figure 4 are unchanged; its kernels for 60 precisions in SSE4 and AVX2 were a fifth of
//! fc7's compiled code. Here the precision is a run-time shift and there is one AVX2 kernel per
//! pass, picked at run time, with a scalar loop for other CPUs and for the ends of rows.

use crate::util::isa::avx2;

/// Each output pixel's first input and its i16 weights (`weights[offset[i]..offset[i + 1]]`).
struct Taps {
    start: Vec<u32>,
    offset: Vec<usize>,
    weights: Vec<i16>,
    precision: u32,
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

impl Taps {
    /// `out_size` outputs over the window [in0, in1) of `in_size` inputs.
    fn new(in_size: u32, in0: f64, in1: f64, out_size: u32) -> Taps {
        let (start, offset, w) = weights(in_size, in0, in1, out_size);
        let max = w.iter().copied().fold(0.0f64, f64::max);
        let mut precision = 0;
        for p in 0..22 {
            precision = p;
            if (max * (1u32 << (p + 1)) as f64).round() as i32 >= 1 << 15 {
                break;
            }
        }
        let scale = (1u32 << precision) as f64;
        Taps {
            start,
            offset,
            weights: w.iter().map(|&v| (v * scale).round() as i16).collect(),
            precision,
        }
    }

    fn of(&self, i: usize) -> (usize, &[i16]) {
        let ks = &self.weights[self.offset[i]..self.offset[i + 1]];
        (self.start[i] as usize, ks)
    }

    /// The first and one past the last input the taps read.
    fn span(&self) -> (u32, u32) {
        let (s, ks) = self.of(self.start.len() - 1);
        (self.start[0], (s + ks.len()) as u32)
    }
}

/// The f64 weights of each output over its inputs, zeros trimmed from both ends, normalised to
/// sum to 1: (first input, offsets into the weights, the weights).
fn weights(in_size: u32, in0: f64, in1: f64, out_size: u32) -> (Vec<u32>, Vec<usize>, Vec<f64>) {
    let scale = (in1 - in0) / out_size as f64;
    let radius = scale.max(1.0); // the triangle's support, 1, widened when shrinking
    let recip = 1.0 / radius;
    let (mut starts, mut offset, mut all) = (Vec::new(), vec![0], Vec::new());
    for out_x in 0..out_size {
        let in_center = in0 + (out_x as f64 + 0.5) * scale;
        let x_min = (in_center - radius).floor().max(0.) as u32;
        let x_max = (in_center + radius).ceil().min(in_size as f64) as u32;
        let center = in_center - 0.5;
        let (mut start, mut end, first) = (x_min, x_max, all.len());
        let mut sum = 0.0;
        for x in x_min..x_max {
            let v = triangle((x as f64 - center) * recip);
            if x == start && v == 0. {
                start += 1;
            } else {
                all.push(v);
                sum += v;
            }
        }
        for &c in all[first..].iter().rev() {
            if end <= start || c != 0. {
                break;
            }
            end -= 1;
        }
        if sum != 0.0 {
            all[first..].iter_mut().for_each(|v| *v /= sum);
        }
        all.truncate(first + (end - start) as usize);
        starts.push(start);
        offset.push(all.len());
    }
    (starts, offset, all)
}

/// An 8-bit RGB image: `w` × `h` pixels, rows of `3·w` bytes.
pub struct Rgb<'a> {
    pub w: u32,
    pub h: u32,
    pub px: &'a [u8],
}

/// The crop [left, left + side) × [top, top + side) of `src` (source coordinates, fractional
/// allowed) resampled to `out` × `out`. None when the crop is empty or leaves the image.
pub fn crop_resize(src: &Rgb, left: f64, top: f64, side: f64, out: u32) -> Option<Vec<u8>> {
    crop_resize_with(src, left, top, side, out, avx2())
}

/// [`crop_resize`], with the AVX2 kernels or (`simd` false, or not x86-64) without.
fn crop_resize_with(
    src: &Rgb,
    left: f64,
    top: f64,
    side: f64,
    out: u32,
    simd: bool,
) -> Option<Vec<u8>> {
    let (w, h) = (src.w as f64, src.h as f64);
    if side <= 0. || left < 0. || top < 0. || left + side > w || top + side > h || out == 0 {
        return None;
    }
    let whole = |v: f64| v == v.round();
    let need_h = out as f64 != side || !whole(left);
    let need_v = out as f64 != side || !whole(top);
    let stride = src.w as usize * 3;
    let (l, t, n) = (left as usize, top as usize, out as usize);
    Some(match (need_h, need_v) {
        (true, true) => {
            let ht = Taps::new(src.w, left, left + side, out);
            let vt = Taps::new(src.h, top, top + side, out);
            let (x0, x1) = ht.span();
            let band = (x1 - x0) as usize;
            // [out rows, band columns, 3]
            let tall = rows(src.px, stride, x0 as usize * 3, band * 3, &vt, simd);
            columns(&tall, band, n, &ht, x0, simd)
        }
        (true, false) => {
            let ht = Taps::new(src.w, left, left + side, out);
            columns(
                &src.px[t * stride..(t + n) * stride],
                src.w as usize,
                n,
                &ht,
                0,
                simd,
            )
        }
        (false, true) => {
            let vt = Taps::new(src.h, top, top + side, out);
            rows(src.px, stride, l * 3, n * 3, &vt, simd)
        }
        (false, false) => (t..t + n)
            .flat_map(|y| {
                src.px[y * stride + l * 3..y * stride + (l + n) * 3]
                    .iter()
                    .copied()
            })
            .collect(),
    })
}

/// The vertical pass: output row `r` is `n` bytes from byte `off` of the source rows its taps
/// name (rows `stride` bytes apart), weighted, summed from half a unit, shifted and clamped.
fn rows(src: &[u8], stride: usize, off: usize, n: usize, taps: &Taps, simd: bool) -> Vec<u8> {
    let mut out = vec![0u8; taps.start.len() * n];
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    let mut tapped: Vec<&[u8]> = Vec::new();
    for (r, o) in out.chunks_exact_mut(n).enumerate() {
        let (start, ks) = taps.of(r);
        tapped.clear();
        tapped.extend((start..start + ks.len()).map(|y| &src[y * stride + off..][..n]));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd` only where the CPU has AVX2; every tapped row holds n bytes.
        let done = if simd {
            unsafe { row_avx2(&tapped, ks, o, taps.precision) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        for (i, d) in o.iter_mut().enumerate().skip(done) {
            let sum = (tapped.iter().zip(ks)).fold(1i32 << (taps.precision - 1), |a, (t, &k)| {
                a + t[i] as i32 * k as i32
            });
            *d = (sum >> taps.precision).clamp(0, 255) as u8;
        }
    }
    out
}

/// One output row of [`rows`], 16 bytes at a time and two taps per step: the bytes of two rows
/// interleaved and widened to i16, multiplied by the pair of weights and summed in pairs into
/// i32 (`madd`), the exact integers of the scalar loop. Returns the bytes written (a multiple
/// of 16; the scalar loop does the rest).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_avx2(tapped: &[&[u8]], ks: &[i16], o: &mut [u8], p: u32) -> usize {
    use std::arch::x86_64::*;
    let n = o.len() / 16 * 16;
    let init = _mm256_set1_epi32(1 << (p - 1));
    let shift = _mm_cvtsi32_si128(p as i32);
    let zero = [0u8; 16];
    for i in (0..n).step_by(16) {
        let (mut lo, mut hi) = (init, init); // [8] i32: bytes i..i+8, i+8..i+16
        for (rs, k) in tapped.chunks(2).zip(ks.chunks(2)) {
            let (second, k1) = match rs {
                [_, b] => (b.as_ptr().add(i), k[1]),
                _ => (zero.as_ptr(), 0),
            };
            let w = _mm256_set1_epi32(((k1 as u16 as u32) << 16 | k[0] as u16 as u32) as i32);
            let r0 = _mm_loadu_si128(rs[0].as_ptr().add(i) as *const __m128i);
            let r1 = _mm_loadu_si128(second as *const __m128i);
            let a = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(r0, r1));
            let b = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(r0, r1));
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(a, w));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(b, w));
        }
        let (lo, hi) = (_mm256_sra_epi32(lo, shift), _mm256_sra_epi32(hi, shift));
        // packs works within 128-bit lanes: [lo0-3 hi0-3 | lo4-7 hi4-7] → [lo0-7 | hi0-7]
        let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(lo, hi));
        let bytes = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
        _mm_storeu_si128(o.as_mut_ptr().add(i) as *mut __m128i, bytes);
    }
    n
}

/// The horizontal pass over `img` ([rows, w pixels, 3]) → [rows, out, 3]; `shift` is
/// subtracted from the taps' starts (the columns before the band `img` holds).
fn columns(img: &[u8], w: usize, out: usize, taps: &Taps, shift: u32, simd: bool) -> Vec<u8> {
    let shift = shift as usize;
    let mut res = vec![0u8; img.len() / w * out];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `simd` only where the CPU has AVX2.
    let quads = simd.then(|| unsafe { quad_weights(taps) });
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    for (r, dst) in res.chunks_exact_mut(out * 3).enumerate() {
        let src = &img[r * w * 3..(r + 1) * w * 3];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 (`quads` exists); the kernel bounds its own reads.
        let done = (quads.as_ref()).map_or(0, |q| unsafe {
            pixels_avx2(img, r * w * 3, dst, taps, q, shift)
        });
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        for (x, d) in dst.chunks_exact_mut(3).enumerate().skip(done) {
            let (start, ks) = taps.of(x);
            let from = (start - shift) * 3;
            let mut sum = [1i32 << (taps.precision - 1); 3];
            for (px, &k) in src[from..from + ks.len() * 3].chunks_exact(3).zip(ks) {
                for c in 0..3 {
                    sum[c] += px[c] as i32 * k as i32;
                }
            }
            for c in 0..3 {
                d[c] = (sum[c] >> taps.precision).clamp(0, 255) as u8;
            }
        }
    }
    res
}

/// Each pixel's weights four taps to a register: (k0, k1) in every i32 of the low half, (k2,
/// k3) of the high, zero past the last tap; `.1[x]..` is where pixel x's registers start.
#[cfg(target_arch = "x86_64")]
type Quads = (Vec<std::arch::x86_64::__m256i>, Vec<usize>);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quad_weights(taps: &Taps) -> Quads {
    use std::arch::x86_64::*;
    let (mut regs, mut at) = (Vec::new(), vec![0]);
    for x in 0..taps.start.len() {
        let ks = taps.of(x).1;
        let k = |i: usize| ks.get(i).map_or(0, |&k| k as u16 as u32);
        for q in (0..ks.len()).step_by(4) {
            let (lo, hi) = (
                (k(q + 1) << 16 | k(q)) as i32,
                (k(q + 3) << 16 | k(q + 2)) as i32,
            );
            regs.push(_mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi));
        }
        at.push(regs.len());
    }
    (regs, at)
}

/// One row of [`columns`], four taps per step: 16 bytes from a pixel's first tap in both halves
/// of a register, shuffled into (tap, tap + 1) pairs per channel as i16 (taps 0 and 1 low, 2 and
/// 3 high), multiplied by the weights and summed in pairs into i32 (`madd`): the exact integers of
/// the scalar loop. Four pixels are finished together. The row starts at byte `row_at` of `buf`;
/// loads may run past it into the next row (times zero weights), never past `buf`: the kernel
/// stops before the first pixel whose loads would, and returns the pixels written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pixels_avx2(
    buf: &[u8],
    row_at: usize,
    dst: &mut [u8],
    taps: &Taps,
    (regs, at): &Quads,
    shift: usize,
) -> usize {
    use std::arch::x86_64::*;
    let shuffle = _mm256_setr_epi8(
        0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1, //
        6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1,
    );
    let compact = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    let init = _mm_set1_epi32(1 << (taps.precision - 1));
    let shift_by = _mm_cvtsi32_si128(taps.precision as i32);
    // [4] i32: the pixel's r, g, b sums (and a zero), shifted
    let pixel = |x: usize| -> Option<__m128i> {
        let from = row_at + (taps.start[x] as usize - shift) * 3;
        let ws = &regs[at[x]..at[x + 1]];
        if from + ws.len() * 12 + 4 > buf.len() {
            return None;
        }
        let from = buf.as_ptr().add(from);
        let mut acc = _mm256_setzero_si256();
        for (q, w) in ws.iter().enumerate() {
            let px = _mm_loadu_si128(from.add(q * 12) as *const __m128i);
            let v = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(px), shuffle);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v, *w));
        }
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        Some(_mm_sra_epi32(_mm_add_epi32(sum, init), shift_by))
    };
    let n = dst.len() / 3;
    let mut x = 0;
    while x + 4 <= n {
        let (Some(a), Some(b), Some(c), Some(d)) =
            (pixel(x), pixel(x + 1), pixel(x + 2), pixel(x + 3))
        else {
            return x;
        };
        let bytes = _mm_packus_epi16(_mm_packs_epi32(a, b), _mm_packs_epi32(c, d));
        let mut out = [0u8; 16];
        _mm_storeu_si128(
            out.as_mut_ptr() as *mut __m128i,
            _mm_shuffle_epi8(bytes, compact),
        );
        dst[x * 3..x * 3 + 12].copy_from_slice(&out[..12]);
        x += 4;
    }
    x
}
#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Random images, crops (whole and fractional, inside the image) and output sizes.
    fn cases(n: usize) -> impl Iterator<Item = (Vec<u8>, u32, u32, f64, f64, f64, u32)> {
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n).map(move |case| {
            let (w, h) = (1 + (next() % 300) as u32, 1 + (next() % 300) as u32);
            let px: Vec<u8> = (0..w * h * 3).map(|_| next() as u8).collect();
            let m = w.min(h) as f64;
            let frac = (next() % 700) as f64 / 1000.0;
            let side = if case % 5 == 0 {
                m.floor()
            } else {
                m * (0.3 + frac)
            };
            let l = ((w as f64 - side) * (next() % 1000) as f64 / 1000.0).max(0.0);
            let t = ((h as f64 - side) * (next() % 1000) as f64 / 1000.0).max(0.0);
            let (l, t) = if case % 3 == 0 {
                (l.floor(), t.floor())
            } else {
                (l, t)
            };
            (px, w, h, l, t, side, 1 + (next() % 260) as u32)
        })
    }

    fn digest(simd: bool) -> String {
        let mut d = Sha256::new();
        for (px, w, h, l, t, side, out) in cases(1000) {
            d.update(crop_resize_with(&Rgb { w, h, px: &px }, l, t, side, out, simd).unwrap());
        }
        d.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The digest of fast_image_resize 5.5's `Convolution(Bilinear)` on the same 1,000 cases,
    /// fc7's resizer before this one (`resize_typed::<U8x3>` with `.crop(l, t, side, side)`,
    /// each output's bytes into one SHA-256, the first 8 bytes in hex), 2026-12-06.
    const FAST_IMAGE_RESIZE: &str = "9740d7a27097068c";

    #[test]
    fn every_pixel_is_fast_image_resizes_with_and_without_avx2() {
        assert_eq!(digest(false), FAST_IMAGE_RESIZE);
        if avx2() {
            assert_eq!(digest(true), FAST_IMAGE_RESIZE);
        }
    }

    #[test]
    fn halving_two_by_two_rounds_half_up_rows_first() {
        // Weights 1/2, 1/2 at precision 15; each pass is floor((1 + a + b) / 2).
        let px = [10, 255, 0, 20, 255, 0, 31, 255, 0, 0, 254, 1];
        for simd in [false, avx2()] {
            let rgb = Rgb {
                w: 2,
                h: 2,
                px: &px,
            };
            let got = crop_resize_with(&rgb, 0., 0., 2., 1, simd).unwrap();
            assert_eq!(got, [16, 255, 1]);
        }
    }

    #[test]
    fn a_crop_outside_the_image_is_refused() {
        let px = [0u8; 4 * 4 * 3];
        let rgb = Rgb {
            w: 4,
            h: 4,
            px: &px,
        };
        assert!(crop_resize(&rgb, 1.5, 0., 3., 2).is_none());
        assert!(crop_resize(&rgb, 0., 0., 4., 0).is_none());
        assert_eq!(crop_resize(&rgb, 1., 1., 3., 3).unwrap().len(), 27);
    }
}
