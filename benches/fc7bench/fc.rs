//! fc7bench's fully connected layer modes: its backward and update, and its products alone.

use std::time::Instant;

use fc7::train::engine::cpu::ops;
use fc7::train::engine::{random, Sgd};
use fc7::util::matmul::{matmul, Mat};

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

/// The layer's three products as training runs them (y = x·wᵀ, dx = dy·w, dW = dyᵀ·x), each
/// `iters` times after two warm-up calls: ms and GFLOP/s.
pub fn products(i: usize, o: usize, n: usize, iters: usize) {
    let (x, w, dy) = (random(n * i, 1), random(o * i, 2), random(n * o, 3));
    let (mut y, mut dx, mut dw) = (vec![0.0; n * o], vec![0.0; n * i], vec![0.0; o * i]);
    let flops = 2.0 * (n * i * o) as f64;
    let time = |name: &str, f: &mut dyn FnMut()| {
        f();
        f();
        let t = Instant::now();
        (0..iters).for_each(|_| f());
        let ms = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
        println!(
            "fc-products {i}→{o} batch {n} {name}: {ms:.2} ms, GFLOP/s={:.0}",
            flops / ms / 1e6
        );
    };
    time("y = x·wᵀ", &mut || {
        matmul(Mat::new(&x, n, i), Mat::t(&w, o, i), &mut y, false, true)
    });
    time("dx = dy·w", &mut || {
        matmul(
            Mat::new(&dy, n, o),
            Mat::new(&w, o, i),
            &mut dx,
            false,
            true,
        )
    });
    time("dW = dyᵀ·x", &mut || {
        matmul(Mat::t(&dy, n, o), Mat::new(&x, n, i), &mut dw, false, true)
    });
}
