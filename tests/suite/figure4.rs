//! `fc7 eval figure4` on a small generated dataset, through the real binary.

use crate::common;

use std::path::Path;

use common::{json, json_file, run_ok, s};

/// precision@k of class computed another way: `fc7 index` of the training images, then
/// `fc7 query --exact` of every test image, the class read from each neighbour's folder.
fn precision_through_the_index(data: &Path, model: &Path, idx: &Path, k: usize) -> f64 {
    let (train, test) = (data.join("train"), data.join("val"));
    run_ok(&[
        "index",
        s(&train),
        "--index",
        s(idx),
        "--model",
        s(model),
        "--quiet",
    ]);
    let mut images: Vec<String> = Vec::new();
    for class in std::fs::read_dir(&test).unwrap() {
        for f in std::fs::read_dir(class.unwrap().path()).unwrap() {
            images.push(f.unwrap().path().to_string_lossy().into_owned());
        }
    }
    let k = k.to_string();
    let mut args = vec!["query", "--index", s(idx), "--exact", "--json", "-k", &k];
    args.extend(images.iter().map(String::as_str));
    let class_of = |p: &str| {
        Path::new(p)
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_owned()
    };
    let results = json(&run_ok(&args))["results"].as_array().unwrap().clone();
    let per: Vec<f64> = results
        .iter()
        .map(|r| {
            let q = class_of(r["query"].as_str().unwrap());
            let ns = r["neighbours"].as_array().unwrap();
            let same = ns
                .iter()
                .filter(|n| class_of(n["path"].as_str().unwrap()) == q);
            same.count() as f64 / ns.len() as f64
        })
        .collect();
    assert_eq!(per.len(), 12);
    per.iter().sum::<f64>() / per.len() as f64
}

#[test]
fn figure4_writes_the_grid_json_html_and_metrics() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    common::synthetic_dataset(&data, 3, 20);
    // A test image whose name must be escaped in the HTML.
    let class_dir = data.join("val").join("1-bars");
    let first = std::fs::read_dir(&class_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let evil = class_dir.join("<script>alert(1).png");
    std::fs::rename(&first, &evil).unwrap();
    let stem = d.path().join("m");
    common::train_quick(&data, &stem, &["--epochs", "1", "--batch", "16"]);
    // A training image that is not one: left out of the metrics, named on stderr, counted.
    let broken = data.join("train").join("1-bars").join("broken.png");
    std::fs::write(&broken, b"\x89PNG but not really").unwrap();
    let out = d.path().join("fig");
    let model = d.path().join("m.onnx");
    let other = class_dir.join(
        std::fs::read_dir(&class_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .find(|n| !n.to_string_lossy().contains('<'))
            .unwrap(),
    );
    let (train, val) = (data.join("train"), data.join("val"));
    let args = [
        "eval",
        "figure4",
        "--model",
        s(&model),
        "--train",
        s(&train),
        "--test",
        s(&val),
        "--query-files",
        s(&evil),
        s(&other),
        "-k",
        "4",
        "--out",
        s(&out),
        "--json",
        "--device",
        "cpu",
    ];
    let res = run_ok(&args);
    let metrics: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(metrics["train_images"], 48);
    assert_eq!(metrics["test_images"], 12);
    assert_eq!(metrics["skipped_images"], 1);
    let skipped: Vec<String> = String::from_utf8_lossy(&res.stderr)
        .lines()
        .filter(|l| l.starts_with("skipped "))
        .map(str::to_owned)
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains(s(&broken)), "{skipped:?}");
    for key in [
        "fc7_precision_at_k",
        "pixel_precision_at_k",
        "hnsw_recall_at_k",
        "top1_error_centre",
        "top1_error_10crop",
    ] {
        let v = metrics[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {metrics}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    let saved = json_file(&out.join("metrics.json"));
    assert_eq!(saved, metrics);
    // The same evaluation onto a full disk (writes over 16 KiB fail): one error line naming
    // the output, and no half-written file left where the figure goes.
    let full = d.path().join("full");
    let at = args.iter().position(|a| *a == s(&out)).unwrap();
    let mut small = args.to_vec();
    small[at] = s(&full);
    let failed = common::run_on_a_small_disk(16, &small);
    assert_eq!(failed.status.code(), Some(1));
    let errors = common::error_lines(&failed);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(s(&full)), "{errors:?}");
    assert!(common::temp_leftovers(&full).is_empty());
    assert!(!full.join("figure4.png").exists(), "no truncated picture");
    // With 48 training points the graph search is exhaustive: recall must be exact.
    assert_eq!(metrics["hnsw_recall_at_k"], 1.0, "{metrics}");
    let want = precision_through_the_index(&data, &model, &d.path().join("idx"), 4);
    let got = metrics["fc7_precision_at_k"].as_f64().unwrap();
    assert!(
        (got - want).abs() < 1e-9,
        "figure4 {got}, index + exact query {want}"
    );
    // Through that index: the same precision, and the index keeps the numbers for `fc7 info`
    // and `fc7 serve`.
    let idx = d.path().join("idx");
    let through = d.path().join("through-index");
    let at = args.iter().position(|a| *a == s(&out)).unwrap();
    let mut with_index = args.to_vec();
    with_index[at] = s(&through);
    with_index.extend_from_slice(&["--index", s(&idx)]);
    let again: serde_json::Value = serde_json::from_slice(&run_ok(&with_index).stdout).unwrap();
    assert_eq!(again["fc7_precision_at_k"], metrics["fc7_precision_at_k"]);
    let info: serde_json::Value =
        serde_json::from_slice(&run_ok(&["info", "--index", s(&idx), "--json"]).stdout).unwrap();
    assert_eq!(
        info["figure4"],
        json_file(&through.join("metrics.json")),
        "{info}"
    );

    let fig = json_file(&out.join("figure4.json"));
    let rows = fig["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let ns = row["neighbours"].as_array().unwrap();
        assert_eq!(ns.len(), 4);
        let d: Vec<f64> = ns.iter().map(|n| n["distance"].as_f64().unwrap()).collect();
        assert!(
            d.windows(2).all(|w| w[0] <= w[1]),
            "distances ascending: {d:?}"
        );
        assert!(ns
            .iter()
            .all(|n| n["path"].as_str().unwrap().contains("/train/")));
    }
    let png = fc7::imaging::decode_file(&out.join("figure4.png")).unwrap();
    assert_eq!(
        (png.width(), png.height()),
        (
            5 * fc7::eval::figure::CELL_W + 8,
            2 * fc7::eval::figure::CELL_H + 8
        )
    );
    // Each neighbour's frame colour says whether its class matches the query's.
    for (r, row) in rows.iter().enumerate() {
        let qclass = row["query"]["class"].as_str().unwrap();
        for (c, n) in row["neighbours"].as_array().unwrap().iter().enumerate() {
            let px = *png.get_pixel(
                8 + (c as u32 + 1) * fc7::eval::figure::CELL_W + 1,
                8 + r as u32 * fc7::eval::figure::CELL_H + 1,
            );
            let want = if n["class"] == qclass {
                fc7::eval::figure::MATCH
            } else {
                fc7::eval::figure::MISMATCH
            };
            assert_eq!(px, want, "row {r} column {c}");
        }
    }
    let html = std::fs::read_to_string(out.join("figure4.html")).unwrap();
    assert!(
        !html.contains("<script>"),
        "unescaped file name in the HTML"
    );
    assert!(html.contains("&lt;script&gt;alert(1).png"));
    assert_eq!(html.matches("<img ").count(), 10);
}
