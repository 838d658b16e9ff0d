//! Instance discrimination's loss on the host (`score`, and `score_centred` as training uses
//! it): every engine downloads the head's output, scores it here against the step's other
//! views and the memory bank, and uploads its gradient.

use rayon::prelude::*;

use super::normalise;

/// One step's loss on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Per-view loss: −log softmax of its own row among the rows scored.
    pub losses: Vec<f32>,
    /// Views whose own row scored higher than every negative.
    pub correct: usize,
    /// dL/dz ([n, dim]) of the loss summed over the views and divided by `per`.
    pub dz: Vec<f32>,
    /// The normalised embeddings ([n, dim]), for the bank's update.
    pub v: Vec<f32>,
}

/// The loss of head outputs `z` ([n, dim]) of views of images `own` (their bank rows), at
/// `temperature`, summed over the views and divided by `per`. A view's positive is the other
/// view of its image in the step (SimCLR), or its image's bank row when the step has none
/// (Wu et al.); its negatives are the step's views of other images and the bank rows
/// `negatives` (every row when None) of other images. Scores are cosine similarities / τ.
pub fn score(
    z: &[f32],
    own: &[u32],
    bank: &[f32],
    negatives: Option<&[u32]>,
    temperature: f32,
    per: f32,
) -> Scored {
    let (n, dim) = (own.len(), z.len() / own.len().max(1));
    let rows: Vec<u32> = match negatives {
        Some(neg) => neg.to_vec(),
        None => (0..(bank.len() / dim) as u32).collect(),
    };
    let mut v = z.to_vec();
    let lens: Vec<f32> = v.chunks_mut(dim).map(normalise).collect();
    let inv_t = 1.0 / temperature;
    let view = |a: usize| &v[a * dim..(a + 1) * dim];
    let row = |r: u32| &bank[r as usize * dim..(r as usize + 1) * dim];
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>() * inv_t;
    let pair = |a: usize| (0..n).find(|&b| b != a && own[b] == own[a]);
    // Per view: its loss, whether it was right, dL/dv from its own loss, and the weights
    // (p_ab − [b is its positive]) / τ its loss puts on the other views b.
    let one = |a: usize| {
        let pos = pair(a);
        let batch: Vec<(usize, f32)> = (0..n)
            .filter(|&b| b != a && (own[b] != own[a] || Some(b) == pos))
            .map(|b| (b, dot(view(a), view(b))))
            .collect();
        let mut banked: Vec<(u32, f32)> = rows
            .iter()
            .filter(|&&r| r != own[a])
            .map(|&r| (r, dot(view(a), row(r))))
            .collect();
        let positive = match pos {
            Some(b) => batch.iter().find(|s| s.0 == b).expect("paired").1,
            None => {
                banked.push((own[a], dot(view(a), row(own[a]))));
                banked.last().expect("pushed").1
            }
        };
        let all = batch.iter().map(|s| s.1).chain(banked.iter().map(|s| s.1));
        let max = all.clone().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = all.map(|s| (s - max).exp()).sum();
        let loss = max + sum.ln() - positive;
        let others_below = batch
            .iter()
            .filter(|s| Some(s.0) != pos)
            .map(|s| s.1)
            .chain(
                banked
                    .iter()
                    .filter(|s| pos.is_some() || s.0 != own[a])
                    .map(|s| s.1),
            )
            .all(|s| s < positive);
        let mut dv = vec![0f32; dim];
        for &(r, s) in &banked {
            let w = ((s - max).exp() / sum - f32::from(pos.is_none() && r == own[a])) * inv_t;
            dv.iter_mut().zip(row(r)).for_each(|(d, m)| *d += w * m);
        }
        let mut cross = Vec::with_capacity(batch.len());
        for &(b, s) in &batch {
            let w = ((s - max).exp() / sum - f32::from(Some(b) == pos)) * inv_t;
            dv.iter_mut().zip(view(b)).for_each(|(d, x)| *d += w * x);
            cross.push((b, w));
        }
        (loss, others_below, dv, cross)
    };
    let each: Vec<_> = (0..n).into_par_iter().map(one).collect();
    let mut dv: Vec<f32> = each.iter().flat_map(|e| e.2.iter().copied()).collect();
    for (a, e) in each.iter().enumerate() {
        for &(b, w) in &e.3 {
            let va = view(a);
            dv[b * dim..(b + 1) * dim]
                .iter_mut()
                .zip(va)
                .for_each(|(d, x)| *d += w * x);
        }
    }
    // Through v = z/|z|: dz = (dv − v (v·dv)) / |z|.
    let mut dz = dv;
    for ((d, vi), len) in dz.chunks_mut(dim).zip(v.chunks(dim)).zip(&lens) {
        let vd: f32 = vi.iter().zip(d.iter()).map(|(a, b)| a * b).sum();
        d.iter_mut()
            .zip(vi)
            .for_each(|(d, x)| *d = (*d - x * vd) / len.max(1e-12) / per);
    }
    Scored {
        losses: each.iter().map(|e| e.0).collect(),
        correct: each.iter().filter(|e| e.1).count(),
        dz,
        v,
    }
}

