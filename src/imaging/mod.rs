//! Turns an image file into the network's input, the same way for the indexer and the trainer:
//! decode (JPEG, PNG, WebP, GIF, TIFF, BMP), apply EXIF orientation, flatten any colour model to
//! 8-bit RGB (alpha composited on white), resize the shorter side and take the centre crop.
//!
//! Large JPEGs are decoded at a reduced scale (m/8) in the DCT domain by libjpeg-turbo (built
//! from source into the binary), and resizing is an integer convolution with AVX2 kernels
//! (`resize`), so decoding keeps up with inference. `reference_view` is the slow,
//! obviously-correct path kept to check the fast one.

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::error::{Error, Result};
use crate::model::Preprocess;

/// Default cap on decoded pixels (width × height), checked from the header before decoding.
pub const DEFAULT_MAX_PIXELS: u64 = 256_000_000;

/// The view taken of an image: shorter side resized to `resize`, centre `crop` × `crop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub resize: u32,
    pub crop: u32,
}

impl From<&Preprocess> for View {
    fn from(p: &Preprocess) -> Self {
        View {
            resize: p.resize,
            crop: p.crop,
        }
    }
}

/// A decoded, cropped image and the size of the (oriented) original.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub rgb: RgbImage,
    pub width: u32,
    pub height: u32,
}

fn decode_err(path: &Path, e: impl std::fmt::Display) -> Error {
    let reason = e.to_string();
    Error::Decode {
        path: path.to_path_buf(),
        reason: reason.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Reads `path` and prepares it. See [`prepare_bytes`].
pub fn prepare_file(path: &Path, view: View, max_pixels: u64) -> Result<Prepared> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    prepare_bytes(&bytes, path, view, max_pixels)
}

/// Sniffs the format from the content (not the extension), checks the pixel cap from the header,
/// decodes and returns the centre crop of `view`. `path` is only used in errors.
pub fn prepare_bytes(bytes: &[u8], path: &Path, view: View, max_pixels: u64) -> Result<Prepared> {
    if bytes.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    let format = sniff(bytes).ok_or_else(|| Error::NotImage {
        path: path.to_path_buf(),
    })?;
    let (w, h) = reader(bytes, format, max_pixels)
        .into_dimensions()
        .map_err(|e| decode_err(path, e))?;
    if w as u64 * h as u64 > max_pixels {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            width: w,
            height: h,
            limit: max_pixels,
        });
    }
    if w == 0 || h == 0 {
        return Err(decode_err(path, "zero width or height"));
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(decode_err(path, "truncated JPEG (no end-of-image marker)"));
    }
    let img = match format {
        ImageFormat::Jpeg => {
            turbo_jpeg(bytes, view.resize).or_else(|_| decode_full(bytes, format, max_pixels))
        }
        _ => decode_full(bytes, format, max_pixels),
    }
    .map_err(|e| decode_err(path, e))?;
    let (width, height) = (img.width(), img.height());
    let rgb = centre_view(&img, view).map_err(|e| decode_err(path, e))?;
    Ok(Prepared { rgb, width, height })
}

/// The image formats fc7 reads, recognised by their magic bytes.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    use ImageFormat::*;
    image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, Jpeg | Png | WebP | Gif | Tiff | Bmp))
}

fn reader(bytes: &[u8], format: ImageFormat, max_pixels: u64) -> ImageReader<Cursor<&[u8]>> {
    let mut r = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    // 16-bit RGBA is the widest pixel we accept: 8 bytes each.
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    r.limits(limits);
    r
}

mod jpeg;
pub mod png;
mod resize;
pub mod scan;
mod tensor;

pub use jpeg::jpeg_is_complete;
use jpeg::turbo_jpeg;
pub use tensor::{input_from_bytes, input_from_file, to_chw, to_tensor, Input};

type DecodeResult = std::result::Result<DynamicImage, String>;

/// Decodes at full size through `image`, oriented, as 8-bit RGB.
fn decode_full(bytes: &[u8], format: ImageFormat, max_pixels: u64) -> DecodeResult {
    let mut decoder = reader(bytes, format, max_pixels)
        .into_decoder()
        .map_err(|e| e.to_string())?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    img.apply_orientation(orientation);
    Ok(DynamicImage::ImageRgb8(to_rgb8(img)))
}

