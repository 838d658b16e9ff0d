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
    /// The checkpoint written at the end of epoch `epoch` (not at every epoch's end: `cadence`).
    fn checkpoint(&self, _epoch: usize) {}
    /// A one-line remark about the run (e.g. flags a resumed run does not apply).
    fn note(&self, _line: &str) {}
}

/// Ignores all progress.
impl TrainProgress for () {}

/// `secs` as a person reads a duration: "40 s", "12 min", "3 h 05 min".
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=89 => format!("{s} s"),
        90..=5399 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600 + 30) / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_seconds_minutes_or_hours() {
        assert_eq!(super::duration(40.2), "40 s");
        assert_eq!(super::duration(720.0), "12 min");
        assert_eq!(super::duration(11.0 * 3600.0 + 5.0 * 60.0), "11 h 05 min");
    }
}
