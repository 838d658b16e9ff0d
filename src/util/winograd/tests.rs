use super::*;

/// Every (output, input, tap) triple of the convolution from its definition, in f64: r × r,
/// stride 1, pad r / 2, groups. `f` receives (output index, input index, filter index).
fn for_each_tap(l: Layer, n: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (cg, kg, (h, wd)) = (l.c / l.groups, l.k / l.groups, (l.h as isize, l.w as isize));
    let (r, pad) = (l.r as isize, (l.r / 2) as isize);
    for img in 0..n {
        for k in 0..l.k {
            let g = k / kg;
            for (oy, ox) in (0..h * wd).map(|i| (i / wd, i % wd)) {
                let yi = ((img * l.k + k) as isize * h + oy) as usize * l.w + ox as usize;
                for c in 0..cg {
                    for (ty, tx) in (0..r * r).map(|t| (t / r, t % r)) {
                        let (iy, ix) = (oy + ty - pad, ox + tx - pad);
                        if (0..h).contains(&iy) && (0..wd).contains(&ix) {
                            let xi = ((img * l.c + g * cg + c) as isize * h + iy) * wd + ix;
                            let wi = (k * cg + c) * l.r * l.r + (ty * r + tx) as usize;
                            f(yi, xi as usize, wi);
                        }
                    }
                }
            }
        }
    }
}

fn reference(x: &[f32], w: &[f32], bias: &[f32], l: Layer, relu: bool) -> Vec<f32> {
    let n = x.len() / (l.c * l.h * l.w);
    let plane = l.h * l.w;
    let mut sum: Vec<f64> = (0..n * l.k * plane)
        .map(|i| bias[i / plane % l.k] as f64)
        .collect();
    for_each_tap(l, n, |yi, xi, wi| sum[yi] += x[xi] as f64 * w[wi] as f64);
    let act = |v: f64| if relu { v.max(0.0) } else { v };
    sum.into_iter().map(|v| act(v) as f32).collect()
}

/// The input gradient of the convolution for output gradient `dy`, from its definition.
fn reference_dx(dy: &[f32], w: &[f32], l: Layer) -> Vec<f32> {
    let n = dy.len() / (l.k * l.h * l.w);
    let mut dx = vec![0.0f64; n * l.c * l.h * l.w];
    for_each_tap(l, n, |yi, xi, wi| dx[xi] += dy[yi] as f64 * w[wi] as f64);
    dx.into_iter().map(|v| v as f32).collect()
}

/// The filter gradient for inputs `x` and output gradient `dy`, from its definition.
fn reference_dw(x: &[f32], dy: &[f32], l: Layer) -> Vec<f32> {
    let n = x.len() / (l.c * l.h * l.w);
    let mut dw = vec![0.0f64; l.k * l.c / l.groups * l.r * l.r];
    for_each_tap(l, n, |yi, xi, wi| dw[wi] += dy[yi] as f64 * x[xi] as f64);
    dw.into_iter().map(|v| v as f32).collect()
}

/// Values in [-1, 1) from a multiplicative hash.
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
            ((h >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-5 * scale, "{what} at {i}: {a} vs {b}");
    }
}

fn check(l: Layer, n: usize, relu: bool) {
    let cg = l.c / l.groups;
    let x = values(n * l.c * l.h * l.w, 1);
    let w = values(l.k * cg * l.r * l.r, 2);
    let bias = values(l.k, 3);
    let u = transform_filters(&w, l.k, cg, l.r);
    let mut got = vec![f32::NAN; n * l.k * l.h * l.w];
    convolve_images(&x, &u, &bias, &mut got, l, relu);
    assert_close(&got, &reference(&x, &w, &bias, l, relu), &format!("{l:?}"));
    // the input gradient as the transposed layer's convolution with turned filters
    let dy = values(got.len(), 4);
    let mut dx = vec![f32::NAN; x.len()];
    let t = l.transposed();
    let ut = transform_filters_for_input_gradient(&w, l);
    convolve_images(&dy, &ut, &vec![0.0; l.c], &mut dx, t, false);
    assert_close(&dx, &reference_dx(&dy, &w, l), &format!("dx of {l:?}"));
    // the filter gradient, accumulated over the first image and then the rest
    let mut du = vec![0.0; l.elements() * l.k * cg];
    let (xn, yn) = (l.c * l.h * l.w, l.k * l.h * l.w);
    accumulate_filter_gradient(&x[..xn], &dy[..yn], &mut du, l);
    accumulate_filter_gradient(&x[xn..], &dy[yn..], &mut du, l);
    let dw = filter_gradient(&du, l.k, cg, l.r);
    assert_close(&dw, &reference_dw(&x, &dy, l), &format!("dw of {l:?}"));
}

/// A layer of `c` input and `k` output channels in `groups` groups on `h` × `w` maps, `r` × `r`
/// filters.
fn layer(c: usize, k: usize, (h, w): (usize, usize), groups: usize, r: usize) -> Layer {
    Layer {
        c,
        k,
        h,
        w,
        groups,
        r,
    }
}

#[test]
fn matches_the_direct_convolution_and_its_gradients_on_odd_and_even_maps_with_groups() {
    for r in KERNELS {
        // odd maps end in half tiles; two groups read and write their own channels
        let odd_grouped = layer(8, 6, (13, 13), 2, r);
        check(odd_grouped, 3, true);
        check(odd_grouped, 2, false);
        check(layer(5, 7, (6, 9), 1, r), 2, false);
        check(layer(3, 4, (1, 2), 1, r), 1, false);
    }
    // AlexNet's conv2 (27 × 27, 5×5, two groups), narrower: 2 × 2 tiles cover it as 28 × 28
    check(layer(12, 16, (27, 27), 2, 5), 2, true);
}

#[test]
fn a_filter_of_ones_transforms_to_the_outer_product_of_g_times_ones_for_both_sides() {
    // G·(1, 1, 1) = (1, 1.5, 0.5, 1), so G g Gᵀ = a aᵀ with a = (1, 1.5, 0.5, 1)
    let a = [1.0f32, 1.5, 0.5, 1.0];
    let u = transform_filters(&[1.0; 9], 1, 1, 3);
    for (xi, v) in u.iter().enumerate() {
        assert_eq!(*v, a[xi / 4] * a[xi % 4], "element {xi}");
    }
    // [K, Cg] order within each element: filter (k, c) at k·Cg + c
    let w: Vec<f32> = (0..2 * 3 * 9).map(|i| (i / 9) as f32).collect();
    let u = transform_filters(&w, 2, 3, 3);
    assert_eq!(&u[5 * 6..6 * 6], &[0.0, 2.25, 4.5, 6.75, 9.0, 11.25]);
    // F(2×2, 5×5): G·(1, 1, 1, 1, 1) = (1/4, −5/6, −1/6, 31/24, 11/24, 1)
    let a = [
        0.25f64,
        -5.0 / 6.0,
        -1.0 / 6.0,
        31.0 / 24.0,
        11.0 / 24.0,
        1.0,
    ];
    let u = transform_filters(&[1.0; 25], 1, 1, 5);
    for (xi, v) in u.iter().enumerate() {
        let want = a[xi / 6] * a[xi % 6];
        assert!(
            (*v as f64 - want).abs() <= 1e-7,
            "element {xi}: {v} vs {want}"
        );
    }
}
