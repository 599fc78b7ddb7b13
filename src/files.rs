//! User data as matrices, one row an example: `.npy` (f32 or f64, 2-D) and CSV (numbers, an
//! optional header line). Also writers for latent codes and samples.

use std::path::Path;

use crate::data::Dataset;
use crate::error::{Error, Result};

/// Reads a 2-D matrix from a `.npy` or `.csv` file (by extension) as a [`Dataset`].
pub fn read_matrix(path: &Path) -> Result<Dataset> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("npy") => read_npy(path),
        Some("csv") => read_csv(path),
        _ => Err(Error::malformed(path, "expected a .npy or .csv file")),
    }
}

fn read_npy(path: &Path) -> Result<Dataset> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::malformed(path, format!("not a 2-D f32 or f64 .npy matrix ({e})"))
    };
    let open = || std::fs::File::open(path).map_err(|e| Error::io("opening", path, e));
    let array: ndarray::Array2<f32> = match ndarray_npy::ReadNpyExt::read_npy(open()?) {
        Ok(a) => a,
        Err(_) => {
            let a: ndarray::Array2<f64> =
                ndarray_npy::ReadNpyExt::read_npy(open()?).map_err(|e| bad(&e))?;
            a.mapv(|v| v as f32)
        }
    };
    Dataset::from_array(array.view()).map_err(|e| with_path(e, path))
}

fn read_csv(path: &Path) -> Result<Dataset> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| Error::malformed(path, e.to_string()))?;
    let (mut values, mut cols, mut rows) = (Vec::new(), None, 0usize);
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| Error::malformed(path, e.to_string()))?;
        let parsed: std::result::Result<Vec<f32>, _> =
            record.iter().map(|f| f.trim().parse::<f32>()).collect();
        let row = match parsed {
            Ok(r) => r,
            // A first line that is not numbers is a header.
            Err(_) if line == 0 => continue,
            Err(e) => return Err(Error::malformed(path, format!("line {}: {e}", line + 1))),
        };
        match cols {
            None => cols = Some(row.len()),
            Some(c) if c != row.len() => {
                return Err(Error::malformed(
                    path,
                    format!(
                        "line {} has {} values, earlier lines {c}",
                        line + 1,
                        row.len()
                    ),
                ));
            }
            _ => {}
        }
        values.extend(row);
        rows += 1;
    }
    let cols = cols.ok_or_else(|| Error::malformed(path, "no rows of numbers"))?;
    Dataset::from_f32(rows, cols, values).map_err(|e| with_path(e, path))
}

fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::InvalidData(m) => Error::InvalidData(format!("{}: {m}", path.display())),
        Error::Shape { .. } => Error::malformed(path, e.to_string()),
        other => other,
    }
}

/// Writes a `rows x cols` matrix to `.npy` (f32) or `.csv` (with `header`), atomically.
pub fn write_matrix(
    path: &Path,
    rows: usize,
    cols: usize,
    values: &[f32],
    header: &[String],
) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let bytes = match ext.as_deref() {
        Some("npy") => {
            let a = ndarray::ArrayView2::from_shape((rows, cols), values)
                .map_err(|e| Error::shape("matrix", rows * cols, e))?;
            let mut buf = Vec::new();
            ndarray_npy::WriteNpyExt::write_npy(&a, &mut buf)
                .map_err(|e| Error::io("encoding", path, std::io::Error::other(e)))?;
            buf
        }
        Some("csv") => {
            let mut s = String::new();
            if !header.is_empty() {
                s += &header.join(",");
                s.push('\n');
            }
            for row in values.chunks(cols.max(1)) {
                s += &row
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                s.push('\n');
            }
            s.into_bytes()
        }
        _ => return Err(Error::malformed(path, "expected a .npy or .csv file name")),
    };
    crate::io::write_atomic(path, &bytes)
}
