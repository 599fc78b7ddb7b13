//! User data as matrices, one row an example: `.npy` (f32 or f64, 2-D) and CSV (numbers, an
//! optional header line). Also writers for latent codes and samples.

use std::path::Path;

use crate::data::Dataset;
use crate::error::{Error, Result};

/// Reads a 2-D matrix from a `.npy` or `.csv` file (by extension) as a [`Dataset`].
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("points.csv");
/// std::fs::write(&path, "x,y\n0.5,1.5\n-2,3\n").unwrap();   // a header row is skipped
/// let data = elbo::files::read_matrix(&path)?;
/// assert_eq!((data.len(), data.dim(), data.value(1, 0)), (2, 2, Some(-2.0)));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn read_matrix(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
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

/// Checks a `.npy` header against the file's size before anything is allocated: a 2-D f32
/// or f64 array whose data the file really holds.
fn check_npy_header(path: &Path) -> Result<()> {
    use std::io::{Read, Seek};
    let bad = |r: String| Error::malformed(path, r);
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io("reading", path, e))?
        .len();
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let mut head = [0u8; 12];
    let n = f
        .read(&mut head)
        .map_err(|e| Error::io("reading", path, e))?;
    if n < 10 || &head[..6] != b"\x93NUMPY" {
        return Err(bad("not a 2-D .npy matrix (no NUMPY magic)".into()));
    }
    let (header_len, start) = match head[6] {
        1 => (u16::from_le_bytes([head[8], head[9]]) as u64, 10u64),
        2 | 3 if n >= 12 => (
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64,
            12u64,
        ),
        v => return Err(bad(format!("not a 2-D .npy matrix (version {v})"))),
    };
    if start + header_len > len || header_len > 1 << 20 {
        return Err(bad("not a 2-D .npy matrix (truncated header)".into()));
    }
    let mut text = vec![0u8; header_len as usize];
    f.seek(std::io::SeekFrom::Start(start))
        .and_then(|_| f.read_exact(&mut text))
        .map_err(|e| Error::io("reading", path, e))?;
    let text = String::from_utf8_lossy(&text);
    let item = if text.contains("f4'") {
        4u64
    } else if text.contains("f8'") {
        8
    } else {
        return Err(bad("not a 2-D f32 or f64 .npy matrix (element type)".into()));
    };
    let shape = text
        .split("'shape':")
        .nth(1)
        .and_then(|r| r.split('(').nth(1))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("not a 2-D .npy matrix (no shape)".into()))?;
    let dims: Vec<u64> = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<u64>()
                .map_err(|_| bad(format!("not a 2-D .npy matrix (shape '{shape}')")))
        })
        .collect::<Result<_>>()?;
    if dims.len() != 2 {
        return Err(bad(format!("not a 2-D .npy matrix (shape ({shape}))")));
    }
    let need = dims[0]
        .checked_mul(dims[1])
        .and_then(|n| n.checked_mul(item))
        .ok_or_else(|| {
            bad(format!(
                "not a 2-D .npy matrix (shape ({shape}) is too large)"
            ))
        })?;
    if start + header_len + need > len {
        return Err(bad(format!(
            "not a 2-D .npy matrix (shape ({shape}) needs {need} bytes, the file holds {})",
            len - start - header_len
        )));
    }
    Ok(())
}

