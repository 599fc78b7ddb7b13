//! A dataset held compactly (bytes where it can be) and converted per batch.

use rand::RngExt;

use crate::data::csr::CsrMatrix;
use crate::data::store::{Holdout, MappedRows, MappedStore};
use crate::error::{Error, Result};
use crate::kernels::scalar::Float;

/// The stored values: grey levels as bytes (value = byte / 255), or floats.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Pixels {
    /// Bytes, read as byte / 255.
    U8(Vec<u8>),
    /// Floats, used as they are.
    F32(Vec<f32>),
    /// Floats in compressed sparse rows: counts, mostly zeros.
    Sparse(CsrMatrix),
    /// Rows of a memory-mapped matrix file, read in place ([`crate::data::store`]).
    Mapped(MappedRows),
}

/// Named numeric annotations of every example: ground-truth generative factors of procedural
/// data, or any per-example covariates. Row-major, one row per example.
#[derive(Clone, Debug, PartialEq)]
pub struct Factors {
    names: Vec<String>,
    values: Vec<f64>,
}

impl Factors {
    /// `values` holds `values.len() / names.len()` rows of one value per name.
    ///
    /// ```
    /// use elbo::data::Factors;
    /// let f = Factors::new(vec!["scale".into(), "angle".into()], vec![0.5, 0.0, 1.0, 3.1])?;
    /// assert_eq!((f.len(), f.get(1, "angle")), (2, Some(3.1)));
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn new(names: Vec<String>, values: Vec<f64>) -> Result<Self> {
        if names.is_empty() || !values.len().is_multiple_of(names.len()) {
            return Err(Error::shape(
                "factors",
                format!("a multiple of {} values (one per name)", names.len()),
                values.len(),
            ));
        }
        Ok(Factors { names, values })
    }

    /// The factors' names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of annotated examples.
    pub fn len(&self) -> usize {
        self.values.len() / self.names.len()
    }

    /// Whether no example is annotated.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Example `i`'s values, one per name, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[f64]> {
        let k = self.names.len();
        self.values.get(i * k..(i + 1) * k)
    }

    /// The value of factor `name` for example `i`.
    pub fn get(&self, i: usize, name: &str) -> Option<f64> {
        let j = self.names.iter().position(|n| n == name)?;
        self.row(i).map(|r| r[j])
    }

    fn slice(&self, start: usize, end: usize) -> Factors {
        let k = self.names.len();
        Factors {
            names: self.names.clone(),
            values: self.values[start * k..end * k].to_vec(),
        }
    }
}

