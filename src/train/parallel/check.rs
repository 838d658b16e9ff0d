//! `fc7 selftest --gpus N`: a data-parallel team checked against its lead training alone, as
//! `selftest` checks one engine against the CPU: the sum itself (each engine contributes r + 1,
//! every one must hold N(N+1)/2 after), two steps of a small AlexNet on a batch split N ways
//! against the whole batch on the lead, and the engines' weights equal bit for bit after.

use crate::error::Result;
use crate::model::{init_params, Init};
use crate::train::batch::Batch;
use crate::train::engine::Engine;
use crate::train::parallel::{Reduce, Step, Team};
use crate::train::selftest::{relative_error, small_alexnet, Check, NETWORK};
use crate::train::step::{train_step, Hyper, Weights};

/// The checks of a team of `engines` (the lead first) summing through `reduce`.
pub fn team_checks<E: Engine>(engines: &[&E], reduce: &dyn Reduce<E>) -> Result<Vec<Check>> {
    let k = engines.len();
    let mut checks = vec![sum_check(engines, reduce)?];
    let cfg = small_alexnet();
    let params = init_params(&cfg, Init::He, 3);
    let vel: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.data.len()]).collect();
    let (batch, stats) = Batch::synthetic(&cfg, 8 * k);
    // No dropout: each engine draws its own masks, so only then is the whole batch comparable.
    let h = Hyper {
        dropout: 0.0,
        ..Hyper::BENCH
    };
    let (lead, helpers) = engines.split_first().expect("an engine");
    let mut team = Team::new(helpers, reduce, &params, &vel)?;
    lead.make_current()?;
    let mut alone = Weights::upload(*lead, &params, &vel)?;
    let mut shared = Weights::upload(*lead, &params, &vel)?;
    for step in 0..2u64 {
        let x = batch.input(*lead, &stats)?;
        let (_, logits) = train_step(*lead, &cfg, &mut alone, (x, &batch.labels), h, step)?;
        let logits = lead.download(&logits)?;
        let s = Step {
            cfg: &cfg,
            batch: &batch,
            stats: &stats,
            h,
            seed: step,
            bank: None,
        };
        let (_, split) = team.step(*lead, &mut shared, s)?;
        checks.push(Check {
            name: format!("{k} GPUs, step {step}: logits against one"),
            error: relative_error(&logits, &split),
            tolerance: NETWORK,
        });
    }
    for (i, (a, b)) in alone.params.iter().zip(&shared.params).enumerate() {
        let (a, b) = (lead.download(a)?, lead.download(b)?);
        checks.push(Check {
            name: format!("{k} GPUs: parameter {i} after 2 steps"),
            error: relative_error(&a, &b),
            tolerance: NETWORK,
        });
    }
    let agree = team.check_agreement(*lead, &shared);
    checks.push(Check {
        name: format!("{k} GPUs: same weights on every GPU"),
        error: if agree.is_ok() { 0.0 } else { f32::INFINITY },
        tolerance: 0.0,
    });
    Ok(checks)
}

/// Engine r contributes r + 1 to each of 1,000 elements; every engine must hold Σ after.
fn sum_check<E: Engine>(engines: &[&E], reduce: &dyn Reduce<E>) -> Result<Check> {
    let k = engines.len();
    let mut bufs: Vec<Vec<E::Tensor>> = engines
        .iter()
        .enumerate()
        .map(|(r, e)| {
            e.make_current()?;
            Ok(vec![e.upload(&vec![(r + 1) as f32; 1000])?])
        })
        .collect::<Result<_>>()?;
    let mut refs: Vec<&mut Vec<E::Tensor>> = bufs.iter_mut().collect();
    reduce.sum(engines, &mut refs)?;
    let want = vec![(k * (k + 1) / 2) as f32; 1000];
    let mut error = 0f32;
    for (e, b) in engines.iter().zip(&bufs) {
        e.make_current()?;
        error = error.max(relative_error(&want, &e.download(&b[0])?));
    }
    Ok(Check {
        name: format!("sum over {k} GPUs"),
        error,
        tolerance: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::cpu::Cpu;
    use crate::train::parallel::HostSum;

    /// Three CPU engines summing through the host pass every check; a sum that leaves the
    /// last engine's buffers alone fails the sum and the weights' agreement.
    #[test]
    fn a_cpu_team_passes_and_a_broken_sum_fails() {
        let checks = team_checks(&[&Cpu, &Cpu, &Cpu], &HostSum).unwrap();
        let failed: Vec<_> = checks.iter().filter(|c| !c.passed()).collect();
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(checks.len(), 1 + 2 + 16 + 1);

        struct AllButLast;
        impl Reduce<Cpu> for AllButLast {
            fn sum(&self, e: &[&Cpu], grads: &mut [&mut Vec<Vec<f32>>]) -> Result<()> {
                let k = grads.len();
                HostSum.sum(&e[..k - 1], &mut grads[..k - 1])
            }
        }
        let checks = team_checks(&[&Cpu, &Cpu, &Cpu], &AllButLast).unwrap();
        let failed: Vec<String> = checks
            .into_iter()
            .filter(|c| !c.passed())
            .map(|c| c.name)
            .collect();
        assert!(
            failed.iter().any(|n| n.starts_with("sum over 3")),
            "{failed:?}"
        );
        assert!(
            failed.iter().any(|n| n.contains("same weights")),
            "{failed:?}"
        );
    }
}
