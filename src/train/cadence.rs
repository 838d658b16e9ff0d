//! When an epoch's end writes the checkpoint. At every epoch's end would be simplest, but a small
//! folder's epochs take a second or less, and the quick network's checkpoint (138 MB, hashed and
//! synced; the paper network's 488 MB) takes 0.2–0.5 s: 20 epochs of 300 images spent about a
//! third of their run writing checkpoints. So the first epoch's end of a run writes one, and
//! after that an epoch's end writes one only once the run has gone on for `RATIO` times as long
//! as the last one took: checkpoints take at most about a tenth of a run, and a crash (kill -9)
//! loses at most that long. The last epoch's end and every interruption (Ctrl-C, `--max-steps`)
//! always write one. An epoch of a minute or more (the demo's) ends with one every time.

use std::time::{Duration, Instant};

use crate::error::Result;

/// How many times as long as the last checkpoint took the run goes on before the next.
pub const RATIO: u32 = 10;

/// The run's last checkpoint: when it was written and how long that took.
#[derive(Default)]
pub struct Cadence {
    last: Option<(Instant, Duration)>,
}

impl Cadence {
    /// Whether this epoch's end writes the checkpoint (`last_epoch`: the run's last).
    pub fn due(&self, last_epoch: bool) -> bool {
        self.due_at(Instant::now(), last_epoch)
    }

    fn due_at(&self, now: Instant, last_epoch: bool) -> bool {
        match self.last {
            None => true,
            Some((at, took)) => last_epoch || now.saturating_duration_since(at) >= took * RATIO,
        }
    }

    /// Runs `save`, remembering when it ended and how long it took.
    pub fn save(&mut self, save: impl FnOnce() -> Result<()>) -> Result<()> {
        let start = Instant::now();
        save()?;
        let end = Instant::now();
        self.last = Some((end, end - start));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first epoch's end always, then only once the run has gone on ten times as long as
    /// the last checkpoint took, except at the last epoch's end.
    #[test]
    fn a_checkpoint_is_due_first_last_and_after_ten_times_its_cost() {
        let mut c = Cadence::default();
        let t0 = Instant::now();
        assert!(c.due_at(t0, false), "the first epoch's end");
        let took = Duration::from_millis(200);
        c.last = Some((t0, took));
        assert!(!c.due_at(t0 + took * 9, false));
        assert!(c.due_at(t0 + took * 9, true), "the last epoch's end");
        assert!(c.due_at(t0 + took * 10, false));
        // A save remembers its own cost: nothing is due right after one.
        c.save(|| {
            std::thread::sleep(Duration::from_millis(50));
            Ok(())
        })
        .unwrap();
        let (at, took) = c.last.unwrap();
        assert!(took >= Duration::from_millis(50) && at >= t0 + took);
        assert!(!c.due_at(at + took * 9, false) && c.due_at(at + took * 10, false));
        // A failed save leaves the last one as it was.
        let before = c.last;
        let err = c.save(|| Err(crate::error::Error::Invalid("full".into())));
        assert!(err.is_err() && c.last == before);
    }
}
