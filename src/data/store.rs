//! elbo's own on-disk matrix format, for data larger than memory: a small header, then the row
//! offsets, the column indices and the values (sparse), or the values alone (dense), then an
//! optional label per row. It is read memory-mapped, so only the rows touched are paged in, and
//! written streaming, so it can be made in bounded memory.
//!
//! Layout, all little-endian, every array at an offset aligned for its type:
//!
//! ```text
//! 0   magic  b"ELBOMAT\0"                      8 bytes
//! 8   version u32 = 1, kind u32 (0 sparse, 1 dense)
//! 16  rows u64, cols u64, nnz u64 (dense: rows x cols), labels u64 (0 or 1)
//! 48  names u64 (bytes of the column names, 0 for none), reserved u64 zero
//! 64  sparse: indptr (rows + 1) x u64, indices nnz x u32, values nnz x f32
//!     dense:  values rows x cols x f32
//!     then, with labels: rows x u8
//!     then, with names: one UTF-8 name per column, each ended by '\n'
//! ```
//!
//! Opening checks the header against the file's size (checked arithmetic, exact length) before
//! anything is mapped, and the row offsets before any row is read; each row's column indices are
//! checked when the row is read. A truncated or hostile file gives an error, never a crash.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::data::csr::CsrMatrix;
use crate::data::dataset::{Dataset, Row};
use crate::error::{Error, Result};

/// The file's first eight bytes.
pub const MAGIC: &[u8; 8] = b"ELBOMAT\0";
const HEADER: u64 = 64;

/// Sparse (compressed rows) or dense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// Compressed sparse rows: counts, mostly zeros.
    Sparse,
    /// Row-major f32.
    Dense,
}

/// A parsed, size-checked header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreHeader {
    /// Sparse or dense.
    pub kind: StoreKind,
    /// Rows (examples).
    pub rows: u64,
    /// Columns (genes, pixels).
    pub cols: u64,
    /// Stored values: the nonzeros (sparse) or rows x cols (dense).
    pub nnz: u64,
    /// Whether a label per row follows the values.
    pub labels: bool,
    /// Bytes of column names after the labels (0: none).
    pub names: u64,
}

impl StoreHeader {
    /// Byte offsets of (indptr, indices, values, labels, names, end).
    fn offsets(&self) -> Option<[u64; 6]> {
        let indptr = HEADER;
        let (indices, values) = match self.kind {
            StoreKind::Sparse => {
                let i = indptr.checked_add(self.rows.checked_add(1)?.checked_mul(8)?)?;
                (i, i.checked_add(self.nnz.checked_mul(4)?)?)
            }
            StoreKind::Dense => (indptr, indptr),
        };
        let labels = values.checked_add(self.nnz.checked_mul(4)?)?;
        let names = labels.checked_add(if self.labels { self.rows } else { 0 })?;
        let end = names.checked_add(self.names)?;
        Some([indptr, indices, values, labels, names, end])
    }

