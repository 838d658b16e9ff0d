//! fc7bench's fully connected layer modes: its backward and update, and its products alone.

use std::time::Instant;

use fc7::train::engine::cpu::ops;
use fc7::train::engine::{random, Sgd};
use fc7::util::matmul::{matmul, matmul_blocks, Mat, BLOCK_ROWS};
use fc7::util::sgemm::{self, blocks};
use rayon::prelude::*;

/// A fully connected layer's backward and update, stored gradient against fused, alternating.
pub fn update(i: usize, o: usize, n: usize, iters: usize) {
    let h = Sgd {
        lr: 0.01,
        momentum: 0.9,
        decay: 5e-4,
    };
    let (x, dy) = (random(n * i, 1), random(n * o, 2));
    let (mut w, mut v, mut b, mut vb) = (
        random(o * i, 3),
        vec![0.0; o * i],
        vec![0.0; o],
        vec![0.0; o],
    );
    let (mut dw, mut db) = (vec![0.0; o * i], vec![0.0; o]);
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..iters {
            ops::linear_backward(&x, n, &w, o, &dy, &mut dw, &mut db);
            ops::sgd_step(&mut w, &mut v, &dw, h.lr, h.momentum, h.decay);
            ops::sgd_step(&mut b, &mut vb, &db, h.lr, h.momentum, h.decay);
        }
        let apart = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
        let t = Instant::now();
        for _ in 0..iters {
            ops::linear_backward_sgd((&x, n, o), &dy, (&mut w, &mut v), (&mut b, &mut vb), h);
        }
        let fused = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
        println!(
            "fc-update {i}→{o} batch {n} round {round}: apart {apart:.2} ms, fused {fused:.2} ms"
        );
    }
}

/// The layer's three products (y = x·wᵀ, dx = dy·w, dW = dyᵀ·x), each `iters` times after two
/// warm-up calls: ms and GFLOP/s; y and dx both through `gemm` and through fc7's own kernel
/// (`util::sgemm`, which training uses for them with AVX2), dW block by block through
/// matrixmultiply and through what training uses here, alternating, with each result's digest.
pub fn products(i: usize, o: usize, n: usize, iters: usize) {
    let (x, w, dy) = (random(n * i, 1), random(o * i, 2), random(n * o, 3));
    let (mut y, mut dx, mut dw) = (vec![0.0; n * o], vec![0.0; n * i], vec![0.0; o * i]);
    let flops = 2.0 * (n * i * o) as f64;
    let time = |name: &str, f: &mut dyn FnMut()| {
        let ms = ms_per_call(2, iters, f);
        println!(
            "fc-products {i}→{o} batch {n} {name}: {ms:.2} ms, GFLOP/s={:.0}",
            flops / ms / 1e6
        );
    };
    let bits = |v: &[f32]| println!("  bits {:016x}", digest(v));
    for _ in 0..2 {
        time("y = x·wᵀ gemm", &mut || {
            matmul(Mat::new(&x, n, i), Mat::t(&w, o, i), &mut y, false, true)
        });
        bits(&y);
        time("y = x·wᵀ sgemm", &mut || {
            sgemm::product(Mat::new(&x, n, i), Mat::t(&w, o, i), &mut y, true)
        });
        bits(&y);
        time("dx = dy·w gemm", &mut || {
            let (dy, w) = (Mat::new(&dy, n, o), Mat::new(&w, o, i));
            matmul(dy, w, &mut dx, false, true)
        });
        bits(&dx);
        time("dx = dy·w sgemm", &mut || {
            sgemm::product(Mat::new(&dy, n, o), Mat::new(&w, o, i), &mut dx, true)
        });
        bits(&dx);
    }
    // dW as training computes it, a block of rows at a time (here copied out, as the stored
    // gradient is): matrixmultiply's kernel and the one training uses on this CPU.
    let store = store_rows(i);
    for _ in 0..2 {
        time("dW = dyᵀ·x blocks, matrixmultiply", &mut || {
            let states = dw.par_chunks_mut(BLOCK_ROWS * i);
            matmul_blocks(Mat::t(&dy, n, o), Mat::new(&x, n, i), states, store)
        });
        bits(&dw);
        time("dW = dyᵀ·x blocks, training's", &mut || {
            let states = dw.par_chunks_mut(blocks::block_rows() * i);
            blocks::fastest_blocks(Mat::t(&dy, n, o), Mat::new(&x, n, i), states, store)
        });
        bits(&dw);
    }
}

