//! Exemplar training's views (Dosovitskiy, Springenberg, Riedmiller & Brox, NeurIPS 2014):
//! every image of an unlabelled folder is a surrogate class of its own, learnt from randomly
//! transformed views of it. This module holds the transformation families and their
//! strengths (saved in the recipe), draws views, and renders one from a cached image:
//! translation, scale, rotation and flip as one bilinear warp, then contrast, saturation, hue
//! and brightness as one affine map of RGB.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The surrogate classes and the strength of each transformation family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exemplar {
    /// Surrogate classes: every image, or this many drawn with the seed when there are more.
    pub surrogates: usize,
    /// Largest shift of a view's centre, as a fraction of the crop side.
    pub translate: f32,
    /// Scale factors are drawn log-uniformly from [1/zoom, zoom].
    pub zoom: f32,
    /// Rotations are drawn uniformly from ±rotate degrees.
    pub rotate: f32,
    /// Contrast factors (about the view's mean) log-uniformly from [1/contrast, contrast].
    pub contrast: f32,
    /// Saturation factors log-uniformly from [1/saturation, saturation].
    pub saturation: f32,
    /// Hue turns uniformly from ±hue of the colour wheel.
    pub hue: f32,
    /// Brightness shifts uniformly from ±brightness of the full range.
    pub brightness: f32,
    /// Gain (exposure) factors log-uniformly from [1/gain, gain]: every channel scaled about
    /// black, which moves the mean as a brighter photo does (contrast keeps the mean).
    #[serde(default = "no_gain")]
    pub gain: f32,
    /// Views in an epoch, at least: fewer surrogates are each shown several times an epoch,
    /// so that epochs (validation, checkpoints, the schedule) keep a useful length.
    #[serde(default = "default_epoch_views")]
    pub epoch_views: usize,
}

fn default_epoch_views() -> usize {
    8000
}

fn no_gain() -> f32 {
    1.0
}

impl Default for Exemplar {
    /// The paper's families (its §3) at about half its strengths (translation ±0.2 of the
    /// patch, scale 0.7–1.4, rotation ±20°, contrast and saturation factors up to 2, hue
    /// ±0.1): at the paper's, a network on 2 CPU cores took several epochs longer to leave
    /// chance on Fashion-MNIST (BENCHMARKS.md).
    fn default() -> Self {
        Exemplar {
            surrogates: 2000,
            translate: 0.1,
            zoom: 1.2,
            rotate: 10.0,
            contrast: 1.3,
            saturation: 1.3,
            hue: 0.03,
            brightness: 0.05,
            gain: no_gain(),
            epoch_views: default_epoch_views(),
        }
    }
}

impl Exemplar {
    /// How many times an epoch shows each of `surrogates` classes.
    pub fn passes(&self, surrogates: usize) -> usize {
        self.epoch_views.div_ceil(surrogates.max(1)).max(1)
    }

    /// Refuses strengths a view cannot be drawn from, naming the flag.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let checks = [
            (self.surrogates >= 2, "--surrogates must be at least 2"),
            (
                (0.0..=1.0).contains(&self.translate),
                "--translate must be in [0, 1]",
            ),
            ((1.0..=4.0).contains(&self.zoom), "--zoom must be in [1, 4]"),
            (
                (0.0..=180.0).contains(&self.rotate),
                "--rotate must be in [0, 180] degrees",
            ),
            (
                (1.0..=8.0).contains(&self.contrast),
                "--contrast must be in [1, 8]",
            ),
            (
                (1.0..=8.0).contains(&self.saturation),
                "--saturation must be in [1, 8]",
            ),
            (
                (0.0..=0.5).contains(&self.hue),
                "--hue must be in [0, 0.5] turns",
            ),
            (
                (0.0..=1.0).contains(&self.brightness),
                "--brightness must be in [0, 1]",
            ),
            ((1.0..=4.0).contains(&self.gain), "--gain must be in [1, 4]"),
        ];
        crate::error::first_refusal(&checks)
    }
}

