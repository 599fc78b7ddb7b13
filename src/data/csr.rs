//! Compressed sparse rows: how count data (about 95% zeros in 10x data) are held in memory.

use crate::error::{Error, Result};

/// A `rows x cols` matrix in compressed sparse rows: row r's nonzero values are
/// `values[indptr[r]..indptr[r + 1]]`, at columns `indices[..]` of the same range, strictly
/// increasing. Built only through the checked constructors, so every instance holds these.
#[derive(Clone, Debug, PartialEq)]
pub struct CsrMatrix {
    cols: usize,
    indptr: Vec<u64>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl CsrMatrix {
    /// An empty matrix of `cols` columns, to which rows are pushed.
    pub fn with_cols(cols: usize) -> Result<Self> {
        if cols == 0 || cols > u32::MAX as usize {
            return Err(Error::shape("sparse matrix columns", "1 to 2^32 - 1", cols));
        }
        Ok(CsrMatrix {
            cols,
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        })
    }

    /// From its three arrays, checked: `indptr` starts at 0, never decreases and ends at the
    /// number of values; every row's column indices increase strictly and lie below `cols`;
    /// every value is finite.
    ///
    /// ```
    /// use elbo::data::CsrMatrix;
    /// // [[0, 2, 0], [1, 0, 3]]
    /// let m = CsrMatrix::new(3, vec![0, 1, 3], vec![1, 0, 2], vec![2.0, 1.0, 3.0])?;
    /// assert_eq!((m.rows(), m.nnz()), (2, 3));
    /// assert_eq!(m.row(1), Some((&[0u32, 2][..], &[1.0f32, 3.0][..])));
    /// assert!(CsrMatrix::new(3, vec![0, 2], vec![2, 1], vec![1.0, 1.0]).is_err()); // unsorted
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn new(cols: usize, indptr: Vec<u64>, indices: Vec<u32>, values: Vec<f32>) -> Result<Self> {
        let mut m = CsrMatrix::with_cols(cols)?;
        if indptr.first() != Some(&0)
            || indptr.last().copied() != Some(values.len() as u64)
            || indices.len() != values.len()
        {
            return Err(Error::InvalidData(format!(
                "sparse matrix: row offsets must start at 0 and end at the number of values ({}), \
                 with one column index per value ({} given)",
                values.len(),
                indices.len()
            )));
        }
        for r in 0..indptr.len() - 1 {
            let (s, e) = (indptr[r], indptr[r + 1]);
            if e < s {
                return Err(Error::InvalidData(format!(
                    "sparse matrix: row {r} ends before it starts"
                )));
            }
            m.push_row(
                &indices[s as usize..e as usize],
                &values[s as usize..e as usize],
            )
            .map_err(|e| Error::InvalidData(format!("sparse matrix row {r}: {e}")))?;
        }
        Ok(m)
    }

    /// Appends a row given by its nonzeros (`indices` strictly increasing, below `cols`;
    /// values finite). Zeros given explicitly are dropped.
    pub fn push_row(&mut self, indices: &[u32], values: &[f32]) -> Result<()> {
        if indices.len() != values.len() {
            return Err(Error::shape("row values", indices.len(), values.len()));
        }
        let mut last: Option<u32> = None;
        for (&j, &v) in indices.iter().zip(values) {
            if j as usize >= self.cols || last.is_some_and(|l| j <= l) {
                self.indices
                    .truncate(*self.indptr.last().unwrap_or(&0) as usize);
                self.values.truncate(self.indices.len());
                return Err(Error::InvalidData(format!(
                    "column {j} is out of order or past the last column ({})",
                    self.cols - 1
                )));
            }
            if !v.is_finite() {
                self.indices
                    .truncate(*self.indptr.last().unwrap_or(&0) as usize);
                self.values.truncate(self.indices.len());
                return Err(Error::InvalidData(format!(
                    "column {j} is {v}: values must be finite"
                )));
            }
            last = Some(j);
            if v != 0.0 {
                self.indices.push(j);
                self.values.push(v);
            }
        }
        self.indptr.push(self.values.len() as u64);
        Ok(())
    }

    /// Appends a dense row of width `cols`.
    pub fn push_dense_row(&mut self, row: &[f32]) -> Result<()> {
        if row.len() != self.cols {
            return Err(Error::shape("row width", self.cols, row.len()));
        }
        let start = self.values.len();
        for (j, &v) in row.iter().enumerate() {
            if !v.is_finite() {
                self.indices.truncate(start);
                self.values.truncate(start);
                return Err(Error::InvalidData(format!(
                    "column {j} is {v}: values must be finite"
                )));
            }
            if v != 0.0 {
                self.indices.push(j as u32);
                self.values.push(v);
            }
        }
        self.indptr.push(self.values.len() as u64);
        Ok(())
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of stored (nonzero) values.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Row `r`'s column indices and values, or `None` past the end.
    pub fn row(&self, r: usize) -> Option<(&[u32], &[f32])> {
        let s = *self.indptr.get(r)? as usize;
        let e = *self.indptr.get(r + 1)? as usize;
        Some((&self.indices[s..e], &self.values[s..e]))
    }

    /// Writes row `r` densely into `out` (width `cols`), converting each value with `f`.
    pub(crate) fn densify_into<T: Copy>(
        &self,
        r: usize,
        out: &mut [T],
        zero: T,
        f: impl Fn(f32) -> T,
    ) {
        out.fill(zero);
        if let Some((idx, val)) = self.row(r) {
            for (&j, &v) in idx.iter().zip(val) {
                out[j as usize] = f(v);
            }
        }
    }

    /// Value at (r, j), or `None` outside the matrix.
    pub fn get(&self, r: usize, j: usize) -> Option<f32> {
        if j >= self.cols {
            return None;
        }
        let (idx, val) = self.row(r)?;
        Some(idx.binary_search(&(j as u32)).map_or(0.0, |k| val[k]))
    }

    /// Rows `rows` (in that order) as a matrix of their own.
    pub fn select_rows(&self, rows: impl IntoIterator<Item = usize>) -> Result<CsrMatrix> {
        let mut m = CsrMatrix::with_cols(self.cols)?;
        for r in rows {
            let (idx, val) = self
                .row(r)
                .ok_or_else(|| Error::shape("row index", format!("below {}", self.rows()), r))?;
            m.indices.extend_from_slice(idx);
            m.values.extend_from_slice(val);
            m.indptr.push(m.values.len() as u64);
        }
        Ok(m)
    }

    /// Only the columns `keep` (in that order; each below `cols`, none repeated).
    pub fn select_cols(&self, keep: &[usize]) -> Result<CsrMatrix> {
        let mut new_index = vec![u32::MAX; self.cols];
        for (k, &j) in keep.iter().enumerate() {
            if j >= self.cols || new_index[j] != u32::MAX {
                return Err(Error::config(
                    "kept columns",
                    j,
                    "must be distinct and inside the matrix",
                ));
            }
            new_index[j] = k as u32;
        }
        let mut m = CsrMatrix::with_cols(keep.len())?;
        let mut row: Vec<(u32, f32)> = Vec::new();
        for r in 0..self.rows() {
            let (idx, val) = self.row(r).expect("r < rows");
            row.clear();
            row.extend(
                idx.iter()
                    .zip(val)
                    .filter(|(j, _)| new_index[**j as usize] != u32::MAX)
                    .map(|(j, v)| (new_index[*j as usize], *v)),
            );
            row.sort_unstable_by_key(|p| p.0);
            m.indices.extend(row.iter().map(|p| p.0));
            m.values.extend(row.iter().map(|p| p.1));
            m.indptr.push(m.values.len() as u64);
        }
        Ok(m)
    }

    /// Bytes held: what a count matrix costs in memory.
    pub fn heap_bytes(&self) -> usize {
        self.indptr.len() * 8 + self.indices.len() * 4 + self.values.len() * 4
    }
}
