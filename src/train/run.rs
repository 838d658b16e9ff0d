//! `fc7 train`: fits AlexNet from scratch with the paper's recipe (SGD with momentum 0.9 and
//! weight decay 5e-4, batch 128, learning rate 0.01 divided by 10 when validation error stops
//! improving, dropout 0.5, random crops, flips and PCA colour shifts), checkpointing at epochs' ends
//! (`cadence`) and on Ctrl-C, then exporting ONNX + manifest through `onnx`. Every random draw is seeded by
//! (seed, epoch, batch or sample), so a resumed run repeats an uninterrupted one exactly.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::model::{self, Param};
use crate::train::augment;
use crate::train::cadence::Cadence;
use crate::train::checkpoint::{self, State};
use crate::train::dataset;
use crate::train::engine::cpu::Cpu;
use crate::train::engine::{Engine, Math};
use crate::train::epoch::{self, Halt, HostCopy, Outcome};
use crate::train::epoch_end::{end_epoch, scheduled_lr};
use crate::train::export;
use crate::train::parallel::{Reduce, Team};
use crate::train::progress::TrainProgress;
use crate::train::recipe::{architecture, changes, fit_to_folder, Asked, Recipe};
use crate::train::selftest;
use crate::train::step::Weights;
use crate::train::validation::{Scorer, Views};
use crate::util::fs::with_suffix;

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: PathBuf,
    /// Output stem: writes STEM.onnx, STEM.json, STEM.ckpt, STEM.log.jsonl, STEM.png.
    pub out: PathBuf,
    pub recipe: Recipe,
    pub resume: bool,
    /// Auto uses the CUDA engine when one loads, else the CPU.
    pub device: Device,
    /// Stop after this many SGD steps (with a checkpoint), e.g. for smoke runs and benchmarks.
    pub max_steps: Option<usize>,
    /// Where the dataset's pack is kept (None: `pack::default_cache_dir()`).
    pub cache: Option<PathBuf>,
    /// GPUs to train on in data parallel, from the `device`'s ordinal on (1: one engine).
    pub gpus: usize,
    /// Which epoch counts of `recipe` were asked for: the others a self-supervised run fits to
    /// its folder, and a resumed run keeps from its checkpoint.
    pub asked: Asked,
    /// Score the validation set's 10 crops after the last epoch (ten passes over it, the paper's
    /// test protocol); without, the model records the centre crop's error only.
    pub ten_crop: bool,
}

pub struct TrainResult {
    pub state: State,
    /// `Finished`, or why the run stopped early (its checkpoint saved).
    pub outcome: Outcome,
    pub model: Option<PathBuf>,
    pub ten_crop_top1_error: Option<f32>,
}

fn fresh(
    opts: &TrainOptions,
    r: &Recipe,
    data: &dataset::Dataset,
) -> Result<(State, Vec<Param>, Vec<Vec<f32>>)> {
    let config = architecture(r, data.classes.len());
    config.validate().map_err(Error::Invalid)?;
    let params = model::init_params(&config, r.init, r.seed);
    let velocity = params.iter().map(|p| vec![0.0; p.data.len()]).collect();
    let state = State {
        config,
        recipe: r.clone(),
        classes: data.classes.clone(),
        stats: augment::colour_stats(&data.train, r.standardise),
        data: opts.data.display().to_string(),
        epoch: 0,
        next_batch: 0,
        lr: r.lr,
        lr_drops: 0,
        best_val_error: f32::INFINITY,
        epoch_loss_sum: 0.0,
        epoch_correct: 0,
        epoch_seen: 0,
        history: Vec::new(),
        seconds: 0.0,
        steps: 0,
        engine: String::new(),
        bank: r.instance.as_ref().map_or(Vec::new(), |i| {
            crate::train::instance::random_bank(data.classes.len(), i.dim, r.seed)
        }),
    };
    Ok((state, params, velocity))
}

/// Steps of its first epoch after which a run says how long it expects to take.
const ESTIMATE_AFTER_STEPS: usize = 10;

