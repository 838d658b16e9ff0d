//! Renders Figure 4: one row per query image, the query then its nearest training images, each
//! thumbnail framed green when its class matches the query's and red when it does not, with the
//! class name and distance under it. As a PNG (text from an 8×8 bitmap font, so no font files
//! are needed) and as a self-contained HTML page (thumbnails inlined, every name escaped).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use image::{imageops, Rgb, RgbImage};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::util::draw::draw_text;

pub const THUMB: u32 = 96;
const BORDER: u32 = 4;
const GAP: u32 = 8;
const TEXT_H: u32 = 24;
pub const CELL_W: u32 = THUMB + 2 * BORDER + GAP;
pub const CELL_H: u32 = THUMB + 2 * BORDER + TEXT_H + GAP;
pub const MATCH: Rgb<u8> = Rgb([30, 160, 60]);
pub const MISMATCH: Rgb<u8> = Rgb([210, 40, 40]);
pub const QUERY: Rgb<u8> = Rgb([60, 60, 60]);

#[derive(Clone, Debug, Serialize)]
pub struct Tile {
    pub path: PathBuf,
    pub class: String,
    /// None for the query itself.
    pub distance: Option<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub query: Tile,
    pub neighbours: Vec<Tile>,
}

fn thumbnail(path: &Path) -> RgbImage {
    match crate::imaging::decode_file(path) {
        Ok(img) => imageops::resize(&img, THUMB, THUMB, imageops::FilterType::Triangle),
        Err(_) => RgbImage::from_pixel(THUMB, THUMB, Rgb([200, 200, 200])),
    }
}

fn frame_colour(row: &Row, tile: &Tile) -> Rgb<u8> {
    match tile.distance {
        None => QUERY,
        Some(_) if tile.class == row.query.class => MATCH,
        Some(_) => MISMATCH,
    }
}

/// Every tile's thumbnail, row by row (query first): decoded once for both renderings.
pub fn thumbnails(rows: &[Row]) -> Vec<Vec<RgbImage>> {
    rows.iter()
        .map(|r| {
            std::iter::once(&r.query)
                .chain(&r.neighbours)
                .map(|t| thumbnail(&t.path))
                .collect()
        })
        .collect()
}

/// The grid as an image: rows × (1 + k) cells.
pub fn render_png(rows: &[Row], thumbs: &[Vec<RgbImage>]) -> RgbImage {
    let cols = 1 + rows.iter().map(|r| r.neighbours.len()).max().unwrap_or(0) as u32;
    let mut img = RgbImage::from_pixel(
        cols * CELL_W + GAP,
        rows.len() as u32 * CELL_H + GAP,
        Rgb([255, 255, 255]),
    );
    for (r, row) in rows.iter().enumerate() {
        for (c, tile) in std::iter::once(&row.query)
            .chain(&row.neighbours)
            .enumerate()
        {
            let (x, y) = (GAP + c as u32 * CELL_W, GAP + r as u32 * CELL_H);
            let colour = frame_colour(row, tile);
            for yy in 0..THUMB + 2 * BORDER {
                for xx in 0..THUMB + 2 * BORDER {
                    img.put_pixel(x + xx, y + yy, colour);
                }
            }
            imageops::replace(
                &mut img,
                &thumbs[r][c],
                (x + BORDER) as i64,
                (y + BORDER) as i64,
            );
            let ty = y + THUMB + 2 * BORDER + 2;
            draw_text(
                &mut img,
                x,
                ty,
                &tile.class,
                THUMB + 2 * BORDER,
                Rgb([20, 20, 20]),
            );
            let label = tile
                .distance
                .map_or("query".to_string(), |d| format!("{d:.2}"));
            draw_text(
                &mut img,
                x,
                ty + 11,
                &label,
                THUMB + 2 * BORDER,
                Rgb([90, 90, 90]),
            );
        }
    }
    img
}

