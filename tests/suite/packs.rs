//! The training pack on a disk that fills while it is written: one error line naming the file,
//! no partial rows left to hold the space, and the next run packs from scratch.

use crate::common::{error_lines, run_ok, run_on_a_small_disk, s};

#[test]
fn a_pack_stopped_by_a_full_disk_leaves_no_partial_rows_and_the_rerun_packs() {
    let d = tempfile::tempdir().unwrap();
    let (data, cache) = (d.path().join("data"), d.path().join("cache"));
    // 3 classes × 40 pictures: 120 rows of 72 × 72 × 3 bytes, 1.9 MB of pixels.
    fc7::train::dataset::synthetic(&data, 3, 40, 72, 4).unwrap();
    let args = [
        "dataset",
        "pack",
        s(&data),
        "--side",
        "72",
        "--cache",
        s(&cache),
    ];
    let out = run_on_a_small_disk(512, &args);
    assert_eq!(out.status.code(), Some(1));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("pixels.bin.tmp"), "{errors:?}");
    let pack = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let left: Vec<_> = std::fs::read_dir(&pack)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["source"], "a failed build kept {left:?}");
    let out = run_ok(&args);
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("packed ") && line.contains(": 120 images (0 skipped)"),
        "{line}"
    );
}
