//! One SGD step's state and arithmetic on one engine: the weights, velocities and gradients
//! kept where the engine computes (host vectors or GPU buffers), the recipe's per-step
//! numbers, and the paper's update. Epochs (`epoch`) and data-parallel teams (`parallel`) both
//! step through it.

use crate::error::Result;
use crate::model::{AlexNetConfig, Param};
use crate::train::engine::{Engine, Sgd};
use crate::train::network::{self, Forward, Mode, CONV_PARAMS};

/// Parameters, momentum and gradient buffers on the engine, in `param_shapes()` order.
pub struct Weights<E: Engine> {
    pub params: Vec<E::Tensor>,
    pub velocity: Vec<E::Tensor>,
    pub(crate) grads: Vec<E::Tensor>,
}

impl<E: Engine> Weights<E> {
    pub fn upload(e: &E, params: &[Param], velocity: &[Vec<f32>]) -> Result<Self> {
        Ok(Weights {
            params: params
                .iter()
                .map(|p| e.upload(&p.data))
                .collect::<Result<_>>()?,
            velocity: velocity
                .iter()
                .map(|v| e.upload(v))
                .collect::<Result<_>>()?,
            grads: params
                .iter()
                .map(|p| e.zeros(p.data.len()))
                .collect::<Result<_>>()?,
        })
    }

    /// The paper's SGD update of every parameter from `grads`.
    pub(crate) fn update(&mut self, e: &E, h: Hyper) -> Result<()> {
        self.update_first(e, h, self.params.len())
    }

    /// The update of the first `count` parameters.
    fn update_first(&mut self, e: &E, h: Hyper, count: usize) -> Result<()> {
        for ((p, v), g) in self.params[..count]
            .iter_mut()
            .zip(&mut self.velocity)
            .zip(&self.grads)
        {
            e.sgd_step(p, v, g, h.lr, h.momentum, h.weight_decay)?;
        }
        Ok(())
    }

    /// `network::backward` then `update`, with the same results, on one engine: the fully
    /// connected layers are updated as their gradients appear (`backward_updating_fc`), so the
    /// CPU engine never stores them.
    pub(crate) fn backward_and_update(
        &mut self,
        e: &E,
        cfg: &AlexNetConfig,
        (f, dlogits): (&Forward<E>, &E::Tensor),
        h: Hyper,
    ) -> Result<()> {
        let (params, velocity) = (&mut self.params, &mut self.velocity);
        let grads = &mut self.grads;
        network::backward_updating_fc(e, cfg, (params, velocity), f, dlogits, grads, h.sgd())?;
        self.update_first(e, h, CONV_PARAMS)
    }

    /// Copies the engine's parameters and velocities back into the host copies.
    pub fn download(&self, e: &E, params: &mut [Param], velocity: &mut [Vec<f32>]) -> Result<()> {
        for (p, t) in params.iter_mut().zip(&self.params) {
            e.download_into(t, &mut p.data)?;
        }
        for (v, t) in velocity.iter_mut().zip(&self.velocity) {
            e.download_into(t, v)?;
        }
        Ok(())
    }
}

/// The recipe's per-step numbers.
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub dropout: f32,
}

impl Hyper {
    pub fn sgd(&self) -> Sgd {
        Sgd {
            lr: self.lr,
            momentum: self.momentum,
            decay: self.weight_decay,
        }
    }

    /// The paper's numbers, for measured and checked steps.
    pub const BENCH: Hyper = Hyper {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 5e-4,
        dropout: 0.5,
    };
}

