//! AlexNet's forward and backward pass, written once against the `Engine` trait: conv → ReLU
//! (→ LRN) (→ max-pool) ×5, fc6 → ReLU → dropout, fc7 → ReLU → dropout, fc8. Eval mode is the
//! exported ONNX graph exactly (dropout is inverted during training, so it is the identity at
//! test time); fc7 is the ReLU output (after its dropout in training mode).
//!
//! Parameters and gradients are engine tensors in `AlexNetConfig::param_shapes()` order:
//! conv1..conv5 (w, b), fc6, fc7, fc8 (w, b).

use crate::error::Result;
use crate::model::AlexNetConfig;
use crate::train::engine::{Engine, Sgd, Shape};

/// Training mode drops fc6/fc7 units with masks drawn from `seed`.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Train { dropout: f32, seed: u64 },
    Eval,
}

impl Mode {
    /// (p, seed) of the dropout after fc6 (`salt` 6) or fc7 (`salt` 7), if any.
    fn dropout(&self, salt: u64) -> Option<(f32, u64)> {
        match *self {
            Mode::Train { dropout, seed } if dropout > 0.0 => {
                Some((dropout, seed.wrapping_add(salt)))
            }
            _ => None,
        }
    }
}

/// One convolutional stage's saved activations.
struct Stage<E: Engine> {
    /// ReLU output, [N, Out, Ho, Wo].
    relu: E::Tensor,
    shape: Shape,
    lrn: Option<(E::Tensor, E::LrnSaved)>,
    pool: Option<(E::Tensor, Shape, E::PoolSaved)>,
}

impl<E: Engine> Stage<E> {
    fn pre_pool(&self) -> &E::Tensor {
        self.lrn.as_ref().map_or(&self.relu, |l| &l.0)
    }
    fn output(&self) -> (&E::Tensor, Shape) {
        match &self.pool {
            Some((p, ps, _)) => (p, *ps),
            None => (self.pre_pool(), self.shape),
        }
    }
}

/// The forward pass's outputs and what backward needs.
pub struct Forward<E: Engine> {
    n: usize,
    mode: Mode,
    x: E::Tensor,
    xs: Shape,
    stages: Vec<Stage<E>>,
    /// [n, hidden], after ReLU (and dropout in training).
    h6: E::Tensor,
    /// [n, hidden]: the embedding (after dropout in training).
    pub fc7: E::Tensor,
    /// [n, classes]; empty for a headless network.
    pub logits: Option<E::Tensor>,
}

impl<E: Engine> Forward<E> {
    fn input(&self, i: usize) -> (&E::Tensor, Shape) {
        match i {
            0 => (&self.x, self.xs),
            _ => self.stages[i - 1].output(),
        }
    }
}

fn conv_params(i: usize) -> (usize, usize) {
    (2 * i, 2 * i + 1)
}

/// The convolutions' parameters come first: conv1..conv5 (w, b).
pub const CONV_PARAMS: usize = 10;

/// fc6, fc7, fc8 are fully connected layers 0, 1, 2.
fn fc_params(j: usize) -> (usize, usize) {
    (CONV_PARAMS + 2 * j, CONV_PARAMS + 1 + 2 * j)
}

fn pair<T>(grads: &mut [T], (w, b): (usize, usize)) -> (&mut T, &mut T) {
    debug_assert_eq!(b, w + 1);
    let (a, rest) = grads[w..].split_at_mut(1);
    (&mut a[0], &mut rest[0])
}

fn pooled(i: usize) -> bool {
    matches!(i, 0 | 1 | 4)
}

/// Runs `n` images `x` ([n, 3, S, S]) through the network.
pub fn forward<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    params: &[E::Tensor],
    x: E::Tensor,
    n: usize,
    mode: Mode,
) -> Result<Forward<E>> {
    assert_eq!(params.len(), cfg.param_shapes().len(), "parameter count");
    let xs = Shape::new(n, 3, cfg.input, cfg.input);
    let mut stages: Vec<Stage<E>> = Vec::with_capacity(5);
    for (i, c) in cfg.convs.iter().enumerate() {
        let (input, is) = match i {
            0 => (&x, xs),
            _ => stages[i - 1].output(),
        };
        let (w, b) = conv_params(i);
        let (mut z, zs) = e.conv_forward(input, is, &params[w], &params[b], c)?;
        e.relu_forward(&mut z, zs)?;
        let lrn = match (i < 2, &cfg.lrn) {
            (true, Some(l)) => Some(e.lrn_forward(&z, zs, l)?),
            _ => None,
        };
        let mut stage = Stage {
            relu: z,
            shape: zs,
            lrn,
            pool: None,
        };
        if pooled(i) {
            stage.pool = Some(e.pool_forward(stage.pre_pool(), zs)?);
        }
        stages.push(stage);
    }
    let hidden = cfg.hidden;
    let fc = |x: &E::Tensor, j: usize, o: usize, relu_drop: bool| -> Result<E::Tensor> {
        let (w, b) = fc_params(j);
        let mut h = e.linear_forward(x, n, &params[w], &params[b], o)?;
        if relu_drop {
            e.relu_forward(&mut h, Shape::flat(n, o))?;
            if let Some((p, seed)) = mode.dropout(6 + j as u64) {
                e.dropout(&mut h, p, seed)?;
            }
        }
        Ok(h)
    };
    let h6 = fc(stages[4].output().0, 0, hidden, true)?;
    let fc7 = fc(&h6, 1, hidden, true)?;
    let logits = match cfg.classes {
        0 => None,
        k => Some(fc(&fc7, 2, k, false)?),
    };
    Ok(Forward {
        n,
        mode,
        x,
        xs,
        stages,
        h6,
        fc7,
        logits,
    })
}

