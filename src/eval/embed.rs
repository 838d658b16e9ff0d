//! Figure 4's embedding of one labelled set: each file decoded once on every core into its
//! raw-pixel vector (the baseline) and, where no index already holds its vector, the network's
//! centre-crop input; with logits, also each image's 10 crops, 16 images to an ONNX Runtime run.
//! Files that cannot be read or decoded are left out and listed with why.

use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;

use crate::error::Result;
use crate::imaging::{self, View};
use crate::infer::embed::Embedder;
use crate::search::index::Index;

use super::PIXEL_SIDE;

/// Embedded images of one set: fc7 [n, dim], logits [n, classes] (centre and 10-crop), pixels.
pub(super) struct Embedded {
    pub(super) files: Vec<(PathBuf, usize)>,
    pub(super) fc7: Vec<f32>,
    pub(super) pixels: Vec<f32>,
    pub(super) logits: Vec<f32>,
    pub(super) logits10: Vec<f32>,
    /// Files left out, with why (`Error::reason`).
    pub(super) skipped: Vec<(PathBuf, String)>,
}

fn ten_crop_tensors(square: &RgbImage, crop: u32, pre: &crate::model::Preprocess) -> Vec<f32> {
    let side = square.width();
    let per = (3 * crop * crop) as usize;
    let mut out = vec![0.0; 10 * per];
    for (i, v) in crate::train::augment::ten_crops(side as usize, crop as usize)
        .iter()
        .enumerate()
    {
        let mut view =
            image::imageops::crop_imm(square, v.x as u32, v.y as u32, crop, crop).to_image();
        if v.flip {
            view = image::imageops::flip_horizontal(&view);
        }
        imaging::to_chw(&view, pre, &mut out[i * per..(i + 1) * per]);
    }
    out
}

/// Images whose 10 crops go through the network in one run: enough rows (160) that the fully
/// connected layers' weights are read once for many of them (one run per image read fc7's 64 MB
/// for ten rows), few enough that the paper network's inputs stay under 100 MB.
const TEN_CROP_IMAGES: usize = 16;

/// One decoded file of a chunk, prepared on a worker thread: the square image (for its 10
/// crops), the centre crop's network input (where the network must run on it) and the
/// raw-pixel vector of the baseline.
struct Prepared {
    square: RgbImage,
    centre: Option<Vec<f32>>,
    pixels: Vec<f32>,
}

fn prepare(path: &Path, pre: &crate::model::Preprocess, network: bool) -> Result<Prepared> {
    let view = View {
        resize: pre.resize,
        crop: pre.resize,
    };
    let d = imaging::prepare_file(path, view, imaging::DEFAULT_MAX_PIXELS)?;
    let (crop, off) = (pre.crop, (pre.resize - pre.crop) / 2);
    let centre = image::imageops::crop_imm(&d.rgb, off, off, crop, crop).to_image();
    let small = image::imageops::resize(
        &centre,
        PIXEL_SIDE,
        PIXEL_SIDE,
        image::imageops::FilterType::Triangle,
    );
    Ok(Prepared {
        centre: network.then(|| imaging::to_tensor(&centre, pre)),
        pixels: small.as_raw().iter().map(|&v| v as f32).collect(),
        square: d.rgb,
    })
}

