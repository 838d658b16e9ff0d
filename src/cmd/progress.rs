//! The one progress bar the commands draw: indicatif on a terminal, plain lines otherwise; the
//! one line a long run prints about how long it will take, whatever its output is; and the one
//! line each file a command left out gets.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar on stderr when it is a terminal and not `quiet`; `None` prints plain lines.
pub struct Bar(pub Option<ProgressBar>);

impl Bar {
    pub fn new(quiet: bool, template: &str) -> Bar {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let b = ProgressBar::new(0);
        b.set_style(ProgressStyle::with_template(template).expect("template"));
        Bar(Some(b))
    }

    /// Prints `line` above the bar (or on stderr when there is none).
    pub fn line(&self, line: &str) {
        match &self.0 {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// One `skipped PATH: reason` line on stderr for each file a command left out.
pub fn say_skipped(skipped: &[(std::path::PathBuf, String)]) {
    for (p, why) in skipped {
        eprintln!("skipped {}: {why}", p.display());
    }
}

/// Work done before the rate is trusted: the first report (model load, first batch) is left
/// out, then this many more items and seconds are measured.
const MEASURE_ITEMS: u64 = 64;
const MEASURE_SECS: f64 = 5.0;
/// Runs expected to end sooner than this get no line.
const WORTH_SAYING_SECS: f64 = 60.0;

/// Measures a run's rate after its first report and says once, when the rest will take over a
/// minute, how long that should be on this machine.
#[derive(Default)]
pub struct Expected {
    total: u64,
    done: u64,
    /// When the first report came and how much it had done.
    first: Option<(Instant, u64)>,
    said: bool,
}

impl Expected {
    pub fn start(&mut self, total: u64) {
        *self = Expected {
            total,
            ..Expected::default()
        };
    }

    /// Counts `n` more items done; returns the line to print, once.
    pub fn advance(&mut self, n: u64, what: &str) -> Option<String> {
        self.done += n;
        let Some((t0, d0)) = self.first else {
            self.first = Some((Instant::now(), self.done));
            return None;
        };
        if self.said {
            return None;
        }
        let line = expected_line(
            self.total.saturating_sub(self.done),
            self.done - d0,
            t0.elapsed().as_secs_f64(),
            what,
        )?;
        self.said = true;
        line
    }
}

/// `Some(None)` once the rate is measured but the rest is too short to mention, `Some(line)`
/// when it is worth a line, `None` while still measuring.
fn expected_line(left: u64, measured: u64, secs: f64, what: &str) -> Option<Option<String>> {
    if measured < MEASURE_ITEMS || secs < MEASURE_SECS {
        return None;
    }
    let rate = measured as f64 / secs;
    let rest = left as f64 / rate;
    Some((rest >= WORTH_SAYING_SECS).then(|| {
        format!(
            "expected: about {} more for {left} {what} at {rate:.0}/s on this machine",
            crate::train::progress::duration(rest)
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::expected_line;

    #[test]
    fn the_expected_line_waits_for_a_measured_rate_and_a_long_rest() {
        // Still measuring: too few images, or too short a time.
        assert_eq!(expected_line(100_000, 63, 60.0, "images"), None);
        assert_eq!(expected_line(100_000, 640, 4.9, "images"), None);
        // 640 images in 10 s: 64/s; 100,000 more take 1,562 s.
        assert_eq!(
            expected_line(100_000, 640, 10.0, "images"),
            Some(Some(
                "expected: about 26 min more for 100000 images at 64/s on this machine".into()
            ))
        );
        // 3,000 more at 64/s are 47 s: measured, not worth a line.
        assert_eq!(expected_line(3_000, 640, 10.0, "images"), Some(None));
    }
}
