//! The `fc7` binary: parse, run, exit code. Ctrl-C asks a running command to stop at the next
//! safe point (the end of a batch); a second Ctrl-C exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;

use fc7::cmd as cli;

fn main() {
    // Output piped into `head` ends quietly when the reader closes, as in other Unix tools,
    // instead of panicking on the write.
    // SAFETY: restoring the default action of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping at the next safe point (Ctrl-C again to quit now)");
    });
    let code = match cli::run(args, stop) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fc7: {}", cli::error_line(&e));
            1
        }
    };
    std::process::exit(code);
}
