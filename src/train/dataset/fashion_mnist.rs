//! Fashion-MNIST (Xiao et al. 2017) from the Debian package `dataset-fashion-mnist`'s IDX files,
//! written as class folders of PNGs: the real data fc7 trains and is evaluated on offline.

use std::io::Read;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};

pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let bad = |why: &str| Error::Invalid(format!("{}: not an IDX file ({why})", path.display()));
    let be = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if be(0) != Some(magic as usize) {
        return Err(bad("magic"));
    }
    let dims = (magic & 0xFF) as usize;
    let shape: Vec<usize> = (0..dims)
        .map(|d| be(4 + 4 * d).ok_or_else(|| bad("header")))
        .collect::<Result<_>>()?;
    let data = bytes.split_off(4 + 4 * dims);
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad("size"));
    }
    Ok((shape, data))
}

/// Writes Fashion-MNIST as `out/{train,test}/<class>/NNNNN.png` from the Debian package's files.
/// `limit` caps the images per split (0: all). Returns (train, test) counts.
pub fn fashion_mnist(source: &Path, out: &Path, limit: usize) -> Result<(usize, usize)> {
    let file = |name: &str| source.join(name);
    if !file("train-images-idx3-ubyte.gz").is_file() {
        return Err(Error::Invalid(format!(
            "Fashion-MNIST not found in {} (install it: apt-get install dataset-fashion-mnist)",
            source.display()
        )));
    }
    let mut counts = [0; 2];
    for (k, (split, prefix)) in [("train", "train"), ("test", "t10k")].iter().enumerate() {
        let (shape, images) = read_idx(&file(&format!("{prefix}-images-idx3-ubyte.gz")), 0x0803)?;
        let (_, labels) = read_idx(&file(&format!("{prefix}-labels-idx1-ubyte.gz")), 0x0801)?;
        let (n, h, w) = (shape[0], shape[1], shape[2]);
        let n = if limit > 0 { n.min(limit) } else { n };
        for class in FASHION_MNIST_CLASSES {
            std::fs::create_dir_all(out.join(split).join(class)).map_err(|e| Error::io(out, e))?;
        }
        (0..n).into_par_iter().try_for_each(|i| {
            let img = image::GrayImage::from_raw(
                w as u32,
                h as u32,
                images[i * h * w..(i + 1) * h * w].to_vec(),
            )
            .expect("size");
            let p = out
                .join(split)
                .join(FASHION_MNIST_CLASSES[labels[i] as usize % 10])
                .join(format!("{i:05}.png"));
            crate::imaging::png::save_png(&p, &img)
        })?;
        counts[k] = n;
    }
    Ok((counts[0], counts[1]))
}
