//! The fully connected layers' three products as cuBLAS SGEMMs. cuBLAS is column-major and
//! our buffers are row-major; a row-major [r, c] buffer is its column-major transpose [c, r],
//! so each product is written for the transposes (row-major C = A·B is column-major
//! Cᵀ = Bᵀ·Aᵀ). The comments give the column-major view; the tests run each configuration
//! through a plain-loop column-major GEMM and compare with the CPU engine.

use cudarc::cublas::{sys::cublasOperation_t as Op, GemmConfig};

fn cfg(
    (ta, tb): (Op, Op),
    (m, n, k): (usize, usize, usize),
    (lda, ldb, ldc): (usize, usize, usize),
) -> GemmConfig<f32> {
    let i = |v: usize| v as i32;
    GemmConfig {
        transa: ta,
        transb: tb,
        m: i(m),
        n: i(n),
        k: i(k),
        alpha: 1.0,
        lda: i(lda),
        ldb: i(ldb),
        beta: 0.0,
        ldc: i(ldc),
    }
}

/// y [n, o] = x [n, i] · wᵀ, as yᵀ [o, n] = op_T(w: [i, o]) · (x: [i, n]). A = w, B = x, C = y.
pub fn forward(n: usize, i: usize, o: usize) -> GemmConfig<f32> {
    cfg((Op::CUBLAS_OP_T, Op::CUBLAS_OP_N), (o, n, i), (i, i, o))
}

/// dw [o, i] = dyᵀ · x, as dwᵀ [i, o] = (x: [i, n]) · op_T(dy: [o, n]). A = x, B = dy, C = dw.
pub fn weight_grad(n: usize, i: usize, o: usize) -> GemmConfig<f32> {
    cfg((Op::CUBLAS_OP_N, Op::CUBLAS_OP_T), (i, o, n), (i, o, i))
}

/// dx [n, i] = dy · w, as dxᵀ [i, n] = (w: [i, o]) · (dy: [o, n]). A = w, B = dy, C = dx.
pub fn input_grad(n: usize, i: usize, o: usize) -> GemmConfig<f32> {
    cfg((Op::CUBLAS_OP_N, Op::CUBLAS_OP_N), (i, n, o), (i, o, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::cpu::ops;

    /// Reference SGEMM by the BLAS definition: C = op(A) · op(B), column-major with leading
    /// dimensions; op(A) is m×k, op(B) k×n.
    fn sgemm(c: &GemmConfig<f32>, a: &[f32], b: &[f32]) -> Vec<f32> {
        let (m, n, k) = (c.m as usize, c.n as usize, c.k as usize);
        let (lda, ldb, ldc) = (c.lda as usize, c.ldb as usize, c.ldc as usize);
        let at = |r: usize, j: usize| match c.transa {
            Op::CUBLAS_OP_N => a[r + j * lda],
            _ => a[j + r * lda],
        };
        let bt = |r: usize, j: usize| match c.transb {
            Op::CUBLAS_OP_N => b[r + j * ldb],
            _ => b[j + r * ldb],
        };
        let mut out = vec![0.0; ldc * n];
        for col in 0..n {
            for row in 0..m {
                out[row + col * ldc] = (0..k).map(|t| at(row, t) * bt(t, col)).sum();
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4)
    }

    #[test]
    fn the_three_products_match_the_cpu_engine() {
        let (n, i, o) = (3, 5, 4);
        let v = |len: usize, s: usize| -> Vec<f32> {
            (0..len)
                .map(|t| ((t * 7 + s) % 11) as f32 / 5.0 - 1.0)
                .collect()
        };
        let (x, w, dy) = (v(n * i, 1), v(o * i, 2), v(n * o, 3));
        let y = ops::linear_forward(&x, n, &w, &vec![0.0; o], o);
        let (mut dw, mut db) = (vec![0.0; o * i], vec![0.0; o]);
        let dx = ops::linear_backward(&x, n, &w, o, &dy, &mut dw, &mut db);
        assert!(close(&sgemm(&forward(n, i, o), &w, &x), &y), "forward");
        assert!(close(&sgemm(&weight_grad(n, i, o), &x, &dy), &dw), "dw");
        assert!(close(&sgemm(&input_grad(n, i, o), &w, &dy), &dx), "dx");
        // A transposition mistake is caught (square, so that it still runs).
        let (x, w) = (v(16, 4), v(16, 5));
        let y = ops::linear_forward(&x, 4, &w, &[0.0; 4], 4);
        let mut bad = forward(4, 4, 4);
        assert!(close(&sgemm(&bad, &w, &x), &y));
        bad.transa = Op::CUBLAS_OP_N;
        assert!(!close(&sgemm(&bad, &w, &x), &y));
    }
}