/// Writes the gradient of every parameter into `grads` given dL/dlogits.
///
/// Dropout was applied in place after ReLU, so the saved activation is zero wherever a unit
/// was dropped and positive exactly where a kept unit was: ReLU's backward on it, then
/// dropout's scale, equals the backward of ReLU then dropout, bit for bit.
pub fn backward<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    params: &[E::Tensor],
    f: &Forward<E>,
    dlogits: &E::Tensor,
    grads: &mut [E::Tensor],
) -> Result<()> {
    let da = backward_fc(e, cfg, f, dlogits, |j, x, o, dy| {
        let (dw, db) = pair(grads, fc_params(j));
        e.linear_backward(x, f.n, &params[fc_params(j).0], o, dy, dw, db)
    })?;
    backward_convs(e, cfg, &params[..CONV_PARAMS], f, da, grads)
}

/// `backward`, with the fully connected layers' SGD update (`h`, their `velocity`) applied as
/// each of their gradients appears, for training on one engine where nothing else reads those
/// gradients (the CPU engine then never stores them). The convolutions' gradients land in
/// `grads` as before; updating those is the caller's.
pub fn backward_updating_fc<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    (params, velocity): (&mut [E::Tensor], &mut [E::Tensor]),
    f: &Forward<E>,
    dlogits: &E::Tensor,
    grads: &mut [E::Tensor],
    h: Sgd,
) -> Result<()> {
    let da = backward_fc(e, cfg, f, dlogits, |j, x, o, dy| {
        let at = fc_params(j);
        let ((w, b), (vw, vb)) = (pair(params, at), pair(velocity, at));
        e.linear_backward_sgd((x, f.n, o), dy, (w, vw), (b, vb), pair(grads, at), h)
    })?;
    backward_convs(e, cfg, &params[..CONV_PARAMS], f, da, grads)
}

/// fc8, fc7, fc6 backwards through `fc(layer, input, outputs, dy) → dx`: the gradient at the
/// last stage's output.
fn backward_fc<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    f: &Forward<E>,
    dlogits: &E::Tensor,
    mut fc: impl FnMut(usize, &E::Tensor, usize, &E::Tensor) -> Result<E::Tensor>,
) -> Result<E::Tensor> {
    let hidden = cfg.hidden;
    // y is zero wherever dropout dropped a unit, so ReLU's backward on it applies the mask too:
    // what is left of dropout's backward is its scale (no second pass of the mask's hash).
    let relu_drop_back = |y: &E::Tensor, d: &mut E::Tensor, salt: u64| -> Result<()> {
        e.relu_backward(y, d, Shape::flat(f.n, hidden))?;
        match f.mode.dropout(salt) {
            Some((p, _)) => e.scale(d, 1.0 / (1.0 - p)),
            None => Ok(()),
        }
    };
    let mut dh7 = fc(2, &f.fc7, cfg.classes, dlogits)?;
    relu_drop_back(&f.fc7, &mut dh7, 7)?;
    let mut dh6 = fc(1, &f.h6, hidden, &dh7)?;
    relu_drop_back(&f.h6, &mut dh6, 6)?;
    fc(0, f.stages[4].output().0, hidden, &dh6)
}

