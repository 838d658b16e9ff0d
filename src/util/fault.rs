//! Named points where a test can make fc7 die as kill -9 would (no unwinding, no cleanup),
//! to check that what a crash leaves behind is readable and the next run recovers. Inactive
//! unless `FC7_FAULT` names the point.

/// Aborts the process when `FC7_FAULT` is `name`.
pub fn point(name: &str) {
    if std::env::var_os("FC7_FAULT").is_some_and(|v| v == name) {
        eprintln!("fc7: FC7_FAULT={name}: aborting here");
        std::process::abort();
    }
}
