//! The data transforms over whole planes: Bᵀ d B of every α × α input tile (`input_transform`),
//! Aᵀ m A of every tile's α² products (`output_transform`) and A δ Aᵀ of every 2×2 block of
//! output gradients (`output_gradient_transform`), each as runs over a plane's tiles rather
//! than tile by tile, so that the loops vectorise. Tiles step by 2, so a tile's elements are
//! the even and odd rows (columns) of the padded plane shifted by whole tiles: each 1-D
//! transform is a few sums of runs. α is a constant of each function (4 or 6).

use std::array::from_fn;

use super::Layer;

/// `f::<4>` or `f::<6>` for `l`'s filter side.
macro_rules! by_alpha {
    ($l:expr, $f:ident($($arg:expr),*)) => {
        match $l.r {
            3 => $f::<4>($($arg),*),
            5 => $f::<6>($($arg),*),
            r => panic!("Winograd filters are 3×3 or 5×5, not {r}×{r}"),
        }
    };
}

/// Bᵀ d B of every input tile of group `g`'s channels: `v` [α², Cg, P] with P the images'
/// tiles in order.
pub(super) fn input_transform(x: &[f32], v: &mut [f32], l: Layer, g: usize) {
    by_alpha!(l, input_transform_of(x, v, l, g))
}

/// Aᵀ m A of every tile's products of group `g`, + bias (then ReLU), into `y` [n, K, H, W].
pub(super) fn output_transform(
    m: &[f32],
    b: &[f32],
    y: &mut [f32],
    l: Layer,
    g: usize,
    relu: bool,
) {
    by_alpha!(l, output_transform_of(m, b, y, l, g, relu))
}

/// A δ Aᵀ of every 2×2 block of group `g`'s output gradients `dy` [n, K, H, W] (zero past the
/// map's edge) into `d` [α², Kg, P]: the adjoint of `output_transform`, for the filter gradient.
pub(super) fn output_gradient_transform(dy: &[f32], d: &mut [f32], l: Layer, g: usize) {
    by_alpha!(l, output_gradient_transform_of(dy, d, l, g))
}

/// Per plane, each padded input row is split into even and odd columns and multiplied by B at
/// once (d B of every tile in the row); the rows of those products, split in turn into even and
/// odd rows, make every Bᵀ (d B) a sum of runs over the plane's tiles.
fn input_transform_of<const A: usize>(x: &[f32], v: &mut [f32], l: Layer, g: usize) {
    let (cg, th, tw, pad) = (l.c / l.groups, l.tiles_h(), l.tiles_w(), l.pad());
    let (p, t) = (v.len() / (A * A * cg), l.tiles());
    let (rows, cols) = (th + A / 2 - 1, tw + A / 2 - 1); // even (or odd) padded rows, columns
    let run = rows * tw; // one of d B's columns j over even (or odd) padded rows
    let mut h = vec![0.0f32; 2 * A * run]; // [parity, j, row / 2, tile column]
    let (mut e, mut o) = (vec![0.0f32; cols], vec![0.0f32; cols]);
    for (img, xi) in x.chunks_exact(l.c * l.h * l.w).enumerate() {
        for c in 0..cg {
            let plane = &xi[(g * cg + c) * l.h * l.w..][..l.h * l.w];
            for pr in 0..2 * rows {
                // padded row pr is input row pr − pad
                let row = pr
                    .checked_sub(pad)
                    .and_then(|r| plane.chunks_exact(l.w).nth(r));
                split_padded(row, pad, &mut e, &mut o);
                let at = (pr % 2) * A * run + (pr / 2) * tw;
                let out = runs_mut::<A>(&mut h, from_fn(|j| at + j * run), tw);
                let halves = [&e[..], &o[..]];
                bt(out, from_fn(|i| &halves[i % 2][i / 2..][..tw]));
            }
            for j in 0..A {
                // rows 2ty + i of column j over every ty: the even or odd rows, i / 2 tiles on
                let halves = [&h[j * run..][..run], &h[(A + j) * run..][..run]];
                let at = from_fn(|i| ((i * A + j) * cg + c) * p + img * t);
                let out = runs_mut::<A>(v, at, t);
                bt(out, from_fn(|i| &halves[i % 2][i / 2 * tw..][..t]));
            }
        }
    }
}

