//! The CPU engine's fully connected layers and the paper's SGD update on host slices, and the
//! two fused for training on one engine: the weight gradient is consumed by the update block
//! by block and never stored (fc7's is 64 MB a step at batch 64).

use rayon::prelude::*;

use crate::train::engine::Sgd;
use crate::util::isa::{self, Path};
use crate::util::matmul::Mat;
use crate::util::sgemm::blocks::{block_rows, fastest_blocks};
use crate::util::sgemm::{fastest_product, sparse};

/// y [n, o] = x [n, i] · wᵀ + b. With AVX2 only, where x is sparse enough (after ReLU and
/// dropout fc7's input is a quarter nonzero) and y wide enough to split between threads, x's
/// zeros are skipped: the same bits as fc7's dense kernel, 10.0–11.2 against 19.0–19.4 ms for
/// fc7's layer at batch 128 with x 25% nonzero (`fc7bench sparse-products`). With AVX-512 gemm's
/// product stays, keeping the bits those machines trained with before.
pub fn linear_forward(x: &[f32], n: usize, w: &[f32], b: &[f32], o: usize) -> Vec<f32> {
    let i = w.len() / o;
    let mut y = vec![0.0; n * o];
    let (a, wt) = (Mat::new(x, n, i), Mat::t(w, o, i));
    let avx2_only = isa::fastest() == Path::Avx2;
    match (avx2_only && o >= sparse::WIDE)
        .then(|| sparse::pays(x))
        .flatten()
    {
        Some(path) => sparse::product(path, a, wt, &mut y),
        None => fastest_product(a, wt, &mut y, true),
    }
    y.par_chunks_mut(o)
        .for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
    y
}

#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    x: &[f32],
    n: usize,
    w: &[f32],
    o: usize,
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
) -> Vec<f32> {
    let i = w.len() / o;
    let skip = sparse::pays(dy);
    weight_gradient(
        (x, n, i, o),
        (dy, skip),
        dw.par_chunks_mut(block_rows() * i),
        |dw, rows| {
            for (d, g) in dw.chunks_mut(i).zip(rows) {
                d.copy_from_slice(g);
            }
        },
    );
    let dx = input_gradient((dy, skip), n, w, o);
    bias_gradient(dy, n, db);
    dx
}

/// dx [n, i] = dy [n, o] · w [o, i], skipping dy's zeros where it is sparse enough for that to
/// pay, with AVX2 only: there it gives fc7's kernel's bits 1.6× faster, while with AVX-512
/// gemm's dense product was about as fast (`fc7bench sparse-products`: 14.0 against 13.1 ms for
/// fc7's layer at batch 128) and keeps the bits AVX-512 machines trained with before. `skip`:
/// `sparse::pays(dy)`, which the weight gradient asks too.
fn input_gradient((dy, skip): (&[f32], Option<Path>), n: usize, w: &[f32], o: usize) -> Vec<f32> {
    let i = w.len() / o;
    let mut dx = vec![0.0; n * i];
    let (a, b) = (Mat::new(dy, n, o), Mat::new(w, o, i));
    match skip.filter(|p| *p == Path::Avx2) {
        Some(path) => sparse::product(path, a, b, &mut dx),
        None => fastest_product(a, b, &mut dx, true),
    }
    dx
}

/// db [o] = Σ over the n rows of dy [n, o], summed in f64.
fn bias_gradient(dy: &[f32], n: usize, db: &mut [f32]) {
    let o = db.len();
    for (j, d) in db.iter_mut().enumerate() {
        *d = (0..n).map(|r| dy[r * o + j] as f64).sum::<f64>() as f32;
    }
}

pub fn sgd_step(w: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, momentum: f32, decay: f32) {
    let h = Sgd {
        lr,
        momentum,
        decay,
    };
    w.par_chunks_mut(1 << 14)
        .zip(v.par_chunks_mut(1 << 14))
        .zip(g.par_chunks(1 << 14))
        .for_each(|((w, v), g)| sgd(w, v, g, h));
}

