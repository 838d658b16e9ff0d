//! Generated ImageNet-shaped datasets for rehearsing training at scale without ImageNet:
//! `classes` class folders of JPEGs at ImageNet-like sizes (about 500×375, around 100 KB at
//! quality 90). Each class is a prototype — a palette and three oriented gratings of its own —
//! and each image a random view of it: a patch of the prototype at a random place and scale,
//! over clutter from a random other class, with noise. Neighbouring classes share frequencies
//! and colours, so they are not told apart by one statistic.

use std::f32::consts::TAU;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::error::{Error, Result};

struct Prototype {
    palette: [[f32; 3]; 2],
    waves: [(f32, f32, f32); 3],
}

fn prototype(class: usize, seed: u64) -> Prototype {
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed ^ (class as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let colour = |rng: &mut rand::rngs::StdRng| [0; 3].map(|_| rng.random_range(20.0..235.0f32));
    Prototype {
        palette: [colour(&mut rng), colour(&mut rng)],
        waves: [0; 3].map(|_| {
            let angle = rng.random_range(0.0..TAU);
            let freq = rng.random_range(0.01..0.08f32);
            (
                freq * angle.cos(),
                freq * angle.sin(),
                rng.random_range(0.0..TAU),
            )
        }),
    }
}

/// The prototype's value in [0, 1] at (x, y).
fn field(p: &Prototype, x: f32, y: f32) -> f32 {
    let s: f32 = p
        .waves
        .iter()
        .map(|(fx, fy, ph)| (fx * x + fy * y + ph).sin())
        .sum();
    (s / 3.0 + 1.0) * 0.5
}

/// One image of `class`: its prototype in an ellipse at a random place and scale, another
/// class's prototype around it, and grain.
pub fn scene(
    class: usize,
    classes: usize,
    (w, h): (u32, u32),
    rng: &mut impl Rng,
    seed: u64,
) -> image::RgbImage {
    let fg = prototype(class, seed);
    let bg = prototype(rng.random_range(0..classes), seed);
    let scale = rng.random_range(0.6..1.6f32);
    let (cx, cy) = (
        rng.random_range(0.3..0.7) * w as f32,
        rng.random_range(0.3..0.7) * h as f32,
    );
    let (rx, ry) = (
        rng.random_range(0.25..0.45) * w as f32,
        rng.random_range(0.25..0.45) * h as f32,
    );
    let grain: u32 = rng.random();
    image::RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let inside = (dx / rx).powi(2) + (dy / ry).powi(2) < 1.0;
        let (p, u, v) = match inside {
            true => (&fg, dx / scale, dy / scale),
            false => (&bg, x as f32, y as f32),
        };
        let t = field(p, u, v);
        let noise = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ grain) % 33) as f32 - 16.0;
        image::Rgb([0, 1, 2].map(|c| {
            (p.palette[0][c] * t + p.palette[1][c] * (1.0 - t) + noise).clamp(0.0, 255.0) as u8
        }))
    })
}

/// Writes `out/train/cNNNN/NNNNNN.jpg`: `classes` × `per_class` images, sizes around 500×375.
pub fn imagenet_like(out: &Path, classes: usize, per_class: usize, seed: u64) -> Result<()> {
    (0..classes).try_for_each(|c| {
        let dir = out.join("train").join(format!("c{c:04}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))
    })?;
    (0..classes * per_class).into_par_iter().try_for_each(|i| {
        let (class, k) = (i % classes, i / classes);
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            seed.wrapping_add((i as u64).wrapping_mul(0x2545_F491)),
        );
        let size = if rng.random_bool(0.75) {
            (500, 375)
        } else {
            (375, 500)
        };
        let size = (
            size.0 + rng.random_range(0..40),
            size.1 + rng.random_range(0..30),
        );
        let img = scene(class, classes, size, &mut rng, seed);
        let p = out
            .join("train")
            .join(format!("c{class:04}"))
            .join(format!("{k:06}.jpg"));
        let file = std::fs::File::create(&p).map_err(|e| Error::io(&p, e))?;
        let enc =
            image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90);
        img.write_with_encoder(enc)
            .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_imagenet_sized_jpegs_and_a_class_is_not_one_colour() {
        let d = tempfile::tempdir().unwrap();
        imagenet_like(d.path(), 3, 4, 1).unwrap();
        let dir = d.path().join("train/c0001");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 4);
        let mut means = Vec::new();
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert_eq!(&bytes[..2], b"\xFF\xD8", "a JPEG");
            let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
            assert!((375..=540).contains(&img.width()) && (375..=540).contains(&img.height()));
            assert!(
                bytes.len() > 40_000,
                "{} bytes: too smooth to be photo-like",
                bytes.len()
            );
            let m: f64 =
                img.as_raw().iter().map(|&v| v as f64).sum::<f64>() / img.as_raw().len() as f64;
            means.push(m);
        }
        // Views of one class differ (placement, scale, clutter), so their mean brightness does.
        let spread = means.iter().cloned().fold(f64::MIN, f64::max)
            - means.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 1.0, "{means:?}");
    }
}
