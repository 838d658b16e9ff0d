//! The numbers beside Figure 4: exact Euclidean k-nearest neighbours (the ground truth for
//! both the figure and HNSW recall), precision@k of class agreement, and top-1/top-5 error.

use rayon::prelude::*;

/// Mean over queries of the share of their neighbours with the query's label.
pub fn precision_at_k(query_labels: &[usize], neighbour_labels: &[Vec<usize>]) -> f64 {
    let per: Vec<f64> = query_labels
        .iter()
        .zip(neighbour_labels)
        .map(|(q, ns)| ns.iter().filter(|l| *l == q).count() as f64 / ns.len().max(1) as f64)
        .collect();
    per.iter().sum::<f64>() / per.len().max(1) as f64
}

/// Exact k nearest rows of `base` for each row of `queries` (Euclidean): (index, distance).
pub fn exact_knn(queries: &[f32], base: &[f32], dim: usize, k: usize) -> Vec<Vec<(usize, f32)>> {
    let norms = |v: &[f32]| {
        v.chunks(dim)
            .map(|r| r.iter().map(|x| x * x).sum::<f32>())
            .collect::<Vec<_>>()
    };
    let bn = norms(base);
    let mut out = Vec::new();
    for chunk in queries.chunks(256 * dim) {
        let dots = crate::train::engine::cpu::dot_rows(chunk, base, dim);
        let qn = norms(chunk);
        let rows: Vec<Vec<(usize, f32)>> = dots
            .par_chunks(bn.len())
            .zip(qn.par_iter())
            .map(|(row, q)| {
                let mut d: Vec<(usize, f32)> = row
                    .iter()
                    .zip(&bn)
                    .enumerate()
                    .map(|(i, (dot, b))| (i, (q + b - 2.0 * dot).max(0.0).sqrt()))
                    .collect();
                let k = k.min(d.len());
                d.select_nth_unstable_by(k.saturating_sub(1), |a, b| a.1.total_cmp(&b.1));
                d.truncate(k);
                d.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                d
            })
            .collect();
        out.extend(rows);
    }
    out
}

/// (top-1, top-5) error of `logits` [n, c] against `labels`.
pub fn top_errors(logits: &[f32], labels: &[usize]) -> (f64, f64) {
    let c = logits.len() / labels.len().max(1);
    let (mut e1, mut e5) = (0, 0);
    for (row, &l) in logits.chunks(c).zip(labels) {
        let better = row.iter().filter(|&&v| v > row[l]).count();
        e1 += (better >= 1) as usize;
        e5 += (better >= 5) as usize;
    }
    let n = labels.len().max(1) as f64;
    (e1 as f64 / n, e5 as f64 / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_at_k_on_a_hand_checked_case() {
        // Query 0 (class 1): neighbours 1,1,0 → 2/3; query 1 (class 0): 2,2,2 → 0; mean 1/3.
        let p = precision_at_k(&[1, 0], &[vec![1, 1, 0], vec![2, 2, 2]]);
        assert!((p - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn exact_knn_agrees_with_brute_force() {
        let base: Vec<f32> = (0..40).map(|i| ((i * 37) % 11) as f32).collect();
        let q = vec![3.0, 1.0, 4.0, 1.0];
        let got = exact_knn(&q, &base, 4, 3);
        let mut want: Vec<(usize, f32)> = base
            .chunks(4)
            .enumerate()
            .map(|(i, r)| (i, crate::search::query::l2(&q, r)))
            .collect();
        want.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        for ((gi, gd), (wi, wd)) in got[0].iter().zip(&want) {
            assert_eq!(gi, wi);
            assert!((gd - wd).abs() < 1e-3);
        }
    }

    #[test]
    fn top_errors_count_ranks() {
        let logits = [0.1, 0.9, 0.0, /* */ 0.5, 0.2, 0.3];
        assert_eq!(top_errors(&logits, &[1, 2]), (0.5, 0.0));
    }
}