/// Embeds `files` in batches; with `with_logits`, also centre and 10-crop logits. Vectors an
/// index already holds for unchanged files are taken from it. Decoding, cropping and the pixel
/// vectors run on every core; files that cannot be read or decoded are left out and listed.
pub(super) fn embed_all(
    e: &mut Embedder,
    files: Vec<(PathBuf, usize)>,
    with_logits: bool,
    known: Option<&dyn Index>,
) -> Result<Embedded> {
    let pre = e.manifest.preprocess.clone();
    let mut em = Embedded {
        files: Vec::new(),
        fc7: vec![],
        pixels: vec![],
        logits: vec![],
        logits10: vec![],
        skipped: vec![],
    };
    for chunk in files.chunks(256) {
        let stored: Vec<Option<Vec<f32>>> = chunk
            .iter()
            .map(|f| {
                known
                    .filter(|_| !with_logits)
                    .and_then(|c| stored_vector(c, &f.0))
            })
            .collect();
        let prepared = prepare_chunk(chunk, &stored, &pre, &mut em.skipped)?;
        let input: Vec<f32> = prepared
            .iter()
            .filter_map(|(_, p)| p.centre.as_deref())
            .flatten()
            .copied()
            .collect();
        let out = match input.len() / (3 * pre.crop * pre.crop) as usize {
            0 => None,
            n => Some(e.run(&input, n, with_logits)?),
        };
        let mut fresh = out.iter().flat_map(|o| o.fc7.chunks(e.dim()));
        for (i, p) in &prepared {
            match &stored[*i] {
                Some(v) => em.fc7.extend_from_slice(v),
                None => em
                    .fc7
                    .extend_from_slice(fresh.next().expect("one embedding per input")),
            }
            em.pixels.extend_from_slice(&p.pixels);
            em.files.push(chunk[*i].clone());
        }
        if let Some(l) = out.and_then(|o| o.logits) {
            em.logits.extend(l);
            let squares: Vec<&RgbImage> = prepared.iter().map(|(_, p)| &p.square).collect();
            em.logits10.extend(ten_crop_logits(e, &squares, &pre)?);
        }
    }
    Ok(em)
}

/// `chunk`'s files prepared in parallel (the network's input only where `stored` has no
/// vector), each with its place in `chunk`; files that cannot be read or decoded go to `skipped`.
fn prepare_chunk(
    chunk: &[(PathBuf, usize)],
    stored: &[Option<Vec<f32>>],
    pre: &crate::model::Preprocess,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Result<Vec<(usize, Prepared)>> {
    let results: Vec<Result<Prepared>> = chunk
        .par_iter()
        .zip(stored)
        .map(|(f, s)| prepare(&f.0, pre, s.is_none()))
        .collect();
    let mut prepared = Vec::with_capacity(chunk.len());
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(p) => prepared.push((i, p)),
            Err(e) if e.is_per_file() => skipped.push((chunk[i].0.clone(), e.reason())),
            Err(e) => return Err(e),
        }
    }
    Ok(prepared)
}

/// Each image's logits averaged over its 10 crops: [images, classes].
fn ten_crop_logits(
    e: &mut Embedder,
    squares: &[&RgbImage],
    pre: &crate::model::Preprocess,
) -> Result<Vec<f32>> {
    let mut avg = Vec::new();
    for group in squares.chunks(TEN_CROP_IMAGES) {
        let views: Vec<f32> = group
            .par_iter()
            .flat_map_iter(|sq| ten_crop_tensors(sq, pre.crop, pre))
            .collect();
        let l = e
            .run(&views, 10 * group.len(), true)?
            .logits
            .unwrap_or_default();
        avg.extend(average_views(&l, group.len(), 10));
    }
    Ok(avg)
}

/// Logits [images, views, classes] averaged over each image's views: [images, classes], each
/// the views' sum in view order divided by their number.
fn average_views(logits: &[f32], images: usize, views: usize) -> Vec<f32> {
    let c = logits.len() / (images * views).max(1);
    logits
        .chunks(views * c.max(1))
        .flat_map(|img| {
            (0..c).map(move |j| (0..views).map(|v| img[v * c + j]).sum::<f32>() / views as f32)
        })
        .collect()
}

fn stored_vector(c: &dyn Index, path: &Path) -> Option<Vec<f32>> {
    let abs = std::path::absolute(path).ok()?;
    let meta = std::fs::metadata(&abs).ok()?;
    c.stored(&abs, meta.len(), crate::imaging::scan::mtime_ns(&meta))
        .ok()
        .flatten()
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two images of three views and two classes, averaged by hand.
    #[test]
    fn views_average_per_image_and_class() {
        #[rustfmt::skip]
        let logits = [
            1.0, 10.0,   2.0, 20.0,   3.0, 30.0, // image 0: views 0, 1, 2
            -1.0, 0.5,   -2.0, 1.5,   0.0, 1.0,  // image 1
        ];
        assert_eq!(average_views(&logits, 2, 3), vec![2.0, 20.0, -1.0, 1.0]);
        assert!(average_views(&[], 0, 10).is_empty());
    }
}
