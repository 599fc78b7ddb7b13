//! The IDX format of the MNIST files: a 4-byte magic number (two zero bytes, a type code, the
//! number of dimensions), the dimensions as big-endian u32, then the data. Files may be gzipped.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// The type code of unsigned bytes, the only one MNIST uses.
const TYPE_U8: u8 = 0x08;

/// Reads an IDX file of unsigned bytes, raw or gzipped (detected from its first two bytes).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    parse_idx(open_maybe_gzipped(path)?, path)
}

/// Opens `path` for reading, decompressing it when its first two bytes are gzip's magic
/// (whatever its name): how every reader of possibly gzipped files opens them.
pub(crate) fn open_maybe_gzipped(path: &Path) -> Result<Box<dyn std::io::BufRead>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut magic2 = [0u8; 2];
    let got = read_full(&mut reader, &mut magic2).map_err(|e| Error::io("reading", path, e))?;
    let head = std::io::Cursor::new(magic2[..got].to_vec());
    Ok(if got == 2 && magic2 == [0x1f, 0x8b] {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            head.chain(reader),
        )))
    } else {
        Box::new(head.chain(reader))
    })
}

/// Reads as many bytes as are there, up to `buf.len()`.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Parses an IDX stream (already decompressed). The header is checked, and the size it claims
/// is bounded, before anything is allocated; the stream must then hold exactly that much data.
pub fn parse_idx(mut r: impl Read, path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let bad = |reason: String| Error::malformed(path, reason);
    // A decompressor reports a corrupt or cut-short stream as invalid data or an early end:
    // those are faults of the file, not of the disk.
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::UnexpectedEof => {
            Error::malformed(path, format!("corrupt stream ({e})"))
        }
        _ => Error::io("reading", path, e),
    };
    let mut magic = [0u8; 4];
    if read_full(&mut r, &mut magic).map_err(io)? < 4 {
        return Err(bad("shorter than the 4-byte IDX magic number".into()));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(bad(format!(
            "not an IDX file (magic number {:02x}{:02x}{:02x}{:02x})",
            magic[0], magic[1], magic[2], magic[3]
        )));
    }
    if magic[2] != TYPE_U8 {
        return Err(bad(format!(
            "element type 0x{:02x}, only unsigned bytes (0x08) are supported",
            magic[2]
        )));
    }
    let ndims = magic[3] as usize;
    if ndims == 0 {
        return Err(bad("zero dimensions".into()));
    }
    let mut dim_bytes = vec![0u8; 4 * ndims];
    if read_full(&mut r, &mut dim_bytes).map_err(io)? < dim_bytes.len() {
        return Err(bad(format!(
            "truncated header: {ndims} dimensions announced"
        )));
    }
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&t| t <= MAX_ELEMENTS)
        .ok_or_else(|| bad(format!("dimensions {dims:?} are too large")))?;
    // Read at most one byte more than announced, so an oversized file is caught without
    // reading all of it.
    // Start small: the vector grows with the data actually read, so a header that claims far
    // more than the file holds costs nothing.
    let mut data = Vec::with_capacity(total.min(1 << 16));
    r.take(total as u64 + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() < total {
        return Err(bad(format!(
            "truncated: the header announces {total} values ({dims:?}) but the file holds {}",
            data.len()
        )));
    }
    if data.len() > total {
        return Err(bad(format!(
            "the file holds more data than its header announces ({dims:?})"
        )));
    }
    Ok(IdxArray { dims, data })
}

/// The largest array accepted (1 GiB of bytes); real IDX files are far smaller.
pub const MAX_ELEMENTS: usize = 1 << 30;

/// Writes an uncompressed IDX file of unsigned bytes (for tests and tools).
///
/// ```
/// use elbo::data::idx::{read_idx, write_idx};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("tiny-idx3-ubyte");
/// write_idx(&path, &[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8])?;
/// let back = read_idx(&path)?;
/// assert_eq!((back.dims, back.data[7]), (vec![2, 2, 2], 8));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn write_idx(path: impl AsRef<Path>, dims: &[usize], data: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let mut bytes = vec![0, 0, TYPE_U8, dims.len() as u8];
    for &d in dims {
        bytes.extend_from_slice(&(d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    crate::io::write_atomic(path, &bytes)
}