    fn parse(bytes: &[u8; 64], path: &Path, file_len: u64) -> Result<Self> {
        let bad = |why: String| Error::malformed(path, why);
        if &bytes[..8] != MAGIC {
            return Err(bad("not an elbo matrix file (no ELBOMAT magic)".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        if u32_at(8) != 1 {
            return Err(bad(format!(
                "version {} (this elbo reads version 1)",
                u32_at(8)
            )));
        }
        let kind = match u32_at(12) {
            0 => StoreKind::Sparse,
            1 => StoreKind::Dense,
            k => return Err(bad(format!("unknown kind {k}"))),
        };
        let (rows, cols, nnz, labels) = (u64_at(16), u64_at(24), u64_at(32), u64_at(40));
        let names = u64_at(48);
        if u64_at(56) != 0 {
            return Err(bad("header: reserved bytes are not zero".into()));
        }
        if rows == 0 || cols == 0 || cols > u32::MAX as u64 || labels > 1 {
            return Err(bad(format!(
                "header: {rows} rows x {cols} columns, labels flag {labels}"
            )));
        }
        let dense_len = rows.checked_mul(cols);
        let nnz_ok = match kind {
            StoreKind::Dense => dense_len == Some(nnz),
            StoreKind::Sparse => dense_len.is_none_or(|d| nnz <= d),
        };
        if !nnz_ok {
            return Err(bad(format!("header: {nnz} values in {rows} x {cols}")));
        }
        let header = StoreHeader {
            kind,
            rows,
            cols,
            nnz,
            labels: labels == 1,
            names,
        };
        let end = header
            .offsets()
            .ok_or_else(|| bad("header: sizes overflow".into()))?[5];
        if end != file_len {
            return Err(bad(format!(
                "the header describes {end} bytes, the file holds {file_len} (truncated or not \
                 an elbo matrix)"
            )));
        }
        Ok(header)
    }

    fn to_bytes(self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let kind: u32 = match self.kind {
            StoreKind::Sparse => 0,
            StoreKind::Dense => 1,
        };
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        for (o, v) in [
            (16, self.rows),
            (24, self.cols),
            (32, self.nnz),
            (40, self.labels as u64),
            (48, self.names),
        ] {
            b[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// A matrix file, memory-mapped: rows are read in place, paged in as they are touched.
#[derive(Debug)]
pub struct MappedStore {
    header: StoreHeader,
    offsets: [u64; 6],
    map: memmap2::Mmap,
    path: PathBuf,
    names: Option<Vec<String>>,
}

impl MappedStore {
    /// Opens and checks `path`: the header against the file's size, then (sparse) the row
    /// offsets: they start at 0, never decrease and end at the number of values.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(Error::Unsupported(
                "elbo matrix files are little-endian; this machine is not".into(),
            ));
        }
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading", path, e))?
            .len();
        let mut head = [0u8; 64];
        if len < HEADER {
            return Err(Error::malformed(path, "shorter than an elbo matrix header"));
        }
        file.read_exact(&mut head)
            .map_err(|e| Error::io("reading", path, e))?;
        let header = StoreHeader::parse(&head, path, len)?;
        let offsets = header.offsets().expect("checked by parse");
        // SAFETY: the map is read-only and its bytes are only ever viewed as plain integers and
        // floats (every bit pattern is valid); a file truncated or changed by another process
        // while mapped can give wrong values or SIGBUS, which memmap2 documents and no reader
        // of a mapped file can rule out. Our own writer replaces files by rename, never in place.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io("mapping", path, e))?;
        let mut store = MappedStore {
            header,
            offsets,
            map,
            path: path.to_path_buf(),
            names: None,
        };
        if header.names > 0 {
            let text = std::str::from_utf8(store.bytes(offsets[4], offsets[5]))
                .map_err(|_| Error::malformed(path, "column names are not UTF-8"))?;
            let names: Vec<String> = text
                .strip_suffix('\n')
                .unwrap_or(text)
                .split('\n')
                .map(str::to_string)
                .collect();
            if names.len() as u64 != header.cols || !text.ends_with('\n') {
                return Err(Error::malformed(
                    path,
                    format!("{} column names for {} columns", names.len(), header.cols),
                ));
            }
            store.names = Some(names);
        }
        if header.kind == StoreKind::Sparse {
            let indptr = store.indptr();
            let bad_at = indptr
                .windows(2)
                .position(|w| w[1] < w[0])
                .or((indptr.first() != Some(&0)).then_some(0))
                .or((indptr.last() != Some(&header.nnz)).then_some(indptr.len() - 1));
            if let Some(r) = bad_at {
                return Err(Error::malformed(
                    path,
                    format!(
                        "row offsets are not increasing from 0 to {} (at row {r})",
                        header.nnz
                    ),
                ));
            }
        }
        // Every row, once, so that reading one later cannot fail: a pass through the file's
        // pages (the page cache, not the process's own memory).
        for r in 0..header.rows as usize {
            store.checked_row(r)?;
        }
        Ok(store)
    }

    /// The header.
    pub fn header(&self) -> StoreHeader {
        self.header
    }

    fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.map[from as usize..to as usize]
    }

    fn indptr(&self) -> &[u64] {
        bytemuck::cast_slice(self.bytes(self.offsets[0], self.offsets[1]))
    }

    fn indices(&self) -> &[u32] {
        bytemuck::cast_slice(self.bytes(self.offsets[1], self.offsets[2]))
    }

    fn values(&self) -> &[f32] {
        bytemuck::cast_slice(self.bytes(self.offsets[2], self.offsets[3]))
    }

    /// The labels, one per row, if the file has them.
    pub fn labels(&self) -> Option<&[u8]> {
        self.header
            .labels
            .then(|| self.bytes(self.offsets[3], self.offsets[4]))
    }

    /// The column names (genes), if the file has them.
    pub fn column_names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }

    /// Row `r`, in place: its nonzeros (sparse) or its values (dense); `None` past the end.
    /// Every row was checked when the file was opened.
    pub fn row(&self, r: usize) -> Option<Row<'_>> {
        self.checked_row(r).ok()
    }

