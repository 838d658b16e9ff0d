//! How the C allocator treats training's large buffers. A step allocates and frees activations
//! and gradients of tens to hundreds of MB; glibc serves each from a fresh `mmap` and returns it
//! on free, so every step page-faults its whole working set again (on a 2-core VM, 9 of 24 s
//! of the paper network's benchmark in the kernel). Training and indexing (whose batches of
//! decoded tensors are tens of MB) ask glibc to serve them from the heap and keep what was
//! freed: the peak stays resident, as it would be in use anyway.

use std::sync::Once;

/// Keeps freed memory for reuse for the rest of the process (glibc on Linux; elsewhere the
/// allocator's own policy stands).
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is called once, before the
        // buffers it concerns are allocated, and glibc serialises it against allocations.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_large_buffers_are_reused_without_faulting_again() {
        super::keep_freed_memory();
        let faults = || {
            // SAFETY: getrusage writes the struct it is given.
            let mut u: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
            u.ru_minflt
        };
        let touch = || {
            let mut v = vec![0u8; 48 << 20];
            v.iter_mut().step_by(4096).for_each(|b| *b = 1);
            std::hint::black_box(&v);
        };
        touch();
        let before = faults();
        touch();
        // Above glibc's largest mmap threshold (32 MB) yet inside a thread arena's heap (64 MB):
        // a fresh mapping would fault each of its 12,288 pages again.
        assert!(faults() - before < 1000, "{} faults", faults() - before);
    }
}
