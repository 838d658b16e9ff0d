//! The arithmetic that turns 8-bit views into the network's input, written once for every
//! engine: each image gets its colour shift and the mean and standard deviation it is
//! standardised by (the training set's per channel, or its own under `--standardise image`),
//! and the engines apply x = (v / 255 + shift[c] − mean[c]) / std[c] element by element.

use rayon::prelude::*;

use crate::model::standardise::Sums;
use crate::model::Standardise;
use crate::train::augment::Crop;

/// The input's standardisation: the training set's per-channel statistics and which to use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalise {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub standardise: Standardise,
}

/// One image's input arithmetic, as the CUDA kernels read it (nine floats an image).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Colour {
    pub shift: [f32; 3],
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalise {
    /// Per-channel statistics, the paper's way.
    pub fn channels(mean: [f32; 3], std: [f32; 3]) -> Normalise {
        Normalise {
            mean,
            std,
            standardise: Standardise::Channels,
        }
    }

    /// Each image's arithmetic, given its colour shift and (only read for per-image
    /// standardisation) the sums of its view's pixels.
    pub fn colours(&self, shifts: &[[f32; 3]], sums: impl Fn(usize) -> Sums + Sync) -> Vec<Colour> {
        let own = |i: usize| match self.standardise {
            Standardise::Channels => (self.mean, self.std),
            Standardise::Image => {
                let (m, s) = sums(i).mean_std(shifts[i]);
                ([m; 3], [s; 3])
            }
        };
        (0..shifts.len())
            .into_par_iter()
            .map(|i| {
                let (mean, std) = own(i);
                Colour {
                    shift: shifts[i],
                    mean,
                    std,
                }
            })
            .collect()
    }

    /// [`Normalise::colours`] for planar views, [n, 3, plane].
    pub fn colours_of_planes(&self, pixels: &[u8], shifts: &[[f32; 3]]) -> Vec<Colour> {
        let per = pixels.len() / shifts.len().max(1);
        self.colours(shifts, |i| Sums::planar(&pixels[i * per..(i + 1) * per]))
    }

    /// [`Normalise::colours`] for views of whole images ([n, side, side, 3]).
    pub fn colours_of_views(
        &self,
        images: &[u8],
        side: usize,
        views: &[Crop],
        crop: usize,
    ) -> Vec<Colour> {
        let shifts: Vec<[f32; 3]> = views.iter().map(|v| v.shift).collect();
        let per = side * side * 3;
        self.colours(&shifts, |i| {
            crop_sums(&images[i * per..(i + 1) * per], side, crop, &views[i])
        })
    }
}

impl Colour {
    /// The input value of 8-bit `v` in channel `c`, rounded at every step as the kernels do.
    #[inline]
    pub fn apply(&self, v: u8, c: usize) -> f32 {
        (v as f32 / 255.0 + self.shift[c] - self.mean[c]) / self.std[c]
    }

    /// The table as the kernels take it, nine floats an image.
    pub fn flatten(colours: &[Colour]) -> Vec<f32> {
        colours
            .iter()
            .flat_map(|c| c.shift.into_iter().chain(c.mean).chain(c.std))
            .collect()
    }
}

/// Sums of the pixels a view of `image` ([side, side, 3]) takes (a mirror takes the same ones).
fn crop_sums(image: &[u8], side: usize, crop: usize, view: &Crop) -> Sums {
    Sums::interleaved((0..crop).map(|y| &image[((view.y + y) * side + view.x) * 3..][..crop * 3]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::augment::write_crop;

    #[test]
    fn a_views_sums_are_those_of_its_cut_pixels() {
        let (side, crop) = (7, 4);
        let image: Vec<u8> = (0..side * side * 3).map(|i| (i * 97 % 251) as u8).collect();
        for (x, y, flip) in [(0, 0, false), (3, 1, true), (2, 3, false)] {
            let v = Crop {
                x,
                y,
                flip,
                shift: [0.0; 3],
            };
            let mut cut = vec![0u8; 3 * crop * crop];
            write_crop(&image, side, crop, &v, &mut cut);
            assert_eq!(crop_sums(&image, side, crop, &v), Sums::planar(&cut));
        }
    }

    #[test]
    fn channels_ignore_the_pixels_and_image_uses_each_views_own() {
        let px: Vec<u8> = (0..2 * 12).map(|i| (i * 41 % 256) as u8).collect();
        let shifts = [[0.01, 0.0, -0.02], [0.0, 0.05, 0.0]];
        let ch = Normalise::channels([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]);
        for (c, s) in ch.colours_of_planes(&px, &shifts).iter().zip(shifts) {
            assert_eq!((c.shift, c.mean, c.std), (s, ch.mean, ch.std));
        }
        let im = Normalise {
            standardise: Standardise::Image,
            ..ch
        };
        for (i, c) in im.colours_of_planes(&px, &shifts).iter().enumerate() {
            let (m, s) = Sums::planar(&px[i * 12..(i + 1) * 12]).mean_std(shifts[i]);
            assert_eq!((c.shift, c.mean, c.std), (shifts[i], [m; 3], [s; 3]));
        }
    }
}
