//! Matrix products through the `gemm` crates (as candle uses; only the f32 kernels are built), on row-major storage viewed as
//! possibly transposed matrices: the CPU engine's layers and exact k-NN's distances.

/// A logical rows × cols matrix over row-major storage, optionally transposed.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    trans: bool,
}

impl<'a> Mat<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            trans: false,
        }
    }
    /// The transpose of a row-major `stored_rows` × `stored_cols` matrix.
    pub fn t(data: &'a [f32], stored_rows: usize, stored_cols: usize) -> Self {
        Mat {
            data,
            rows: stored_cols,
            cols: stored_rows,
            trans: true,
        }
    }
    fn strides(&self) -> (isize, isize) {
        if self.trans {
            (1, self.rows as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

/// c [a.rows × b.cols] = (acc ? c : 0) + a · b.
pub fn matmul(a: Mat, b: Mat, c: &mut [f32], acc: bool, parallel: bool) {
    assert_eq!(a.cols, b.rows);
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(c.len() >= m * n && a.data.len() >= m * k && b.data.len() >= k * n);
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let par = if parallel {
        gemm_common::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm_common::Parallelism::None
    };
    // SAFETY: the asserts above bound every index gemm touches by the slices' lengths.
    unsafe {
        gemm_f32::gemm::f32::get_gemm_fn()(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            acc,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Dot products of every row of `a` [n, dim] with every row of `b` [m, dim]: [n, m].
pub fn dot_rows(a: &[f32], b: &[f32], dim: usize) -> Vec<f32> {
    let (n, m) = (a.len() / dim, b.len() / dim);
    let mut out = vec![0.0; n * m];
    matmul(
        Mat::new(a, n, dim),
        Mat::t(b, m, dim),
        &mut out,
        false,
        true,
    );
    out
}