    /// Row `r`, checked: a sparse row whose column indices do not increase strictly inside the
    /// matrix, or a value that is not finite, is an error naming the row.
    fn checked_row(&self, r: usize) -> Result<Row<'_>> {
        if r as u64 >= self.header.rows {
            return Err(Error::shape(
                "row",
                format!("below {}", self.header.rows),
                r,
            ));
        }
        match self.header.kind {
            StoreKind::Dense => {
                let c = self.header.cols as usize;
                let row = &self.values()[r * c..(r + 1) * c];
                if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                    return Err(Error::malformed(
                        &self.path,
                        format!("row {r}, column {j} is {}", row[j]),
                    ));
                }
                Ok(Row::Floats(row))
            }
            StoreKind::Sparse => {
                let ip = self.indptr();
                let (s, e) = (ip[r] as usize, ip[r + 1] as usize);
                let (indices, values) = (&self.indices()[s..e], &self.values()[s..e]);
                let ok = indices.iter().all(|&j| (j as u64) < self.header.cols)
                    && indices.windows(2).all(|w| w[0] < w[1])
                    && values.iter().all(|v| v.is_finite());
                if !ok {
                    return Err(Error::malformed(
                        &self.path,
                        format!(
                            "row {r}: column indices out of order or range, or a value not finite"
                        ),
                    ));
                }
                Ok(Row::Sparse { indices, values })
            }
        }
    }

    /// The whole matrix read into memory as a [`Dataset`] (sparse stays sparse), with its
    /// labels.
    pub fn to_dataset(&self) -> Result<Dataset> {
        let (rows, cols) = (self.header.rows as usize, self.header.cols as usize);
        let mut data = match self.header.kind {
            StoreKind::Sparse => {
                let mut m = CsrMatrix::with_cols(cols)?;
                for r in 0..rows {
                    if let Row::Sparse { indices, values } = self.checked_row(r)? {
                        m.push_row(indices, values)?;
                    }
                }
                Dataset::from_csr(m)?
            }
            StoreKind::Dense => Dataset::from_f32(rows, cols, self.values().to_vec())?,
        };
        data.labels = self.labels().map(<[u8]>::to_vec);
        data.feature_names = self.names.clone();
        Ok(data)
    }
}

/// Writes a matrix file row by row in bounded memory: the row offsets, indices and values go to
/// three temporary files beside the target, which `finish` joins under the header and moves
/// into place atomically.
pub struct StoreWriter {
    path: PathBuf,
    kind: StoreKind,
    cols: usize,
    rows: u64,
    nnz: u64,
    parts: [BufWriter<tempfile::NamedTempFile>; 4],
    any_label: bool,
    names: Option<Vec<String>>,
}

