//! Small dense linear algebra on the host in f64: products, QR and the singular value
//! decomposition, for adapter merging and SVD-based initialisation. Matrices are row-major.

/// A dense row-major matrix of f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Values, row-major.
    pub data: Vec<f64>,
}

impl Matrix {
    /// A zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// A matrix from row-major f32 values.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data does not match {rows}x{cols}");
        Self {
            rows,
            cols,
            data: data.iter().map(|&v| v as f64).collect(),
        }
    }

    /// The values as f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// Element `(r, c)`.
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    /// Sets element `(r, c)`.
    pub fn set(&mut self, r: usize, c: usize, value: f64) {
        self.data[r * self.cols + c] = value;
    }

    /// The transpose.
    pub fn transpose(&self) -> Self {
        let mut out = Self::zeros(self.cols, self.rows);
        for r in 0..self.rows {
            for c in 0..self.cols {
                out.set(c, r, self.at(r, c));
            }
        }
        out
    }

    /// The product `self · other`.
    pub fn matmul(&self, other: &Self) -> Self {
        assert_eq!(self.cols, other.rows, "inner dimensions differ");
        let mut out = Self::zeros(self.rows, other.cols);
        for r in 0..self.rows {
            for k in 0..self.cols {
                let a = self.at(r, k);
                if a == 0.0 {
                    continue;
                }
                let row = &other.data[k * other.cols..(k + 1) * other.cols];
                let target = &mut out.data[r * other.cols..(r + 1) * other.cols];
                for (t, &b) in target.iter_mut().zip(row) {
                    *t += a * b;
                }
            }
        }
        out
    }

    /// Multiplies every element by `factor`.
    pub fn scale(mut self, factor: f64) -> Self {
        self.data.iter_mut().for_each(|v| *v *= factor);
        self
    }

    /// The element-wise sum.
    pub fn add(mut self, other: &Self) -> Self {
        assert_eq!((self.rows, self.cols), (other.rows, other.cols), "shapes differ");
        self.data.iter_mut().zip(&other.data).for_each(|(a, b)| *a += b);
        self
    }

    /// The Frobenius norm.
    pub fn frobenius(&self) -> f64 {
        self.data.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// Columns `start..end`.
    pub fn columns(&self, start: usize, end: usize) -> Self {
        let mut out = Self::zeros(self.rows, end - start);
        for r in 0..self.rows {
            for c in start..end {
                out.set(r, c - start, self.at(r, c));
            }
        }
        out
    }

    /// Rows `start..end`.
    pub fn row_range(&self, start: usize, end: usize) -> Self {
        Self {
            rows: end - start,
            cols: self.cols,
            data: self.data[start * self.cols..end * self.cols].to_vec(),
        }
    }
}

/// The thin singular value decomposition `M = U · diag(s) · Vᵀ` with `k = min(rows, cols)`
/// singular values in decreasing order.
#[derive(Debug, Clone)]
pub struct Svd {
    /// Left singular vectors, `[rows, k]`.
    pub u: Matrix,
    /// Singular values, decreasing.
    pub s: Vec<f64>,
    /// Right singular vectors, `[cols, k]`.
    pub v: Matrix,
}

/// Computes the thin SVD by one-sided Jacobi rotations (accurate to f64 rounding; `O(m·n²)`
/// per sweep, fine for the matrices of small encoders).
pub fn svd(matrix: &Matrix) -> Svd {
    if matrix.rows < matrix.cols {
        let Svd { u, s, v } = svd(&matrix.transpose());
        return Svd { u: v, s, v: u };
    }
    let (m, n) = (matrix.rows, matrix.cols);
    // Work on columns: a holds the columns of M (n vectors of length m), v accumulates rotations.
    let mut a: Vec<Vec<f64>> = (0..n).map(|c| (0..m).map(|r| matrix.at(r, c)).collect()).collect();
    let mut v: Vec<Vec<f64>> = (0..n).map(|c| (0..n).map(|r| if r == c { 1.0 } else { 0.0 }).collect()).collect();
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let alpha: f64 = a[p].iter().map(|x| x * x).sum();
                let beta: f64 = a[q].iter().map(|x| x * x).sum();
                let gamma: f64 = a[p].iter().zip(&a[q]).map(|(x, y)| x * y).sum();
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                rotate(&mut a, p, q, c, s);
                rotate(&mut v, p, q, c, s);
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<(f64, usize)> = a.iter().enumerate().map(|(i, col)| (col.iter().map(|x| x * x).sum::<f64>().sqrt(), i)).collect();
    order.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut u = Matrix::zeros(m, n);
    let mut vm = Matrix::zeros(n, n);
    let mut s = Vec::with_capacity(n);
    for (k, &(sigma, i)) in order.iter().enumerate() {
        s.push(sigma);
        for r in 0..m {
            u.set(r, k, if sigma > 0.0 { a[i][r] / sigma } else { 0.0 });
        }
        for r in 0..n {
            vm.set(r, k, v[i][r]);
        }
    }
    Svd { u, s, v: vm }
}

