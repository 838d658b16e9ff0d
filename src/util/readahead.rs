//! Reading files before they are opened: while a loop decodes a list of files, a second thread
//! asks the kernel (`POSIX_FADV_WILLNEED`) to read the files a little further down the list.
//! Decoding runs on every core and blocks on each cold file's read; with the reads already
//! queued, the disk serves many at once and the cores stay busy. Packing Fashion-MNIST's 70,000
//! small PNGs from a cold page cache took 7.0–8.2 s against 3.2–3.7 s warm; with the hints,
//! 3.9–4.0 s (BENCHMARKS.md).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

/// How far the hints run ahead of the loop: at most this many files…
const AHEAD_FILES: usize = 4096;
/// …and this many bytes, so that large files do not crowd what the loop still needs out of memory.
const AHEAD_BYTES: u64 = 128 << 20;

/// The loop's side: where it has reached, and whether it is over.
pub struct Reached {
    state: Mutex<(usize, bool)>,
    moved: Condvar,
}

impl Reached {
    /// Says the loop has begun file `i` (every file before it is done).
    pub fn reached(&self, i: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.max(i);
        self.moved.notify_all();
    }

    fn finish(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.moved.notify_all();
    }

    /// Waits until file `i` of `size` bytes may be hinted, given the hinted files still ahead
    /// of the loop.
    fn wait_for_room(&self, i: usize, size: u64, ahead: &mut Ahead) -> Turn {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.1 {
                return Turn::Stop;
            }
            if i < s.0 {
                return Turn::Behind;
            }
            ahead.drop_passed(s.0);
            let fits = ahead.files.is_empty() || ahead.bytes + size <= AHEAD_BYTES;
            let room = i < s.0 + AHEAD_FILES && fits;
            if room {
                return Turn::Hint;
            }
            s = self.moved.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The hinted files the loop has not begun yet (index, size), and their bytes: kept as files
/// come and go, rather than summed again for each of up to `AHEAD_FILES` files.
#[derive(Default)]
struct Ahead {
    files: VecDeque<(usize, u64)>,
    bytes: u64,
}

impl Ahead {
    fn push(&mut self, i: usize, size: u64) {
        self.files.push_back((i, size));
        self.bytes += size;
    }

    /// Forgets the files before `reached`, which the loop has begun.
    fn drop_passed(&mut self, reached: usize) {
        while let Some(&(_, size)) = self.files.front().filter(|f| f.0 < reached) {
            self.files.pop_front();
            self.bytes -= size;
        }
    }
}

/// What the hinting thread does with its next file.
enum Turn {
    Hint,
    /// The loop has already begun it: a hint would come too late.
    Behind,
    /// The loop is over.
    Stop,
}

/// Runs `work` while the files `file(i)` gives (path and size; None to leave one out) for
/// i in 0..n are hinted ahead of it in order; `work` reports its progress through `Reached`.
pub fn reading_ahead<R>(
    n: usize,
    file: impl Fn(usize) -> Option<(PathBuf, u64)> + Sync,
    work: impl FnOnce(&Reached) -> R,
) -> R {
    with_hint(n, file, will_need, work)
}

/// `reading_ahead` with the hint itself as a parameter (the tests record it).
fn with_hint<R>(
    n: usize,
    file: impl Fn(usize) -> Option<(PathBuf, u64)> + Sync,
    hint: impl Fn(usize, &PathBuf) + Sync,
    work: impl FnOnce(&Reached) -> R,
) -> R {
    let reached = Reached {
        state: Mutex::new((0, false)),
        moved: Condvar::new(),
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            yield_to_the_loop();
            let mut ahead = Ahead::default();
            for i in 0..n {
                let Some((path, size)) = file(i) else {
                    continue;
                };
                match reached.wait_for_room(i, size, &mut ahead) {
                    Turn::Hint => {
                        hint(i, &path);
                        ahead.push(i, size);
                    }
                    Turn::Behind => {}
                    Turn::Stop => return,
                }
            }
        });
        // Ends the hints however `work` ends, a panic included (the scope would wait forever).
        struct Finish<'a>(&'a Reached);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.0.finish();
            }
        }
        let _finish = Finish(&reached);
        work(&reached)
    })
}

/// Lowers this thread to the lowest priority: it then runs mostly while the loop's threads wait
/// on cold reads, and costs next to nothing when every file is already cached (its 70,000
/// hints took ~0.3 s of a core from packing at normal priority).
fn yield_to_the_loop() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this thread's own id.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