/// One example's stored values, borrowed: bytes (value = byte / 255), floats, or the nonzeros
/// of a sparse row.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Row<'a> {
    /// Grey levels as bytes.
    Bytes(&'a [u8]),
    /// Floats.
    Floats(&'a [f32]),
    /// The nonzero values and their columns (increasing); every other value is 0.
    Sparse {
        /// Columns of the nonzeros.
        indices: &'a [u32],
        /// The nonzeros.
        values: &'a [f32],
    },
}

/// All stored values as a borrowed `rows x cols` matrix, without copying.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RowsView<'a> {
    /// Grey levels as bytes.
    Bytes(ndarray::ArrayView2<'a, u8>),
    /// Floats.
    Floats(ndarray::ArrayView2<'a, f32>),
    /// Compressed sparse rows.
    Sparse(&'a CsrMatrix),
    /// Rows of a memory-mapped file.
    Mapped(&'a MappedRows),
}

/// `rows` examples of `cols` values each, with optional labels and per-example factors.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    rows: usize,
    cols: usize,
    pixels: Pixels,
    /// Class labels (digits for MNIST, shape kinds for `shapes`).
    pub labels: Option<Vec<u8>>,
    /// Named per-example annotations (the ground-truth factors of procedural data).
    pub factors: Option<Factors>,
    /// Image height and width, where the rows are images.
    pub image_shape: Option<(usize, usize)>,
    /// A name per column (gene names of expression data), when the file gave them.
    pub feature_names: Option<Vec<String>>,
    /// A name per label value (cell types), when labels came as names: label `k` is
    /// `label_names[k]`.
    pub label_names: Option<Vec<String>>,
}

impl Dataset {
    /// From bytes (grey levels 0..=255), `rows x cols`.
    ///
    /// ```
    /// // Two 3-pixel images, grey levels 0..=255 read as value / 255.
    /// let data = elbo::Dataset::from_bytes(2, 3, vec![0, 255, 51, 10, 20, 30])?;
    /// let mut batch = vec![0f32; 2 * 3];
    /// data.gather(&[1, 0], &mut batch)?;            // rows in any order
    /// assert_eq!(batch[3..], [0.0, 1.0, 0.2]);
    /// assert!(data.gather(&[2], &mut batch).is_err()); // no row 2: an error, not a panic
    /// assert!(elbo::Dataset::from_bytes(2, 3, vec![0; 5]).is_err());
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn from_bytes(rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        Self::check_shape(rows, cols, data.len())?;
        Ok(Self::new(rows, cols, Pixels::U8(data)))
    }

    /// From floats, `rows x cols`; every value must be finite.
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        Self::check_shape(rows, cols, data.len())?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidData(format!(
                "row {}, column {} is {}: data must be finite",
                i / cols,
                i % cols,
                data[i]
            )));
        }
        Ok(Self::new(rows, cols, Pixels::F32(data)))
    }

    /// From a sparse matrix, one row an example (count data).
    ///
    /// ```
    /// use elbo::data::CsrMatrix;
    /// let m = CsrMatrix::new(3, vec![0, 1, 3], vec![1, 0, 2], vec![2.0, 1.0, 3.0])?;
    /// let data = elbo::Dataset::from_csr(m)?;
    /// let mut batch = vec![0f64; 2 * 3];
    /// data.gather(&[1, 0], &mut batch)?;
    /// assert_eq!(batch, [1.0, 0.0, 3.0, 0.0, 2.0, 0.0]);
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn from_csr(m: CsrMatrix) -> Result<Self> {
        Self::check_shape(m.rows(), m.cols(), m.rows() * m.cols())?;
        Ok(Self::new(m.rows(), m.cols(), Pixels::Sparse(m)))
    }

    /// Every row of a memory-mapped matrix file, read in place (nothing is loaded), with the
    /// file's labels.
    pub fn from_store(store: MappedStore) -> Result<Self> {
        let h = store.header();
        let labels = store.labels().map(<[u8]>::to_vec);
        let names = store.column_names().map(<[String]>::to_vec);
        let (rows, cols) = (h.rows as usize, h.cols as usize);
        let mut data = Self::new(rows, cols, Pixels::Mapped(MappedRows::all(store)));
        data.labels = labels;
        data.feature_names = names;
        Ok(data)
    }

    /// For a dataset of every row of a mapped file: its every-tenth-row hold-out as (training,
    /// test) views of the same file, the split `--data counts` makes in memory, without
    /// copying. `None` for any other dataset.
    pub fn mapped_holdout(&self) -> Option<(Dataset, Dataset)> {
        let Pixels::Mapped(m) = &self.pixels else {
            return None;
        };
        if *m != m.side(Holdout::All) {
            return None;
        }
        let view = |side: Holdout| {
            let v = m.side(side);
            let n = m.side_len(side);
            Dataset {
                rows: n,
                labels: self
                    .labels
                    .as_ref()
                    .map(|l| (0..n).map(|i| l[v.file_row(i)]).collect()),
                pixels: Pixels::Mapped(v),
                ..self.clone_meta(n)
            }
        };
        (m.side_len(Holdout::Test) > 0).then(|| (view(Holdout::Train), view(Holdout::Test)))
    }

    /// Everything but the values and labels, for a view of `rows` rows.
    fn clone_meta(&self, rows: usize) -> Dataset {
        Dataset {
            rows,
            cols: self.cols,
            pixels: Pixels::F32(Vec::new()),
            labels: None,
            factors: None,
            image_shape: self.image_shape,
            feature_names: self.feature_names.clone(),
            label_names: self.label_names.clone(),
        }
    }

    /// From an `ndarray` matrix, one row an example; every value must be finite.
    pub fn from_array(a: ndarray::ArrayView2<'_, f32>) -> Result<Self> {
        let (rows, cols) = a.dim();
        Self::from_f32(rows, cols, a.iter().copied().collect())
    }

    /// The examples as an `ndarray` matrix of `T` (grey levels as values in [0, 1]): a copy;
    /// [`view`](Self::view) borrows instead.
    pub fn to_array<T: Float>(&self) -> ndarray::Array2<T> {
        let c = self.cols;
        ndarray::Array2::from_shape_fn((self.rows, c), |(i, j)| match &self.pixels {
            Pixels::U8(b) => T::from_byte(b[i * c + j]),
            Pixels::F32(f) => T::of(f[i * c + j] as f64),
            Pixels::Sparse(m) => T::of(m.get(i, j).unwrap_or(0.0) as f64),
            Pixels::Mapped(_) => T::of(self.value(i, j).unwrap_or(0.0)),
        })
    }

    /// The stored values as a borrowed matrix, one row an example.
    ///
    /// ```
    /// let data = elbo::Dataset::from_bytes(2, 3, vec![0, 255, 51, 1, 2, 3])?;
    /// let elbo::data::RowsView::Bytes(m) = data.view() else { unreachable!() };
    /// assert_eq!(m[[0, 1]], 255);
    /// assert_eq!(data.row(1), Some(elbo::data::Row::Bytes(&[1, 2, 3][..])));
    /// assert_eq!(data.row(2), None);
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn view(&self) -> RowsView<'_> {
        let shape = (self.rows, self.cols);
        match &self.pixels {
            Pixels::U8(b) => RowsView::Bytes(
                ndarray::ArrayView2::from_shape(shape, b).expect("checked at construction"),
            ),
            Pixels::F32(f) => RowsView::Floats(
                ndarray::ArrayView2::from_shape(shape, f).expect("checked at construction"),
            ),
            Pixels::Sparse(m) => RowsView::Sparse(m),
            Pixels::Mapped(m) => RowsView::Mapped(m),
        }
    }

    /// Example `i`'s stored values, borrowed, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<Row<'_>> {
        if let Pixels::Sparse(m) = &self.pixels {
            return m
                .row(i)
                .map(|(indices, values)| Row::Sparse { indices, values });
        }
        let c = self.cols;
        let range = i.checked_mul(c)?..(i + 1).checked_mul(c)?;
        match &self.pixels {
            Pixels::U8(b) => b.get(range).map(Row::Bytes),
            Pixels::F32(f) => f.get(range).map(Row::Floats),
            Pixels::Mapped(m) if i < self.rows => m.store().row(m.file_row(i)),
            Pixels::Sparse(_) | Pixels::Mapped(_) => None,
        }
    }

    fn new(rows: usize, cols: usize, pixels: Pixels) -> Self {
        Dataset {
            rows,
            cols,
            pixels,
            labels: None,
            factors: None,
            image_shape: None,
            feature_names: None,
            label_names: None,
        }
    }

    fn check_shape(rows: usize, cols: usize, len: usize) -> Result<()> {
        if rows == 0 || cols == 0 {
            return Err(Error::shape(
                "dataset",
                "at least one row and one column",
                format!("{rows} x {cols}"),
            ));
        }
        if rows.checked_mul(cols) != Some(len) {
            return Err(Error::shape(
                "dataset",
                format!("{rows} x {cols} = {} values", rows.saturating_mul(cols)),
                len,
            ));
        }
        Ok(())
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether it has no examples (never true for a constructed dataset).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Values per example.
    pub fn dim(&self) -> usize {
        self.cols
    }

    /// The stored values.
    pub fn pixels(&self) -> &Pixels {
        &self.pixels
    }

    /// Value `j` of example `i`, or `None` outside the matrix.
    pub fn value(&self, i: usize, j: usize) -> Option<f64> {
        if i >= self.rows || j >= self.cols {
            return None;
        }
        Some(match &self.pixels {
            Pixels::U8(b) => b[i * self.cols + j] as f64 / 255.0,
            Pixels::F32(f) => f[i * self.cols + j] as f64,
            Pixels::Sparse(m) => m.get(i, j).unwrap_or(0.0) as f64,
            Pixels::Mapped(_) => match self.row(i)? {
                Row::Floats(f) => f[j] as f64,
                Row::Sparse { indices, values } => indices
                    .binary_search(&(j as u32))
                    .map_or(0.0, |k| values[k] as f64),
                Row::Bytes(b) => b[j] as f64 / 255.0,
            },
        })
    }

    /// Checks that it fits a model with input width `dim` whose likelihood accepts the values
    /// `domain` accepts.
    pub fn check_for(&self, dim: usize, domain: &ValueDomain<'_>) -> Result<()> {
        self.check_rows(0..self.rows, dim, domain)
    }

    /// Like [`check_for`](Self::check_for), reading only the values of the given rows: what
    /// a single step needs. A row past the end is an error.
    pub fn check_rows(
        &self,
        rows: impl IntoIterator<Item = usize>,
        dim: usize,
        domain: &ValueDomain<'_>,
    ) -> Result<()> {
        if self.cols != dim {
            return Err(Error::shape(
                "dataset width",
                format!("{dim} values per example (the model's input width)"),
                self.cols,
            ));
        }
        for r in rows {
            let bad = |j: usize, v: f64| {
                Error::InvalidData(format!(
                    "row {r}, column {j} is {v}, outside what the {} likelihood can model ({})",
                    domain.likelihood, domain.needs
                ))
            };
            match self.row(r) {
                None => return Err(self.bad_index(r)),
                // Grey levels are in [0, 1]; a likelihood that takes only integers (counts)
                // must still see each value.
                Some(Row::Bytes(b)) if !domain.bytes_always_fit => {
                    if let Some(j) = b.iter().position(|&v| !(domain.accepts)(v as f64 / 255.0)) {
                        return Err(bad(j, b[j] as f64 / 255.0));
                    }
                }
                Some(Row::Bytes(_)) => {}
                Some(Row::Floats(f)) => {
                    if let Some(j) = f.iter().position(|&v| !(domain.accepts)(v as f64)) {
                        return Err(bad(j, f[j] as f64));
                    }
                }
                Some(Row::Sparse { indices, values }) => {
                    if !(domain.accepts)(0.0) && indices.len() < self.cols {
                        let j = (0..self.cols as u32)
                            .find(|j| indices.binary_search(j).is_err())
                            .unwrap_or(0);
                        return Err(bad(j as usize, 0.0));
                    }
                    if let Some(k) = values.iter().position(|&v| !(domain.accepts)(v as f64)) {
                        return Err(bad(indices[k] as usize, values[k] as f64));
                    }
                }
            }
        }
        Ok(())
    }

    /// Examples `start..end` as a dataset of their own.
    fn slice(&self, start: usize, end: usize) -> Dataset {
        let c = self.cols;
        Dataset {
            rows: end - start,
            cols: c,
            pixels: match &self.pixels {
                Pixels::U8(b) => Pixels::U8(b[start * c..end * c].to_vec()),
                Pixels::F32(f) => Pixels::F32(f[start * c..end * c].to_vec()),
                Pixels::Sparse(m) => {
                    Pixels::Sparse(m.select_rows(start..end).expect("rows inside the matrix"))
                }
                Pixels::Mapped(m) => Pixels::Mapped(m.skip_rows(start)),
            },
            labels: self.labels.as_ref().map(|l| l[start..end].to_vec()),
            factors: self.factors.as_ref().map(|f| f.slice(start, end)),
            image_shape: self.image_shape,
            feature_names: self.feature_names.clone(),
            label_names: self.label_names.clone(),
        }
    }

    /// The examples `indices`, in that order, as a dataset of their own (labels and factors
    /// follow). An index past the end is an error.
    pub fn select(&self, indices: &[usize]) -> Result<Dataset> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.rows) {
            return Err(self.bad_index(i));
        }
        if indices.is_empty() {
            return Err(Error::shape("selected examples", "at least one", 0));
        }
        let c = self.cols;
        let pixels = match &self.pixels {
            Pixels::U8(b) => Pixels::U8(
                indices
                    .iter()
                    .flat_map(|&i| &b[i * c..(i + 1) * c])
                    .copied()
                    .collect(),
            ),
            Pixels::F32(f) => Pixels::F32(
                indices
                    .iter()
                    .flat_map(|&i| &f[i * c..(i + 1) * c])
                    .copied()
                    .collect(),
            ),
            Pixels::Sparse(m) => Pixels::Sparse(m.select_rows(indices.iter().copied())?),
            // A selection of a mapped file is read into memory, sparse.
            Pixels::Mapped(_) => {
                let mut m = CsrMatrix::with_cols(c)?;
                let mut dense = vec![0f32; c];
                for &i in indices {
                    match self.row(i) {
                        Some(Row::Sparse { indices, values }) => m.push_row(indices, values)?,
                        _ => {
                            self.gather(&[i], &mut dense)?;
                            m.push_dense_row(&dense)?;
                        }
                    }
                }
                Pixels::Sparse(m)
            }
        };
        let factors = match &self.factors {
            Some(f) => {
                let vals = indices
                    .iter()
                    .flat_map(|&i| f.row(i).unwrap_or(&[]).to_vec())
                    .collect();
                Some(Factors::new(f.names().to_vec(), vals)?)
            }
            None => None,
        };
        Ok(Dataset {
            rows: indices.len(),
            cols: c,
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            factors,
            image_shape: self.image_shape,
            feature_names: self.feature_names.clone(),
            label_names: self.label_names.clone(),
        })
    }

    /// Only the columns `keep`, in that order (their names follow).
    pub fn select_columns(&self, keep: &[usize]) -> Result<Dataset> {
        if keep.is_empty() {
            return Err(Error::config("kept columns", 0, "must keep at least one"));
        }
        let c = self.cols;
        if let Some(&j) = keep.iter().find(|&&j| j >= c) {
            return Err(Error::shape("column index", format!("below {c}"), j));
        }
        let pixels = match &self.pixels {
            Pixels::U8(b) => Pixels::U8(
                (0..self.rows)
                    .flat_map(|i| keep.iter().map(move |&j| b[i * c + j]))
                    .collect(),
            ),
            Pixels::F32(f) => Pixels::F32(
                (0..self.rows)
                    .flat_map(|i| keep.iter().map(move |&j| f[i * c + j]))
                    .collect(),
            ),
            Pixels::Sparse(m) => Pixels::Sparse(m.select_cols(keep)?),
            Pixels::Mapped(_) => {
                return Err(Error::Unsupported(
                    "choosing columns of a memory-mapped file would read it all into memory; \
                     choose them (--top-genes) when converting"
                        .into(),
                ));
            }
        };
        Ok(Dataset {
            rows: self.rows,
            cols: keep.len(),
            pixels,
            labels: self.labels.clone(),
            factors: self.factors.clone(),
            image_shape: None,
            feature_names: self
                .feature_names
                .as_ref()
                .map(|n| keep.iter().map(|&j| n[j].clone()).collect()),
            label_names: self.label_names.clone(),
        })
    }

    /// The first `at` examples and the rest, as two datasets (each keeps at least one).
    pub fn split_at(&self, at: usize) -> (Dataset, Dataset) {
        let at = at.clamp(1, self.rows.saturating_sub(1).max(1));
        (self.slice(0, at), self.slice(at, self.rows))
    }

    /// The first `n` examples (or all, if fewer).
    pub fn head(&self, n: usize) -> Dataset {
        self.slice(0, n.min(self.rows).max(1))
    }

    fn bad_index(&self, i: usize) -> Error {
        Error::shape(
            "example index",
            format!("an index below {} (the number of examples)", self.rows),
            i,
        )
    }

    /// Copies the examples `indices` into the front of `out` (which needs at least
    /// `indices.len() x dim` values) as `T`. An index past the end or too short an `out` is an
    /// error, and `out` is then left as it was.
    pub fn gather<T: Float>(&self, indices: &[usize], out: &mut [T]) -> Result<()> {
        let c = self.cols;
        let need = indices.len().saturating_mul(c);
        if out.len() < need {
            return Err(Error::shape(
                "gather output",
                format!("at least {} x {c} values", indices.len()),
                out.len(),
            ));
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= self.rows) {
            return Err(self.bad_index(i));
        }
        self.gather_unchecked(indices, &mut out[..need]);
        Ok(())
    }

    /// [`gather`](Self::gather) once its indices and output are checked.
    pub(crate) fn gather_unchecked<T: Float>(&self, indices: &[usize], out: &mut [T]) {
        let c = self.cols;
        match &self.pixels {
            Pixels::U8(b) => crate::kernels::par::for_each_row(out, c, |r, row| {
                let i = indices[r];
                // A vectorised conversion and division, 16 grey levels at a time: a lookup table
                // of the 256 levels took a load and a store per pixel.
                crate::kernels::fast::with_simd(
                    #[inline(always)]
                    || {
                        for (o, &v) in row.iter_mut().zip(&b[i * c..(i + 1) * c]) {
                            *o = T::from_byte(v);
                        }
                    },
                );
            }),
            Pixels::F32(f) => crate::kernels::par::for_each_row(out, c, |r, row| {
                let i = indices[r];
                for (o, &v) in row.iter_mut().zip(&f[i * c..(i + 1) * c]) {
                    *o = T::of(v as f64);
                }
            }),
            Pixels::Sparse(m) => crate::kernels::par::for_each_row(out, c, |r, row| {
                m.densify_into(indices[r], row, T::zero(), |v| T::of(v as f64));
            }),
            Pixels::Mapped(m) => crate::kernels::par::for_each_row(out, c, |r, row| {
                row.fill(T::zero());
                match m.store().row(m.file_row(indices[r])) {
                    Some(Row::Sparse { indices, values }) => {
                        for (&j, &v) in indices.iter().zip(values) {
                            row[j as usize] = T::of(v as f64);
                        }
                    }
                    Some(Row::Floats(f)) => {
                        for (o, &v) in row.iter_mut().zip(f) {
                            *o = T::of(v as f64);
                        }
                    }
                    // Every row was checked when the file was opened.
                    _ => {}
                }
            }),
        }
    }

    /// Like [`gather`](Self::gather), then replaces each value v (in [0, 1]) by 1 with
    /// probability v and by 0 otherwise: dynamic binarisation.
    pub fn gather_binarized<T: Float>(
        &self,
        indices: &[usize],
        out: &mut [T],
        rng: &mut impl rand::Rng,
    ) -> Result<()> {
        self.gather(indices, out)?;
        for v in &mut out[..indices.len() * self.cols] {
            let u: f64 = rng.random();
            *v = if u < v.as_f64() { T::one() } else { T::zero() };
        }
        Ok(())
    }
}

