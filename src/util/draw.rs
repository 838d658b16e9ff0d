//! Text on images (an 8×8 bitmap font, no font files), for Figure 4 and the training curves.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

/// Draws `text` with the 8×8 font, clipped to `max_w` pixels.
pub fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, max_w: u32, colour: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let cx = x + 8 * i as u32;
        if cx + 8 > x + max_w {
            break;
        }
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 1 && cx + gx < img.width() && y + (gy as u32) < img.height() {
                    img.put_pixel(cx + gx, y + gy as u32, colour);
                }
            }
        }
    }
}
