//! Choosing genes: the most variable ones, as expression analyses do before modelling.

use crate::data::dataset::{Dataset, Row};
use crate::error::{Error, Result};

/// The counts per cell every cell is scaled to before the log: 10,000.
pub const NORMALISED_TOTAL: f64 = 1e4;

/// The `n` most variable genes (columns) of a count dataset, in their original order.
///
/// Method: the dispersion of log1p-normalised counts. Each cell is scaled to a total of
/// [`NORMALISED_TOTAL`], then y = ln(1 + scaled count); a gene's dispersion is the variance of
/// y over cells divided by its mean (Seurat's "dispersion" measure, without its binning by
/// mean). Genes never seen expressed have no dispersion and come last; ties go to the lower
/// column.
///
/// ```
/// use elbo::data::{CsrMatrix, Dataset, genes::most_variable};
/// // Gene 0 is constant across cells, gene 1 varies, gene 2 is never expressed.
/// let mut m = CsrMatrix::with_cols(3)?;
/// m.push_dense_row(&[5.0, 0.0, 0.0])?;
/// m.push_dense_row(&[5.0, 9.0, 0.0])?;
/// let data = Dataset::from_csr(m)?;
/// assert_eq!(most_variable(&data, 1)?, vec![1]);
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn most_variable(data: &Dataset, n: usize) -> Result<Vec<usize>> {
    let d = data.dim();
    if n == 0 || n > d {
        return Err(Error::config(
            "top genes",
            format!("{n} of {d} genes"),
            "must be at least 1 and at most the number of genes",
        ));
    }
    let (mut sum, mut sum_sq) = (vec![0.0f64; d], vec![0.0f64; d]);
    let mut dense = vec![0.0f64; d];
    for i in 0..data.len() {
        let row = data
            .row(i)
            .ok_or_else(|| Error::shape("row", data.len(), i))?;
        let mut add = |j: usize, v: f64, total: f64| {
            if v != 0.0 && total > 0.0 {
                let y = (v * NORMALISED_TOTAL / total).ln_1p();
                sum[j] += y;
                sum_sq[j] += y * y;
            }
        };
        match row {
            Row::Sparse { indices, values } => {
                let total: f64 = values.iter().map(|&v| v as f64).sum();
                for (&j, &v) in indices.iter().zip(values) {
                    add(j as usize, v as f64, total);
                }
            }
            _ => {
                for (j, o) in dense.iter_mut().enumerate() {
                    *o = data.value(i, j).unwrap_or(0.0);
                }
                let total: f64 = dense.iter().sum();
                for (j, &v) in dense.iter().enumerate() {
                    add(j, v, total);
                }
            }
        }
    }
    let cells = data.len() as f64;
    let dispersion: Vec<f64> = (0..d)
        .map(|j| {
            let mean = sum[j] / cells;
            if mean <= 0.0 {
                return f64::NEG_INFINITY;
            }
            let var = (sum_sq[j] / cells - mean * mean).max(0.0);
            var / mean
        })
        .collect();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| dispersion[b].total_cmp(&dispersion[a]).then(a.cmp(&b)));
    let mut keep = order[..n].to_vec();
    keep.sort_unstable();
    Ok(keep)
}