fn read_npy(path: &Path) -> Result<Dataset> {
    check_npy_header(path)?;
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
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("m.csv");                       // or .npy
/// elbo::files::write_matrix(&path, 2, 2, &[1.0, 2.0, 3.0, 4.0], &["a".into(), "b".into()])?;
/// let back = elbo::files::read_matrix(&path)?;
/// assert_eq!((back.len(), back.value(1, 1)), (2, Some(4.0)));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn write_matrix(
    path: impl AsRef<Path>,
    rows: usize,
    cols: usize,
    values: &[f32],
    header: &[String],
) -> Result<()> {
    let path = path.as_ref();
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

/// Reads a count matrix, one row a cell, held sparse: a 10x Matrix Market folder
/// ([`crate::data::tenx::read_10x`]), a cells x genes `.npy` (f32 or f64), or a cells x genes
/// CSV as pandas and AnnData write it: an optional header row of gene names and an optional
/// first column of cell names.
///
/// Every value must be a count ([`crate::data::tenx::as_count`]: values within 1e-6 of an
/// integer are rounded); anything else is an error naming the line (CSV) or the row and column.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("counts.csv");
/// std::fs::write(&path, ",GeneA,GeneB\ncell1,0,3\ncell2,0.999999999999999,0\n").unwrap();
/// let data = elbo::files::read_counts(&path)?;
/// assert_eq!((data.len(), data.dim(), data.value(1, 0)), (2, 2, Some(1.0)));
/// assert_eq!(data.feature_names.as_deref(), Some(&["GeneA".to_string(), "GeneB".into()][..]));
/// std::fs::write(&path, "0,2.5\n").unwrap();
/// assert!(elbo::files::read_counts(&path).unwrap_err().to_string().contains("line 1"));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn read_counts(path: impl AsRef<Path>) -> Result<Dataset> {
    use crate::data::CsrMatrix;
    use crate::data::tenx::{as_count, not_a_count};
    let path = path.as_ref();
    if path.is_dir() {
        return crate::data::tenx::read_10x(path);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npy") => {
            check_npy_header(path)?;
            let open = || std::fs::File::open(path).map_err(|e| Error::io("opening", path, e));
            let array: ndarray::Array2<f64> = match ndarray_npy::ReadNpyExt::read_npy(open()?) {
                Ok(a) => a,
                Err(_) => {
                    let a: ndarray::Array2<f32> = ndarray_npy::ReadNpyExt::read_npy(open()?)
                        .map_err(|e| {
                            Error::malformed(
                                path,
                                format!("not a 2-D f32 or f64 .npy matrix ({e})"),
                            )
                        })?;
                    a.mapv(|v| v as f64)
                }
            };
            let (rows, cols) = array.dim();
            let mut m = CsrMatrix::with_cols(cols).map_err(|e| with_path(e, path))?;
            let mut row = vec![0f32; cols];
            for (i, r) in array.outer_iter().enumerate() {
                for (j, (&v, o)) in r.iter().zip(&mut row).enumerate() {
                    *o = as_count(v).ok_or_else(|| {
                        not_a_count(path, &format!("row {i}, column {j}"), &v.to_string())
                    })?;
                }
                m.push_dense_row(&row)?;
            }
            if rows == 0 {
                return Err(Error::malformed(path, "no rows"));
            }
            Dataset::from_csr(m).map_err(|e| with_path(e, path))
        }
        Some("csv") => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_path(path)
                .map_err(|e| Error::malformed(path, e.to_string()))?;
            let mut m: Option<CsrMatrix> = None;
            let mut header: Option<Vec<String>> = None;
            let mut names_column: Option<bool> = None;
            let (mut idx, mut val) = (Vec::new(), Vec::new());
            for (line, record) in reader.records().enumerate() {
                let record = record.map_err(|e| Error::malformed(path, e.to_string()))?;
                let fields: Vec<&str> = record.iter().map(str::trim).collect();
                let numeric = |f: &str| f.parse::<f64>().is_ok();
                if line == 0 && !fields.iter().skip(1).all(|f| numeric(f)) {
                    header = Some(fields.iter().map(|s| s.to_string()).collect());
                    continue;
                }
                // The first data line decides whether the first column holds cell names.
                let skip = *names_column.get_or_insert(!fields.first().is_some_and(|f| numeric(f)));
                let values = &fields[skip as usize..];
                let matrix = match &mut m {
                    Some(m) => m,
                    None => m.insert(
                        CsrMatrix::with_cols(values.len()).map_err(|e| with_path(e, path))?,
                    ),
                };
                if values.len() != matrix.cols() {
                    return Err(Error::malformed(
                        path,
                        format!(
                            "line {} has {} counts, earlier lines {}",
                            line + 1,
                            values.len(),
                            matrix.cols()
                        ),
                    ));
                }
                idx.clear();
                val.clear();
                for (j, f) in values.iter().enumerate() {
                    let c = f.parse::<f64>().ok().and_then(as_count).ok_or_else(|| {
                        not_a_count(
                            path,
                            &format!("line {}, column {}", line + 1, j + 1 + skip as usize),
                            f,
                        )
                    })?;
                    if c != 0.0 {
                        idx.push(j as u32);
                        val.push(c);
                    }
                }
                matrix.push_row(&idx, &val)?;
            }
            let m = m.ok_or_else(|| Error::malformed(path, "no rows of counts"))?;
            let cols = m.cols();
            let mut data = Dataset::from_csr(m).map_err(|e| with_path(e, path))?;
            if let Some(h) = header {
                // pandas writes an empty first header field above the cell names.
                let names = if h.len() == cols + 1 {
                    h[1..].to_vec()
                } else {
                    h
                };
                if names.len() != cols {
                    return Err(Error::malformed(
                        path,
                        format!(
                            "the header names {} genes, the rows hold {cols} counts",
                            names.len()
                        ),
                    ));
                }
                data.feature_names = Some(names);
            }
            Ok(data)
        }
        _ => Err(Error::malformed(
            path,
            "expected a 10x folder (matrix.mtx[.gz] with features.tsv and barcodes.tsv), a .npy or a .csv of counts",
        )),
    }
}

/// Reads one label per cell from a CSV: either a single column of labels, or two columns (cell
/// name, label) as pandas writes a Series; a header line is skipped when `cells + 1` lines are
/// given. Labels may be names or numbers; they are numbered in order of first appearance, and
/// the names returned beside them. At most 255 distinct labels.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("labels.csv");
/// std::fs::write(&path, "cell,type\nc1,B\nc2,T\nc3,B\n").unwrap();
/// let (labels, names) = elbo::files::read_labels(&path, 3)?;
/// assert_eq!((labels, names), (vec![0, 1, 0], vec!["B".to_string(), "T".into()]));
/// assert!(elbo::files::read_labels(&path, 2).is_err());      // one label per cell
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn read_labels(path: impl AsRef<Path>, cells: usize) -> Result<(Vec<u8>, Vec<String>)> {
    let path = path.as_ref();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| Error::malformed(path, e.to_string()))?;
    let mut raw = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| Error::malformed(path, e.to_string()))?;
        let label = record
            .iter()
            .next_back()
            .ok_or_else(|| Error::malformed(path, format!("line {} is empty", line + 1)))?;
        if raw.len() > cells {
            return Err(Error::malformed(
                path,
                format!("more than {cells} labels for {cells} cells"),
            ));
        }
        raw.push(label.trim().to_string());
    }
    if raw.len() == cells + 1 {
        raw.remove(0);
    }
    if raw.len() != cells {
        return Err(Error::malformed(
            path,
            format!("{} labels for {cells} cells", raw.len()),
        ));
    }
    let mut names: Vec<String> = Vec::new();
    let mut labels = Vec::with_capacity(cells);
    for l in raw {
        let k = match names.iter().position(|n| *n == l) {
            Some(k) => k,
            None => {
                if names.len() == 255 {
                    return Err(Error::malformed(path, "more than 255 distinct labels"));
                }
                names.push(l);
                names.len() - 1
            }
        };
        labels.push(k as u8);
    }
    Ok((labels, names))
}
