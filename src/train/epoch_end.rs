//! An epoch's end: validation (the centre crop's scores, or exemplar training's held-out views
//! and retrieval precision), the epoch's record in the log and the plot, the guards that stop a
//! run that diverges or never leaves chance, and the learning-rate schedule (the paper's plateau
//! rule, and the last epochs' annealing).

use std::path::Path;

use crate::error::Result;
use crate::train::augment;
use crate::train::checkpoint::{EpochRecord, State};
use crate::train::dataset;
use crate::train::engine::Engine;
use crate::train::guard::{self, Learning};
use crate::train::metrics;
use crate::train::step::Weights;
use crate::train::validation::{Evaluation, Scorer, Views};
use crate::util::fs::with_suffix;

/// Validation at an epoch's end: the centre crop's scores, or for exemplar training the
/// held-out views' scores and, on a folder of class folders, the retrieval precision@6 of class.
fn validate<E: Engine>(
    e: &E,
    st: &State,
    w: &Weights<E>,
    data: &dataset::Dataset,
) -> Result<(Evaluation, Option<f32>)> {
    let scorer = Scorer::of(e, st, &w.params);
    let centre = augment::centre_crop(data.val.side, st.recipe.crop);
    let Some(ex) = &st.recipe.exemplar else {
        return Ok((scorer.evaluate(&data.val, &Views::Crops(&[centre]))?, None));
    };
    let ev = match &st.recipe.instance {
        Some(i) => {
            let z = scorer.held_out_outputs(&data.val, ex, st.recipe.seed)?;
            let r = crate::train::instance::recognise(
                &i.embedding(&z),
                &data.val.labels,
                &st.bank,
                i.temperature,
            );
            Evaluation {
                loss: r.loss,
                top1: r.top1,
                top5: r.top5,
                top_class_share: r.top_share,
            }
        }
        None => scorer.evaluate(&data.val, &Views::HeldOut(ex, st.recipe.seed))?,
    };
    let precision = match &data.val_folders {
        Some(groups) => {
            let fc7 = scorer.features(&data.val, centre)?;
            Some(metrics::leave_one_out_precision(
                &fc7,
                st.config.hidden,
                groups,
                6,
            ))
        }
        None => None,
    };
    Ok((ev, precision))
}

/// Closes an epoch: validation, the learning-rate schedule and the log (the checkpoint, where
/// `cadence` says, is the caller's). A network still at chance after `STALL_CHECK_STEPS` stops
/// the run (nothing is written).
pub(super) fn end_epoch<E: Engine>(
    e: &E,
    st: &mut State,
    w: &Weights<E>,
    data: &dataset::Dataset,
    out: &Path,
    (rate, secs): (f32, f32),
) -> Result<EpochRecord> {
    let (ev, folder_precision_at_6) = validate(e, st, w, data)?;
    let (val_loss, top1, top5) = (ev.loss, ev.top1, ev.top5);
    guard::finite_validation(val_loss, st.epoch + 1)?;
    let rec = EpochRecord {
        epoch: st.epoch + 1,
        lr: st.lr,
        train_loss: (st.epoch_loss_sum / st.epoch_seen.max(1) as f64) as f32,
        train_error: 1.0 - st.epoch_correct as f32 / st.epoch_seen.max(1) as f32,
        val_loss,
        val_top1_error: top1,
        val_top5_error: top5,
        images_per_second: rate,
        seconds: secs,
        folder_precision_at_6,
    };
    // A self-supervised view's softmax takes `scored` scores: chance is ln of that.
    let (how, scored) = match (&st.recipe.instance, &st.recipe.exemplar) {
        (Some(i), _) => (
            Learning::SelfSupervised,
            i.scored(st.classes.len(), st.recipe.batch),
        ),
        (None, Some(_)) => (Learning::Exemplar, st.classes.len()),
        (None, None) => (Learning::Classes, st.classes.len()),
    };
    let chance = guard::at_chance(&rec, ev.top_class_share, scored);
    // Exemplar training's first epoch meets each class once, always unseen: chance by design.
    if how == Learning::Classes || rec.epoch >= guard::EXEMPLAR_FIRST_JUDGED_EPOCH {
        guard::judge_stall(chance.as_deref(), st.steps, st.epoch + 1, how)?;
    }
    // The plateau rule: a tenth of the rate when validation error stops falling, but never
    // for a network at chance, whose rate is not what holds it back.
    if top1 < st.best_val_error {
        st.best_val_error = top1;
    } else if st.lr_drops < st.recipe.max_lr_drops && chance.is_none() {
        st.lr /= 10.0;
        st.lr_drops += 1;
    }
    st.history.push(rec.clone());
    st.epoch += 1;
    st.next_batch = 0;
    (st.epoch_loss_sum, st.epoch_correct, st.epoch_seen) = (0.0, 0, 0);
    let log: String = st
        .history
        .iter()
        .map(|r| serde_json::to_string(r).expect("json") + "\n")
        .collect();
    crate::util::fs::atomic_write(&with_suffix(out, ".log.jsonl"), log.as_bytes())?;
    crate::train::plot::training_curves(&with_suffix(out, ".png"), &st.history)?;
    Ok(rec)
}

/// The learning rate of the epoch about to run: the plateau rule's, capped at a tenth of the
/// recipe's for the last `anneal_epochs` epochs.
pub(super) fn scheduled_lr(st: &State) -> f32 {
    let r = &st.recipe;
    let cap = r.lr / 10.0;
    if st.epoch + r.anneal_epochs >= r.epochs && st.lr > cap {
        cap
    } else {
        st.lr
    }
}
