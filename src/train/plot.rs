//! The training curves as a PNG beside the model: left panel loss (training blue, validation
//! orange), right panel top-1 error (same colours), x = epoch, each y axis from 0 to the
//! panel's maximum (written at its top). Drawn with `image` and the 8×8 bitmap font of
//! `figure`; the exact numbers are in the JSON log.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::train::checkpoint::EpochRecord;

const W: u32 = 400;
const H: u32 = 300;
const PAD: u32 = 20;
const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const AXIS: Rgb<u8> = Rgb([90, 90, 90]);

fn line(img: &mut RgbImage, (x0, y0): (f32, f32), (x1, y1): (f32, f32), c: Rgb<u8>) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
    for i in 0..=steps {
        let t = i as f32 / steps as f32;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let (px, py) = (x as i64 + dx, y as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, c);
            }
        }
    }
}

/// One panel at horizontal offset `ox`: the series share a y range from 0 to their maximum.
fn panel(img: &mut RgbImage, ox: u32, title: &str, series: &[(Vec<f32>, Rgb<u8>)]) {
    let (x0, y0, x1, y1) = (
        (ox + PAD) as f32,
        PAD as f32,
        (ox + W - PAD) as f32,
        (H - PAD) as f32,
    );
    for k in 0..=4 {
        let y = y0 + (y1 - y0) * k as f32 / 4.0;
        line(img, (x0, y), (x1, y), GRID);
    }
    line(img, (x0, y1), (x1, y1), AXIS);
    line(img, (x0, y0), (x0, y1), AXIS);
    let max = series
        .iter()
        .flat_map(|(v, _)| v.iter().cloned())
        .fold(1e-6f32, f32::max);
    let text = |img: &mut RgbImage, x: f32, y: f32, t: &str, c: Rgb<u8>| {
        crate::util::draw::draw_text(img, x as u32, y as u32, t, W, c)
    };
    text(img, x0 + 4.0, 4.0, &format!("{title} (max {max:.3})"), AXIS);
    let epochs = series.first().map_or(0, |s| s.0.len());
    text(img, x1 - 80.0, y1 + 6.0, &format!("epoch {epochs}"), AXIS);
    text(img, x1 - 100.0, 4.0, "train", BLUE);
    text(img, x1 - 48.0, 4.0, "val", ORANGE);
    for (values, colour) in series {
        let n = values.len().max(2) - 1;
        let at = |i: usize, v: f32| {
            (
                x0 + (x1 - x0) * i as f32 / n as f32,
                y1 - (y1 - y0) * (v / max).clamp(0.0, 1.0),
            )
        };
        for i in 1..values.len() {
            line(img, at(i - 1, values[i - 1]), at(i, values[i]), *colour);
        }
    }
}

pub fn training_curves(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let mut img = RgbImage::from_pixel(2 * W, H, Rgb([255, 255, 255]));
    let col = |f: fn(&EpochRecord) -> f32| history.iter().map(f).collect::<Vec<_>>();
    panel(
        &mut img,
        0,
        "loss",
        &[(col(|r| r.train_loss), BLUE), (col(|r| r.val_loss), ORANGE)],
    );
    panel(
        &mut img,
        W,
        "top-1 error",
        &[
            (col(|r| r.train_error), BLUE),
            (col(|r| r.val_top1_error), ORANGE),
        ],
    );
    img.save(path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}
