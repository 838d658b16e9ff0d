//! Principal components of the indexed vectors: the projection that turns a 4096-d fc7 vector
//! into the short code the graph is built and searched on (the AlexNet paper, §6.1, suggests
//! short codes for exactly this search). Fitted by subspace iteration on a sample of rows:
//! distances between codes only depend on the subspace, not on the basis chosen inside it, so
//! an orthonormal basis of the leading subspace is all the search needs.

use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::util::matmul::{dot_rows, matmul, Mat};

/// Rows sampled for the fit; more moves the subspace little and costs linear time.
pub const FIT_ROWS: usize = 20_000;
const ITERATIONS: usize = 6;

#[derive(Clone, Debug, PartialEq)]
pub struct Pca {
    /// [dim]
    pub mean: Vec<f32>,
    /// [code_dim, dim], orthonormal rows.
    pub basis: Vec<f32>,
    pub dim: usize,
    pub code_dim: usize,
    /// Share of the sample's variance its codes keep.
    pub kept: f32,
}

/// Orthonormalises the rows of `m` ([r, dim]) in place: classical Gram-Schmidt as matrix
/// products, each row projected off the rows before it again while a projection removes more
/// than half of it (Kahan's criterion). A row that depends on the ones before ends as rounding
/// noise, which the repeated projections make orthogonal too, so the rows stay orthonormal.
fn orthonormalise(m: &mut [f32], dim: usize) {
    let r = m.len() / dim;
    let unit = |row: &mut [f32]| {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= n.max(1e-30));
        n
    };
    for i in 0..r {
        let (done, rest) = m.split_at_mut(i * dim);
        let row = &mut rest[..dim];
        unit(row);
        if i == 0 {
            continue;
        }
        // Twice is enough for independent rows; a dependent one needs a few more passes.
        for _ in 0..8 {
            // −(row · done): [1, i]
            let p: Vec<f32> = dot_rows(row, done, dim).iter().map(|x| -x).collect();
            matmul(Mat::new(&p, 1, i), Mat::new(done, i, dim), row, true, false);
            if unit(row) > 0.5 {
                break;
            }
        }
    }
}

fn sum_squares(v: &[f32]) -> f64 {
    v.par_iter().map(|x| (*x as f64) * (*x as f64)).sum()
}

impl Pca {
    /// Fits `code_dim` components to `rows` ([n, dim]); `code_dim` is capped at the rank the
    /// rows can have.
    pub fn fit(rows: &[f32], dim: usize, code_dim: usize, seed: u64) -> Pca {
        let n = rows.len() / dim;
        let code_dim = code_dim.min(dim).min(n.max(1));
        let mut mean = vec![0.0f64; dim];
        for r in rows.chunks(dim) {
            mean.iter_mut().zip(r).for_each(|(m, x)| *m += *x as f64);
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / n.max(1) as f64) as f32).collect();
        let mut x = rows.to_vec(); // [n, dim], centred
        x.par_chunks_mut(dim)
            .for_each(|r| r.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut basis: Vec<f32> = (0..code_dim * dim)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect(); // [code_dim, dim]
        orthonormalise(&mut basis, dim);
        for _ in 0..ITERATIONS {
            let z = dot_rows(&x, &basis, dim); // [n, code_dim]
            let mut next = vec![0.0; code_dim * dim];
            // Xᵀ Z, as rows: [code_dim, n] · [n, dim]
            matmul(
                Mat::t(&z, n, code_dim),
                Mat::new(&x, n, dim),
                &mut next,
                false,
                true,
            );
            orthonormalise(&mut next, dim);
            basis = next;
        }
        let z = dot_rows(&x, &basis, dim);
        let kept = (sum_squares(&z) / sum_squares(&x).max(1e-30)) as f32;
        Pca {
            mean,
            basis,
            dim,
            code_dim,
            kept,
        }
    }

    /// Codes of `rows` ([n, dim]): [n, code_dim].
    pub fn project(&self, rows: &[f32]) -> Vec<f32> {
        let mut centred = rows.to_vec();
        centred
            .par_chunks_mut(self.dim)
            .for_each(|r| r.iter_mut().zip(&self.mean).for_each(|(v, m)| *v -= m));
        dot_rows(&centred, &self.basis, self.dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearly parallel rows (a shared direction plus 1e-3 of noise), where one projection
    /// loses orthogonality, and a repeated row, which has nothing left after projection.
    #[test]
    fn orthonormalised_rows_are_orthonormal_and_span_the_same_rows() {
        let (r, dim) = (24, 300);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let base: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
        let mut m: Vec<f32> = (0..r * dim)
            .map(|k| base[k % dim] + 1e-3 * (rng.random::<f32>() - 0.5))
            .collect();
        m.copy_within(3 * dim..4 * dim, 9 * dim);
        let original = m.clone();
        orthonormalise(&mut m, dim);
        let gram = dot_rows(&m, &m, dim); // [r, r]
        for (k, g) in gram.iter().enumerate() {
            let want = if k / r == k % r { 1.0 } else { 0.0 };
            assert!((g - want).abs() < 1e-4, "gram[{}, {}] = {g}", k / r, k % r);
        }
        // Row j of the input lies in the span of output rows 0..=j.
        for j in [0, 5, 23] {
            let row = &original[j * dim..(j + 1) * dim];
            let c = dot_rows(row, &m[..(j + 1) * dim], dim);
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            let back: f32 = (0..dim)
                .map(|t| row[t] - (0..=j).map(|i| c[i] * m[i * dim + t]).sum::<f32>())
                .map(|d| d * d)
                .sum::<f32>()
                .sqrt();
            assert!(back < 1e-4 * norm, "row {j}: residual {back} of {norm}");
        }
    }

    /// Points spread along two known directions of a 6-d space, with a little noise elsewhere.
    #[test]
    fn finds_the_plane_the_points_lie_in_and_keeps_their_distances() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (u, v) = (
            [0.6f32, 0.8, 0.0, 0.0, 0.0, 0.0],
            [0.0f32, 0.0, 0.0, 0.0, 1.0, 0.0],
        );
        let rows: Vec<f32> = (0..500)
            .flat_map(|_| {
                let (a, b) = (rng.random::<f32>() * 10.0, rng.random::<f32>() * 4.0);
                let noise: Vec<f32> = (0..6).map(|_| (rng.random::<f32>() - 0.5) * 0.01).collect();
                (0..6)
                    .map(|i| 5.0 + a * u[i] + b * v[i] + noise[i])
                    .collect::<Vec<_>>()
            })
            .collect();
        let p = Pca::fit(&rows, 6, 2, 1);
        assert!(p.kept > 0.999, "kept {}", p.kept);
        // Each basis row lies in the plane of u and v.
        for b in p.basis.chunks(6) {
            let inside = b[0] * 0.6 + b[1] * 0.8;
            assert!((inside * inside + b[4] * b[4] - 1.0).abs() < 1e-3, "{b:?}");
        }
        let codes = p.project(&rows[..12]);
        let full = crate::search::knn::l2(&rows[..6], &rows[6..12]);
        let short = crate::search::knn::l2(&codes[..2], &codes[2..4]);
        assert!((full - short).abs() < 0.02, "{full} vs {short}");
        assert!(p.mean.iter().all(|m| m.is_finite()) && (p.mean[2] - 5.0).abs() < 0.01);
    }
}
