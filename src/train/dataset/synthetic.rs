//! Generated class folders (no download): each class its own pattern, for tests and for
//! trying training without a dataset.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// One generated picture of `class`: each class its own pattern, each picture its own colours,
/// scale, phase and noise.
pub fn synthetic_image(class: usize, side: u32, rng: &mut impl Rng) -> image::RgbImage {
    let fg: [f32; 3] = [
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
    ];
    let bg = fg.map(|c| (c + 128.0) % 256.0);
    let period = rng.random_range(6.0..12.0f32) * side as f32 / 64.0;
    let (phase, r) = (
        rng.random_range(0.0..period),
        rng.random_range(0.25..0.4f32) * side as f32,
    );
    let (cx, cy) = (
        side as f32 * rng.random_range(0.4..0.6f32),
        side as f32 * rng.random_range(0.4..0.6f32),
    );
    image::RgbImage::from_fn(side, side, |x, y| {
        let (u, v) = (x as f32 + phase, y as f32 + phase);
        let on = match class % 6 {
            0 => (u / period) as i32 % 2 == 0,
            1 => (v / period) as i32 % 2 == 0,
            2 => ((u / period) as i32 + (v / period) as i32) % 2 == 0,
            3 => (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r,
            4 => ((u + v) / period) as i32 % 2 == 0,
            _ => (x as f32 - cx).abs() < r * 0.4 || (y as f32 - cy).abs() < r * 0.4,
        };
        let noise =
            ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ (class as u32).wrapping_mul(31))
                % 31) as f32
                - 15.0;
        let c = if on { fg } else { bg };
        image::Rgb(c.map(|v| (v + noise).clamp(0.0, 255.0) as u8))
    })
}

/// Writes `out/{train,val}/class<k>/NNNN.png`: `classes` × `per_class` pictures (a fifth to val).
pub fn synthetic(out: &Path, classes: usize, per_class: usize, side: u32, seed: u64) -> Result<()> {
    let names = ["stripes", "bars", "checks", "disc", "diagonals", "cross"];
    (0..classes * per_class).into_par_iter().try_for_each(|i| {
        let (class, k) = (i % classes, i / classes);
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
        let split = if k % 5 == 4 { "val" } else { "train" };
        let dir = out
            .join(split)
            .join(format!("{}-{}", class, names[class % names.len()]));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let p = dir.join(format!("{k:04}.png"));
        crate::imaging::png::save_png(&p, &synthetic_image(class, side, &mut rng))
    })
}
