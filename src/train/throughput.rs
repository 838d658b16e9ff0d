//! How fast training can go, measured apart: the engine's SGD step alone on synthetic crops
//! (`fc7 selftest --bench`, `fc7bench train-step`) and the data feed alone (`fc7bench feed`).

use std::ops::ControlFlow;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::Result;
use crate::model::{init_params, AlexNetConfig, Init, Standardise};
use crate::train::augment;
use crate::train::batch::{training_batch, Batch, Plan};
use crate::train::dataset::Split;
use crate::train::engine::Engine;
use crate::train::feed;
use crate::train::parallel::{Reduce, Step, Team};
use crate::train::step::{train_step, Hyper, Weights};

/// Training images per second of `cfg` on `e` at `batch`, over `iters` steps after two
/// warm-up steps (where cuDNN picks its algorithms). Each step sends one batch of 8-bit
/// crops to the engine, as training does; preparing crops on the host is not counted.
pub fn step_rate<E: Engine>(e: &E, cfg: &AlexNetConfig, batch: usize, iters: usize) -> Result<f64> {
    crate::util::heap::keep_freed_memory();
    let params = init_params(cfg, Init::Paper, 0);
    let vel: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.data.len()]).collect();
    let mut w = Weights::upload(e, &params, &vel)?;
    let (b, stats) = Batch::synthetic(cfg, batch);
    let mut run = |steps: usize| -> Result<f64> {
        let t = Instant::now();
        let mut last = None;
        for step in 0..steps {
            let x = b.input(e, &stats)?;
            last = Some(train_step(e, cfg, &mut w, (x, &b.labels), Hyper::BENCH, step as u64)?.0);
        }
        e.download(&last.expect("at least one step"))?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(2)?;
    Ok((batch * iters) as f64 / run(iters.max(1))?)
}

/// Training images per second of a data-parallel team (`engines`, the lead first) summing
/// through `reduce`, at `batch` split across them; as `step_rate`, after two warm-up steps.
/// Each step waits for its losses.
pub fn team_rate<E: Engine>(
    engines: &[&E],
    reduce: &dyn Reduce<E>,
    cfg: &AlexNetConfig,
    batch: usize,
    iters: usize,
) -> Result<f64> {
    let params = init_params(cfg, Init::Paper, 0);
    let vel: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.data.len()]).collect();
    let (lead, helpers) = engines.split_first().expect("an engine");
    let mut team = Team::new(helpers, reduce, &params, &vel)?;
    lead.make_current()?;
    let mut w = Weights::upload(*lead, &params, &vel)?;
    let (b, stats) = Batch::synthetic(cfg, batch);
    let mut run = |steps: usize| -> Result<f64> {
        let t = Instant::now();
        for step in 0..steps {
            let s = Step {
                cfg,
                batch: &b,
                stats: &stats,
                h: Hyper::BENCH,
                seed: step as u64,
                bank: None,
            };
            team.step(*lead, &mut w, s)?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    run(2)?;
    Ok((batch * iters) as f64 / run(iters.max(1))?)
}

/// The feed alone (no engine): crops per second of `batches` training batches of `batch`
/// random `crop`² views read from `train`'s pack, made as training makes them: cut on the
/// host, or with `on_engine` handed over whole for the engine to cut (the GPU's way).
pub fn feed_rate(
    train: &Split,
    crop: usize,
    batch: usize,
    batches: usize,
    on_engine: bool,
) -> Result<f64> {
    let plan = Plan {
        seed: 1,
        epoch: 0,
        crop,
        pca_std: 0.1,
        stats: augment::colour_stats(train, Standardise::Channels),
        exemplar: None,
        on_engine,
        target: None,
    };
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(1));
    let jobs: Vec<&[usize]> = order.chunks(batch).cycle().take(batches).collect();
    let started = Instant::now();
    let mut crops = 0usize;
    feed::prefetch(
        jobs,
        feed::DEPTH,
        |idx| training_batch(&plan, train, idx, 0),
        |b| {
            crops += b.len();
            Ok(ControlFlow::<()>::Continue(()))
        },
    )?;
    Ok(crops as f64 / started.elapsed().as_secs_f64())
}