/// Bᵀ's rows applied along runs: `r[i] = Σ Bᵀ[i][s] d[s]` per element.
#[inline(always)]
fn bt<const A: usize>(mut r: [&mut [f32]; A], d: [&[f32]; A]) {
    let n = r[0].len();
    match (&mut r[..], &d[..]) {
        ([r0, r1, r2, r3], [d0, d1, d2, d3]) => {
            let (r0, r1, r2, r3) = (&mut r0[..n], &mut r1[..n], &mut r2[..n], &mut r3[..n]);
            let (d0, d1, d2, d3) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n]);
            for q in 0..n {
                (r0[q], r1[q]) = (d0[q] - d2[q], d1[q] + d2[q]);
                (r2[q], r3[q]) = (d2[q] - d1[q], d1[q] - d3[q]);
            }
        }
        ([r0, r1, r2, r3, r4, r5], [d0, d1, d2, d3, d4, d5]) => {
            let (r0, r1, r2) = (&mut r0[..n], &mut r1[..n], &mut r2[..n]);
            let (r3, r4, r5) = (&mut r3[..n], &mut r4[..n], &mut r5[..n]);
            let (d0, d1, d2) = (&d0[..n], &d1[..n], &d2[..n]);
            let (d3, d4, d5) = (&d3[..n], &d4[..n], &d5[..n]);
            for q in 0..n {
                let (d0, d1, d2, d3, d4, d5) = (d0[q], d1[q], d2[q], d3[q], d4[q], d5[q]);
                let (a, b) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
                let (c, e) = (d4 - d2, 2.0 * (d3 - d1));
                (r0[q], r5[q]) = (4.0 * d0 - 5.0 * d2 + d4, 4.0 * d1 - 5.0 * d3 + d5);
                (r1[q], r2[q]) = (a + b, a - b);
                (r3[q], r4[q]) = (c + e, c - e);
            }
        }
        _ => unreachable!("tiles are 4 or 6 wide"),
    }
}

/// Aᵀ's two rows applied along runs: `y0`, `y1` from the α runs `m`, each + `add`.
#[inline(always)]
fn at<const A: usize>(m: [&[f32]; A], (y0, y1): (&mut [f32], &mut [f32]), add: f32) {
    let n = y0.len();
    let y1 = &mut y1[..n];
    match &m[..] {
        [m0, m1, m2, m3] => {
            let (m0, m1, m2, m3) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n]);
            for q in 0..n {
                y0[q] = m0[q] + m1[q] + m2[q] + add;
                y1[q] = m1[q] - m2[q] - m3[q] + add;
            }
        }
        [m0, m1, m2, m3, m4, m5] => {
            let (m0, m1, m2) = (&m0[..n], &m1[..n], &m2[..n]);
            let (m3, m4, m5) = (&m3[..n], &m4[..n], &m5[..n]);
            for q in 0..n {
                y0[q] = m0[q] + m1[q] + m2[q] + m3[q] + m4[q] + add;
                y1[q] = m1[q] - m2[q] + 2.0 * (m3[q] - m4[q]) + m5[q] + add;
            }
        }
        _ => unreachable!("tiles are 4 or 6 wide"),
    }
}

/// A's rows applied along runs: `r[i] = A[i][0] e + A[i][1] o` per element (the adjoint of
/// `at`).
#[inline(always)]
fn a<const A: usize>(mut r: [&mut [f32]; A], e: &[f32], o: &[f32]) {
    let n = r[0].len();
    let (e, o) = (&e[..n], &o[..n]);
    match &mut r[..] {
        [r0, r1, r2, r3] => {
            let (r0, r1, r2, r3) = (&mut r0[..n], &mut r1[..n], &mut r2[..n], &mut r3[..n]);
            for q in 0..n {
                (r0[q], r1[q], r2[q], r3[q]) = (e[q], e[q] + o[q], e[q] - o[q], -o[q]);
            }
        }
        [r0, r1, r2, r3, r4, r5] => {
            let (r0, r1, r2) = (&mut r0[..n], &mut r1[..n], &mut r2[..n]);
            let (r3, r4, r5) = (&mut r3[..n], &mut r4[..n], &mut r5[..n]);
            for q in 0..n {
                (r0[q], r1[q], r2[q]) = (e[q], e[q] + o[q], e[q] - o[q]);
                (r3[q], r4[q], r5[q]) = (e[q] + 2.0 * o[q], e[q] - 2.0 * o[q], o[q]);
            }
        }
        _ => unreachable!("tiles are 4 or 6 wide"),
    }
}

/// The even and odd columns `e`, `o` of `row` with `pad` zeros before it and zeros after it to
/// their ends (padded column q + pad holds row[q]); no row (past the plane's edge) is all zeros.
#[inline(always)]
fn split_padded(row: Option<&[f32]>, pad: usize, e: &mut [f32], o: &mut [f32]) {
    e.fill(0.0);
    o.fill(0.0);
    let Some(row) = row else { return };
    match pad {
        0 => deinterleave(row, e, o),
        1 => deinterleave(row, o, &mut e[1..]),
        2 => deinterleave(row, &mut e[1..], &mut o[1..]),
        _ => unreachable!("Winograd layers pad by 1 or 2"),
    }
}

