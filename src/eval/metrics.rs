//! Figure 4's retrieval number: precision@k, the share of a query's neighbours with its class.

/// Mean over queries of the share of their neighbours with the query's label.
pub fn precision_at_k(query_labels: &[usize], neighbour_labels: &[Vec<usize>]) -> f64 {
    assert_eq!(
        query_labels.len(),
        neighbour_labels.len(),
        "query labels and neighbour label lists"
    );
    let per: Vec<f64> = query_labels
        .iter()
        .zip(neighbour_labels)
        .map(|(q, ns)| ns.iter().filter(|l| *l == q).count() as f64 / ns.len().max(1) as f64)
        .collect();
    per.iter().sum::<f64>() / per.len().max(1) as f64
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
    #[should_panic(expected = "labels")]
    fn precision_needs_a_neighbour_list_per_query() {
        precision_at_k(&[1, 0, 2], &[vec![1], vec![0]]);
    }
}