fn sgd(w: &mut [f32], v: &mut [f32], g: &[f32], h: Sgd) {
    for ((w, v), g) in w.iter_mut().zip(v.iter_mut()).zip(g) {
        *v = h.momentum * *v - h.decay * h.lr * *w - h.lr * g;
        *w += *v;
    }
}

/// `linear_backward` then `sgd_step` on w and b, with the same results bit for bit, but the
/// weight gradient [o, i] is never stored: each block of its rows updates w and v while it is
/// still in cache (for fc7 that saves writing and reading again 64 MB a step). dx is computed
/// first, from the weights before the update.
pub fn linear_backward_sgd(
    (x, n, o): (&[f32], usize, usize),
    dy: &[f32],
    (w, vw): (&mut [f32], &mut [f32]),
    (b, vb): (&mut [f32], &mut [f32]),
    h: Sgd,
) -> Vec<f32> {
    let i = w.len() / o;
    let skip = sparse::pays(dy);
    let dx = input_gradient((dy, skip), n, w, o);
    let mut db = vec![0.0; o];
    bias_gradient(dy, n, &mut db);
    sgd(b, vb, &db, h);
    let rows = block_rows() * i;
    let states = w.par_chunks_mut(rows).zip(vw.par_chunks_mut(rows));
    weight_gradient((x, n, i, o), (dy, skip), states, |(w, v), rows| {
        for ((w, v), g) in w.chunks_mut(i).zip(v.chunks_mut(i)).zip(rows) {
            sgd(w, v, g, h);
        }
    });
    dx
}

