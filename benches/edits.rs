//! Edited copies of every image in a folder, the edits a photo goes through between a camera
//! and a hard disk: `edits SRC OUT` writes, for each SRC/NAME.jpg, OUT/NAME.EDIT.jpg for EDIT in
//! crop (centre 80%), flip (mirrored), half (half size), q40 (JPEG quality 40), rot5 (5°, the
//! corners filled from the edge), bright (×1.3). scripts/bench/exemplar.sh asks an index of SRC
//! which image each copy comes from.

use std::path::Path;

use image::{imageops, RgbImage};

const EDITS: [&str; 6] = ["crop", "flip", "half", "q40", "rot5", "bright"];

fn rotate(img: &RgbImage, degrees: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (s, c) = degrees.to_radians().sin_cos();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
        let sx = (cx + c * u + s * v).clamp(0.0, w as f32 - 1.0);
        let sy = (cy - s * u + c * v).clamp(0.0, h as f32 - 1.0);
        *img.get_pixel(sx as u32, sy as u32)
    })
}

fn edit(img: &RgbImage, name: &str) -> RgbImage {
    let (w, h) = img.dimensions();
    match name {
        "crop" => imageops::crop_imm(img, w / 10, h / 10, w * 8 / 10, h * 8 / 10).to_image(),
        "flip" => imageops::flip_horizontal(img),
        "half" => imageops::resize(img, w / 2, h / 2, imageops::FilterType::Triangle),
        "rot5" => rotate(img, 5.0),
        "bright" => {
            let mut out = img.clone();
            out.pixels_mut()
                .for_each(|p| p.0 = p.0.map(|c| (c as f32 * 1.3).min(255.0) as u8));
            out
        }
        _ => img.clone(),
    }
}

fn save(img: &RgbImage, path: &Path, quality: u8) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(file, quality);
    img.write_with_encoder(enc).unwrap();
}

fn main() {
    let a: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [cmd, src, out] = &a[..] else {
        eprintln!("usage: edits edits SRC OUT");
        std::process::exit(2);
    };
    assert_eq!(cmd, "edits");
    std::fs::create_dir_all(out).unwrap();
    let opts = fc7::imaging::scan::ScanOptions::default();
    let found = fc7::imaging::scan::scan(&[src.into()], &opts).unwrap();
    let files: Vec<_> = found.files.into_iter().map(|f| f.path).collect();
    for f in &files {
        let img = fc7::imaging::decode_file(f).unwrap();
        let stem = f.file_stem().unwrap().to_string_lossy();
        let parent = f.parent().unwrap().file_name().unwrap().to_string_lossy();
        for e in EDITS {
            let q = if e == "q40" { 40 } else { 90 };
            save(
                &edit(&img, e),
                &Path::new(out).join(format!("{parent}-{stem}.{e}.jpg")),
                q,
            );
        }
    }
    println!(
        "wrote {} copies of {} images to {out}",
        files.len() * EDITS.len(),
        files.len()
    );
}