pub fn escape_html(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn data_uri(img: &RgbImage) -> String {
    let png = crate::imaging::png::png_bytes(img).expect("PNG encoding in memory");
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// The same grid as one HTML file with the thumbnails inlined.
pub fn render_html(rows: &[Row], thumbs: &[Vec<RgbImage>], title: &str) -> String {
    let mut h = format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n<style>body{{font-family:sans-serif}}td{{vertical-align:top;text-align:center;font-size:12px;padding:4px}}img{{border:4px solid}}</style>\n<h1>{t}</h1>\n<table>\n",
        t = escape_html(title)
    );
    for (row, row_thumbs) in rows.iter().zip(thumbs) {
        h.push_str("<tr>");
        for (tile, thumb) in std::iter::once(&row.query)
            .chain(&row.neighbours)
            .zip(row_thumbs)
        {
            let Rgb([r, g, b]) = frame_colour(row, tile);
            let name = escape_html(&tile.path.to_string_lossy());
            let label = tile
                .distance
                .map_or("query".to_string(), |d| format!("{d:.3}"));
            h.push_str(&format!(
                "<td><img src=\"{}\" width=\"{THUMB}\" height=\"{THUMB}\" style=\"border-color:rgb({r},{g},{b})\" title=\"{name}\" alt=\"{name}\"><br>{}<br>{}</td>",
                data_uri(thumb),
                escape_html(&tile.class),
                label
            ));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    h
}

/// Writes the grid as a PNG file, atomically.
pub fn write_png(path: &Path, rows: &[Row], thumbs: &[Vec<RgbImage>]) -> Result<()> {
    let bytes = crate::imaging::png::png_bytes(&render_png(rows, thumbs))
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    crate::util::fs::atomic_write(path, &bytes)
}

/// Writes the grid as one HTML file (thumbnails inlined), atomically.
pub fn write_html(path: &Path, rows: &[Row], thumbs: &[Vec<RgbImage>], title: &str) -> Result<()> {
    crate::util::fs::atomic_write(path, render_html(rows, thumbs, title).as_bytes())
}

pub fn write_all(dir: &Path, rows: &[Row], title: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let thumbs = thumbnails(rows);
    write_png(&dir.join("figure4.png"), rows, &thumbs)?;
    write_html(&dir.join("figure4.html"), rows, &thumbs, title)?;
    let json = serde_json::to_vec_pretty(&serde_json::json!({ "rows": rows })).expect("json");
    crate::util::fs::atomic_write(&dir.join("figure4.json"), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(class: &str, d: Option<f32>) -> Tile {
        Tile {
            path: PathBuf::from("/nonexistent.png"),
            class: class.into(),
            distance: d,
        }
    }

    /// A JPEG whose EXIF says "turn 90° clockwise" (orientation 6) is drawn turned, as the
    /// model sees it: 40 × 20, red left half, blue right half, so red on top once turned.
    #[test]
    fn thumbnails_follow_the_exif_orientation() {
        let img = RgbImage::from_fn(40, 20, |x, _| {
            Rgb(if x < 20 { [220, 20, 20] } else { [20, 20, 220] })
        });
        let exif = b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
        let mut bytes = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 95);
        enc.add_app_segment(1, exif).unwrap();
        enc.encode(img.as_raw(), 40, 20, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("turned.jpg");
        std::fs::write(&path, bytes).unwrap();
        let t = thumbnail(&path);
        let (top, bottom) = (*t.get_pixel(8, 8), *t.get_pixel(8, THUMB - 8));
        assert!(top[0] > 150 && top[2] < 100, "top {top:?}");
        assert!(bottom[2] > 150 && bottom[0] < 100, "bottom {bottom:?}");
    }

    #[test]
    fn frames_are_coloured_by_class_agreement() {
        let rows = vec![Row {
            query: tile("cat", None),
            neighbours: vec![tile("cat", Some(1.0)), tile("dog", Some(2.0))],
        }];
        let img = render_png(&rows, &thumbnails(&rows));
        assert_eq!(
            (img.width(), img.height()),
            (3 * CELL_W + GAP, CELL_H + GAP)
        );
        let at = |col: u32| *img.get_pixel(GAP + col * CELL_W + 1, GAP + 1);
        assert_eq!((at(0), at(1), at(2)), (QUERY, MATCH, MISMATCH));
    }

    #[test]
    fn html_escapes_names() {
        let mut t = tile("a<b", Some(0.5));
        t.path = PathBuf::from("/x/<script>alert(1)</script>.png");
        let rows = [Row {
            query: tile("q", None),
            neighbours: vec![t],
        }];
        let html = render_html(&rows, &thumbnails(&rows), "t");
        assert!(!html.contains("<script>"));
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;.png") && html.contains("a&lt;b")
        );
    }

    #[test]
    fn text_is_drawn() {
        let mut img = RgbImage::from_pixel(40, 10, Rgb([255, 255, 255]));
        draw_text(&mut img, 0, 0, "A1", 40, Rgb([0, 0, 0]));
        let dark = img.pixels().filter(|p| p.0 == [0, 0, 0]).count();
        assert!(dark > 10 && dark < 64, "{dark}");
    }
}
