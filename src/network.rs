//! AlexNet's forward and backward pass, written once against the `Engine` trait: conv → ReLU
//! (→ LRN) (→ max-pool) ×5, fc6 → ReLU → dropout, fc7 → ReLU → dropout, fc8. Eval mode is the
//! exported ONNX graph exactly (dropout is inverted during training, so it is the identity at
//! test time); fc7 is the ReLU output before its dropout.

use rand::{Rng, SeedableRng};

use crate::engine::{Engine, PoolIndex, Shape};
use crate::model::{AlexNetConfig, Param};

/// Training mode draws dropout masks from `seed` (one stream per sample).
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Train { dropout: f32, seed: u64 },
    Eval,
}

/// What backward needs from forward, per layer.
pub struct Cache {
    n: usize,
    conv_in: Vec<(Vec<f32>, Shape)>,
    relu_out: Vec<Vec<f32>>,
    lrn: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    pool: Vec<Option<(Shape, PoolIndex)>>,
    flat: Vec<f32>,
    h6: Vec<f32>,
    d6: Vec<f32>,
    mask6: Option<Vec<f32>>,
    h7: Vec<f32>,
    d7: Vec<f32>,
    mask7: Option<Vec<f32>>,
}

pub struct Forward {
    /// [n, hidden]: the embedding.
    pub fc7: Vec<f32>,
    /// [n, classes]
    pub logits: Vec<f32>,
    pub cache: Cache,
}

fn param<'a>(params: &'a [Param], name: &str) -> &'a Param {
    params
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

/// Inverted dropout: zeroes with probability p, scales survivors by 1/(1−p).
fn dropout(h: &[f32], width: usize, p: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut mask = vec![0.0; h.len()];
    for (i, row) in mask.chunks_mut(width).enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        row.iter_mut().for_each(|m| {
            *m = if rng.random::<f32>() < p {
                0.0
            } else {
                1.0 / (1.0 - p)
            }
        });
    }
    (h.iter().zip(&mask).map(|(a, m)| a * m).collect(), mask)
}

/// Runs `n` images `x` ([n, 3, S, S]) through the network.
pub fn forward<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    params: &[Param],
    x: Vec<f32>,
    n: usize,
    mode: Mode,
) -> Forward {
    let mut xs = Shape::new(n, 3, cfg.input, cfg.input);
    let mut a = x;
    let (mut conv_in, mut relu_out, mut lrn, mut pool) = (vec![], vec![], vec![], vec![]);
    for (i, c) in cfg.convs.iter().enumerate() {
        let name = format!("conv{}", i + 1);
        let (mut z, zs) = e.conv_forward(
            &a,
            xs,
            &param(params, &format!("{name}.w")).data,
            &param(params, &format!("{name}.b")).data,
            c,
        );
        e.relu_forward(&mut z);
        conv_in.push((a, xs));
        a = z.clone();
        relu_out.push(z);
        xs = zs;
        match (i < 2, &cfg.lrn) {
            (true, Some(l)) => {
                let (y, s) = e.lrn_forward(&a, xs, l);
                lrn.push(Some((y.clone(), s)));
                a = y;
            }
            _ => lrn.push(None),
        }
        if matches!(i, 0 | 1 | 4) {
            let (p, ps, idx) = e.pool_forward(&a, xs);
            pool.push(Some((xs, idx)));
            a = p;
            xs = ps;
        } else {
            pool.push(None);
        }
    }
    let hidden = cfg.hidden;
    let fc = |x: &[f32], name: &str, o: usize| {
        e.linear_forward(
            x,
            n,
            &param(params, &format!("{name}.w")).data,
            &param(params, &format!("{name}.b")).data,
            o,
        )
    };
    let flat = a;
    let mut h6 = fc(&flat, "fc6", hidden);
    e.relu_forward(&mut h6);
    let drop = |h: &[f32], salt: u64| match mode {
        Mode::Train { dropout: p, seed } if p > 0.0 => {
            let (d, m) = dropout(h, hidden, p, seed.wrapping_add(salt));
            (d, Some(m))
        }
        _ => (h.to_vec(), None),
    };
    let (d6, mask6) = drop(&h6, 6);
    let mut h7 = fc(&d6, "fc7", hidden);
    e.relu_forward(&mut h7);
    let (d7, mask7) = drop(&h7, 7);
    let logits = if cfg.classes > 0 {
        fc(&d7, "fc8", cfg.classes)
    } else {
        Vec::new()
    };
    let cache = Cache {
        n,
        conv_in,
        relu_out,
        lrn,
        pool,
        flat,
        h6,
        d6,
        mask6,
        h7: h7.clone(),
        d7,
        mask7,
    };
    Forward {
        fc7: h7,
        logits,
        cache,
    }
}

