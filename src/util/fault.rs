//! Named points where a test can make fc7 die as kill -9 would (no unwinding, no cleanup),
//! to check that what a crash leaves behind is readable and the next run recovers, or hold a
//! run at a point long enough to act on it while it is alive. Inactive unless `FC7_FAULT` or
//! `FC7_STALL` names the point.

/// Aborts the process when `FC7_FAULT` is `name`.
pub fn point(name: &str) {
    if std::env::var_os("FC7_FAULT").is_some_and(|v| v == name) {
        eprintln!("fc7: FC7_FAULT={name}: aborting here");
        std::process::abort();
    }
}

/// Sleeps for `FC7_STALL_MS` (default 200) milliseconds each time it is reached when
/// `FC7_STALL` is `name`, so that a test racing a running command does not depend on the
/// machine's speed.
pub fn stall(name: &str) {
    if std::env::var_os("FC7_STALL").is_some_and(|v| v == name) {
        let ms = std::env::var("FC7_STALL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