/// One view: source position = centre + m · (output position − output centre), then
/// RGB ← colour · RGB + offset, with the offset's view-mean part found when rendering.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub centre: [f32; 2],
    /// Row-major 2×2: scale, rotation and flip.
    pub m: [f32; 4],
    pub contrast: f32,
    pub saturation: f32,
    /// Turns of the colour wheel.
    pub hue: f32,
    /// Fraction of the full range.
    pub brightness: f32,
    /// Factor on every channel, about black.
    pub gain: f32,
}

impl View {
    /// The whole `side` image's centre `crop`, unchanged.
    pub fn identity(side: usize) -> View {
        View {
            centre: [side as f32 / 2.0; 2],
            m: [1.0, 0.0, 0.0, 1.0],
            contrast: 1.0,
            saturation: 1.0,
            hue: 0.0,
            brightness: 0.0,
            gain: 1.0,
        }
    }
}

fn log_uniform(rng: &mut impl Rng, max: f32) -> f32 {
    if max <= 1.0 {
        return 1.0;
    }
    (rng.random_range(-1.0..=1.0f32) * max.ln()).exp()
}

fn symmetric(rng: &mut impl Rng, max: f32) -> f32 {
    if max <= 0.0 {
        return 0.0;
    }
    rng.random_range(-max..=max)
}

/// A random view of a `side` image for a `crop` input.
pub fn random_view(rng: &mut impl Rng, side: usize, crop: usize, ex: &Exemplar) -> View {
    let shift = ex.translate * crop as f32;
    let centre = [
        side as f32 / 2.0 + symmetric(rng, shift),
        side as f32 / 2.0 + symmetric(rng, shift),
    ];
    let scale = log_uniform(rng, ex.zoom);
    let angle = symmetric(rng, ex.rotate).to_radians();
    let flip = if rng.random::<bool>() { -1.0 } else { 1.0 };
    // A view `scale` times larger shows 1/scale as much: source step = R(angle) · F / scale.
    let (s, c) = angle.sin_cos();
    let m = [c * flip / scale, -s / scale, s * flip / scale, c / scale];
    View {
        centre,
        m,
        contrast: log_uniform(rng, ex.contrast),
        saturation: log_uniform(rng, ex.saturation),
        hue: symmetric(rng, ex.hue),
        brightness: symmetric(rng, ex.brightness),
        // Drawn last, and not at all for gain 1: the views of runs without it are unchanged.
        gain: log_uniform(rng, ex.gain),
    }
}

/// The validation view of surrogate `i`: drawn from a stream training never draws from, and
/// the same at every epoch, so validation measures recognition of views not trained on.
pub fn held_out_view(seed: u64, i: usize, side: usize, crop: usize, ex: &Exemplar) -> View {
    let stream = seed ^ 0x05EE_D0F4_E1D0_u64;
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(crate::train::seeds::mix(stream, u64::MAX, i as u64));
    random_view(&mut rng, side, crop, ex)
}

/// Bilinear sample of channel `c` at (x, y) in pixel units, edges repeated.
fn sample(image: &[u8], side: usize, x: f32, y: f32, c: usize) -> f32 {
    let max = (side - 1) as f32;
    let (x, y) = (x.clamp(0.0, max), y.clamp(0.0, max));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(side - 1), (y0 + 1).min(side - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize| image[(yy * side + xx) * 3 + c] as f32;
    let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
    let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
    top + (bottom - top) * fy
}

/// The 3×3 RGB map of saturation then hue (a rotation about the grey axis in YIQ space).
fn colour_matrix(saturation: f32, hue: f32) -> [[f32; 3]; 3] {
    const Y: [f32; 3] = [0.299, 0.587, 0.114];
    const TO_YIQ: [[f32; 3]; 3] = [Y, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]];
    let (s, c) = (hue * std::f32::consts::TAU).sin_cos();
    // YIQ → YIQ: keep Y, scale and rotate (I, Q).
    let inner = [
        [1.0, 0.0, 0.0],
        [0.0, c * saturation, -s * saturation],
        [0.0, s * saturation, c * saturation],
    ];
    let from_yiq = invert(TO_YIQ);
    mul(mul(from_yiq, inner), TO_YIQ)
}

