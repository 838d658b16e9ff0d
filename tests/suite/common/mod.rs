//! Fixtures for the integration tests: a random model written once per test binary, photo
//! folders generated on the fly (varied content and formats, nested and unicode names, and the
//! bad files a real folder has), and a runner for the real `fc7` binary.

#![allow(dead_code)]

pub mod gallery;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

/// A path as the &str a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

/// This test process's folder for what lives as long as it does (the shared model, packs,
/// home): `run-PID` in cargo's tmp folder for tests. A static is never dropped, so a `TempDir`
/// here would leave its 220 MB model behind after every run; instead each run removes the
/// folders of runs whose process is gone.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("suite");
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("run-") else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = root.join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// A folder `name` in `scratch()`, made once.
fn scratch_dir(name: &str) -> PathBuf {
    let d = scratch().join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The folder of this test process's training packs ($FC7_PACKS for the binary).
pub fn pack_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| scratch_dir("packs"))
}

/// A home ($FC7_HOME) of this test process's own, so no test touches the user's.
pub fn test_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| scratch_dir("home"))
}

/// The real binary, with its training packs in `pack_cache()` and its home in `test_home()`.
pub fn fc7() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fc7"));
    c.env("FC7_PACKS", pack_cache())
        .env("FC7_HOME", test_home());
    c
}

/// Runs fc7 with `args`, returning the output; panics with stderr if the exit code differs.
pub fn run_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Output {
    let out = fc7().args(args).output().expect("run fc7");
    assert!(
        out.status.success(),
        "fc7 {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A JSON file the binary wrote (a manifest, metrics, a figure's rows).
pub fn json_file(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: bad JSON ({e})", path.display()))
}

/// A He-initialised paper AlexNet, written once per test binary.
pub fn model() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let p = scratch_dir("model").join("random.onnx");
        run_ok(&[
            "model",
            "init",
            "--random",
            "--classes",
            "10",
            "--out",
            p.to_str().unwrap(),
        ]);
        p
    })
}

/// A second model (other seed): for the model-mismatch checks.
pub fn other_model(dir: &Path) -> PathBuf {
    let p = dir.join("other.onnx");
    run_ok(&[
        "model",
        "init",
        "--random",
        "--classes",
        "10",
        "--seed",
        "7",
        "--out",
        p.to_str().unwrap(),
    ]);
    p
}

/// A picture with content of its own: kind picks the pattern, the rest the colours and scale.
pub fn picture(kind: u32, w: u32, h: u32) -> RgbImage {
    let c1 = [
        (kind * 97 % 256) as u8,
        (kind * 53 % 256) as u8,
        (kind * 31 % 256) as u8,
    ];
    let c2 = [255 - c1[1], 255 - c1[2], 255 - c1[0]];
    let period = 8 + (kind % 5) * 9;
    RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x * 256 / w, y * 256 / h);
        let on = match kind % 6 {
            0 => (u / period).is_multiple_of(2),
            1 => (v / period).is_multiple_of(2),
            2 => ((u / period) + (v / period)).is_multiple_of(2),
            3 => {
                ((u as i32 - 128).pow(2) + (v as i32 - 128).pow(2)) < (40 + kind as i32 * 7).pow(2)
            }
            4 => ((u + v) / period).is_multiple_of(2),
            _ => u > v,
        };
        // Deterministic texture, so that no picture is flat colour.
        let noise = ((u.wrapping_mul(7919) ^ v.wrapping_mul(104_729) ^ kind.wrapping_mul(31_337))
            % 61) as i32
            - 30;
        let base = if on { c1 } else { c2 };
        Rgb(base.map(|c| (c as i32 + noise).clamp(0, 255) as u8))
    })
}

pub fn encode(img: &DynamicImage, f: ImageFormat) -> Vec<u8> {
    let mut c = Cursor::new(Vec::new());
    img.write_to(&mut c, f).unwrap();
    c.into_inner()
}

/// JPEG with an EXIF APP1 segment carrying `orientation`.
pub fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut exif = b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    exif.extend_from_slice(&orientation.to_be_bytes());
    exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.add_app_segment(1, &exif).unwrap();
    enc.encode(
        img.as_raw(),
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    out
}

pub fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.encode(
        img.as_raw(),
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    out
}

pub fn cmyk_jpeg(img: &RgbImage) -> Vec<u8> {
    let cmyk: Vec<u8> = img
        .pixels()
        .flat_map(|p| {
            let k = 255 - *p.0.iter().max().unwrap();
            let f = |c: u8| {
                if k == 255 {
                    0
                } else {
                    ((255 - c as u32 - k as u32) * 255 / (255 - k as u32)) as u8
                }
            };
            [f(p[0]), f(p[1]), f(p[2]), k]
        })
        .collect();
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.encode(
        &cmyk,
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Cmyk,
    )
    .unwrap();
    out
}

