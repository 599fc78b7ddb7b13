//! Count matrices as files: the 10x Matrix Market folder Cell Ranger writes, and the rule every
//! count reader applies to a value.
//!
//! A 10x folder holds `matrix.mtx[.gz]` (genes x cells, coordinate format, 1-based),
//! `features.tsv[.gz]` (or `genes.tsv[.gz]`: id, name, type per gene) and
//! `barcodes.tsv[.gz]` (a name per cell). It is read transposed, one row a cell, into
//! compressed sparse rows.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::data::csr::CsrMatrix;
use crate::data::dataset::Dataset;
use crate::data::idx::open_maybe_gzipped;
use crate::error::{Error, Result};

/// Values within this of an integer are counts written with float noise (exports write
/// 0.999999999999999) and are rounded to it.
pub const INTEGER_TOLERANCE: f64 = 1e-6;

/// A value as a count: a non-negative number within [`INTEGER_TOLERANCE`] of an integer
/// (and below 2^24, so that f32 holds it exactly), rounded; `None` otherwise.
///
/// ```
/// use elbo::data::tenx::as_count;
/// assert_eq!(as_count(0.999999999999999), Some(1.0));
/// assert_eq!((as_count(2.5), as_count(-1.0), as_count(f64::NAN)), (None, None, None));
/// ```
pub fn as_count(v: f64) -> Option<f32> {
    let r = v.round();
    (v.is_finite() && r >= 0.0 && (v - r).abs() <= INTEGER_TOLERANCE && r < (1u64 << 24) as f64)
        .then_some(r as f32)
}

/// The error for a value that is not a count.
pub fn not_a_count(path: &Path, place: &str, v: &str) -> Error {
    Error::malformed(
        path,
        format!("{place}: {v} is not a count (a non-negative integer below 2^24)"),
    )
}

/// The first of `names` (each tried as is and with `.gz`) present in `dir`.
fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names
        .iter()
        .flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))])
        .find(|p| p.is_file())
}