/// Asks the kernel to start reading all of `path` into the page cache, and returns at once.
/// A file that cannot be opened is left to the loop, which names it. The open never waits (a
/// file replaced by a named pipe would block it until a writer came).
fn will_need(_: usize, path: &PathBuf) {
    #[cfg(target_os = "linux")]
    if let Ok(f) = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
    } {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor, owned by `f` for the call; the hint reads nothing back.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Hints given, each with the file the loop had begun when it was given.
    type Log = Mutex<Vec<(usize, usize)>>;

    /// Runs a loop over `sizes` (files in `skip` left out) that begins the files `begins` lists,
    /// and before each next one waits until the hints have reached file `caught_up(i) - 1`.
    fn record(
        sizes: &[u64],
        skip: &[usize],
        begins: &[usize],
        caught_up: impl Fn(usize) -> usize,
    ) -> Vec<(usize, usize)> {
        let log = Log::default();
        let at = std::sync::atomic::AtomicUsize::new(0);
        let file =
            |i: usize| (!skip.contains(&i)).then(|| (PathBuf::from(i.to_string()), sizes[i]));
        let hint = |i: usize, _: &PathBuf| {
            let reached = at.load(std::sync::atomic::Ordering::SeqCst);
            log.lock().unwrap().push((i, reached));
        };
        with_hint(sizes.len(), file, hint, |r| {
            for &i in begins {
                at.store(i, std::sync::atomic::Ordering::SeqCst);
                r.reached(i);
                let want = caught_up(i).min(sizes.len());
                let Some(last) = (0..want).rev().find(|j| !skip.contains(j)) else {
                    continue;
                };
                let t = Instant::now();
                while !log.lock().unwrap().iter().any(|h| h.0 == last) {
                    assert!(
                        t.elapsed() < Duration::from_secs(20),
                        "hints stalled at {i}"
                    );
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
        log.into_inner().unwrap()
    }

    #[test]
    fn every_file_is_hinted_once_in_order_within_the_window_of_files() {
        let n = 3 * AHEAD_FILES;
        let begins: Vec<usize> = (0..n).step_by(256).collect();
        let log = record(&vec![1; n], &[5, 7], &begins, |i| i + AHEAD_FILES);
        let hinted: Vec<usize> = log.iter().map(|h| h.0).collect();
        let want: Vec<usize> = (0..n).filter(|i| ![5, 7].contains(i)).collect();
        assert_eq!(hinted, want);
        for (i, reached) in log {
            assert!(i < reached + AHEAD_FILES, "file {i} hinted at {reached}");
        }
    }

    #[test]
    fn large_files_are_hinted_only_while_the_bytes_ahead_fit() {
        // Files of a third of the byte window: three may run ahead of the loop, not four.
        let sizes = vec![AHEAD_BYTES / 3; 40];
        let begins: Vec<usize> = (0..40).collect();
        for (i, reached) in record(&sizes, &[], &begins, |i| i + 3) {
            assert!(
                i < reached + 3,
                "file {i} hinted while the loop was at {reached}"
            );
        }
        // One file larger than the window is still hinted, once nothing else is ahead.
        let big = [AHEAD_BYTES * 2, 1, AHEAD_BYTES * 2];
        let log = record(&big, &[], &[0, 1, 2], |i| i + 1);
        assert_eq!(log.iter().map(|h| h.0).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn files_the_loop_has_passed_are_not_hinted_and_a_finished_loop_ends_the_hints() {
        let n = 10 * AHEAD_FILES;
        // The loop jumps to file 5,000 at once, then stops there. Before the jump the hints may
        // have run a window ahead of file 0; after it, nothing it passed is hinted.
        let (jump, w) = (5_000, AHEAD_FILES);
        let log = record(&vec![1; n], &[], &[jump], |i| i + w);
        let hinted: Vec<usize> = log.iter().map(|h| h.0).collect();
        assert!(
            !hinted.iter().any(|&i| (w..jump).contains(&i)),
            "passed files hinted"
        );
        assert!((jump..jump + w).all(|i| hinted.contains(&i)));
        assert!(
            hinted.iter().all(|&i| i < jump + w),
            "hints ran past the window"
        );
    }

    #[test]
    fn a_loop_that_panics_ends_the_hints_and_passes_the_panic_on() {
        let n = 10 * AHEAD_FILES;
        let file = |i: usize| Some((PathBuf::from(i.to_string()), 1));
        let run = || {
            with_hint(
                n,
                file,
                |_, _| {},
                |_: &Reached| -> () { panic!("the loop failed") },
            )
        };
        assert!(std::panic::catch_unwind(run).is_err());
    }

    #[test]
    fn the_hint_opens_files_and_never_waits_on_a_named_pipe() {
        let d = tempfile::tempdir().unwrap();
        let (pipe, file) = (d.path().join("pipe.png"), d.path().join("a.png"));
        let c = std::ffi::CString::new(pipe.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string for the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::fs::write(&file, [7u8; 4096]).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            will_need(0, &pipe);
            will_need(1, &file);
            will_need(2, &PathBuf::from("/nonexistent/b.png"));
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the hint waited on a named pipe"
        );
    }
}
