//! A dataset held compactly (bytes where it can be) and converted per batch.

use rand::RngExt;

use crate::data::shapes::ShapeFactors;
use crate::error::{Error, Result};
use crate::kernels::scalar::Float;
use crate::model::Likelihood;

/// The stored values: grey levels as bytes (value = byte / 255), or floats.
#[derive(Clone, Debug, PartialEq)]
pub enum Pixels {
    /// Bytes, read as byte / 255.
    U8(Vec<u8>),
    /// Floats, used as they are.
    F32(Vec<f32>),
}

/// `rows` examples of `cols` values each, with optional labels and generative factors.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    rows: usize,
    cols: usize,
    pixels: Pixels,
    /// Class labels (digits for MNIST, shape kinds for `shapes`).
    pub labels: Option<Vec<u8>>,
    /// Ground-truth generative factors, for procedural data.
    pub factors: Option<Vec<ShapeFactors>>,
    /// Image height and width, where the rows are images.
    pub image_shape: Option<(usize, usize)>,
}

impl Dataset {
    /// From bytes (grey levels 0..=255), `rows x cols`.
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

    /// From an `ndarray` matrix, one row an example; every value must be finite.
    pub fn from_array(a: ndarray::ArrayView2<'_, f32>) -> Result<Self> {
        let (rows, cols) = a.dim();
        Self::from_f32(rows, cols, a.iter().copied().collect())
    }

    /// The examples as an `ndarray` matrix of `T` (grey levels as values in [0, 1]).
    pub fn to_array<T: Float>(&self) -> ndarray::Array2<T> {
        let mut out = vec![T::zero(); self.rows * self.cols];
        self.gather(&(0..self.rows).collect::<Vec<_>>(), &mut out);
        ndarray::Array2::from_shape_vec((self.rows, self.cols), out).expect("rows x cols values")
    }

    fn new(rows: usize, cols: usize, pixels: Pixels) -> Self {
        Dataset {
            rows,
            cols,
            pixels,
            labels: None,
            factors: None,
            image_shape: None,
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
                format!("{rows} x {cols} = {} values", rows * cols),
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

    /// Value `j` of example `i`.
    pub fn value(&self, i: usize, j: usize) -> f64 {
        match &self.pixels {
            Pixels::U8(b) => b[i * self.cols + j] as f64 / 255.0,
            Pixels::F32(f) => f[i * self.cols + j] as f64,
        }
    }

    /// Checks that it fits a model with input width `dim` and likelihood `lik`.
    pub fn check_for(&self, dim: usize, lik: Likelihood) -> Result<()> {
        self.check_rows(0..self.rows, dim, lik)
    }

    /// Like [`check_for`](Self::check_for), reading only the values of the given rows (which
    /// must exist): what a single step needs.
    pub fn check_rows(
        &self,
        rows: impl IntoIterator<Item = usize>,
        dim: usize,
        lik: Likelihood,
    ) -> Result<()> {
        if self.cols != dim {
            return Err(Error::shape(
                "dataset width",
                format!("{dim} values per example (the model's input width)"),
                self.cols,
            ));
        }
        let Pixels::F32(f) = &self.pixels else {
            return Ok(());
        };
        for r in rows {
            let row = &f[r * self.cols..(r + 1) * self.cols];
            if let Some(j) = row.iter().position(|&v| !lik.check_value(v as f64)) {
                return Err(Error::InvalidData(format!(
                    "row {r}, column {j} is {}, outside what the {lik} likelihood can model{}",
                    row[j],
                    if lik == Likelihood::Bernoulli {
                        " (it needs values in [0, 1])"
                    } else {
                        ""
                    }
                )));
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
            },
            labels: self.labels.as_ref().map(|l| l[start..end].to_vec()),
            factors: self.factors.as_ref().map(|f| f[start..end].to_vec()),
            image_shape: self.image_shape,
        }
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

    /// Copies the examples `indices` into `out` (`indices.len() x dim`) as `T`.
    pub fn gather<T: Float>(&self, indices: &[usize], out: &mut [T]) {
        let c = self.cols;
        let rows = indices.len().min(out.len() / c.max(1));
        let out = &mut out[..rows * c];
        match &self.pixels {
            Pixels::U8(b) => {
                // One conversion per grey level, then lookups: the same values as `from_byte`.
                let level: [T; 256] = std::array::from_fn(|v| T::from_byte(v as u8));
                crate::kernels::par::for_each_row(out, c, |r, row| {
                    let i = indices[r];
                    for (o, &v) in row.iter_mut().zip(&b[i * c..(i + 1) * c]) {
                        *o = level[v as usize];
                    }
                });
            }
            Pixels::F32(f) => crate::kernels::par::for_each_row(out, c, |r, row| {
                let i = indices[r];
                for (o, &v) in row.iter_mut().zip(&f[i * c..(i + 1) * c]) {
                    *o = T::of(v as f64);
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
    ) {
        self.gather(indices, &mut out[..indices.len() * self.cols]);
        for v in &mut out[..indices.len() * self.cols] {
            let u: f64 = rng.random();
            *v = if u < v.as_f64() { T::one() } else { T::zero() };
        }
    }
}

/// The order of examples in an epoch: a seeded shuffle, cut into batches (the last may be
/// smaller).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Shuffle, epoch);
    order.shuffle(&mut rng);
    order
}