/// The host copy of a run: state, parameters and velocities (what a checkpoint holds).
type Host = (State, Vec<Param>, Vec<Vec<f32>>);

/// Trains (or resumes) and exports. Ctrl-C (`stop`) saves a checkpoint and returns early.
pub fn train(
    opts: &TrainOptions,
    progress: &dyn TrainProgress,
    stop: &AtomicBool,
) -> Result<TrainResult> {
    opts.recipe.validate().map_err(Error::Invalid)?;
    crate::util::heap::keep_freed_memory();
    // A resumed run keeps its checkpoint's recipe, precision included.
    let ckpt = with_suffix(&opts.out, ".ckpt");
    let math = checkpoint::state_of(&ckpt)
        .filter(|_| opts.resume)
        .map_or(opts.recipe.precision, |s| s.recipe.precision);
    let bf16_on_cpu = || {
        Error::Invalid(
            "--precision bf16 needs the CUDA engine (the CPU engine computes in FP32)".into(),
        )
    };
    match opts.device {
        Device::Cpu if math == Math::Bf16 => Err(bf16_on_cpu()),
        Device::Cpu if opts.gpus > 1 => Err(Error::Invalid(
            "--gpus needs the CUDA engine (--device cuda)".into(),
        )),
        Device::Cpu => train_on_team(&Cpu, None, opts, progress, stop),
        Device::Cuda(ordinal) if opts.gpus > 1 => {
            train_data_parallel(ordinal, math, opts, progress, stop)
        }
        Device::Cuda(ordinal) => {
            let gpu = checked_cuda(ordinal, math, progress)?;
            train_on_team(&gpu, None, opts, progress, stop)
        }
        Device::Auto if opts.gpus > 1 => train_data_parallel(0, math, opts, progress, stop),
        Device::Auto => match checked_cuda(0, math, progress) {
            Ok(gpu) => train_on_team(&gpu, None, opts, progress, stop),
            Err(why) if math == Math::Bf16 => {
                Err(Error::Invalid(format!("{} ({why})", bf16_on_cpu())))
            }
            Err(why) => {
                progress.engine(&format!("no CUDA engine ({why}); using the CPU"));
                train_on_team(&Cpu, None, opts, progress, stop)
            }
        },
    }
}

/// `opts.gpus` checked CUDA engines from GPU `first` on, gradients summed by NCCL.
fn train_data_parallel(
    first: i32,
    math: Math,
    opts: &TrainOptions,
    progress: &dyn TrainProgress,
    stop: &AtomicBool,
) -> Result<TrainResult> {
    use crate::train::parallel::nccl::NcclSum;
    let gpus = (first..first + opts.gpus as i32)
        .map(|ordinal| checked_cuda(ordinal, math, progress))
        .collect::<Result<Vec<_>>>()?;
    let engines: Vec<&crate::train::engine::cuda::Cuda> = gpus.iter().collect();
    let nccl = NcclSum::new(&engines)?;
    progress.engine(&format!(
        "data parallel over {} GPUs: each takes 1/{} of every batch, NCCL sums the gradients",
        gpus.len(),
        gpus.len()
    ));
    let (lead, helpers) = engines.split_first().expect("at least two GPUs");
    let team = (helpers, &nccl as &dyn crate::train::parallel::Reduce<_>);
    train_on_team(*lead, Some(team), opts, progress, stop)
}