/// dw [o, i] = dyᵀ [o, n] · x [n, i], `block_rows()` rows at a time (`fastest_blocks`): `f` gets
/// each block's item of `states` and its rows, `i` floats each. The stored gradient and the
/// fused update both come from this one product, so they hold the same values. dy's zeros are
/// skipped where `skip` (`sparse::pays(dy)`) names a path.
fn weight_gradient<T: Send>(
    (x, n, i, o): (&[f32], usize, usize, usize),
    (dy, skip): (&[f32], Option<Path>),
    states: impl IndexedParallelIterator<Item = T>,
    f: impl Fn(T, &mut dyn Iterator<Item = &[f32]>) + Sync,
) {
    let (a, b) = (Mat::t(dy, n, o), Mat::new(x, n, i));
    let hand_on = |state, g: &[f32], stride| f(state, &mut g.chunks(stride).map(|row| &row[..i]));
    match skip {
        Some(path) => sparse::blocks(path, (a, b), block_rows(), states, hand_on),
        None => fastest_blocks(a, b, states, hand_on),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::cpu::testing::{check, dot, rand_vec};

    #[test]
    fn linear_has_the_right_gradients() {
        let (n, i, o) = (5, 5, 4);
        let (x, w, b) = (rand_vec(n * i, 9), rand_vec(o * i, 10), rand_vec(o, 11));
        let y = linear_forward(&x, n, &w, &b, o);
        assert!((y[0] as f64 - (dot(&x[..i], &w[..i]) + b[0] as f64)).abs() < 1e-5);
        // A dense output gradient, and one two-thirds zeros as ReLU and dropout leave
        // fc7's (the products that skip zeros).
        let dense = rand_vec(n * o, 12);
        let sparse: Vec<f32> = dense
            .iter()
            .enumerate()
            .map(|(j, v)| if j % 3 == 1 { *v } else { 0.0 })
            .collect();
        for r in [dense, sparse] {
            let (mut dw, mut db) = (vec![0.0; o * i], vec![0.0; o]);
            let dx = linear_backward(&x, n, &w, o, &r, &mut dw, &mut db);
            check("linear dx", &x, &dx, |x| {
                dot(&linear_forward(x, n, &w, &b, o), &r)
            });
            check("linear dw", &w, &dw, |w| {
                dot(&linear_forward(&x, n, w, &b, o), &r)
            });
            check("linear db", &b, &db, |b| {
                dot(&linear_forward(&x, n, &w, b, o), &r)
            });
        }
    }

    /// fc7's input is a quarter nonzero after ReLU and dropout: the forward gives the bits of
    /// this CPU's dense product plus the bias, whether it skips the zeros (AVX2 only, a layer at
    /// least `sparse::WIDE` wide) or not.
    #[test]
    fn the_forward_of_a_sparse_input_has_the_dense_bits() {
        let (n, i, o) = (6, 300, sparse::WIDE + 5);
        let mut x = rand_vec(n * i, 7);
        // A quarter of each row kept, at places that differ from row to row.
        x.iter_mut()
            .enumerate()
            .filter(|(j, _)| (j * 7 + j / i) % 4 != 0)
            .for_each(|(_, v)| *v = 0.0);
        let (w, b) = (rand_vec(o * i, 8), rand_vec(o, 9));
        let mut want = vec![0.0; n * o];
        fastest_product(Mat::new(&x, n, i), Mat::t(&w, o, i), &mut want, true);
        for (j, v) in want.iter_mut().enumerate() {
            *v += b[j % o];
        }
        let y = linear_forward(&x, n, &w, &b, o);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            sparse::pays(&x).is_some(),
            crate::util::isa::fastest() != Path::Base
        );
        assert!(bits(&y) == bits(&want), "the forward's bits");
    }

    #[test]
    fn sgd_follows_the_papers_update_rule() {
        let (mut w, mut v) = (vec![1.0f32], vec![0.5f32]);
        sgd_step(&mut w, &mut v, &[2.0], 0.1, 0.9, 0.0005);
        // v = 0.9·0.5 − 0.0005·0.1·1 − 0.1·2 = 0.24995; w = 1.24995
        assert!((v[0] - 0.24995).abs() < 1e-6 && (w[0] - 1.24995).abs() < 1e-6);
    }

    /// The fused backward and update leaves dx, w, v, b and their velocities exactly as
    /// `linear_backward` then `sgd_step`, on a shape whose rows are padded (1,024 inputs, 130
    /// outputs: three blocks, the last short), on one whose are not, and with an output
    /// gradient two-thirds zeros (the products that skip them).
    #[test]
    fn fused_update_equals_backward_then_sgd_bit_for_bit() {
        let h = Sgd {
            lr: 0.1,
            momentum: 0.9,
            decay: 5e-4,
        };
        for (n, i, o, zeros) in [
            (6, 1024, 130, false),
            (5, 37, 70, false),
            (6, 300, 70, true),
        ] {
            let (x, mut dy) = (rand_vec(n * i, 1), rand_vec(n * o, 2));
            if zeros {
                dy.iter_mut().step_by(3).for_each(|v| *v = 0.0);
                dy.iter_mut().skip(1).step_by(3).for_each(|v| *v = 0.0);
            }
            let (w0, b0) = (rand_vec(o * i, 3), rand_vec(o, 4));
            let (v0, vb0) = (rand_vec(o * i, 5), rand_vec(o, 6));
            let (mut w, mut v, mut b, mut vb) = (w0.clone(), v0.clone(), b0.clone(), vb0.clone());
            let (mut dw, mut db) = (vec![0.0; o * i], vec![0.0; o]);
            let dx = linear_backward(&x, n, &w, o, &dy, &mut dw, &mut db);
            sgd_step(&mut w, &mut v, &dw, h.lr, h.momentum, h.decay);
            sgd_step(&mut b, &mut vb, &db, h.lr, h.momentum, h.decay);
            let (mut fw, mut fv, mut fb, mut fvb) = (w0, v0, b0, vb0);
            let fdx =
                linear_backward_sgd((&x, n, o), &dy, (&mut fw, &mut fv), (&mut fb, &mut fvb), h);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fdx), bits(&dx), "dx, {o}×{i}");
            assert_eq!(bits(&fw), bits(&w), "w, {o}×{i}");
            assert_eq!(bits(&fv), bits(&v), "v, {o}×{i}");
            assert_eq!(
                (bits(&fb), bits(&fvb)),
                (bits(&b), bits(&vb)),
                "bias, {o}×{i}"
            );
        }
    }
}