/// The convolutional stages backwards from `da`, the gradient at the last stage's output;
/// `convs` are the convolutions' parameters.
fn backward_convs<E: Engine>(
    e: &E,
    cfg: &AlexNetConfig,
    convs: &[E::Tensor],
    f: &Forward<E>,
    mut da: E::Tensor,
    grads: &mut [E::Tensor],
) -> Result<()> {
    for i in (0..5).rev() {
        let s = &f.stages[i];
        if let Some((y, _, saved)) = &s.pool {
            da = e.pool_backward(s.pre_pool(), s.shape, y, saved, &da)?;
        }
        if let (Some((y, saved)), Some(l)) = (&s.lrn, &cfg.lrn) {
            da = e.lrn_backward(&s.relu, y, saved, s.shape, l, &da)?;
        }
        e.relu_backward(&s.relu, &mut da, s.shape)?;
        let (x, xs) = f.input(i);
        let (dw, db) = pair(grads, conv_params(i));
        let w = &convs[conv_params(i).0];
        match e.conv_backward(x, xs, w, &cfg.convs[i], &da, dw, db, i > 0)? {
            Some(dx) => da = dx,
            None => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Conv, Init, Lrn, Param};
    use crate::train::engine::cpu::Cpu;

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

    fn tensors(ps: &[Param]) -> Vec<Vec<f32>> {
        ps.iter().map(|p| p.data.clone()).collect()
    }

    /// Mean cross-entropy of the batch and, from backward, every parameter's gradient.
    fn loss_and_grads(
        cfg: &AlexNetConfig,
        ps: &[Param],
        x: &[f32],
        labels: &[u32],
        mode: Mode,
    ) -> (f64, Vec<Vec<f32>>) {
        let params = tensors(ps);
        let f = forward(&Cpu, cfg, &params, x.to_vec(), labels.len(), mode).unwrap();
        let logits = f.logits.as_ref().unwrap();
        let (losses, dl) = Cpu.softmax_cross_entropy(logits, labels, 3).unwrap();
        let mut grads: Vec<Vec<f32>> = ps.iter().map(|p| vec![0.0; p.data.len()]).collect();
        backward(&Cpu, cfg, &params, &f, &dl, &mut grads).unwrap();
        let loss = losses.iter().map(|&v| v as f64).sum::<f64>() / labels.len() as f64;
        (loss, grads)
    }

    /// The whole network's parameter gradients against central differences of the loss, in
    /// eval mode and in training mode (where the dropout masks are fixed by the seed).
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
        for mode in [
            Mode::Eval,
            Mode::Train {
                dropout: 0.3,
                seed: 11,
            },
        ] {
            let (_, grads) = loss_and_grads(&cfg, &params, &x, &labels, mode);
            let loss = |ps: &[Param]| loss_and_grads(&cfg, ps, &x, &labels, mode).0;
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
                        "{mode:?} {}[{i}]: numeric {num} vs backward {}",
                        params[pi].name,
                        g[i]
                    );
                    checked += 1;
                }
            }
            assert!(checked > 40);
        }
    }

    /// What backward does after fc6 and fc7 (ReLU's backward, then dropout's scale) equals
    /// dropout's backward then ReLU's, bit for bit, on an activation that went through ReLU
    /// then dropout.
    #[test]
    fn relu_backward_then_scale_is_the_backward_of_relu_then_dropout() {
        let mut y = crate::train::engine::random(20_000, 3);
        Cpu.relu_forward(&mut y, Shape::flat(1, 20_000)).unwrap();
        Cpu.dropout(&mut y, 0.5, 9).unwrap();
        let d = crate::train::engine::random(20_000, 4);
        let (mut want, mut got) = (d.clone(), d);
        Cpu.dropout(&mut want, 0.5, 9).unwrap();
        Cpu.relu_backward(&y, &mut want, Shape::flat(1, 20_000))
            .unwrap();
        Cpu.relu_backward(&y, &mut got, Shape::flat(1, 20_000))
            .unwrap();
        Cpu.scale(&mut got, 1.0 / (1.0 - 0.5)).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
        assert!(want.iter().filter(|&&v| v != 0.0).count() > 3_000);
    }

    #[test]
    fn training_mode_drops_units_and_eval_mode_does_not() {
        let cfg = tiny();
        let params = tensors(&init_params(&cfg, Init::He, 2));
        let x = vec![0.5f32; 3 * 51 * 51];
        let run = |mode| {
            forward(&Cpu, &cfg, &params, x.clone(), 1, mode)
                .unwrap()
                .fc7
        };
        let eval = run(Mode::Eval);
        let train = run(Mode::Train {
            dropout: 0.5,
            seed: 4,
        });
        assert_eq!(
            train,
            run(Mode::Train {
                dropout: 0.5,
                seed: 4
            })
        );
        assert!(eval.iter().any(|&v| v > 0.0));
        assert!(train.iter().zip(&eval).any(|(&t, &e)| t == 0.0 && e > 0.0));
        assert_ne!(train, eval);
    }
}