/// Which values a model's likelihood can take, as the data layer sees it: a test per value
/// and words for the error message. Built by the model layer from its likelihood.
pub struct ValueDomain<'a> {
    /// The likelihood's name, for messages.
    pub likelihood: String,
    /// What it needs, in words ("values in [0, 1]").
    pub needs: &'a str,
    /// Whether a value is acceptable.
    pub accepts: Box<dyn Fn(f64) -> bool + Sync + 'a>,
    /// Whether every grey level in [0, 1] is acceptable, so byte data need not be read.
    pub bytes_always_fit: bool,
}

/// The order of examples in an epoch, computed one position at a time: a seeded pseudo-random
/// permutation of 0..n that needs no table, so an epoch over a memory-mapped set of any size
/// holds no O(n) order in memory.
///
/// A 4-round Feistel network (round function: splitmix64 of the half, keyed from the
/// (seed, shuffle, epoch) stream) permutes the smallest domain of 2^(2k) >= n values; positions
/// that land past n are walked on through the network until they land inside ("cycle
/// walking"), which keeps it a bijection of 0..n.
///
/// ```
/// use elbo::data::EpochOrder;
/// let order = EpochOrder::new(1000, 7, 0);
/// let mut seen: Vec<usize> = (0..1000).map(|i| order.at(i)).collect();
/// seen.sort_unstable();
/// assert_eq!(seen, (0..1000).collect::<Vec<_>>());       // every example once
/// ```
#[derive(Clone, Debug)]
pub struct EpochOrder {
    n: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl EpochOrder {
    /// The order of `n` examples in epoch `epoch` for `seed`.
    pub fn new(n: usize, seed: u64, epoch: u64) -> Self {
        use rand::Rng;
        let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Shuffle, epoch);
        let keys = std::array::from_fn(|_| rng.next_u64());
        let bits = (64 - (n.max(4) as u64 - 1).leading_zeros()).div_ceil(2);
        EpochOrder {
            n: n as u64,
            half_bits: bits.max(1),
            keys,
        }
    }

    /// The example at position `i` (below n).
    pub fn at(&self, i: usize) -> usize {
        let mut x = i as u64;
        loop {
            x = self.encrypt(x);
            if x < self.n {
                return x as usize;
            }
        }
    }

    fn encrypt(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut l, mut r) = (x >> self.half_bits, x & mask);
        for &k in &self.keys {
            let f = splitmix64(r ^ k) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }
}

/// A well-mixing 64-bit hash (the splitmix64 finaliser).
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The whole order of an epoch as a vector ([`EpochOrder`] position by position).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let order = EpochOrder::new(n, seed, epoch);
    (0..n).map(|i| order.at(i)).collect()
}
