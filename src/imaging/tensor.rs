//! A decoded image as the network's input: the model's centre view as [3, crop, crop] floats,
//! standardised as the model's preprocessing says (per channel, or by the image's own mean and
//! deviation exactly as training computes them).

use std::path::Path;

use image::RgbImage;

use super::{prepare_bytes, View};
use crate::error::{Error, Result};
use crate::model::standardise::Sums;
use crate::model::{Preprocess, Standardise};

/// A file as the network's input: the model's centre view as [3, crop, crop] floats, with the
/// size of the (oriented) original.
pub struct Input {
    pub tensor: Vec<f32>,
    pub width: u32,
    pub height: u32,
}

/// Decodes `bytes` (read from `path`, named in errors) into the input `pre` describes.
pub fn input_from_bytes(
    bytes: &[u8],
    path: &Path,
    pre: &Preprocess,
    max_pixels: u64,
) -> Result<Input> {
    let p = prepare_bytes(bytes, path, View::from(pre), max_pixels)?;
    Ok(Input {
        tensor: to_tensor(&p.rgb, pre),
        width: p.width,
        height: p.height,
    })
}

/// Reads and decodes `path` into the input `pre` describes.
pub fn input_from_file(path: &Path, pre: &Preprocess, max_pixels: u64) -> Result<Input> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    input_from_bytes(&bytes, path, pre, max_pixels)
}

/// `img` as a new [3, H, W] tensor; see [`to_chw`].
pub fn to_tensor(img: &RgbImage, pre: &Preprocess) -> Vec<f32> {
    let mut out = vec![0.0; 3 * (img.width() * img.height()) as usize];
    to_chw(img, pre, &mut out);
    out
}

/// Writes `img` into `out` as [3, S, S] floats: (value / scale − mean) / std per channel, with
/// the image's own mean and standard deviation under [`Standardise::Image`] (as training
/// computes them for a view without a colour shift, to the bit).
pub fn to_chw(img: &RgbImage, pre: &Preprocess, out: &mut [f32]) {
    let plane = (img.width() * img.height()) as usize;
    debug_assert_eq!(out.len(), 3 * plane);
    let (mean, std) = match pre.standardise {
        Standardise::Channels => (pre.mean, pre.std),
        Standardise::Image => {
            let (m, s) = Sums::interleaved([img.as_raw().as_slice()]).mean_std([0.0; 3]);
            ([m; 3], [s; 3])
        }
    };
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] as f32 / pre.scale - mean[c]) / std[c];
        }
    }
}