/// The CUDA engine in `math`, after it has agreed with the CPU engine on every `selftest`
/// check in FP32 (and for bf16 in bf16 too; about a second each), so that a broken GPU setup
/// cannot train a model silently wrong. FC7_SKIP_ENGINE_CHECK=1 trains without the check
/// (when a tolerance, not the engine, is off).
fn checked_cuda(
    ordinal: i32,
    math: Math,
    progress: &dyn TrainProgress,
) -> Result<crate::train::engine::cuda::Cuda> {
    use crate::train::engine::cuda::Cuda;
    if std::env::var_os("FC7_SKIP_ENGINE_CHECK").is_some() {
        progress.engine("FC7_SKIP_ENGINE_CHECK is set: the CUDA engine is not checked");
        return Cuda::with_math(ordinal, math);
    }
    let mut gpu = Cuda::with_math(ordinal, Math::Fp32)?;
    let mut checks = selftest::compare(&gpu, Math::Fp32);
    if math == Math::Bf16 {
        gpu.set_math(math);
        checks.extend(selftest::compare(&gpu, Math::Bf16));
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed())
        .map(|c| format!("{} ({:.1e})", c.name, c.error))
        .collect();
    if !failed.is_empty() {
        return Err(Error::Cuda(format!(
            "the engine disagrees with the CPU engine on {} (`fc7 selftest --device cuda --precision {math}` shows the table; --device cpu trains without it)",
            failed.join(", ")
        )));
    }
    progress.engine(&format!(
        "CUDA engine agrees with the CPU engine on all {} selftest checks",
        checks.len()
    ));
    gpu.set_math(math);
    Ok(gpu)
}

/// The dataset and the run's host copy: from the checkpoint with `--resume`, else fresh.
fn start(
    opts: &TrainOptions,
    ckpt: &Path,
    progress: &dyn TrainProgress,
) -> Result<(dataset::Dataset, Host)> {
    let resumed = if opts.resume && ckpt.is_file() {
        Some(checkpoint::load(ckpt)?)
    } else {
        if opts.resume {
            progress.note(&format!(
                "--resume: there is no checkpoint {} to resume, so this run starts fresh",
                ckpt.display()
            ));
        }
        None
    };
    let recipe = resumed.as_ref().map_or(&opts.recipe, |(s, _, _)| &s.recipe);
    let cache = opts
        .cache
        .clone()
        .unwrap_or_else(crate::train::dataset::pack::default_cache_dir);
    let source = dataset::Source {
        root: &opts.data,
        cache: &cache,
        progress: &|done, total| progress.packing(done, total),
    };
    let data = match &recipe.exemplar {
        Some(ex) => dataset::unlabelled::load(&source, recipe.side, ex.surrogates, recipe.seed)?,
        None => dataset::load(&source, recipe.side, recipe.val_fraction, recipe.seed)?,
    };
    progress.note(&format!(
        "training pack {} ({}: {:.2} GB, {} bytes an image)",
        data.pack.dir.display(),
        if data.pack.built {
            "built now"
        } else {
            "reused"
        },
        data.pack.disk_bytes() as f64 / 1e9,
        data.pack.row_bytes()
    ));
    progress.loaded(
        data.train.len(),
        data.val.len(),
        data.classes.len(),
        &data.skipped,
    );
    let planned = fit_to_folder(opts.recipe.clone(), data.classes.len(), opts.asked);
    if planned.epochs != opts.recipe.epochs && resumed.is_none() {
        let n = data.classes.len();
        let shown = planned.epochs * planned.passes(n);
        progress.note(&format!(
            "{} epochs for {n} images, each shown {shown} times ({} in all): a small folder \
             needs more than a large one's {} (--epochs to choose)",
            planned.epochs,
            shown * n,
            opts.recipe.epochs
        ));
    }
    let host = match resumed {
        Some(r) if r.0.classes != data.classes => {
            let what = match r.0.recipe.exemplar {
                Some(_) => "the images drawn as surrogate classes differ from the checkpoint's (images were added, removed or changed)",
                None => "classes differ from the checkpoint's",
            };
            return Err(Error::Invalid(format!("{}: {what}", opts.data.display())));
        }
        Some(mut r) => {
            // A resumed run may be given more epochs than it first planned; the rest of its
            // recipe is the checkpoint's, so that it goes on as it started.
            // Epoch counts not asked for are the checkpoint's, not differences to name.
            let mut asked = planned.clone();
            if opts.asked.epochs {
                r.0.recipe.epochs = planned.epochs;
            }
            if !opts.asked.anneal_epochs {
                asked.anneal_epochs = r.0.recipe.anneal_epochs;
            }
            // After a crash the checkpoint may be some epochs behind the last one printed.
            let from = format!("--resume: going on from {}", ckpt.display());
            progress.note(&format!("{from}: {}", r.0.done()));
            let changed = changes(&r.0.recipe, &asked);
            if !changed.is_empty() {
                progress.note(&format!(
                    "--resume keeps the checkpoint's recipe, so these are not applied: {}",
                    changed.join(", ")
                ));
            }
            r
        }
        None => fresh(opts, &planned, &data)?,
    };
    Ok((data, host))
}

