//! Classification error as the paper reports it: top-1 and top-5 (the label is not among the
//! five highest scores), for training's validation and Figure 4's numbers alike; and the
//! retrieval precision that exemplar training reports on a folder of class folders.

/// (top-1, top-5) error of `scores` [n, c] against `labels` [n]. A label's rank is the number
/// of classes scoring strictly higher, so ties count in the label's favour.
pub fn top_errors(scores: &[f32], labels: &[usize]) -> (f64, f64) {
    assert!(
        scores.len().is_multiple_of(labels.len().max(1))
            && (labels.is_empty() == scores.is_empty()),
        "{} scores for {} labels",
        scores.len(),
        labels.len()
    );
    if labels.is_empty() {
        return (0.0, 0.0);
    }
    let c = scores.len() / labels.len();
    let (mut e1, mut e5) = (0, 0);
    for (row, &l) in scores.chunks(c).zip(labels) {
        let better = row.iter().filter(|&&v| v > row[l]).count();
        e1 += (better >= 1) as usize;
        e5 += (better >= 5) as usize;
    }
    let n = labels.len() as f64;
    (e1 as f64 / n, e5 as f64 / n)
}

/// Mean share of each vector's `k` nearest others (Euclidean, ties by the lower row) in its
/// own group: exemplar training's retrieval score on a folder of class folders.
pub fn leave_one_out_precision(vectors: &[f32], dim: usize, groups: &[usize], k: usize) -> f32 {
    let n = groups.len();
    assert_eq!(
        vectors.len(),
        n * dim,
        "{} values for {n} vectors",
        vectors.len()
    );
    if n < 2 || k == 0 {
        return 0.0;
    }
    let dots = crate::util::matmul::dot_rows(vectors, vectors, dim);
    let k = k.min(n - 1);
    let mut hits = 0usize;
    for i in 0..n {
        // ‖a − b‖² = ‖a‖² + ‖b‖² − 2a·b; ‖a‖² is the same for every candidate of row i.
        let mut d: Vec<(f32, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (dots[j * n + j] - 2.0 * dots[i * n + j], j))
            .collect();
        d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        hits += d[..k]
            .iter()
            .filter(|(_, j)| groups[*j] == groups[i])
            .count();
    }
    hits as f32 / (n * k) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_one_out_precision_by_hand() {
        // On a line: 0, 1, 2 in group 0; 10, 11 in group 1; 5 in group 1.
        let v = [0.0, 1.0, 2.0, 10.0, 11.0, 5.0];
        let g = [0, 0, 0, 1, 1, 1];
        // k = 2: rows 0–2 find their own pair (2/2 each); 10 → 11, 5 (2/2); 11 → 10, 5
        // (2/2); 5 → 2 (0), then 1 at 4 against 10 at 5 → 1 (0): 0/2. 10 of 12.
        assert_eq!(leave_one_out_precision(&v, 1, &g, 2), 10.0 / 12.0);
        assert_eq!(leave_one_out_precision(&v, 1, &[0, 0, 0, 0, 0, 0], 2), 1.0);
    }

    #[test]
    fn top_errors_by_hand_with_seven_classes() {
        // Row 0: label 0 is the best → right in top-1 and top-5.
        // Row 1: label 6 has 3 higher scores → top-1 error, within top-5.
        // Row 2: label 1 has 5 higher scores (rank 6 of 7) → wrong in both.
        // Row 3: label 2 has exactly 4 higher scores (rank 5) → still within top-5.
        #[rustfmt::skip]
        let scores = [
            9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0,
            1.0, 2.0, 3.0, 9.0, 8.0, 7.0, 6.0,
            9.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0,
            5.0, 6.0, 3.0, 7.0, 8.0, 0.0, 1.0,
        ];
        assert_eq!(top_errors(&scores, &[0, 6, 1, 2]), (0.75, 0.25));
    }

    #[test]
    #[should_panic(expected = "scores for")]
    fn scores_and_labels_must_agree_in_length() {
        top_errors(&[0.1, 0.2, 0.3], &[0, 1]);
    }
}