/// Flattens any colour model to 8-bit RGB; transparent pixels are composited on white.
fn to_rgb8(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as u32;
        for c in 0..3 {
            o[c] = ((p[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// The centre square of `view` in source coordinates: the image resized so its shorter side
/// is `view.resize` (other side rounded), then cropped at whole-pixel offsets, mapped back
/// onto the source. Whole offsets make this the same crop the trainer takes from its cache.
fn crop_box(w: u32, h: u32, view: View) -> (f64, f64, f64) {
    let scale = w.min(h) as f64 / view.resize as f64;
    let (rw, rh) = (
        (w as f64 / scale).round() as u32,
        (h as f64 / scale).round() as u32,
    );
    let (ox, oy) = (
        rw.saturating_sub(view.crop) / 2,
        rh.saturating_sub(view.crop) / 2,
    );
    (
        ox as f64 * scale,
        oy as f64 * scale,
        view.crop as f64 * scale,
    )
}

/// Resizes and crops in one pass (`resize`: a bilinear, antialiased convolution in integers).
fn centre_view(img: &DynamicImage, view: View) -> std::result::Result<RgbImage, String> {
    let src = img.as_rgb8().ok_or("internal: expected RGB8")?;
    let (w, h) = src.dimensions();
    let (left, top, side) = crop_box(w, h, view);
    let rgb = resize::Rgb {
        w,
        h,
        px: src.as_raw(),
    };
    let out = resize::crop_resize(&rgb, left, top, side, view.crop)
        .ok_or_else(|| format!("crop {left},{top} +{side} outside the {w}x{h} image"))?;
    RgbImage::from_raw(view.crop, view.crop, out).ok_or_else(|| "resize buffer".to_string())
}

/// Reads and decodes `path` whole, oriented, as 8-bit RGB (a thumbnail's source). Through the
/// same reader as every other decode, so `image`'s decoders are compiled into fc7 once.
pub fn decode_file(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes, path)
}

/// [`decode_file`] of bytes already read from `path` (named in errors).
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let format = sniff(bytes).ok_or_else(|| Error::NotImage {
        path: path.to_path_buf(),
    })?;
    let img = decode_full(bytes, format, DEFAULT_MAX_PIXELS).map_err(|e| decode_err(path, e))?;
    Ok(img.into_rgb8())
}

/// The plain path: full decode with `image`, `imageops::resize` (triangle filter) of the whole
/// image, then a crop. Slow; used by tests and the benchmark to check the fast path.
pub fn reference_view(bytes: &[u8], view: View) -> Result<RgbImage> {
    let img = decode_bytes(bytes, Path::new("<reference>"))?;
    let (w, h) = img.dimensions();
    let m = w.min(h) as f64;
    let (rw, rh) = (
        (w as f64 * view.resize as f64 / m).round() as u32,
        (h as f64 * view.resize as f64 / m).round() as u32,
    );
    let resized = image::imageops::resize(&img, rw, rh, image::imageops::FilterType::Triangle);
    let (x, y) = ((rw - view.crop) / 2, (rh - view.crop) / 2);
    Ok(image::imageops::crop_imm(&resized, x, y, view.crop, view.crop).to_image())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Standardise;

    pub(crate) fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x + y) % 256) as u8,
            ])
        })
    }

    /// Mean absolute difference of two images' samples (0..255).
    pub(crate) fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        let (a, b) = (a.as_raw(), b.as_raw());
        assert_eq!(a.len(), b.len(), "images of different sizes");
        let sum: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum();
        sum / a.len() as f64
    }

    pub(crate) fn encode(img: &DynamicImage, f: ImageFormat) -> Vec<u8> {
        let mut c = Cursor::new(Vec::new());
        img.write_to(&mut c, f).unwrap();
        c.into_inner()
    }

    #[test]
    fn crop_box_is_centred_on_the_shorter_side() {
        let (l, t, s) = crop_box(
            512,
            256,
            View {
                resize: 256,
                crop: 224,
            },
        );
        assert_eq!((l, t, s), (144.0, 16.0, 224.0));
    }

    #[test]
    fn view_has_the_crop_size_and_keeps_colour() {
        let img =
            DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 200, image::Rgb([10, 200, 30])));
        let bytes = encode(&img, ImageFormat::Png);
        let p = prepare_bytes(
            &bytes,
            Path::new("x.png"),
            View {
                resize: 256,
                crop: 224,
            },
            DEFAULT_MAX_PIXELS,
        )
        .unwrap();
        assert_eq!(
            (p.width, p.height, p.rgb.width(), p.rgb.height()),
            (300, 200, 224, 224)
        );
        assert!(p.rgb.pixels().all(|q| q.0 == [10, 200, 30]));
    }

    #[test]
    fn alpha_is_composited_on_white() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            8,
            8,
            image::Rgba([0, 0, 0, 0]),
        ));
        let p = prepare_bytes(
            &encode(&img, ImageFormat::Png),
            Path::new("a.png"),
            View { resize: 8, crop: 8 },
            1 << 20,
        )
        .unwrap();
        assert!(p.rgb.pixels().all(|q| q.0 == [255, 255, 255]));
    }

    #[test]
    fn bad_inputs_name_their_reason() {
        let v = View {
            resize: 16,
            crop: 16,
        };
        let p = Path::new("f");
        assert!(matches!(
            prepare_bytes(b"", p, v, 100),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            prepare_bytes(b"hello world", p, v, 100),
            Err(Error::NotImage { .. })
        ));
        let big = encode(&DynamicImage::ImageRgb8(gradient(20, 20)), ImageFormat::Png);
        assert!(matches!(
            prepare_bytes(&big, p, v, 100),
            Err(Error::TooLarge { width: 20, .. })
        ));
        let mut truncated = encode(
            &DynamicImage::ImageRgb8(gradient(64, 64)),
            ImageFormat::Jpeg,
        );
        truncated.truncate(truncated.len() / 3);
        let e = prepare_bytes(&truncated, p, v, 1 << 20);
        assert!(matches!(e, Err(Error::Decode { .. })), "{e:?}");
    }

    #[test]
    fn scaled_jpeg_path_agrees_with_the_reference() {
        let img = DynamicImage::ImageRgb8(gradient(1600, 1200));
        let bytes = encode(&img, ImageFormat::Jpeg);
        let view = View {
            resize: 256,
            crop: 224,
        };
        let fast = prepare_bytes(&bytes, Path::new("g.jpg"), view, DEFAULT_MAX_PIXELS)
            .unwrap()
            .rgb;
        let slow = reference_view(&bytes, view).unwrap();
        let diff = mean_abs_diff(&fast, &slow);
        assert!(diff < 2.0, "mean abs difference {diff}");
    }

    #[test]
    fn chw_normalises_per_channel() {
        let img = RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 51]));
        let pre = Preprocess {
            resize: 2,
            crop: 2,
            mean: [0.5, 0.0, 0.2],
            std: [0.5, 1.0, 0.1],
            scale: 255.0,
            channel_order: "RGB".into(),
            standardise: Standardise::Channels,
        };
        let mut out = vec![0.0; 6];
        to_chw(&img, &pre, &mut out);
        let want = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-5, "{out:?}");
        }
    }

    #[test]
    fn chw_standardised_per_image_is_the_same_for_a_brighter_copy() {
        // Values 0 and 204 in every channel: mean 0.4, standard deviation 0.4 → −1 and 1.
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([204 * x as u8; 3]));
        let pre = Preprocess {
            standardise: Standardise::Image,
            ..Preprocess::imagenet(2)
        };
        let mut out = vec![0.0; 6];
        to_chw(&img, &pre, &mut out);
        for (o, w) in out.iter().zip([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
        // The same image at 3/4 of the exposure (0 and 153) gives the same input.
        let dim = RgbImage::from_fn(2, 1, |x, _| image::Rgb([153 * x as u8; 3]));
        let mut again = vec![0.0; 6];
        to_chw(&dim, &pre, &mut again);
        for (a, o) in again.iter().zip(&out) {
            assert!((a - o).abs() < 1e-6, "{again:?}");
        }
    }
}