fn rotate(columns: &mut [Vec<f64>], p: usize, q: usize, c: f64, s: f64) {
    let (left, right) = columns.split_at_mut(q);
    for (x, y) in left[p].iter_mut().zip(right[0].iter_mut()) {
        let (xp, yq) = (*x, *y);
        *x = c * xp - s * yq;
        *y = s * xp + c * yq;
    }
}

/// The thin QR factorisation `M = Q · R` of a matrix with `rows >= cols`, by modified
/// Gram-Schmidt with one re-orthogonalisation pass (`Q: [rows, cols]`, `R: [cols, cols]`).
pub fn qr(matrix: &Matrix) -> (Matrix, Matrix) {
    let (m, n) = (matrix.rows, matrix.cols);
    let mut q: Vec<Vec<f64>> = (0..n).map(|c| (0..m).map(|r| matrix.at(r, c)).collect()).collect();
    let mut r = Matrix::zeros(n, n);
    for j in 0..n {
        for _pass in 0..2 {
            for i in 0..j {
                let dot: f64 = q[i].iter().zip(&q[j]).map(|(a, b)| a * b).sum();
                r.set(i, j, r.at(i, j) + dot);
                let (head, tail) = q.split_at_mut(j);
                for (x, y) in tail[0].iter_mut().zip(&head[i]) {
                    *x -= dot * y;
                }
            }
        }
        let norm = q[j].iter().map(|x| x * x).sum::<f64>().sqrt();
        r.set(j, j, norm);
        if norm > 0.0 {
            q[j].iter_mut().for_each(|x| *x /= norm);
        }
    }
    let mut qm = Matrix::zeros(m, n);
    for (c, col) in q.iter().enumerate() {
        for (row, &value) in col.iter().enumerate() {
            qm.set(row, c, value);
        }
    }
    (qm, r)
}

/// The SVD of a low-rank product `B · A` (`B: [out, k]`, `A: [k, in]`, `k` small) without
/// forming it: QR of `B` and `Aᵀ`, then the SVD of the `k × k` core.
pub fn svd_of_product(b: &Matrix, a: &Matrix) -> Svd {
    let (qb, rb) = qr(b);
    let (qa, ra) = qr(&a.transpose());
    let core = svd(&rb.matmul(&ra.transpose()));
    Svd {
        u: qb.matmul(&core.u),
        s: core.s,
        v: qa.matmul(&core.v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rows: usize, cols: usize, seed: u64) -> Matrix {
        let mut state = seed;
        let data = (0..rows * cols)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
            })
            .collect();
        Matrix { rows, cols, data }
    }

    fn reconstruct(svd: &Svd, rank: usize) -> Matrix {
        let mut us = svd.u.columns(0, rank);
        for r in 0..us.rows {
            for c in 0..rank {
                us.set(r, c, us.at(r, c) * svd.s[c]);
            }
        }
        us.matmul(&svd.v.columns(0, rank).transpose())
    }

    #[test]
    fn svd_reconstructs_tall_and_wide_matrices() {
        for (rows, cols) in [(7, 4), (4, 7), (5, 5)] {
            let m = sample(rows, cols, 3);
            let svd = svd(&m);
            let k = rows.min(cols);
            let error = reconstruct(&svd, k).add(&m.clone().scale(-1.0)).frobenius();
            assert!(error < 1e-10, "{rows}x{cols}: reconstruction error {error}");
            assert!(svd.s.windows(2).all(|w| w[0] >= w[1]), "singular values not sorted");
            let gram = svd.v.transpose().matmul(&svd.v);
            for i in 0..k {
                assert!((gram.at(i, i) - 1.0).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn svd_of_product_matches_direct_svd() {
        let b = sample(9, 3, 5);
        let a = sample(3, 6, 7);
        let direct = svd(&b.matmul(&a));
        let product = svd_of_product(&b, &a);
        for k in 0..3 {
            assert!((direct.s[k] - product.s[k]).abs() < 1e-10);
        }
        let error = reconstruct(&product, 3).add(&b.matmul(&a).scale(-1.0)).frobenius();
        assert!(error < 1e-10, "reconstruction error {error}");
    }
}
