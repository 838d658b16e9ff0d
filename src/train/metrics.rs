//! Classification error as the paper reports it: top-1 and top-5 (the label is not among the
//! five highest scores), for training's validation and Figure 4's numbers alike.

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

#[cfg(test)]
mod tests {
    use super::*;

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
