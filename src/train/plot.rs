//! The training curves as a PNG beside the model: left panel loss (training blue, validation
//! orange), then top-1 error (same colours) and, for a run on unlabelled class folders, the
//! class-folder precision@6 (green), x = epoch, each y axis from 0 to the
//! panel's maximum (written at its top). Drawn with `image` and the 8×8 bitmap font of
//! `figure`; the exact numbers are in the JSON log.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::Result;
use crate::train::checkpoint::EpochRecord;

const W: u32 = 400;
const H: u32 = 300;
const PAD: u32 = 20;
const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
const GREEN: Rgb<u8> = Rgb([44, 160, 44]);
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
fn panel(img: &mut RgbImage, ox: u32, title: &str, series: &[(Vec<f32>, Rgb<u8>, &str)]) {
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
        .flat_map(|(v, _, _)| v.iter().cloned())
        .fold(1e-6f32, f32::max);
    let text = |img: &mut RgbImage, x: f32, y: f32, t: &str, c: Rgb<u8>| {
        crate::util::draw::draw_text(img, x as u32, y as u32, t, W, c)
    };
    text(img, x0 + 4.0, 4.0, &format!("{title} (max {max:.3})"), AXIS);
    let epochs = series.first().map_or(0, |s| s.0.len());
    text(img, x1 - 80.0, y1 + 6.0, &format!("epoch {epochs}"), AXIS);
    let mut right = x1;
    for (_, colour, label) in series.iter().rev() {
        right -= 8.0 * (label.chars().count() + 1) as f32;
        text(img, right, 4.0, label, *colour);
    }
    for (values, colour, _) in series {
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
    let precision: Option<Vec<f32>> = history.iter().map(|r| r.folder_precision_at_6).collect();
    let panels = if precision.is_some() { 3 } else { 2 };
    let mut img = RgbImage::from_pixel(panels * W, H, Rgb([255, 255, 255]));
    let col = |f: fn(&EpochRecord) -> f32| history.iter().map(f).collect::<Vec<_>>();
    panel(
        &mut img,
        0,
        "loss",
        &[
            (col(|r| r.train_loss), BLUE, "train"),
            (col(|r| r.val_loss), ORANGE, "val"),
        ],
    );
    panel(
        &mut img,
        W,
        "top-1 error",
        &[
            (col(|r| r.train_error), BLUE, "train"),
            (col(|r| r.val_top1_error), ORANGE, "val"),
        ],
    );
    if let Some(p) = precision {
        panel(&mut img, 2 * W, "class P@6", &[(p, GREEN, "val")]);
    }
    crate::imaging::png::save_png(path, &img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, precision: Option<f32>) -> EpochRecord {
        EpochRecord {
            epoch,
            lr: 0.01,
            train_loss: 2.0 / epoch as f32,
            train_error: 0.5,
            val_loss: 2.5 / epoch as f32,
            val_top1_error: 0.6,
            val_top5_error: 0.2,
            images_per_second: 100.0,
            seconds: 1.0,
            folder_precision_at_6: precision,
        }
    }

    /// The class-folder precision gets a third panel with its green curve, only when every
    /// epoch has one.
    #[test]
    fn a_third_panel_draws_the_class_folder_precision() {
        let d = tempfile::tempdir().unwrap();
        let (with, without) = (d.path().join("a.png"), d.path().join("b.png"));
        let h: Vec<_> = (1..4).map(|e| record(e, Some(0.3 * e as f32))).collect();
        training_curves(&with, &h).unwrap();
        let img = crate::imaging::decode_file(&with).unwrap();
        assert_eq!(img.dimensions(), (3 * W, H));
        let green = |x0: u32| {
            (x0..x0 + W)
                .flat_map(|x| (PAD + 10..H - PAD).map(move |y| (x, y)))
                .filter(|&(x, y)| *img.get_pixel(x, y) == GREEN)
                .count()
        };
        assert!(green(2 * W) > 100, "{}", green(2 * W));
        assert_eq!(green(0) + green(W), 0);
        let mut h2 = h.clone();
        h2[1].folder_precision_at_6 = None;
        training_curves(&without, &h2).unwrap();
        assert_eq!(
            crate::imaging::decode_file(&without).unwrap().width(),
            2 * W
        );
    }
}
