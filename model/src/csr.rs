//! Compressed sparse row matrices of implicit feedback.
//!
//! The user × item matrix and its transpose are the only sparse structures ALS
//! needs. Rows hold sorted, de-duplicated column indices (`u32`: 4 billion items
//! is plenty and halves the index memory) and `f32` values.

use thiserror::Error;

/// A triplet refers to a row or column outside the declared shape.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("entry ({row}, {col}) is outside a {n_rows} x {n_cols} matrix")]
pub struct OutOfBounds {
    pub row: u32,
    pub col: u32,
    pub n_rows: usize,
    pub n_cols: usize,
}

/// A CSR matrix with `f32` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    n_rows: usize,
    n_cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    data: Vec<f32>,
}

impl Csr {
    /// Builds a matrix from `(row, col, value)` triplets; duplicate positions are
    /// summed. Runs a counting sort, so the result does not depend on input order
    /// beyond the order in which duplicates are summed.
    pub fn from_triplets(n_rows: usize, n_cols: usize, triplets: &[(u32, u32, f32)]) -> Result<Self, OutOfBounds> {
        let mut counts = vec![0usize; n_rows + 1];
        for &(r, c, _) in triplets {
            if r as usize >= n_rows || c as usize >= n_cols {
                return Err(OutOfBounds { row: r, col: c, n_rows, n_cols });
            }
            counts[r as usize + 1] += 1;
        }
        for i in 0..n_rows {
            counts[i + 1] += counts[i];
        }
        let mut next = counts.clone();
        let mut cols = vec![0u32; triplets.len()];
        let mut vals = vec![0f32; triplets.len()];
        for &(r, c, v) in triplets {
            let slot = &mut next[r as usize];
            cols[*slot] = c;
            vals[*slot] = v;
            *slot += 1;
        }
        // Sort each row by column and merge duplicates.
        let mut indptr = Vec::with_capacity(n_rows + 1);
        let mut indices = Vec::with_capacity(triplets.len());
        let mut data = Vec::with_capacity(triplets.len());
        indptr.push(0);
        let mut row_buf: Vec<(u32, f32)> = Vec::new();
        for r in 0..n_rows {
            row_buf.clear();
            row_buf.extend((counts[r]..counts[r + 1]).map(|k| (cols[k], vals[k])));
            row_buf.sort_by_key(|&(c, _)| c);
            for &(c, v) in &row_buf {
                if indices.len() > indptr[r] && *indices.last().unwrap_or(&u32::MAX) == c {
                    if let Some(last) = data.last_mut() {
                        *last += v;
                    }
                } else {
                    indices.push(c);
                    data.push(v);
                }
            }
            indptr.push(indices.len());
        }
        Ok(Csr { n_rows, n_cols, indptr, indices, data })
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns.
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Column indices and values of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// Number of entries in row `r`.
    pub fn row_len(&self, r: usize) -> usize {
        self.indptr[r + 1] - self.indptr[r]
    }

    /// The value at `(r, c)`, if stored.
    pub fn get(&self, r: usize, c: u32) -> Option<f32> {
        let (cols, vals) = self.row(r);
        cols.binary_search(&c).ok().map(|k| vals[k])
    }

    /// A copy with every value multiplied by `s` (confidence = α · r).
    pub fn scaled(&self, s: f32) -> Csr {
        let mut out = self.clone();
        out.data.iter_mut().for_each(|v| *v *= s);
        out
    }

    /// The transpose (item × user from user × item), rows sorted.
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 0..self.n_cols {
            counts[i + 1] += counts[i];
        }
        let mut next = counts.clone();
        let mut indices = vec![0u32; self.nnz()];
        let mut data = vec![0f32; self.nnz()];
        // Visiting rows in order keeps every transposed row sorted.
        for r in 0..self.n_rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let slot = &mut next[c as usize];
                indices[*slot] = r as u32;
                data[*slot] = v;
                *slot += 1;
            }
        }
        Csr { n_rows: self.n_cols, n_cols: self.n_rows, indptr: counts, indices, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_sums_duplicates_and_transposes() {
        let m = Csr::from_triplets(3, 4, &[(2, 1, 1.0), (0, 3, 2.0), (0, 1, 1.0), (0, 3, 0.5)]).unwrap();
        assert_eq!(m.nnz(), 3);
        assert_eq!(m.row(0), (&[1u32, 3][..], &[1.0f32, 2.5][..]));
        assert_eq!(m.row_len(1), 0);
        assert_eq!(m.get(2, 1), Some(1.0));
        assert_eq!(m.get(2, 0), None);
        let t = m.transpose();
        assert_eq!((t.n_rows(), t.n_cols()), (4, 3));
        assert_eq!(t.row(1), (&[0u32, 2][..], &[1.0f32, 1.0][..]));
        assert_eq!(t.row(3), (&[0u32][..], &[2.5f32][..]));
        assert_eq!(t.transpose(), m);
    }

    #[test]
    fn rejects_out_of_bounds() {
        let err = Csr::from_triplets(2, 2, &[(0, 2, 1.0)]).unwrap_err();
        assert_eq!(err.col, 2);
    }
}