impl StoreWriter {
    /// A writer of `cols` columns to `path`.
    pub fn create(path: impl AsRef<Path>, kind: StoreKind, cols: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if cols == 0 || cols > u32::MAX as usize {
            return Err(Error::shape("columns", "1 to 2^32 - 1", cols));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let part =
            || -> Result<BufWriter<tempfile::NamedTempFile>> { Ok(BufWriter::new(temp_in(&dir)?)) };
        let mut parts = [part()?, part()?, part()?, part()?];
        parts[0]
            .write_all(&0u64.to_le_bytes())
            .map_err(|e| Error::io("writing", &path, e))?;
        Ok(StoreWriter {
            path,
            kind,
            cols,
            rows: 0,
            nnz: 0,
            parts,
            any_label: false,
            names: None,
        })
    }

    /// Names the columns (one per column, none holding a line break), written after the
    /// labels.
    pub fn set_column_names(&mut self, names: &[String]) -> Result<()> {
        if names.len() != self.cols || names.iter().any(|n| n.contains('\n')) {
            return Err(Error::InvalidData(format!(
                "{} column names for {} columns (one each, no line breaks)",
                names.len(),
                self.cols
            )));
        }
        self.names = Some(names.to_vec());
        Ok(())
    }

    fn put(&mut self, part: usize, bytes: &[u8]) -> Result<()> {
        self.parts[part]
            .write_all(bytes)
            .map_err(|e| Error::io("writing", &self.path, e))
    }

    /// Appends a row given densely (its zeros are dropped in a sparse file), with an optional
    /// label. Every value must be finite.
    pub fn push_dense(&mut self, row: &[f32], label: Option<u8>) -> Result<()> {
        if row.len() != self.cols {
            return Err(Error::shape("row width", self.cols, row.len()));
        }
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidData(format!(
                "row {}, column {j} is {}",
                self.rows, row[j]
            )));
        }
        match self.kind {
            StoreKind::Dense => {
                self.put(2, bytemuck::cast_slice(row))?;
                self.nnz += row.len() as u64;
            }
            StoreKind::Sparse => {
                for (j, &v) in row.iter().enumerate() {
                    if v != 0.0 {
                        self.put(1, &(j as u32).to_le_bytes())?;
                        self.put(2, &v.to_le_bytes())?;
                        self.nnz += 1;
                    }
                }
                let nnz = self.nnz;
                self.put(0, &nnz.to_le_bytes())?;
            }
        }
        self.end_row(label)
    }

    /// Appends a row given by its nonzeros (columns strictly increasing, below `cols`).
    pub fn push_sparse(
        &mut self,
        indices: &[u32],
        values: &[f32],
        label: Option<u8>,
    ) -> Result<()> {
        let ok = indices.len() == values.len()
            && indices.iter().all(|&j| (j as usize) < self.cols)
            && indices.windows(2).all(|w| w[0] < w[1])
            && values.iter().all(|v| v.is_finite());
        if !ok {
            return Err(Error::InvalidData(format!(
                "row {}: columns must increase inside the matrix, one finite value each",
                self.rows
            )));
        }
        if self.kind == StoreKind::Dense {
            let mut row = vec![0f32; self.cols];
            for (&j, &v) in indices.iter().zip(values) {
                row[j as usize] = v;
            }
            return self.push_dense(&row, label);
        }
        self.put(1, bytemuck::cast_slice(indices))?;
        self.put(2, bytemuck::cast_slice(values))?;
        self.nnz += indices.len() as u64;
        let nnz = self.nnz;
        self.put(0, &nnz.to_le_bytes())?;
        self.end_row(label)
    }

    fn end_row(&mut self, label: Option<u8>) -> Result<()> {
        self.any_label |= label.is_some();
        self.put(3, &[label.unwrap_or(0)])?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the header and joins the parts into the target, atomically. Labels are kept if
    /// any row had one.
    pub fn finish(self) -> Result<StoreHeader> {
        let StoreWriter {
            path,
            kind,
            cols,
            rows,
            nnz,
            parts,
            any_label,
            names,
        } = self;
        let names_text = names.map(|n| n.join("\n") + "\n").unwrap_or_default();
        if rows == 0 {
            return Err(Error::shape("rows written", "at least one", 0));
        }
        let header = StoreHeader {
            kind,
            rows,
            cols: cols as u64,
            nnz,
            labels: any_label,
            names: names_text.len() as u64,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io = |e: std::io::Error| Error::io("writing", &path, e);
        let mut out = BufWriter::new(temp_in(&dir)?);
        out.write_all(&header.to_bytes()).map_err(io)?;
        let [indptr, indices, values, labels] = parts;
        let mut sources = vec![];
        if kind == StoreKind::Sparse {
            sources.extend([indptr, indices]);
        }
        sources.push(values);
        if any_label {
            sources.push(labels);
        }
        for part in sources {
            let mut f = part.into_inner().map_err(|e| io(e.into_error()))?;
            f.as_file_mut().seek(SeekFrom::Start(0)).map_err(io)?;
            std::io::copy(f.as_file_mut(), &mut out).map_err(io)?;
        }
        out.write_all(names_text.as_bytes()).map_err(io)?;
        let out = out.into_inner().map_err(|e| io(e.into_error()))?;
        out.as_file().sync_all().map_err(io)?;
        out.persist(&path)
            .map_err(|e| Error::io("replacing", &path, e.error))?;
        Ok(header)
    }
}

/// A temporary file in `dir`, readable as an ordinary file once persisted (0644 less the
/// umask), as `crate::io::write_atomic` makes them.
fn temp_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    builder
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating a file in", dir, e))
}

