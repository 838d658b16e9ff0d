//! `fc7 serve` through the real binary and raw HTTP: the gallery's answers agree with
//! `fc7 query`, and hostile requests (path traversal, unknown ids, oversize, malformed and
//! bomb uploads, other methods) get a clear 4xx while the server keeps serving; with a token,
//! nothing is served without it.

use crate::common;

use common::gallery::{get_json, raw, serve};
use common::{fc7, huge_png_header, json, model, plain_folder, run_ok, s};
use serde_json::Value;

fn ids(v: &Value) -> Vec<i64> {
    v["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

/// `n` small JPEGs indexed into a folder: (the temporary folder, photos, index).
fn indexed_folder(n: u32) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = (d.path().join("photos"), d.path().join("idx"));
    plain_folder(&root, n);
    run_ok(&[
        "index",
        s(&root),
        "--index",
        s(&idx),
        "--model",
        s(model()),
        "--quiet",
    ]);
    (d, root, idx)
}

#[test]
fn the_gallery_answers_as_fc7_query_does_and_refuses_bad_requests_without_stopping() {
    let (_d, root, idx) = indexed_folder(8);
    let server = serve(s(&idx), &[]);
    let a = server.addr.as_str();

    let (status, page) = raw(a, "GET / HTTP/1.1", b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("fc7 gallery"));
    let images = get_json(a, "/api/images");
    let by_name = |name: &str| -> i64 {
        images["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {images}"))["id"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(images["images"].as_array().unwrap().len(), 8);

    // By id: the same neighbours, in the same order, as `fc7 query --exclude-self`.
    let img = root.join("img0003.jpg");
    let id = by_name("img0003.jpg");
    let got = get_json(a, &format!("/api/neighbours/{id}?k=5"));
    let cli = json(&run_ok(&[
        "query",
        s(&img),
        "--index",
        s(&idx),
        "-k",
        "5",
        "--exclude-self",
        "--json",
    ]));
    assert_eq!(ids(&got), ids(&cli["results"][0]), "{got}");
    assert_eq!(got["query"]["id"], id);

    // An upload of the same file: embedded now, its original first and nearer than the rest.
    let (status, body) = raw(
        a,
        "POST /api/query?k=3 HTTP/1.1",
        &std::fs::read(&img).unwrap(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let up: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ids(&up)[0], id, "{up}");
    let dist = |i: usize| up["neighbours"][i]["distance"].as_f64().unwrap();
    assert!(dist(0) < 1e-3 * dist(1), "{up}");

    let (status, thumb) = raw(a, &format!("GET /thumb/{id} HTTP/1.1"), b"");
    assert_eq!(status, 200);
    let t = fc7::imaging::decode_bytes(&thumb, std::path::Path::new("thumbnail")).unwrap();
    assert_eq!((t.width(), t.height()), (192, 192));

    let big = vec![0u8; 33 << 20];
    let refusals: [(&str, &[u8], u16, &str); 9] = [
        ("GET /thumb/../../etc/passwd HTTP/1.1", b"", 404, ""),
        (
            "GET /thumb/..%2f..%2fetc%2fpasswd HTTP/1.1",
            b"",
            400,
            "Cannot parse",
        ),
        ("GET /thumb/999999 HTTP/1.1", b"", 404, "no image 999999"),
        ("GET /api/neighbours/abc HTTP/1.1", b"", 400, "Cannot parse"),
        ("POST /api/query HTTP/1.1", &big, 413, "length limit"),
        (
            "POST /api/query HTTP/1.1",
            b"GIF89a but not really",
            400,
            "uploaded image",
        ),
        (
            "POST /api/query HTTP/1.1",
            &huge_png_header(),
            400,
            "pixel limit",
        ),
        ("DELETE /api/neighbours/1 HTTP/1.1", b"", 405, ""),
        ("PUT /thumb/1 HTTP/1.1", b"x", 405, ""),
    ];
    for (head, body, want, says) in refusals {
        let (status, text) = raw(a, head, body);
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, want, "{head}: {text}");
        assert!(
            text.contains(says) && text.lines().count() <= 1,
            "{head}: {text:?}"
        );
    }
    assert_eq!(get_json(a, "/api/info")["indexed"], 8, "still serving");
}

#[test]
fn with_a_token_nothing_is_served_without_it() {
    let (_d, _, idx) = indexed_folder(3);
    let server = serve(s(&idx), &["--token", "s3cret"]);
    let a = server.addr.as_str();
    for head in [
        "GET /api/info HTTP/1.1",
        "GET /thumb/1 HTTP/1.1",
        "GET /api/info HTTP/1.1\r\nAuthorization: Bearer s3creT",
        "GET /api/info?token=s3cre HTTP/1.1",
        "GET /api/info HTTP/1.1\r\nCookie: fc7_token=wrong",
    ] {
        let (status, body) = raw(a, head, b"");
        assert_eq!(status, 401, "{head}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _) = raw(
        a,
        "GET /api/info HTTP/1.1\r\nAuthorization: Bearer s3cret",
        b"",
    );
    assert_eq!(status, 200);
    // The link with the token sets a cookie, which then carries the page's own requests.
    let (status, _) = raw(a, "GET /?token=s3cret HTTP/1.1", b"");
    assert_eq!(status, 200);
    let (status, _) = raw(
        a,
        "GET /api/images HTTP/1.1\r\nCookie: a=b; fc7_token=s3cret",
        b"",
    );
    assert_eq!(status, 200);

    // Off loopback, a token is required before anything listens.
    let out = fc7()
        .args([
            "serve",
            "--index",
            s(&idx),
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ])
        .env_remove("FC7_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = common::error_lines(&out);
    assert!(
        lines.len() == 1 && lines[0].contains("needs a token"),
        "{lines:?}"
    );
}