/// `row`'s even elements into `even` and odd ones into `odd`, from their starts.
#[inline(always)]
fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let pairs = row.chunks_exact(2);
    if let Some(&v) = pairs.remainder().first() {
        even[pairs.len()] = v;
    }
    for ((pair, e), o) in pairs.zip(even.iter_mut()).zip(odd.iter_mut()) {
        (*e, *o) = (pair[0], pair[1]);
    }
}

/// `row` from its even elements `even` and odd ones `odd`.
#[inline(always)]
fn interleave(even: &[f32], odd: &[f32], row: &mut [f32]) {
    let half = row.len() / 2;
    let mut pairs = row.chunks_exact_mut(2);
    for ((pair, e), o) in pairs.by_ref().zip(even).zip(odd) {
        (pair[0], pair[1]) = (*e, *o);
    }
    if let Some(last) = pairs.into_remainder().first_mut() {
        *last = even[half];
    }
}

/// `N` runs of `len` starting at the increasing, `len`-apart-or-more offsets `at`.
#[inline(always)]
fn runs_mut<const N: usize>(v: &mut [f32], at: [usize; N], len: usize) -> [&mut [f32]; N] {
    let mut rest = v;
    let mut start = 0;
    let mut out: [&mut [f32]; N] = from_fn(|_| Default::default());
    for (o, a) in out.iter_mut().zip(at) {
        let (run, tail) = std::mem::take(&mut rest)[a - start..].split_at_mut(len);
        (*o, rest, start) = (run, tail, a + len);
    }
    out
}

/// Per output plane, runs over all its tiles, then the 2×2 blocks put in place.
fn output_transform_of<const A: usize>(
    m: &[f32],
    bias: &[f32],
    y: &mut [f32],
    l: Layer,
    g: usize,
    relu: bool,
) {
    let (kg, tw, t) = (l.k / l.groups, l.tiles_w(), l.tiles());
    let p = m.len() / (A * A * kg);
    let mut s = vec![0.0f32; 2 * A * t]; // [a, j, tile] = (Aᵀ m)[a][j]
    let mut out = vec![0.0f32; 4 * t]; // [a, b, tile] = (Aᵀ m A)[a][b]
    for (img, yi) in y.chunks_exact_mut(l.k * l.h * l.w).enumerate() {
        for k in 0..kg {
            let ch = g * kg + k;
            let mrun = |xi: usize| &m[(xi * kg + k) * p + img * t..][..t];
            for j in 0..A {
                let (s0, s1) = s.split_at_mut(A * t);
                at::<A>(
                    from_fn(|i| mrun(i * A + j)),
                    (&mut s0[j * t..][..t], &mut s1[j * t..][..t]),
                    0.0,
                );
            }
            for a in 0..2 {
                let (y0, y1) = out[a * 2 * t..][..2 * t].split_at_mut(t);
                at::<A>(from_fn(|j| &s[(a * A + j) * t..][..t]), (y0, y1), bias[ch]);
            }
            if relu {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            let plane = &mut yi[ch * l.h * l.w..][..l.h * l.w];
            for (r, row) in plane.chunks_exact_mut(l.w).enumerate() {
                let (a, ty) = (r % 2, r / 2);
                let y0 = &out[a * 2 * t + ty * tw..][..tw];
                let y1 = &out[(a * 2 + 1) * t + ty * tw..][..tw];
                interleave(y0, y1, row);
            }
        }
    }
}

/// Per output row, its even and odd columns times A make (δ Aᵀ) of every block in the row;
/// those rows, split into even and odd rows, make each of the α² elements a sum of two runs
/// over the plane's tiles.
fn output_gradient_transform_of<const A: usize>(dy: &[f32], d: &mut [f32], l: Layer, g: usize) {
    let (kg, th, tw) = (l.k / l.groups, l.tiles_h(), l.tiles_w());
    let (p, t) = (d.len() / (A * A * kg), l.tiles());
    let (mut e, mut o) = (vec![0.0f32; tw], vec![0.0f32; tw]); // one row's columns
    let mut c = vec![0.0f32; 2 * A * t]; // [row parity, j, ty, tx] = (δ Aᵀ)[row][j]
    for (img, yi) in dy.chunks_exact(l.k * l.h * l.w).enumerate() {
        for k in 0..kg {
            let plane = &yi[(g * kg + k) * l.h * l.w..][..l.h * l.w];
            for r in 0..2 * th {
                split_padded(plane.chunks_exact(l.w).nth(r), 0, &mut e, &mut o);
                let at = from_fn(|j| ((r % 2) * A + j) * t + (r / 2) * tw);
                a::<A>(runs_mut(&mut c, at, tw), &e, &o);
            }
            for j in 0..A {
                let (r0, r1) = (&c[j * t..][..t], &c[(A + j) * t..][..t]);
                let at = from_fn(|i| ((i * A + j) * kg + k) * p + img * t);
                a::<A>(runs_mut(d, at, t), r0, r1);
            }
        }
    }
}
