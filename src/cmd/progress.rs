//! The one progress bar the commands draw: indicatif on a terminal, plain lines otherwise.

use std::io::IsTerminal;

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
