//! When a training run must stop rather than go on: a loss that is no longer finite (the run
//! diverged), or a network still at chance once it has had time to learn. Each stop is one
//! line saying what happened and what to try; nothing that looks trained is written.

use std::path::Path;

use crate::error::{Error, Result};
use crate::train::checkpoint::EpochRecord;

/// A training loss within this fraction of ln C is at chance.
const CHANCE_LOSS_MARGIN: f32 = 0.03;
/// One class taking this share of the validation predictions: collapsed.
const COLLAPSED_SHARE: f32 = 0.95;
/// The stall guard judges a run from the first epoch end after this many steps, so that a
/// tiny dataset's first few steps are not mistaken for a stall.
const STALL_CHECK_STEPS: usize = 100;
/// Exemplar training is judged from this epoch's end on: its loss stays near ln C for a few
/// epochs of thousands of surrogate classes before it falls (Fashion-MNIST, 1,000 surrogates:
/// ln C − 1.6% after 2 epochs, − 7% after 3, − 27% after 5).
pub const EXEMPLAR_FIRST_JUDGED_EPOCH: usize = 5;

/// Why a network is at chance, if it is: its training loss near ln C, or its validation
/// predictions collapsed onto one class.
pub fn at_chance(rec: &EpochRecord, top_class_share: f32, classes: usize) -> Option<String> {
    let ln_c = (classes.max(2) as f32).ln();
    if (rec.train_loss - ln_c).abs() <= CHANCE_LOSS_MARGIN * ln_c {
        Some(format!(
            "its training loss {:.3} is chance's ln {classes} = {ln_c:.3}",
            rec.train_loss
        ))
    } else if classes > 1 && top_class_share >= COLLAPSED_SHARE {
        Some(format!(
            "{:.0}% of its validation predictions are one class",
            top_class_share * 100.0
        ))
    } else {
        None
    }
}

/// What a run at chance can try, by how it learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learning {
    Classes,
    Exemplar,
    SelfSupervised,
}

impl Learning {
    fn advice(self) -> &'static str {
        match self {
            Learning::Classes => "Try --init he (the default), a lower --lr, or check that the class folders differ",
            Learning::Exemplar => "Try --self-supervised (its cost does not grow with the images), fewer --surrogates, weaker views (--zoom, --rotate, --translate) or a lower --lr",
            Learning::SelfSupervised => "Try a lower --lr, weaker views (--zoom, --rotate, --translate), or a higher --temperature; the images must differ from each other",
        }
    }
}

/// Stops a run at chance (`why`) once it has taken `STALL_CHECK_STEPS` steps.
pub fn judge_stall(why: Option<&str>, steps: usize, epochs: usize, how: Learning) -> Result<()> {
    match why {
        Some(why) if steps >= STALL_CHECK_STEPS => Err(Error::Training(format!(
            "the network is still at chance after {steps} steps ({epochs} epochs): {why}; no model was written. {}",
            how.advice()
        ))),
        _ => Ok(()),
    }
}

/// Stops a run whose step `batch` of `epoch` (1-based) gave a non-finite loss; the last
/// checkpoint (`ckpt`) is left as it was.
pub fn finite_losses(losses: &[f32], epoch: usize, batch: usize, ckpt: &Path) -> Result<()> {
    match losses.iter().find(|l| !l.is_finite()) {
        Some(l) => Err(Error::Training(format!(
            "the loss became {l} at epoch {epoch}, batch {batch} (the run diverged); {} keeps the last good state; try a lower --lr",
            ckpt.display()
        ))),
        None => Ok(()),
    }
}

/// Stops a run whose validation loss after `epoch` is not finite.
pub fn finite_validation(loss: f32, epoch: usize) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(Error::Training(format!(
        "the validation loss became {loss} after epoch {epoch} (the run diverged); try a lower --lr"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(train_loss: f32) -> EpochRecord {
        EpochRecord {
            epoch: 1,
            lr: 0.01,
            train_loss,
            train_error: 0.9,
            val_loss: 2.3,
            val_top1_error: 0.9,
            val_top5_error: 0.5,
            images_per_second: 1.0,
            seconds: 1.0,
            folder_precision_at_6: None,
        }
    }

    #[test]
    fn chance_is_a_loss_near_ln_c_or_predictions_on_one_class() {
        // ln 10 = 2.3026; 3% of it is 0.069.
        assert!(at_chance(&record(2.25), 0.1, 10).unwrap().contains("ln 10"));
        assert!(at_chance(&record(2.36), 0.1, 10).is_some());
        assert!(at_chance(&record(2.2), 0.1, 10).is_none());
        assert!(at_chance(&record(1.0), 0.96, 10).unwrap().contains("96%"));
        assert!(at_chance(&record(1.0), 0.9, 10).is_none());
        assert!(judge_stall(Some("x"), 99, 1, Learning::Classes).is_ok());
        let classes = judge_stall(Some("x"), 100, 1, Learning::Classes).unwrap_err();
        assert!(classes.to_string().contains("class folders"));
        let unlabelled = judge_stall(Some("x"), 100, 1, Learning::SelfSupervised).unwrap_err();
        assert!(
            !unlabelled.to_string().contains("class folders"),
            "{unlabelled}"
        );
        assert!(judge_stall(None, 1000, 5, Learning::Exemplar).is_ok());
    }
}
