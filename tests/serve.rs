//! `fc7 serve` through the real binary and raw HTTP: the gallery's answers agree with
//! `fc7 query`, and hostile requests (path traversal, unknown ids, oversize, malformed and
//! bomb uploads, other methods) get a clear 4xx while the server keeps serving.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};

use common::{fc7, huge_png_header, json, model, plain_folder, run_ok, s};
use serde_json::Value;

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(idx: &Path) -> Server {
    let mut child = fc7()
        .args(["serve", "--index", s(idx), "--port", "0", "--device", "cpu"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, addr }
}

/// Sends `head` (request line and headers, without the blank line) and `body` as they are;
/// returns the status and the body.
fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut c = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before reading all of a large body.
    let _ = c.write_all(body);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, out[at..].to_vec())
}

fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = raw(addr, &format!("GET {path} HTTP/1.1"), b"");
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn ids(v: &Value) -> Vec<i64> {
    v["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn the_gallery_answers_as_fc7_query_does_and_refuses_bad_requests_without_stopping() {
    let d = tempfile::tempdir().unwrap();
    let (root, idx) = (d.path().join("photos"), d.path().join("idx"));
    plain_folder(&root, 8);
    run_ok(&[
        "index",
        s(&root),
        "--index",
        s(&idx),
        "--model",
        s(model()),
        "--quiet",
    ]);
    let server = serve(&idx);
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
    let t = image::load_from_memory(&thumb).unwrap();
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
