//! The data transforms of F(2×2, 3×3) over whole planes: Bᵀ d B of every 4×4 input tile
//! (`input_transform`) and Aᵀ m A of every tile's 16 products (`output_transform`), each as runs
//! over a plane's tiles rather than tile by tile, so that the loops vectorise.

use super::Layer;

/// Bᵀ d B of every 4×4 input tile of group `g`'s channels: `v` [16, Cg, P] with P the images'
/// tiles in order. Per plane, each padded input row is split into even and odd columns and
/// multiplied by B at once (d B of every tile in the row); the rows of those products, split
/// in turn into even and odd rows, make every Bᵀ (d B) a sum of two runs over the plane's tiles.
pub(super) fn input_transform(x: &[f32], v: &mut [f32], l: Layer, g: usize) {
    let (cg, th, tw) = (l.c / l.groups, l.tiles_h(), l.tiles_w());
    let (p, t) = (v.len() / (16 * cg), l.tiles());
    let run = (th + 1) * tw; // one of d B's columns j over even (or odd) padded rows
    let mut h = vec![0.0f32; 8 * run]; // [parity, j, row / 2, tile column]
    let (mut e, mut o) = (vec![0.0f32; tw + 1], vec![0.0f32; tw + 1]);
    for (img, xi) in x.chunks_exact(l.c * l.h * l.w).enumerate() {
        for c in 0..cg {
            let plane = &xi[(g * cg + c) * l.h * l.w..][..l.h * l.w];
            for pr in 0..2 * (th + 1) {
                // padded row pr is input row pr − 1; padded column q + 1 is input column q
                e.fill(0.0);
                o.fill(0.0);
                if let Some(row) = pr.checked_sub(1).filter(|&r| r < l.h) {
                    for (q, &val) in plane[row * l.w..][..l.w].iter().enumerate() {
                        let half = q.div_ceil(2);
                        if q % 2 == 0 {
                            o[half] = val
                        } else {
                            e[half] = val
                        }
                    }
                }
                let at = (pr % 2) * 4 * run + (pr / 2) * tw;
                let [h0, h1, h2, h3] = four_mut(&mut h, [0, 1, 2, 3].map(|j| at + j * run), tw);
                combine([h0, h1, h2, h3], (&e[..tw], &e[1..]), (&o[..tw], &o[1..]));
            }
            for j in 0..4 {
                // rows 2ty and 2ty + 2 of column j, then 2ty + 1 and 2ty + 3, over every ty
                let (ev, od) = (&h[j * run..][..run], &h[(4 + j) * run..][..run]);
                let at = [0, 1, 2, 3].map(|i| ((i * 4 + j) * cg + c) * p + img * t);
                let rows = four_mut(v, at, t);
                combine(rows, (&ev[..t], &ev[tw..]), (&od[..t], &od[tw..]));
            }
        }
    }
}

/// Bᵀ's four rows applied along runs, into `r`: (d0 − d2, d1 + d2, d2 − d1, d1 − d3) per
/// element, with d0 and d2 from `e` (the even rows or columns) and d1 and d3 from `o`.
#[inline(always)]
fn combine(r: [&mut [f32]; 4], (e0, e2): (&[f32], &[f32]), (o1, o3): (&[f32], &[f32])) {
    let n = r[0].len();
    let [r0, r1, r2, r3] = r.map(|x| &mut x[..n]);
    let (e0, e2, o1, o3) = (&e0[..n], &e2[..n], &o1[..n], &o3[..n]);
    for q in 0..n {
        (r0[q], r1[q]) = (e0[q] - e2[q], o1[q] + e2[q]);
        (r2[q], r3[q]) = (e2[q] - o1[q], o1[q] - o3[q]);
    }
}

/// Four runs of `len` starting at the increasing, `len`-apart-or-more offsets `at`.
#[inline(always)]
fn four_mut(v: &mut [f32], at: [usize; 4], len: usize) -> [&mut [f32]; 4] {
    let (a, rest) = v[at[0]..].split_at_mut(at[1] - at[0]);
    let (b, rest) = rest.split_at_mut(at[2] - at[1]);
    let (c, d) = rest.split_at_mut(at[3] - at[2]);
    [&mut a[..len], &mut b[..len], &mut c[..len], &mut d[..len]]
}

