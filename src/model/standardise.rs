//! How pixel values become the network's input scale: by the training set's statistics per
//! channel (the paper's mean subtraction), or by each image's own mean and standard deviation.
//!
//! Per-image standardisation makes the input, and so fc7, the same for an image and a brighter
//! or darker exposure of it (every channel scaled or shifted alike), which views drawn during
//! unlabelled training teach only slowly. Training and inference compute the statistics here,
//! from exact integer sums, so both give an image the same input to the bit.

use serde::{Deserialize, Serialize};

/// Which statistics standardise the input (`--standardise`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standardise {
    /// (x − mean[c]) / std[c] with the training set's statistics per channel.
    #[default]
    Channels,
    /// (x − m) / s with m and s the mean and standard deviation of the image's own values over
    /// all three channels (s at least [`MIN_STD`]).
    Image,
}

impl Standardise {
    pub fn is_channels(&self) -> bool {
        *self == Standardise::Channels
    }
}

impl std::str::FromStr for Standardise {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "channels" => Ok(Standardise::Channels),
            "image" => Ok(Standardise::Image),
            _ => Err(format!(
                "unknown standardisation '{s}' (expected channels or image)"
            )),
        }
    }
}

/// The smallest standard deviation per-image standardisation divides by, in [0, 1] units (about
/// 5 grey levels): a flat image's noise is not blown up to unit variance.
pub const MIN_STD: f64 = 0.02;

/// Exact per-channel sums of an 8-bit image's values and of their squares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub sum: [u64; 3],
    pub squares: [u64; 3],
    /// Pixels per channel.
    pub pixels: u64,
}

impl Sums {
    /// Sums of interleaved RGB rows ([width, 3] each): a whole image's bytes as one row, or the
    /// rows of a crop.
    pub fn interleaved<'a>(rows: impl IntoIterator<Item = &'a [u8]>) -> Sums {
        let mut s = Sums::default();
        for row in rows {
            for (i, &v) in row.iter().enumerate() {
                s.sum[i % 3] += v as u64;
                s.squares[i % 3] += (v as u64) * (v as u64);
            }
            s.pixels += (row.len() / 3) as u64;
        }
        s
    }

    /// Sums of a planar image, [3, plane].
    pub fn planar(pixels: &[u8]) -> Sums {
        let plane = pixels.len() / 3;
        let mut s = Sums {
            pixels: plane as u64,
            ..Sums::default()
        };
        for (c, p) in pixels.chunks_exact(plane.max(1)).enumerate().take(3) {
            s.sum[c] = p.iter().map(|&v| v as u64).sum();
            s.squares[c] = p.iter().map(|&v| (v as u64) * (v as u64)).sum();
        }
        s
    }

    /// The mean and standard deviation (at least [`MIN_STD`]) over all channels of
    /// v / 255 + shift[c], the values a view with colour shift `shift` holds.
    pub fn mean_std(&self, shift: [f32; 3]) -> (f32, f32) {
        let n = (3 * self.pixels).max(1) as f64;
        let (mut s1, mut s2, p) = (0f64, 0f64, self.pixels as f64);
        for ((&sum, &sq), &d) in self.sum.iter().zip(&self.squares).zip(&shift) {
            let (sum, sq, d) = (sum as f64, sq as f64, d as f64);
            s1 += sum / 255.0 + p * d;
            s2 += sq / (255.0 * 255.0) + 2.0 * d * sum / 255.0 + p * d * d;
        }
        let mean = s1 / n;
        let var = (s2 / n - mean * mean).max(0.0);
        (mean as f32, var.sqrt().max(MIN_STD) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two-pass definition over the shifted values, in f64.
    fn direct(pixels: &[u8], shift: [f32; 3]) -> (f64, f64) {
        let plane = pixels.len() / 3;
        let x: Vec<f64> = (0..pixels.len())
            .map(|i| pixels[i] as f64 / 255.0 + shift[i / plane] as f64)
            .collect();
        let m = x.iter().sum::<f64>() / x.len() as f64;
        let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64;
        (m, v.sqrt())
    }

    #[test]
    fn mean_and_std_by_hand_and_against_the_two_pass_definition() {
        // Channel values 0 and 255 alike: mean 0.5, standard deviation 0.5.
        let s = Sums::planar(&[0, 255, 0, 255, 0, 255]);
        assert_eq!(s.mean_std([0.0; 3]), (0.5, 0.5));
        // Shifted by 0.1 in every channel: the mean moves, the deviation does not.
        let (m, d) = s.mean_std([0.1; 3]);
        assert!((m - 0.6).abs() < 1e-7 && (d - 0.5).abs() < 1e-7, "{m} {d}");
        let px: Vec<u8> = (0..3 * 37).map(|i| (i * 89 % 256) as u8).collect();
        let shift = [0.03, -0.05, 0.01];
        let (m, d) = Sums::planar(&px).mean_std(shift);
        let (wm, wd) = direct(&px, shift);
        assert!((m as f64 - wm).abs() < 1e-6 && (d as f64 - wd).abs() < 1e-6);
    }

    #[test]
    fn a_flat_image_divides_by_the_floor_and_interleaved_matches_planar() {
        let s = Sums::planar(&[7; 12]);
        assert_eq!(s.mean_std([0.0; 3]).1, MIN_STD as f32);
        let px: Vec<u8> = (0..30).map(|i| (i * 31 % 256) as u8).collect();
        // The same 10 pixels interleaved, in rows of 4, 4 and 2 pixels.
        let rgb: Vec<u8> = (0..30).map(|i| px[(i % 3) * 10 + i / 3]).collect();
        let rows = [&rgb[..12], &rgb[12..24], &rgb[24..]];
        assert_eq!(Sums::interleaved(rows), Sums::planar(&px));
    }

    #[test]
    fn parses_what_it_serialises() {
        for s in [Standardise::Channels, Standardise::Image] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json.trim_matches('"').parse(), Ok(s));
        }
        assert!("dataset".parse::<Standardise>().is_err());
    }
}
