//! The size checks every public layer method runs before touching its buffers, so that wrong
//! lengths or row counts from a caller give [`Error::Shape`] instead of a panic.

use crate::error::{Error, Result};

/// `buf` holds at least `rows x cols` values (the product computed without overflow).
pub(crate) fn holds<T>(what: &str, buf: &[T], rows: usize, cols: usize) -> Result<()> {
    match rows.checked_mul(cols) {
        Some(n) if buf.len() >= n => Ok(()),
        _ => Err(Error::shape(
            what,
            format!("at least {rows} x {cols} values"),
            buf.len(),
        )),
    }
}

/// A row width must be at least 1.
pub(crate) fn width(what: &str, cols: usize) -> Result<()> {
    if cols == 0 {
        return Err(Error::shape(what, "a width of at least 1", 0));
    }
    Ok(())
}