/// Gradients of every parameter (in `cfg.param_shapes()` order) given dL/dlogits.
pub fn backward<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    params: &[Param],
    cache: &Cache,
    dlogits: &[f32],
) -> Vec<Vec<f32>> {
    let n = cache.n;
    let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.data.len()]).collect();
    let index = |name: &str| {
        params
            .iter()
            .position(|p| p.name == name)
            .expect("parameter")
    };
    let mut linear = |x: &[f32], name: &str, o: usize, dy: &[f32]| {
        let (wi, bi) = (index(&format!("{name}.w")), index(&format!("{name}.b")));
        let (mut dw, mut db) = (vec![0.0; grads[wi].len()], vec![0.0; o]);
        let dx = e.linear_backward(x, n, &params[wi].data, o, dy, &mut dw, &mut db);
        grads[wi] = dw;
        grads[bi] = db;
        dx
    };
    let unmask = |mut d: Vec<f32>, mask: &Option<Vec<f32>>| {
        if let Some(m) = mask {
            d.iter_mut().zip(m).for_each(|(g, m)| *g *= m);
        }
        d
    };
    let mut dh7 = unmask(linear(&cache.d7, "fc8", cfg.classes, dlogits), &cache.mask7);
    e.relu_backward(&cache.h7, &mut dh7);
    let mut dh6 = unmask(linear(&cache.d6, "fc7", cfg.hidden, &dh7), &cache.mask6);
    e.relu_backward(&cache.h6, &mut dh6);
    let mut da = linear(&cache.flat, "fc6", cfg.hidden, &dh6);
    for i in (0..5).rev() {
        if let Some((s, idx)) = &cache.pool[i] {
            da = e.pool_backward(*s, idx, &da);
        }
        let z = &cache.relu_out[i];
        if let (Some((y, s)), Some(l)) = (&cache.lrn[i], &cfg.lrn) {
            let (_, zs) = &cache.conv_in[i];
            let shape = Shape::new(
                n,
                cfg.convs[i].out,
                cfg.convs[i].out_size(zs.h),
                cfg.convs[i].out_size(zs.w),
            );
            da = e.lrn_backward(z, y, s, shape, l, &da);
        }
        e.relu_backward(z, &mut da);
        let (x, xs) = &cache.conv_in[i];
        let (wi, bi) = (
            index(&format!("conv{}.w", i + 1)),
            index(&format!("conv{}.b", i + 1)),
        );
        let (mut dw, mut db) = (vec![0.0; grads[wi].len()], vec![0.0; grads[bi].len()]);
        da = e.conv_backward(
            x,
            *xs,
            &params[wi].data,
            &cfg.convs[i],
            &da,
            &mut dw,
            &mut db,
        );
        grads[wi] = dw;
        grads[bi] = db;
    }
    grads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::engine::softmax_cross_entropy;
    use crate::model::{init_params, Conv, Init, Lrn};

    fn tiny() -> AlexNetConfig {
        let c = Conv::new;
        AlexNetConfig {
            input: 51,
            convs: [
                c(4, 5, 2, 1, 1),
                c(6, 3, 1, 1, 2),
                c(4, 3, 1, 1, 1),
                c(4, 3, 1, 1, 2),
                c(4, 3, 1, 1, 2),
            ],
            hidden: 8,
            classes: 3,
            lrn: Some(Lrn {
                size: 3,
                alpha: 0.05,
                beta: 0.75,
                k: 2.0,
            }),
        }
    }

    /// The whole network's parameter gradients against central differences of the loss.
    #[test]
    fn whole_network_gradients_match_finite_differences() {
        let cfg = tiny();
        assert_eq!(cfg.flat_features().unwrap(), 4 * 2 * 2);
        let mut params = init_params(&cfg, Init::He, 5);
        for p in params.iter_mut().filter(|p| p.name.ends_with(".b")) {
            p.data.iter_mut().for_each(|v| *v = 0.1);
        }
        let n = 2;
        let x: Vec<f32> = (0..n * 3 * 51 * 51)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let labels = [0, 2];
        let loss = |ps: &[Param]| {
            let f = forward(&Cpu, &cfg, ps, x.clone(), n, Mode::Eval);
            softmax_cross_entropy(&f.logits, &labels, 3).0 as f64
        };
        let f = forward(&Cpu, &cfg, &params, x.clone(), n, Mode::Eval);
        let (_, dl) = softmax_cross_entropy(&f.logits, &labels, 3);
        let grads = backward(&Cpu, &cfg, &params, &f.cache, &dl);
        let mut checked = 0;
        for (pi, g) in grads.iter().enumerate() {
            for i in (0..g.len()).step_by((g.len() / 3).max(1)) {
                let eps = 2e-4;
                let mut plus = params.clone();
                plus[pi].data[i] += eps;
                let mut minus = params.clone();
                minus[pi].data[i] -= eps;
                let num = (loss(&plus) - loss(&minus)) / (2.0 * eps as f64);
                // f32 forward: the loss carries ~1e-7 noise, i.e. ~3e-4 in the quotient.
                let tol = 5e-2 * num.abs().max(g[i].abs() as f64) + 1e-3;
                assert!(
                    (num - g[i] as f64).abs() <= tol,
                    "{}[{i}]: numeric {num} vs backward {}",
                    params[pi].name,
                    g[i]
                );
                checked += 1;
            }
        }
        assert!(checked > 40);
    }

    #[test]
    fn dropout_is_seeded_and_keeps_the_expectation() {
        let h = vec![1.0f32; 4000];
        let (a, _) = dropout(&h, 1000, 0.5, 9);
        let (b, _) = dropout(&h, 1000, 0.5, 9);
        assert_eq!(a, b);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 1.0).abs() < 0.06, "{mean}");
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
    }
}
