//! Exact Euclidean nearest neighbours: the ground truth that the HNSW graph, Figure 4 and the
//! recall figures are checked against, and the order every search reports in (nearest first,
//! ties by the lower id).

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::util::matmul::dot_rows;

/// Euclidean distance between two vectors of the same length.
pub fn l2(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Nearest first, ties by the lower id.
pub fn nearer<I: Ord>(a: &(I, f32), b: &(I, f32)) -> Ordering {
    a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))
}

/// Sorts `hits` nearest first and keeps one entry per id.
pub fn sort_hits<I: Ord + Copy>(hits: &mut Vec<(I, f32)>) {
    hits.sort_by(nearer);
    hits.dedup_by_key(|h| h.0);
}

/// The `k` nearest of `d`, sorted.
fn k_smallest(mut d: Vec<(usize, f32)>, k: usize) -> Vec<(usize, f32)> {
    let k = k.min(d.len());
    if k == 0 {
        return Vec::new();
    }
    d.select_nth_unstable_by(k - 1, nearer);
    d.truncate(k);
    d.sort_by(nearer);
    d
}

/// Exact k nearest rows of `base` for each row of `queries` (both [n, dim]): (row, distance).
/// Distances come from ‖q‖² + ‖b‖² − 2 q·b with the products as one matrix product a block of
/// 256 queries at a time.
pub fn exact_knn(queries: &[f32], base: &[f32], dim: usize, k: usize) -> Vec<Vec<(usize, f32)>> {
    let norms = |v: &[f32]| {
        v.chunks(dim)
            .map(|r| r.iter().map(|x| x * x).sum::<f32>())
            .collect::<Vec<_>>()
    };
    let bn = norms(base);
    let mut out = Vec::new();
    for chunk in queries.chunks(256 * dim) {
        let dots = dot_rows(chunk, base, dim); // [256, rows of base]
        let qn = norms(chunk);
        let rows: Vec<Vec<(usize, f32)>> = dots
            .par_chunks(bn.len().max(1))
            .zip(qn.par_iter())
            .map(|(row, q)| {
                let d = row
                    .iter()
                    .zip(&bn)
                    .enumerate()
                    .map(|(i, (dot, b))| (i, (q + b - 2.0 * dot).max(0.0).sqrt()))
                    .collect();
                k_smallest(d, k)
            })
            .collect();
        out.extend(rows);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_knn_agrees_with_one_by_one_distances() {
        let base: Vec<f32> = (0..40).map(|i| ((i * 37) % 11) as f32).collect();
        let q = vec![3.0, 1.0, 4.0, 1.0];
        let got = exact_knn(&q, &base, 4, 3);
        let mut want: Vec<(usize, f32)> = base
            .chunks(4)
            .enumerate()
            .map(|(i, r)| (i, l2(&q, r)))
            .collect();
        want.sort_by(nearer);
        assert_eq!(got[0].len(), 3);
        for ((gi, gd), (wi, wd)) in got[0].iter().zip(&want) {
            assert_eq!(gi, wi);
            assert!((gd - wd).abs() < 1e-3);
        }
    }

    #[test]
    fn l2_and_ties_by_hand() {
        assert_eq!(l2(&[0.0, 3.0], &[4.0, 0.0]), 5.0);
        let mut hits = vec![(7i64, 1.0), (3, 2.0), (5, 1.0), (7, 1.0)];
        sort_hits(&mut hits);
        assert_eq!(hits, [(5, 1.0), (7, 1.0), (3, 2.0)]);
        assert_eq!(k_smallest(vec![(0, 2.0), (1, 0.5)], 0), []);
    }
}