/// Trains on the lead engine `e`, with `helpers` in data parallel when given.
fn train_on_team<E: Engine>(
    e: &E,
    helpers: Option<(&[&E], &dyn Reduce<E>)>,
    opts: &TrainOptions,
    progress: &dyn TrainProgress,
    stop: &AtomicBool,
) -> Result<TrainResult> {
    progress.engine(&e.describe());
    let ckpt = with_suffix(&opts.out, ".ckpt");
    let (data, mut host) = start(opts, &ckpt, progress)?;
    let mut team = match helpers {
        Some((engines, reduce)) => Team::new(engines, reduce, &host.1, &host.2)?,
        None => Team::solo(),
    };
    e.make_current()?;
    host.0.engine = match team.size() {
        1 => e.describe(),
        k => format!("{k} × {}", e.describe()),
    };
    let mut w = Weights::upload(e, &host.1, &host.2)?;
    let mut cadence = Cadence::default();
    let mut halt = Halt {
        stop,
        steps_left: opts.max_steps,
        estimate_after: Some(ESTIMATE_AFTER_STEPS),
    };
    while host.0.epoch < host.0.recipe.epochs {
        let (st, params, velocity) = &mut host;
        st.lr = scheduled_lr(st);
        let (t0, seen0) = (st.seconds, st.epoch_seen);
        let copy = HostCopy { params, velocity };
        let lead = (e, &mut team);
        let outcome = epoch::run_epoch(
            lead,
            st,
            &mut w,
            copy,
            &data.train,
            progress,
            &mut halt,
            &ckpt,
        )?;
        if outcome != Outcome::Finished {
            return Ok(TrainResult {
                state: host.0,
                outcome,
                model: None,
                ten_crop_top1_error: None,
            });
        }
        let secs = (st.seconds - t0) as f32;
        let rate = (st.epoch_seen - seen0) as f32 / secs.max(1e-6);
        team.check_agreement(e, &w)?;
        let rec = end_epoch(e, &mut host.0, &w, &data, &opts.out, (rate, secs))?;
        if cadence.due(host.0.epoch == host.0.recipe.epochs) {
            cadence.save(|| {
                w.download(e, &mut host.1, &mut host.2)?;
                checkpoint::save(&ckpt, &host.0, &host.1, &host.2)
            })?;
            progress.checkpoint(host.0.epoch);
        }
        progress.epoch_end(&rec);
    }
    let st = &host.0;
    // The ten crops score classes; exemplar training's surrogates are not what a user asks.
    let ten_crop = match (&st.recipe.exemplar, opts.ten_crop) {
        (Some(_), _) | (None, false) => None,
        (None, true) => {
            let ten = augment::ten_crops(data.val.side, st.recipe.crop);
            let ev = Scorer::of(e, st, &w.params).evaluate(&data.val, &Views::Crops(&ten))?;
            Some((ev.top1, ev.top5))
        }
    };
    w.download(e, &mut host.1, &mut host.2)?;
    let model = with_suffix(&opts.out, ".onnx");
    export::export(&host.0, &host.1, &model, ten_crop)?;
    Ok(TrainResult {
        state: host.0,
        outcome: Outcome::Finished,
        model: Some(model),
        ten_crop_top1_error: ten_crop.map(|t| t.0),
    })
}
