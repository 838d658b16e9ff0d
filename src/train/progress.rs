//! What a training run reports while it runs; the command line draws it, tests count it, and
//! `()` ignores it.

use std::path::PathBuf;

use crate::train::checkpoint::EpochRecord;

/// Receives a training run's progress.
pub trait TrainProgress: Sync {
    /// Which engine trains, and why if it is not the one asked for.
    fn engine(&self, _describe: &str) {}
    /// The dataset's pack being built: images decoded so far, of all.
    fn packing(&self, _done: usize, _total: usize) {}
    fn loaded(&self, _train: usize, _val: usize, _classes: usize, _skipped: &[(PathBuf, String)]) {}
    fn epoch_start(&self, _epoch: usize, _batches: usize) {}
    fn batch(&self, _done: usize, _loss: f32, _error: f32, _images_per_second: f32) {}
    fn epoch_end(&self, _record: &EpochRecord) {}
    /// A one-line remark about the run (e.g. flags a resumed run does not apply).
    fn note(&self, _line: &str) {}
}

/// Ignores all progress.
impl TrainProgress for () {}
