//! Exact Euclidean nearest neighbours: the ground truth that the HNSW graph, Figure 4 and the
//! recall figures are checked against, and the order every search reports in (nearest first,
//! ties by the lower id).

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::util::matmul::dot_rows_into;

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

/// The `k` nearest of `d`, sorted (`d` is left reordered).
fn k_smallest(d: &mut [(usize, f32)], k: usize) -> Vec<(usize, f32)> {
    let k = k.min(d.len());
    if k == 0 {
        return Vec::new();
    }
    d.select_nth_unstable_by(k - 1, nearer);
    let mut top = d[..k].to_vec();
    top.sort_by(nearer);
    top
}

/// Exact k nearest rows of `base` for each row of `queries` (both [n, dim]): (row, distance).
/// Distances come from ‖q‖² + ‖b‖² − 2 q·b with the products as one matrix product a block of
/// 256 queries at a time. The products' block and each thread's row of distances are reused:
/// allocated afresh (61 MB a block and 1 MB a query against 60,000 rows), clearing their new
/// pages was a fifth of `fc7 eval figure4`.
pub fn exact_knn(queries: &[f32], base: &[f32], dim: usize, k: usize) -> Vec<Vec<(usize, f32)>> {
    let norms = |v: &[f32]| {
        v.chunks(dim)
            .map(|r| r.iter().map(|x| x * x).sum::<f32>())
            .collect::<Vec<_>>()
    };
    let bn = norms(base);
    let m = bn.len();
    let mut dots = Vec::new();
    let mut out = Vec::new();
    for chunk in queries.chunks(256 * dim) {
        dot_rows_into(chunk, base, dim, &mut dots); // [≤256, m]
        let qn = norms(chunk);
        let rows: Vec<Vec<(usize, f32)>> = dots
            .par_chunks(m.max(1))
            .zip(qn.par_iter())
            .map_init(Vec::new, |d, (row, q)| {
                d.clear();
                d.extend(
                    row.iter()
                        .zip(&bn)
                        .enumerate()
                        .map(|(i, (dot, b))| (i, (q + b - 2.0 * dot).max(0.0).sqrt())),
                );
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

    /// 300 queries (two blocks of products, rows of distances reused across queries and
    /// blocks) against 50 rows: each query's neighbours are those of its distances one by one.
    #[test]
    fn every_query_of_several_blocks_gets_its_own_neighbours() {
        let dim = 3;
        let base: Vec<f32> = (0..50 * dim)
            .map(|i| ((i * 37) % 23) as f32 * 0.5)
            .collect();
        let queries: Vec<f32> = (0..300 * dim).map(|i| ((i * 11) % 17) as f32).collect();
        let got = exact_knn(&queries, &base, dim, 4);
        assert_eq!(got.len(), 300);
        for (q, hits) in queries.chunks(dim).zip(&got) {
            let mut want: Vec<(usize, f32)> = base
                .chunks(dim)
                .enumerate()
                .map(|(i, r)| (i, l2(q, r)))
                .collect();
            want.sort_by(nearer);
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-3 * (1.0 + b);
            for (i, ((gi, gd), (wi, wd))) in hits.iter().zip(&want).enumerate() {
                // equal distances may come in either order only where they are equal
                assert!(close(*gd, *wd), "query {q:?}, hit {i}: {gd} vs {wd}");
                assert!(gi == wi || close(l2(q, &base[gi * dim..][..dim]), *wd));
            }
            assert_eq!(hits.len(), 4);
        }
    }

    #[test]
    fn l2_and_ties_by_hand() {
        assert_eq!(l2(&[0.0, 3.0], &[4.0, 0.0]), 5.0);
        let mut hits = vec![(7i64, 1.0), (3, 2.0), (5, 1.0), (7, 1.0)];
        sort_hits(&mut hits);
        assert_eq!(hits, [(5, 1.0), (7, 1.0), (3, 2.0)]);
        assert_eq!(k_smallest(&mut [(0, 2.0), (1, 0.5)], 0), []);
    }
}
