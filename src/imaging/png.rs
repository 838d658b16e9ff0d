//! Writing PNGs (the training plot, Figure 4, generated datasets) through the PNG encoder alone.
//! `save` and `write_to` dispatch over every format `image` is built with, which compiled the
//! TIFF, WebP, GIF, BMP and JPEG encoders into fc7 once per writer type.

use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageBuffer, ImageEncoder, PixelWithColorType};

use crate::error::{Error, Result};

fn encode(raw: &[u8], width: u32, height: u32, colour: ExtendedColorType) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(raw, width, height, colour)
        .map_err(|e| Error::Invalid(format!("PNG encoding: {e}")))?;
    Ok(out)
}

/// `img` (8-bit grey or colour) as a PNG file's bytes.
pub fn png_bytes<P: PixelWithColorType<Subpixel = u8>>(
    img: &ImageBuffer<P, Vec<u8>>,
) -> Result<Vec<u8>> {
    encode(img.as_raw(), img.width(), img.height(), P::COLOR_TYPE)
}

/// Writes `img` to `path` as PNG.
pub fn save_png<P: PixelWithColorType<Subpixel = u8>>(
    path: &Path,
    img: &ImageBuffer<P, Vec<u8>>,
) -> Result<()> {
    std::fs::write(path, png_bytes(img)?).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_and_colour_come_back_as_written() {
        let rgb =
            image::RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 9]));
        let back = image::load_from_memory(&png_bytes(&rgb).unwrap()).unwrap();
        assert_eq!(back.as_rgb8(), Some(&rgb));
        let grey = image::GrayImage::from_fn(4, 6, |x, y| image::Luma([(x * 6 + y) as u8]));
        let back = image::load_from_memory(&png_bytes(&grey).unwrap()).unwrap();
        assert_eq!(back.as_luma8(), Some(&grey));
    }
}
