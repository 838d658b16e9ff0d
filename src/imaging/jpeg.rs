//! JPEG specifics: whether a file holds its end-of-image marker (decoders silently grey out a
//! truncated scan), the EXIF chunk, and decoding at a reduced DCT scale with libjpeg-turbo
//! (m/8; CMYK files come out as CMYK and are converted here). libjpeg-turbo was measured 1.6×
//! faster than pure-Rust jpeg-decoder at 1/8 on a 12 MP photo (BENCHMARKS.md), so it is the
//! one JPEG path; `image`'s decoder remains the full-size fallback and the tests' reference.

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};

use super::DecodeResult;

/// Walks a JPEG's marker structure from the start (skipping segment payloads, so an EXIF
/// thumbnail's end marker is not mistaken for the image's) and reports whether the main image's
/// end-of-image marker is there. Decoders fill a truncated scan with grey instead of failing;
/// data after the end marker (motion-photo trailers) is allowed.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            // Entropy-coded data: jump to the next marker candidate.
            match memchr::memchr(0xFF, &bytes[i..]) {
                Some(k) => i += k,
                None => return false,
            }
            continue;
        }
        match bytes[i + 1] {
            0xD9 => return true,
            0xFF | 0x00 | 0x01 | 0xD0..=0xD7 => i += if bytes[i + 1] == 0xFF { 1 } else { 2 },
            _ => {
                if i + 3 >= bytes.len() {
                    return false;
                }
                i += 2 + u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
            }
        }
    }
    false
}

/// The EXIF chunk (from its TIFF header) of a JPEG's APP1 segment, found by walking the markers.
fn jpeg_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        if marker == 0xDA || marker == 0xD9 {
            return None;
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        let payload = bytes.get(i + 4..i + 2 + len)?;
        if marker == 0xE1 && payload.starts_with(b"Exif\0\0") {
            return Some(&payload[6..]);
        }
        i += 2 + len;
    }
    None
}

/// Decodes a JPEG (RGB, grey or CMYK) with libjpeg-turbo at the smallest m/8 scale whose shorter side is
/// still at least `shorter`, then applies the EXIF orientation.
pub(super) fn turbo_jpeg(bytes: &[u8], shorter: u32) -> DecodeResult {
    let mut d = turbojpeg::Decompressor::new().map_err(|e| e.to_string())?;
    let header = d.read_header(bytes).map_err(|e| e.to_string())?;
    let cmyk = matches!(
        header.colorspace,
        turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
    );
    let m = header.width.min(header.height);
    let factor = (1..=8)
        .map(|num| turbojpeg::ScalingFactor::new(num, 8))
        .find(|f| f.scale(m) >= shorter as usize)
        .unwrap_or(turbojpeg::ScalingFactor::ONE);
    d.set_scaling_factor(factor).map_err(|e| e.to_string())?;
    let (w, h) = (factor.scale(header.width), factor.scale(header.height));
    let (format, channels) = match cmyk {
        true => (turbojpeg::PixelFormat::CMYK, 4),
        false => (turbojpeg::PixelFormat::RGB, 3),
    };
    let mut pixels = vec![0u8; w * h * channels];
    let out = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: w,
        pitch: w * channels,
        height: h,
        format,
    };
    d.decompress(bytes, out).map_err(|e| e.to_string())?;
    if cmyk {
        pixels = pixels.chunks_exact(4).flat_map(cmyk_to_rgb).collect();
    }
    let img = RgbImage::from_raw(w as u32, h as u32, pixels)
        .ok_or("libjpeg-turbo returned a short buffer")?;
    let mut img = DynamicImage::ImageRgb8(img);
    if let Some(o) = jpeg_exif(bytes).and_then(Orientation::from_exif_chunk) {
        img.apply_orientation(o);
    }
    Ok(img)
}

/// Naive CMYK → RGB (no colour profile), as libjpeg-based viewers do without one. The values
/// are as Adobe writes them and libjpeg-turbo returns them: inverted (255 = no ink).
fn cmyk_to_rgb(p: &[u8]) -> [u8; 3] {
    let k = p[3] as u32;
    let f = |c: u8| (c as u32 * k / 255) as u8;
    [f(p[0]), f(p[1]), f(p[2])]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{encode, gradient, mean_abs_diff};
    use super::super::{centre_view, View};
    use super::*;
    use image::ImageFormat;

    #[test]
    fn jpeg_completeness_follows_the_marker_structure() {
        let full = encode(
            &DynamicImage::ImageRgb8(gradient(96, 64)),
            ImageFormat::Jpeg,
        );
        assert!(jpeg_is_complete(&full));
        let mut trailer = full.clone();
        trailer.extend_from_slice(b"motion photo trailer \xff\x00");
        assert!(jpeg_is_complete(&trailer));
        for cut in [full.len() - 2, full.len() / 2, 40] {
            assert!(!jpeg_is_complete(&full[..cut]), "cut at {cut}");
        }
        // An end marker inside a segment payload (an EXIF thumbnail) does not count.
        let mut with_app = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00];
        with_app.extend_from_slice(&full[2..full.len() / 2]);
        assert!(!jpeg_is_complete(&with_app));
    }

    #[test]
    fn scaled_decode_agrees_with_the_full_size_reference() {
        let img = DynamicImage::ImageRgb8(gradient(1024, 768));
        let bytes = encode(&img, ImageFormat::Jpeg);
        let a = turbo_jpeg(&bytes, 256).unwrap();
        assert_eq!(
            (a.width(), a.height()),
            (384, 288),
            "3/8 is the smallest scale keeping 256"
        );
        let view = View {
            resize: 256,
            crop: 224,
        };
        let reference = super::super::reference_view(&bytes, view).unwrap();
        let diff = mean_abs_diff(&centre_view(&a, view).unwrap(), &reference);
        assert!(diff < 2.0, "mean abs difference {diff}");
    }

    #[test]
    fn cmyk_comes_out_as_the_same_colours() {
        let rgb = gradient(320, 240);
        // Inks without black (c = 255 − r, …), written by jpeg-encoder, an independent encoder.
        let inks: Vec<u8> = rgb
            .pixels()
            .flat_map(|p| [255 - p[0], 255 - p[1], 255 - p[2], 0])
            .collect();
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 95)
            .encode(&inks, 320, 240, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
        let view = View {
            resize: 240,
            crop: 224,
        };
        let got = centre_view(&turbo_jpeg(&bytes, 240).unwrap(), view).unwrap();
        let want = centre_view(&DynamicImage::ImageRgb8(rgb), view).unwrap();
        let diff = mean_abs_diff(&got, &want);
        assert!(diff < 6.0, "mean abs difference {diff}");
    }

    #[test]
    fn exif_chunk_is_found_before_the_scan() {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xE1, 0, 12];
        jpeg.extend_from_slice(b"Exif\0\0MM\0*");
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        assert_eq!(jpeg_exif(&jpeg), Some(&b"MM\0*"[..]));
        assert_eq!(jpeg_exif(&jpeg[..14]), None);
    }
}