/// Aᵀ m A of every tile's 16 products of group `g`, + bias (then ReLU), into `y` [n, K, H, W]:
/// per output plane, runs over all its tiles, then the 2×2 blocks put in place.
pub(super) fn output_transform(
    m: &[f32],
    bias: &[f32],
    y: &mut [f32],
    l: Layer,
    g: usize,
    relu: bool,
) {
    let (kg, tw, t) = (l.k / l.groups, l.tiles_w(), l.tiles());
    let p = m.len() / (16 * kg);
    let mut s = vec![0.0f32; 8 * t]; // [i, j, tile] = (Aᵀ m)[i][j]
    let mut out = vec![0.0f32; 4 * t]; // [a, b, tile] = (Aᵀ m A)[a][b]
    for (img, yi) in y.chunks_exact_mut(l.k * l.h * l.w).enumerate() {
        for k in 0..kg {
            let ch = g * kg + k;
            let mrun = |xi: usize| &m[(xi * kg + k) * p + img * t..][..t];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (mrun(j), mrun(4 + j), mrun(8 + j), mrun(12 + j));
                let (s0, s1) = s.split_at_mut(4 * t);
                let (s0, s1) = (&mut s0[j * t..][..t], &mut s1[j * t..][..t]);
                for q in 0..t {
                    s0[q] = m0[q] + m1[q] + m2[q];
                    s1[q] = m1[q] - m2[q] - m3[q];
                }
            }
            for a in 0..2 {
                let si = |j: usize| &s[(a * 4 + j) * t..][..t];
                let (s0, s1, s2, s3) = (si(0), si(1), si(2), si(3));
                let (y0, y1) = out[a * 2 * t..][..2 * t].split_at_mut(t);
                for q in 0..t {
                    y0[q] = s0[q] + s1[q] + s2[q] + bias[ch];
                    y1[q] = s1[q] - s2[q] - s3[q] + bias[ch];
                }
            }
            if relu {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            let plane = &mut yi[ch * l.h * l.w..][..l.h * l.w];
            for (r, row) in plane.chunks_exact_mut(l.w).enumerate() {
                let (a, ty) = (r % 2, r / 2);
                let y0 = &out[a * 2 * t + ty * tw..][..tw];
                let y1 = &out[(a * 2 + 1) * t + ty * tw..][..tw];
                for ((pair, a), b) in row.chunks_mut(2).zip(y0).zip(y1) {
                    pair[0] = *a;
                    if let Some(second) = pair.get_mut(1) {
                        *second = *b;
                    }
                }
            }
        }
    }
}

/// A δ Aᵀ of every 2×2 block of group `g`'s output gradients `dy` [n, K, H, W] (zero past the
/// map's edge) into `d` [16, Kg, P]: the adjoint of `output_transform`, for the filter
/// gradient. Per tile row, the block's two rows split into even and odd columns make each of
/// the 16 elements a sum of runs over the row's tiles.
pub(super) fn output_gradient_transform(dy: &[f32], d: &mut [f32], l: Layer, g: usize) {
    let (kg, th, tw) = (l.k / l.groups, l.tiles_h(), l.tiles_w());
    let (p, t) = (d.len() / (16 * kg), l.tiles());
    let mut eo = vec![0.0f32; 4 * tw]; // [block row, column parity, tile column]
    let mut c = vec![0.0f32; 8 * tw]; // [block row, j, tile column] = (δ Aᵀ)[row][j]
    for (img, yi) in dy.chunks_exact(l.k * l.h * l.w).enumerate() {
        for k in 0..kg {
            let plane = &yi[(g * kg + k) * l.h * l.w..][..l.h * l.w];
            for ty in 0..th {
                eo.fill(0.0);
                for r in (0..2).filter(|r| 2 * ty + r < l.h) {
                    let row = &plane[(2 * ty + r) * l.w..][..l.w];
                    for (q, &v) in row.iter().enumerate() {
                        eo[(r * 2 + q % 2) * tw + q / 2] = v;
                    }
                }
                for r in 0..2 {
                    let (e, o) = (&eo[r * 2 * tw..][..tw], &eo[(r * 2 + 1) * tw..][..tw]);
                    let [c0, c1, c2, c3] =
                        four_mut(&mut c, [0, 1, 2, 3].map(|j| (r * 4 + j) * tw), tw);
                    for q in 0..tw {
                        (c0[q], c1[q], c2[q], c3[q]) = (e[q], e[q] + o[q], e[q] - o[q], -o[q]);
                    }
                }
                for j in 0..4 {
                    let (r0, r1) = (&c[j * tw..][..tw], &c[(4 + j) * tw..][..tw]);
                    let at = [0, 1, 2, 3].map(|i| ((i * 4 + j) * kg + k) * p + img * t + ty * tw);
                    let [d0, d1, d2, d3] = four_mut(d, at, tw);
                    for q in 0..tw {
                        (d0[q], d1[q]) = (r0[q], r0[q] + r1[q]);
                        (d2[q], d3[q]) = (r0[q] - r1[q], -r1[q]);
                    }
                }
            }
        }
    }
}
