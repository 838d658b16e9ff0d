//! Thumbnails for the gallery: a centre square of each image, made once with the same decoder
//! and pixel limit as `fc7 index` and kept as a JPEG in fc7's cache, keyed by catalog id
//! (ids are never reused, and a changed file gets a new one).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::imaging::View;

/// Side of a thumbnail, in pixels.
pub const SIDE: u32 = 192;

pub struct Thumbs {
    dir: PathBuf,
}

impl Thumbs {
    /// The thumbnail folder of the index at `location` (a folder's absolute path, or a
    /// store's URL without password).
    pub fn for_index(location: &str) -> Thumbs {
        let key = crate::util::fs::sha256_hex(location.as_bytes());
        Thumbs {
            dir: crate::util::fs::cache_dir().join("thumbs").join(&key[..16]),
        }
    }

    /// The thumbnail of image `id` (at `path`) as JPEG bytes, made and cached if needed.
    pub fn get(&self, id: i64, path: &Path, max_pixels: u64) -> Result<Vec<u8>> {
        let cached = self.dir.join(format!("{id}.jpg"));
        if let Ok(b) = std::fs::read(&cached) {
            return Ok(b);
        }
        let view = View {
            resize: SIDE,
            crop: SIDE,
        };
        let img = crate::imaging::prepare_file(path, view, max_pixels)?.rgb;
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(&img)
            .map_err(|e| Error::Invalid(format!("{}: thumbnail: {e}", path.display())))?;
        // A cache that cannot be written only costs the next request the same work.
        let _ = crate::util::fs::atomic_write(&cached, &jpeg);
        Ok(jpeg)
    }
}