/// The columns' mean of `x` ([n, dim]) subtracted from each row.
pub(super) fn centre(x: &mut [f32], dim: usize) {
    let n = (x.len() / dim).max(1) as f32;
    let mut mean = vec![0f32; dim];
    x.chunks(dim)
        .for_each(|r| mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / n));
    x.chunks_mut(dim)
        .for_each(|r| r.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m));
}

/// `score` of the head outputs centred on their mean over the views scored together (as a
/// batch normalisation without scale): the ReLU features under the head share a large common
/// part, and without this every image's embedding points the same way and the bank collapses
/// (Fashion-MNIST: every held-out view nearest one row after one epoch). The gradient goes
/// back through the centring. A single view is scored as it is.
pub fn score_centred(
    z: &[f32],
    own: &[u32],
    bank: &[f32],
    negatives: Option<&[u32]>,
    temperature: f32,
    per: f32,
) -> Scored {
    if own.len() < 2 {
        return score(z, own, bank, negatives, temperature, per);
    }
    let dim = z.len() / own.len();
    let mut zc = z.to_vec();
    centre(&mut zc, dim);
    let mut s = score(&zc, own, bank, negatives, temperature, per);
    centre(&mut s.dz, dim);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::instance::random_bank;

    /// A 3-row bank in 2-d: rows at 0°, 90° and 180°.
    const BANK: [f32; 6] = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
    #[test]
    fn the_loss_by_hand_on_a_three_image_bank() {
        // z = (2, 0): v = (1, 0), scores 1/τ, 0, −1/τ with τ = 0.5 → 2, 0, −2.
        let s = score(&[2.0, 0.0], &[0], &BANK, None, 0.5, 1.0);
        let want = -(2f32.exp() / (2f32.exp() + 1.0 + (-2f32).exp())).ln();
        assert!(
            (s.losses[0] - want).abs() < 1e-6,
            "{} vs {want}",
            s.losses[0]
        );
        assert_eq!((s.correct, s.v.clone()), (1, vec![1.0, 0.0]));
        // dL/dv = (Σ p_j m_j − m_0)/τ; its part along v is removed and divided by |z| = 2.
        let sum = 2f32.exp() + 1.0 + (-2f32).exp();
        let dv = [
            (2f32.exp() / sum - 1.0 - (-2f32).exp() / sum) / 0.5,
            (1.0 / sum) / 0.5,
        ];
        assert!(
            (s.dz[0] - 0.0).abs() < 1e-6 && (s.dz[1] - dv[1] / 2.0).abs() < 1e-6,
            "{:?} {dv:?}",
            s.dz
        );
        // Image 1 at (1, 0) is wrong: its own row scores 0 < 2.
        let wrong = score(&[2.0, 0.0], &[1], &BANK, None, 0.5, 1.0);
        assert_eq!(wrong.correct, 0);
        assert!((wrong.losses[0] - sum.ln()).abs() < 1e-5);
        // Negatives drawn for a step: the own row among them counts once.
        let drawn = score(&[2.0, 0.0], &[0], &BANK, Some(&[0, 2, 2]), 0.5, 1.0);
        let want = -(2f32.exp() / (2f32.exp() + 2.0 * (-2f32).exp())).ln();
        assert!((drawn.losses[0] - want).abs() < 1e-6);
    }

    #[test]
    fn two_views_of_an_image_are_each_other_s_positive() {
        // Both views at (1, 0), image 0: each one's positive is the other (score 2), its
        // negatives the rows of other images (0 and −2); its own row is not scored.
        let s = score(&[1.0, 0.0, 1.0, 0.0], &[0, 0], &BANK, None, 0.5, 1.0);
        let want = -2.0 + (2f32.exp() + 1.0 + (-2f32).exp()).ln();
        assert!(
            s.losses.iter().all(|l| (l - want).abs() < 1e-6),
            "{:?} vs {want}",
            s.losses
        );
        assert_eq!(s.correct, 2);
        // A view of image 1 beside them is their negative, and they are its.
        let three = score(
            &[1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
            &[0, 0, 1],
            &BANK,
            None,
            0.5,
            1.0,
        );
        let want = -2.0 + (2f32.exp() + 2.0 * 1.0 + (-2f32).exp()).ln();
        assert!((three.losses[0] - want).abs() < 1e-6, "{:?}", three.losses);
        // The third has no pair: its positive is its bank row (0, 1), score 2.
        let want = -2.0 + (2f32.exp() + 2.0 + 1.0 + 1.0).ln();
        assert!((three.losses[2] - want).abs() < 1e-6, "{:?}", three.losses);
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let (dim, rows) = (5, 7);
        let bank = random_bank(rows, dim, 3);
        let z = crate::train::engine::random(3 * dim, 9);
        let own = [4, 0, 4];
        let neg = [1u32, 4, 6, 2];
        type Scorer = fn(&[f32], &[u32], &[f32], Option<&[u32]>, f32, f32) -> Scored;
        let scorers: [Scorer; 2] = [score, score_centred];
        for (negatives, f) in [
            (None, scorers[0]),
            (Some(&neg[..]), scorers[0]),
            (Some(&neg[..]), scorers[1]),
        ] {
            let s = f(&z, &own, &bank, negatives, 0.2, 3.0);
            let total = |z: &[f32]| -> f64 {
                let s = f(z, &own, &bank, negatives, 0.2, 3.0);
                s.losses.iter().map(|&l| l as f64).sum::<f64>() / 3.0
            };
            for i in 0..z.len() {
                let eps = 1e-3;
                let (mut plus, mut minus) = (z.clone(), z.clone());
                plus[i] += eps;
                minus[i] -= eps;
                let num = (total(&plus) - total(&minus)) / (2.0 * eps as f64);
                assert!(
                    (num - s.dz[i] as f64).abs() < 2e-3 * num.abs().max(1.0),
                    "{negatives:?} z[{i}]: numeric {num} vs {}",
                    s.dz[i]
                );
            }
        }
    }

    #[test]
    fn centring_removes_what_the_views_share() {
        // Two views sharing (10, 10): centred, they are (1, 0) and (−1, 0).
        let z = [11.0, 10.0, 9.0, 10.0];
        let s = score_centred(&z, &[0, 2], &BANK, None, 0.5, 1.0);
        assert_eq!(s.v, vec![1.0, 0.0, -1.0, 0.0]);
        assert_eq!(s.correct, 2);
        let plain = score(&z, &[0, 2], &BANK, None, 0.5, 1.0);
        assert_eq!(plain.correct, 0, "uncentred, both point at (1, 1)");
        // The gradient of a shift shared by every view is zero.
        let sum: Vec<f32> = (0..2).map(|d| s.dz[d] + s.dz[2 + d]).collect();
        assert!(sum.iter().all(|g| g.abs() < 1e-6), "{sum:?}");
    }
}