/// The lines of a small text file (genes, barcodes), at most `limit` of them.
fn read_lines(path: &Path, limit: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in open_maybe_gzipped(path)?.lines().enumerate() {
        let line = line.map_err(|e| Error::io("reading", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        if out.len() == limit {
            return Err(Error::malformed(
                path,
                format!(
                    "line {}: more lines than the matrix has rows/columns ({limit})",
                    i + 1
                ),
            ));
        }
        out.push(line);
    }
    Ok(out)
}

/// Reads a 10x Matrix Market folder as a cells x genes dataset of counts, held sparse, with the
/// gene names (the features file's second column, or its first when it has one).
///
/// Every value must be a count ([`as_count`]); a malformed or inconsistent file (a bad header,
/// an index outside the declared size, a repeated entry, fewer or more entries than declared,
/// gene or barcode lists of the wrong length) is an error naming the file and line. Nothing is
/// allocated from the header's sizes before the entries are read.
pub fn read_10x(dir: impl AsRef<Path>) -> Result<Dataset> {
    let dir = dir.as_ref();
    let mtx = find(dir, &["matrix.mtx"]).ok_or_else(|| {
        Error::malformed(
            dir,
            "no matrix.mtx or matrix.mtx.gz: not a 10x Matrix Market folder",
        )
    })?;
    let features = find(dir, &["features.tsv", "genes.tsv"]);
    let barcodes = find(dir, &["barcodes.tsv"]);
    let mut lines = open_maybe_gzipped(&mtx)?.lines().enumerate();
    let mut next = || -> Result<Option<(usize, String)>> {
        for (i, l) in lines.by_ref() {
            let l = l.map_err(|e| Error::io("reading", &mtx, e))?;
            if !l.starts_with('%') && !l.trim().is_empty() {
                return Ok(Some((i + 1, l)));
            }
            if i == 0
                && !l
                    .to_ascii_lowercase()
                    .starts_with("%%matrixmarket matrix coordinate")
            {
                return Err(Error::malformed(
                    &mtx,
                    "line 1: expected '%%MatrixMarket matrix coordinate ...'",
                ));
            }
            if i == 0 {
                let lower = l.to_ascii_lowercase();
                if !(lower.contains("integer") || lower.contains("real"))
                    || !lower.contains("general")
                {
                    return Err(Error::malformed(
                        &mtx,
                        format!(
                            "line 1: '{l}': only integer or real, general matrices hold counts"
                        ),
                    ));
                }
            }
        }
        Ok(None)
    };
    let (size_line, size) = next()?.ok_or_else(|| Error::malformed(&mtx, "no size line"))?;
    let dims: Vec<u64> = size
        .split_whitespace()
        .map(|t| t.parse::<u64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::malformed(
                &mtx,
                format!("line {size_line}: '{size}' is not 'genes cells entries'"),
            )
        })?;
    let [genes, cells, entries] = dims[..] else {
        return Err(Error::malformed(
            &mtx,
            format!("line {size_line}: '{size}' is not 'genes cells entries'"),
        ));
    };
    if genes == 0 || cells == 0 || genes > u32::MAX as u64 || cells > u32::MAX as u64 {
        return Err(Error::malformed(
            &mtx,
            format!("line {size_line}: {genes} genes x {cells} cells"),
        ));
    }
    if entries > genes.saturating_mul(cells) {
        return Err(Error::malformed(
            &mtx,
            format!("line {size_line}: {entries} entries in a {genes} x {cells} matrix"),
        ));
    }
    // The gene and barcode lists, read before anything is sized from the header: each must
    // list exactly as many lines as the header declares. Without them, an empty row or column
    // costs memory but no bytes of the file, so the header may declare at most 16 rows and
    // columns per entry (plus 65,536): a hostile header cannot ask for gigabytes.
    let allowed = entries.saturating_add(65_536).saturating_mul(16);
    let gene_names = match &features {
        Some(f) => {
            let lines = read_lines(f, genes as usize)?;
            if lines.len() as u64 != genes {
                return Err(Error::malformed(
                    f,
                    format!("{} genes listed, the matrix has {genes}", lines.len()),
                ));
            }
            Some(
                lines
                    .iter()
                    .map(|l| {
                        let cols: Vec<&str> = l.split('\t').collect();
                        cols.get(1).unwrap_or(&cols[0]).trim().to_string()
                    })
                    .collect::<Vec<String>>(),
            )
        }
        None if genes > allowed => {
            return Err(Error::malformed(
                &mtx,
                format!(
                    "line {size_line}: {genes} genes for {entries} entries, and no features.tsv lists them"
                ),
            ));
        }
        None => None,
    };
    match &barcodes {
        Some(b) => {
            let n = read_lines(b, cells as usize)?.len() as u64;
            if n != cells {
                return Err(Error::malformed(
                    b,
                    format!("{n} barcodes listed, the matrix has {cells} cells"),
                ));
            }
        }
        None if cells > allowed => {
            return Err(Error::malformed(
                &mtx,
                format!(
                    "line {size_line}: {cells} cells for {entries} entries, and no barcodes.tsv lists them"
                ),
            ));
        }
        None => {}
    }
    // (cell, gene, count), grown as entries arrive: a lying header allocates nothing.
    let mut triplets: Vec<(u32, u32, f32)> = Vec::new();
    while let Some((ln, l)) = next()? {
        let mut it = l.split_whitespace();
        let (Some(g), Some(c), Some(v), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(Error::malformed(
                &mtx,
                format!("line {ln}: '{l}' is not 'gene cell value'"),
            ));
        };
        let parse_index = |t: &str, n: u64, what: &str| -> Result<u32> {
            match t.parse::<u64>() {
                Ok(i) if (1..=n).contains(&i) => Ok((i - 1) as u32),
                _ => Err(Error::malformed(
                    &mtx,
                    format!("line {ln}: {what} index '{t}' is outside 1..={n}"),
                )),
            }
        };
        let (g, c) = (
            parse_index(g, genes, "gene")?,
            parse_index(c, cells, "cell")?,
        );
        let value = v.parse::<f64>().ok().and_then(as_count).ok_or_else(|| {
            not_a_count(
                &mtx,
                &format!("line {ln} (gene {}, cell {})", g + 1, c + 1),
                v,
            )
        })?;
        if triplets.len() as u64 == entries {
            return Err(Error::malformed(
                &mtx,
                format!("line {ln}: more entries than the {entries} declared"),
            ));
        }
        triplets.push((c, g, value));
    }
    if triplets.len() as u64 != entries {
        return Err(Error::malformed(
            &mtx,
            format!("{} entries, the header declares {entries}", triplets.len()),
        ));
    }
    triplets.sort_unstable_by_key(|t| (t.0, t.1));
    if let Some(w) = triplets
        .windows(2)
        .find(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1))
    {
        return Err(Error::malformed(
            &mtx,
            format!("gene {}, cell {} appears twice", w[0].1 + 1, w[0].0 + 1),
        ));
    }
    let mut m = CsrMatrix::with_cols(genes as usize)?;
    let mut k = 0;
    let (mut idx, mut val) = (Vec::new(), Vec::new());
    for cell in 0..cells as u32 {
        idx.clear();
        val.clear();
        while k < triplets.len() && triplets[k].0 == cell {
            idx.push(triplets[k].1);
            val.push(triplets[k].2);
            k += 1;
        }
        m.push_row(&idx, &val)?;
    }
    drop(triplets);
    let mut data = Dataset::from_csr(m)?;
    data.feature_names = gene_names;
    Ok(data)
}