/// Writes `data` (with its labels) to `path` in the given kind.
pub fn write_dataset(
    path: impl AsRef<Path>,
    data: &Dataset,
    kind: StoreKind,
) -> Result<StoreHeader> {
    let mut w = StoreWriter::create(path, kind, data.dim())?;
    if let Some(names) = &data.feature_names {
        w.set_column_names(names)?;
    }
    let mut dense = vec![0f32; data.dim()];
    for r in 0..data.len() {
        let label = data.labels.as_ref().and_then(|l| l.get(r).copied());
        match data.row(r) {
            Some(Row::Sparse { indices, values }) => w.push_sparse(indices, values, label)?,
            _ => {
                data.gather(&[r], &mut dense)?;
                w.push_dense(&dense, label)?;
            }
        }
    }
    w.finish()
}

/// Rows of a memory-mapped matrix file as a dataset sees them: all of them, or one side of the
/// every-tenth-row hold-out, from row `start` on. Nothing is copied.
#[derive(Clone, Debug)]
pub struct MappedRows {
    store: std::sync::Arc<MappedStore>,
    side: Holdout,
    start: usize,
}

/// Which rows of the file a [`MappedRows`] shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holdout {
    /// Every row.
    All,
    /// Every row but the tenth ones (indices 0-8, 10-18, ...).
    Train,
    /// The tenth rows (indices 9, 19, ...).
    Test,
}

impl PartialEq for MappedRows {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.store, &other.store)
            && self.side == other.side
            && self.start == other.start
    }
}

impl MappedRows {
    /// Every row of `store`.
    pub fn all(store: MappedStore) -> Self {
        MappedRows {
            store: std::sync::Arc::new(store),
            side: Holdout::All,
            start: 0,
        }
    }

    /// The file.
    pub fn store(&self) -> &MappedStore {
        &self.store
    }

    /// How many rows of the file a side holds.
    pub fn side_len(&self, side: Holdout) -> usize {
        let n = self.store.header.rows as usize;
        match side {
            Holdout::All => n,
            Holdout::Test => n / 10,
            Holdout::Train => n - n / 10,
        }
    }

    /// The file's row behind row `i` of this view.
    pub fn file_row(&self, i: usize) -> usize {
        let j = self.start + i;
        match self.side {
            Holdout::All => j,
            Holdout::Train => j + j / 9,
            Holdout::Test => 10 * j + 9,
        }
    }

    /// The same rows from `start` on (relative to this view).
    pub(crate) fn skip_rows(&self, start: usize) -> Self {
        MappedRows {
            start: self.start + start,
            ..self.clone()
        }
    }

    /// One side of the hold-out of a view of every row.
    pub(crate) fn side(&self, side: Holdout) -> Self {
        MappedRows {
            side,
            start: 0,
            ..self.clone()
        }
    }
}