pub fn palette_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 250, 0]);
        let mut wr = enc.write_header().unwrap();
        let data: Vec<u8> = (0..w * h).map(|i| ((i % w) * 4 / w) as u8).collect();
        wr.write_image_data(&data).unwrap();
    }
    out
}

/// A decompression bomb: a valid 1x1 PNG whose header is patched to declare 100000 x 100000.
pub fn huge_png_header() -> Vec<u8> {
    let mut out = encode(
        &DynamicImage::ImageLuma8(image::GrayImage::new(1, 1)),
        ImageFormat::Png,
    );
    out[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    out[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32fast::hash(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}

pub fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// The mixed folder: `valid` lists the files that must be indexed, `bad` those that must be
/// skipped, each relative to the root.
pub struct Photos {
    pub root: PathBuf,
    pub valid: Vec<String>,
    pub bad: Vec<String>,
}

pub fn mixed_folder(root: &Path) -> Photos {
    let mut valid = Vec::new();
    let mut add = |rel: &str, bytes: Vec<u8>| {
        write(root, rel, &bytes);
        valid.push(rel.to_string());
    };
    let d = |img: RgbImage| DynamicImage::ImageRgb8(img);
    add("stripes.jpg", jpeg(&picture(0, 320, 240)));
    add("big/large_photo.jpg", jpeg(&picture(1, 1400, 1000)));
    add(
        "a/b/c/deep checker.png",
        encode(&d(picture(2, 300, 300)), ImageFormat::Png),
    );
    add(
        "ünïcødé 写真/猫.png",
        encode(&d(picture(3, 256, 200)), ImageFormat::Png),
    );
    add(
        "formats/diag.webp",
        encode(&d(picture(4, 240, 260)), ImageFormat::WebP),
    );
    add(
        "formats/tri.gif",
        encode(&d(picture(5, 200, 200)), ImageFormat::Gif),
    );
    add(
        "formats/tiled.tiff",
        encode(&d(picture(6, 230, 250)), ImageFormat::Tiff),
    );
    add(
        "formats/disc.bmp",
        encode(&d(picture(9, 260, 240)), ImageFormat::Bmp),
    );
    add(
        "formats/gray.png",
        encode(
            &DynamicImage::ImageLuma8(d(picture(8, 240, 240)).to_luma8()),
            ImageFormat::Png,
        ),
    );
    add(
        "formats/deep16.png",
        encode(
            &DynamicImage::ImageRgb16(d(picture(10, 240, 240)).to_rgb16()),
            ImageFormat::Png,
        ),
    );
    add(
        "formats/alpha.png",
        encode(
            &DynamicImage::ImageRgba8(d(picture(11, 240, 240)).to_rgba8()),
            ImageFormat::Png,
        ),
    );
    add("formats/palette.png", palette_png(240, 240));
    add("formats/cmyk.jpg", cmyk_jpeg(&picture(12, 300, 240)));
    add(
        "formats/no_extension",
        encode(&d(picture(13, 240, 240)), ImageFormat::Png),
    );
    let original = picture(15, 400, 300);
    add("rotation/original.jpg", jpeg(&original));
    let stored = image::imageops::rotate270(&original);
    add(
        "rotation/rotated_exif6.jpg",
        jpeg_with_orientation(&stored, 6),
    );
    std::fs::create_dir_all(root.join("empty")).unwrap();
    write(root, "notes.txt", b"not a photo");
    write(root, "zero.jpg", b"");
    write(
        root,
        "corrupt.jpg",
        b"\xff\xd8\xff\xe0 this is not really a jpeg at all",
    );
    let mut truncated = jpeg(&picture(16, 320, 240));
    truncated.truncate(truncated.len() / 3);
    write(root, "truncated.jpg", &truncated);
    write(root, "huge.png", &huge_png_header());
    write(root, ".hidden/secret.jpg", &jpeg(&picture(17, 64, 64)));
    let bad = [
        "notes.txt",
        "zero.jpg",
        "corrupt.jpg",
        "truncated.jpg",
        "huge.png",
    ]
    .map(String::from)
    .to_vec();
    Photos {
        root: root.to_path_buf(),
        valid,
        bad,
    }
}

/// `n` small distinct JPEGs in `root`.
pub fn plain_folder(root: &Path, n: u32) {
    for i in 0..n {
        write(
            root,
            &format!("img{i:04}.jpg"),
            &jpeg(&picture(i, 160 + (i % 7) * 10, 160)),
        );
    }
}

/// Runs fc7 with `args` under a file-size limit of `kib` KiB, as a full disk would stop it:
/// a write past the limit fails with EFBIG (SIGXFSZ is ignored, as a full disk sends none).
pub fn run_on_a_small_disk(kib: u64, args: &[&str]) -> Output {
    run_on_a_small_disk_with(kib, args, &[])
}

/// `run_on_a_small_disk` with more environment variables.
pub fn run_on_a_small_disk_with(
    kib: u64,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Output {
    Command::new("bash")
        .args([
            "-c",
            r#"trap '' XFSZ; ulimit -f "$1"; shift; exec "$@""#,
            "_",
        ])
        .arg(kib.to_string())
        .arg(env!("CARGO_BIN_EXE_fc7"))
        .args(args)
        .env("FC7_PACKS", pack_cache())
        .env("FC7_HOME", test_home())
        .envs(env.iter().copied())
        .output()
        .expect("run fc7 under ulimit -f")
}

/// The lines fc7 printed as errors (`fc7: …`).
pub fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("fc7: "))
        .map(str::to_string)
        .collect()
}

/// Files an interrupted atomic write would leave behind (`.NAME.tmp-PID`).
pub fn temp_leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect()
}

/// A folder nobody may write to, for as long as the value lives: mode 0555, or for root (whom
/// modes do not stop) the immutable attribute. `None`, after one visible line, where neither
/// works (root without `chattr`).
pub struct ReadOnly(PathBuf);

impl ReadOnly {
    pub fn new(dir: &Path) -> Option<ReadOnly> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = dir.join(".probe");
        if std::fs::write(&probe, b"").is_ok() {
            let _ = std::fs::remove_file(&probe);
            let immutable = Command::new("chattr").arg("+i").arg(dir).status();
            if !immutable.is_ok_and(|s| s.success()) {
                let line = format!("SKIPPED: cannot make {} read-only here\n", dir.display());
                let _ = std::io::stderr().write_all(line.as_bytes());
                return None;
            }
        }
        Some(ReadOnly(dir.to_path_buf()))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

/// `fc7 dataset synthetic` into `dir`: `classes` generated classes of `per_class` pictures.
pub fn synthetic_dataset(dir: &Path, classes: u32, per_class: u32) {
    let (c, n) = (classes.to_string(), per_class.to_string());
    run_ok(&[
        "dataset",
        "synthetic",
        s(dir),
        "--classes",
        &c,
        "--per-class",
        &n,
    ]);
}

/// `fc7 train DATA --preset quick --out STEM --quiet` with `extra` flags; panics on failure.
pub fn train_quick(data: &Path, stem: &Path, extra: &[&str]) -> Output {
    let base = [
        "train",
        s(data),
        "--preset",
        "quick",
        "--out",
        s(stem),
        "--quiet",
    ];
    run_ok(&[&base[..], extra].concat())
}

/// A training run's progress that raises `stop` at the `after`-th step report, as Ctrl-C would.
pub struct StopAfter<'a> {
    pub after: usize,
    pub seen: std::sync::atomic::AtomicUsize,
    pub stop: &'a std::sync::atomic::AtomicBool,
}

impl StopAfter<'_> {
    pub fn new(after: usize, stop: &std::sync::atomic::AtomicBool) -> StopAfter<'_> {
        StopAfter {
            after,
            seen: std::sync::atomic::AtomicUsize::new(0),
            stop,
        }
    }
}

impl fc7::train::progress::TrainProgress for StopAfter<'_> {
    fn batch(&self, _: usize, _: f32, _: f32, _: f32) {
        use std::sync::atomic::Ordering;
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Counts a run's batches and keeps its notes and the epochs it checkpointed at.
#[derive(Default)]
pub struct Counter {
    pub batches: std::sync::atomic::AtomicUsize,
    pub notes: std::sync::Mutex<Vec<String>>,
    /// The epochs at whose end a checkpoint was written.
    pub checkpoints: std::sync::Mutex<Vec<usize>>,
}

impl fc7::train::progress::TrainProgress for Counter {
    fn batch(&self, _: usize, _: f32, _: f32, _: f32) {
        self.batches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn note(&self, line: &str) {
        self.notes.lock().unwrap().push(line.to_string());
    }
    fn checkpoint(&self, epoch: usize) {
        self.checkpoints.lock().unwrap().push(epoch);
    }
}