/// The input and weight gradients with `percent`% of dy nonzero (the rest planted zeros, as
/// ReLU and dropout leave them): the dense products training uses here against the ones that
/// skip dy's zeros, alternating, with dense-equivalent GFLOP/s and each result's digest (the
/// two must agree).
pub fn sparse(i: usize, o: usize, n: usize, iters: usize, percent: usize) {
    let (x, w) = (random(n * i, 1), random(o * i, 2));
    let dy = with_zeros(random(n * o, 3), percent, 0);
    let (mut dx, mut dw) = (vec![0.0; n * i], vec![0.0; o * i]);
    let flops = 2.0 * (n * i * o) as f64;
    let path = fc7::util::isa::fastest();
    println!(
        "sparse-products {i}→{o} batch {n}: dy {:.3} nonzero, isa={}",
        sgemm::sparse::density(&dy),
        fc7::util::isa::widest()
    );
    let time = |name: &str, f: &mut dyn FnMut()| {
        let ms = ms_per_call(1, iters, f);
        println!(
            "  {name}: {ms:.2} ms, GFLOP/s={:.0} (dense-equivalent)",
            flops / ms / 1e6
        );
    };
    let store = store_rows(i);
    let rows = blocks::block_rows();
    let xs = with_zeros(random(n * i, 4), percent, 7);
    let mut y = vec![0.0; n * o];
    // The dense product and the one skipping a's zeros into `c`, timed, with both digests.
    let products = |name: &str, (a, b): (Mat, Mat), c: &mut [f32]| {
        time(&format!("{name} dense"), &mut || {
            sgemm::fastest_product(a, b, c, true)
        });
        let dense = digest(c);
        time(&format!("{name} skipping"), &mut || {
            sgemm::sparse::product(path, a, b, c)
        });
        println!(
            "  {name} bits: dense {dense:016x}, skipping {:016x}",
            digest(c)
        );
    };
    for _ in 0..2 {
        products("forward", (Mat::new(&xs, n, i), Mat::t(&w, o, i)), &mut y);
        products("dx", (Mat::new(&dy, n, o), Mat::new(&w, o, i)), &mut dx);
        let (a, b) = (Mat::t(&dy, n, o), Mat::new(&x, n, i));
        time("dW dense", &mut || {
            blocks::fastest_blocks(a, b, dw.par_chunks_mut(rows * i), store)
        });
        let dense = digest(&dw);
        time("dW skipping", &mut || {
            let states = dw.par_chunks_mut(rows * i);
            sgemm::sparse::blocks(path, (a, b), rows, states, store)
        });
        println!(
            "  dW bits: dense {dense:016x}, skipping {:016x}",
            digest(&dw)
        );
    }
}

/// `v` with all but `percent`% of its entries zeroed, at places a hash of their index and
/// `salt` picks (as ReLU and dropout leave them).
fn with_zeros(mut v: Vec<f32>, percent: usize, salt: u64) -> Vec<f32> {
    let keep = percent as u64 * 65_536 / 100;
    for (j, x) in v.iter_mut().enumerate() {
        if ((j as u64 ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) & 0xffff >= keep {
            *x = 0.0;
        }
    }
    v
}

/// Milliseconds a call of `f` takes over `iters` calls, after `warm` uncounted ones.
fn ms_per_call(warm: usize, iters: usize, f: &mut dyn FnMut()) -> f64 {
    (0..warm).for_each(|_| f());
    let t = Instant::now();
    (0..iters).for_each(|_| f());
    t.elapsed().as_secs_f64() * 1e3 / iters as f64
}

/// A weight gradient's blocks (rows `stride` apart) copied into the stored gradient's rows of
/// `i` floats, as `linear_backward` stores it.
fn store_rows(i: usize) -> impl Fn(&mut [f32], &[f32], usize) + Sync + Copy {
    move |dw, block, stride| {
        for (d, s) in dw.chunks_mut(i).zip(block.chunks(stride)) {
            d.copy_from_slice(&s[..i]);
        }
    }
}

/// A digest of a result's bits: the same on two machines or builds, or not.
fn digest(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3)
    })
}