fn mul(a: [[f32; 3]; 3], b: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

fn invert(a: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let cof = |i: usize, j: usize| {
        let (r0, r1) = ((i + 1) % 3, (i + 2) % 3);
        let (c0, c1) = ((j + 1) % 3, (j + 2) % 3);
        a[r0][c0] * a[r1][c1] - a[r0][c1] * a[r1][c0]
    };
    let det: f32 = (0..3).map(|j| a[0][j] * cof(0, j)).sum();
    std::array::from_fn(|i| std::array::from_fn(|j| cof(j, i) / det))
}

/// Renders `view` of `image` ([side, side, 3] u8) into `out` ([3, crop, crop] u8).
pub fn render(image: &[u8], side: usize, crop: usize, view: &View, out: &mut [u8]) {
    let plane = crop * crop;
    let half = crop as f32 / 2.0;
    let mut rgb = vec![0f32; 3 * plane];
    let mut mean = [0f32; 3];
    for y in 0..crop {
        let v = y as f32 + 0.5 - half;
        for x in 0..crop {
            let u = x as f32 + 0.5 - half;
            let sx = view.centre[0] + view.m[0] * u + view.m[1] * v - 0.5;
            let sy = view.centre[1] + view.m[2] * u + view.m[3] * v - 0.5;
            for (c, m) in mean.iter_mut().enumerate() {
                let p = sample(image, side, sx, sy, c);
                rgb[c * plane + y * crop + x] = p;
                *m += p;
            }
        }
    }
    let mean = mean.map(|m| m / plane as f32);
    // p' = g·C·(k·p + (1 − k)·mean) + 255·b, with C the saturation-and-hue matrix.
    let cm = colour_matrix(view.saturation, view.hue);
    let k = view.contrast * view.gain;
    let offset: [f32; 3] = std::array::from_fn(|i| {
        (0..3)
            .map(|j| cm[i][j] * (view.gain - k) * mean[j])
            .sum::<f32>()
            + 255.0 * view.brightness
    });
    for i in 0..plane {
        let p = [rgb[i], rgb[plane + i], rgb[2 * plane + i]];
        for c in 0..3 {
            let v = k * (cm[c][0] * p[0] + cm[c][1] * p[1] + cm[c][2] * p[2]) + offset[c];
            out[c * plane + i] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::augment::{self, Crop};

    fn gradient(side: usize) -> Vec<u8> {
        (0..side * side)
            .flat_map(|i| {
                [
                    (i * 7 % 251) as u8,
                    (i * 13 % 241) as u8,
                    (i % side * 9) as u8,
                ]
            })
            .collect()
    }

    #[test]
    fn the_identity_and_a_plain_flip_are_the_paper_crops_to_the_bit() {
        let (side, crop) = (10, 6);
        let image = gradient(side);
        let (mut warped, mut cropped) = (vec![0u8; 3 * crop * crop], vec![0u8; 3 * crop * crop]);
        for flip in [false, true] {
            let mut view = View::identity(side);
            if flip {
                view.m[0] = -1.0;
            }
            render(&image, side, crop, &view, &mut warped);
            let paper = Crop {
                x: 2,
                y: 2,
                flip,
                shift: [0.0; 3],
            };
            augment::write_crop(&image, side, crop, &paper, &mut cropped);
            assert_eq!(warped, cropped, "flip {flip}");
        }
    }

    #[test]
    fn a_quarter_turn_moves_a_corner_pixel_to_the_next_corner() {
        let side = 4;
        let mut image = vec![0u8; side * side * 3];
        image[0] = 200; // red at (x 0, y 0)
        let mut view = View::identity(side);
        // source step = R(90°): output (x, y) reads source (−v, u) about the centre.
        view.m = [0.0, -1.0, 1.0, 0.0];
        let mut out = vec![0u8; 3 * side * side];
        render(&image, side, side, &view, &mut out);
        let lit: Vec<usize> = (0..side * side).filter(|&i| out[i] > 0).collect();
        // Source (0, 0) is read where −v = u = −1.5 about the centre: output (x 0, y 3).
        assert_eq!(lit, [3 * side], "{:?}", &out[..16]);
        assert_eq!(out[3 * side], 200);
    }

    #[test]
    fn colour_maps_by_hand() {
        let side = 2;
        // Two grey levels and two colours, mean (100, 80, 70).
        let image = [[60, 60, 60], [140, 140, 140], [200, 50, 50], [0, 70, 30]].concat();
        let mut out = vec![0u8; 12];
        let view = |f: fn(&mut View)| {
            let mut v = View::identity(side);
            f(&mut v);
            v
        };
        render(&image, side, side, &view(|v| v.hue = 1.0), &mut out);
        let planar = |o: &[u8], i: usize| [o[i], o[4 + i], o[8 + i]];
        for i in 0..4 {
            let src: Vec<u8> = image[i * 3..i * 3 + 3].to_vec();
            let got = planar(&out, i);
            assert!(
                src.iter().zip(got).all(|(&a, b)| a.abs_diff(b) <= 1),
                "{i}: {src:?} {got:?}"
            );
        }
        render(&image, side, side, &view(|v| v.saturation = 0.0), &mut out);
        // Grey keeps grey; (200, 50, 50) → its luma 0.299·200 + 0.587·50 + 0.114·50 = 95.
        assert_eq!(planar(&out, 0), [60, 60, 60]);
        assert_eq!(planar(&out, 2), [95, 95, 95]);
        render(&image, side, side, &view(|v| v.contrast = 0.5), &mut out);
        // Halfway to the mean: (60, 60, 60) → (80, 70, 65).
        assert_eq!(planar(&out, 0), [80, 70, 65]);
        render(&image, side, side, &view(|v| v.brightness = 0.2), &mut out);
        assert_eq!(planar(&out, 1), [191, 191, 191]);
        assert_eq!(planar(&out, 2), [251, 101, 101]);
        // Gain scales about black, moving the mean: (60, 60, 60) → 78, (200, 50, 50) → (255, 65, 65).
        render(&image, side, side, &view(|v| v.gain = 1.3), &mut out);
        assert_eq!(planar(&out, 0), [78, 78, 78]);
        assert_eq!(planar(&out, 2), [255, 65, 65]);
        // With contrast 0.5 as well: halfway to the mean, then scaled: (80, 70, _) × 1.3.
        render(
            &image,
            side,
            side,
            &view(|v| (v.gain, v.contrast) = (1.3, 0.5)),
            &mut out,
        );
        assert_eq!(planar(&out, 0)[..2], [104, 91]);
    }

    #[test]
    fn random_views_stay_within_their_strengths_and_held_out_ones_are_fixed() {
        let ex = Exemplar {
            translate: 0.2,
            zoom: 1.4,
            contrast: 2.0,
            hue: 0.1,
            ..Exemplar::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (mut flips, n) = (0, 2000);
        for _ in 0..n {
            let v = random_view(&mut rng, 72, 63, &ex);
            let det = v.m[0] * v.m[3] - v.m[1] * v.m[2];
            let scale = 1.0 / det.abs().sqrt();
            assert!((1.0 / 1.4 - 1e-4..=1.4 + 1e-4).contains(&scale), "{scale}");
            flips += (det < 0.0) as usize;
            assert!(v
                .centre
                .iter()
                .all(|c| (c - 36.0).abs() <= 0.2 * 63.0 + 1e-4));
            assert!((0.5..=2.0).contains(&v.contrast) && v.hue.abs() <= 0.1);
        }
        assert!((800..1200).contains(&flips), "{flips} flips in {n}");
        let a = held_out_view(7, 5, 72, 63, &ex);
        assert_eq!(a, held_out_view(7, 5, 72, 63, &ex));
        assert_ne!(a, held_out_view(7, 6, 72, 63, &ex));
        // A gain is drawn last and only when asked for: the other fields are those of the same
        // seed without it, so runs without --gain keep their views.
        let lit = Exemplar {
            gain: 1.5,
            ..ex.clone()
        };
        let mut r = [5, 5].map(rand::rngs::StdRng::seed_from_u64);
        let (a, b) = (
            random_view(&mut r[0], 72, 63, &ex),
            random_view(&mut r[1], 72, 63, &lit),
        );
        assert_eq!(a.gain, 1.0);
        assert!(
            (1.0 / 1.5..=1.5).contains(&b.gain) && b.gain != 1.0,
            "{b:?}"
        );
        assert_eq!(View { gain: 1.0, ..b }, a);
    }
}