/// Queues one SGD step on input `x`; returns the per-sample losses and the logits (still on
/// the engine, so the caller decides when to wait for them).
pub fn train_step<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    w: &mut Weights<E>,
    (x, labels): (E::Tensor, &[u32]),
    h: Hyper,
    seed: u64,
) -> Result<(E::Tensor, E::Tensor)> {
    let mode = Mode::Train {
        dropout: h.dropout,
        seed,
    };
    let out = network::forward(e, cfg, &w.params, x, labels.len(), mode)?;
    let logits = out.logits.as_ref().expect("a classifier");
    let (losses, dlogits) = e.softmax_cross_entropy(logits, labels, cfg.classes)?;
    w.backward_and_update(e, cfg, (&out, &dlogits), h)?;
    Ok((losses, out.logits.expect("a classifier")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Init};
    use crate::train::engine::cpu::Cpu;
    use crate::train::recipe::{architecture, preset};

    const BASE: Hyper = Hyper {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 5e-4,
        dropout: 0.5,
    };

    /// The quick network's weights (flattened) before and after `steps` SGD steps under `h`,
    /// all on the same batch.
    fn weights_after(h: Hyper, steps: usize) -> (Vec<f32>, Vec<f32>) {
        let cfg = architecture(&preset("quick").unwrap(), 4);
        let params = init_params(&cfg, Init::He, 1);
        let vel: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.data.len()]).collect();
        let mut w = Weights::upload(&Cpu, &params, &vel).unwrap();
        let x = crate::train::engine::random(4 * 3 * cfg.input * cfg.input, 3);
        for step in 0..steps {
            train_step(
                &Cpu,
                &cfg,
                &mut w,
                (x.clone(), &[0, 1, 2, 3]),
                h,
                step as u64,
            )
            .unwrap();
        }
        let (mut after, mut v) = (params.clone(), vel);
        w.download(&Cpu, &mut after, &mut v).unwrap();
        let flat = |p: Vec<crate::model::Param>| p.into_iter().flat_map(|p| p.data).collect();
        (flat(params), flat(after))
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Weight decay after one step: w₁ − w₁' = −lr·wd·w₀ exactly (v₀ = 0; same gradient).
    #[test]
    fn weight_decay_shrinks_the_first_step_by_lr_times_wd_times_w() {
        let (w0, with) = weights_after(BASE, 1);
        let without = weights_after(
            Hyper {
                weight_decay: 0.0,
                ..BASE
            },
            1,
        )
        .1;
        let want: Vec<f32> = w0
            .iter()
            .map(|w| -BASE.lr * BASE.weight_decay * w)
            .collect();
        let got: Vec<f32> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
        assert!(
            max_abs_diff(&got, &want) < 1e-7,
            "{}",
            max_abs_diff(&got, &want)
        );
        assert!(want.iter().any(|v| v.abs() > 1e-6));
    }

    /// Momentum in the second step: w₂ − w₂' = m·(w₁ − w₀), the first step being the same.
    #[test]
    fn momentum_carries_the_first_step_into_the_second() {
        let (w0, w1) = weights_after(BASE, 1);
        let with = weights_after(BASE, 2).1;
        let without = weights_after(
            Hyper {
                momentum: 0.0,
                ..BASE
            },
            2,
        )
        .1;
        let want: Vec<f32> = w1
            .iter()
            .zip(&w0)
            .map(|(a, b)| BASE.momentum * (a - b))
            .collect();
        let got: Vec<f32> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
        assert!(
            max_abs_diff(&got, &want) < 1e-6,
            "{}",
            max_abs_diff(&got, &want)
        );
    }

    /// A step on one engine (the fully connected layers updated inside backward) moves every
    /// parameter and velocity exactly as backward then `update` do, momentum carried over two
    /// steps.
    #[test]
    fn one_engine_step_equals_backward_then_update_bit_for_bit() {
        let cfg = architecture(&preset("quick").unwrap(), 4);
        let params = init_params(&cfg, Init::He, 2);
        let vel: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.data.len()]).collect();
        let mut fused = Weights::upload(&Cpu, &params, &vel).unwrap();
        let mut apart = Weights::upload(&Cpu, &params, &vel).unwrap();
        let x = crate::train::engine::random(4 * 3 * cfg.input * cfg.input, 5);
        let labels = [3, 1, 0, 1];
        for step in 0..2 {
            train_step(&Cpu, &cfg, &mut fused, (x.clone(), &labels), BASE, step).unwrap();
            let mode = Mode::Train {
                dropout: BASE.dropout,
                seed: step,
            };
            let out = network::forward(&Cpu, &cfg, &apart.params, x.clone(), 4, mode).unwrap();
            let logits = out.logits.as_ref().unwrap();
            let (_, dl) = Cpu.softmax_cross_entropy(logits, &labels, 4).unwrap();
            network::backward(&Cpu, &cfg, &apart.params, &out, &dl, &mut apart.grads).unwrap();
            apart.update(&Cpu, BASE).unwrap();
        }
        let bits = |t: &[Vec<f32>]| -> Vec<Vec<u32>> {
            t.iter()
                .map(|v| v.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        assert!(
            bits(&fused.params) == bits(&apart.params),
            "parameters differ"
        );
        assert!(
            bits(&fused.velocity) == bits(&apart.velocity),
            "velocities differ"
        );
        assert!(fused.params.iter().zip(&params).all(|(a, b)| a != &b.data));
    }

    /// Dropout changes the gradient, and so the step.
    #[test]
    fn dropout_changes_the_step() {
        let with = weights_after(BASE, 1).1;
        let without = weights_after(
            Hyper {
                dropout: 0.0,
                ..BASE
            },
            1,
        )
        .1;
        assert!(max_abs_diff(&with, &without) > 1e-6);
    }
}
