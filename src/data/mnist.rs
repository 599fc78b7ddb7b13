//! MNIST from its four IDX files (raw or gzipped).

use std::path::{Path, PathBuf};

use crate::data::dataset::Dataset;
use crate::data::idx::read_idx;
use crate::error::{Error, Result};

/// Which half of MNIST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// 60 000 training images.
    Train,
    /// 10 000 test images.
    Test,
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::io(
        "finding",
        dir.join(format!("{stem}[.gz]")),
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
    ))
}

/// Loads one split of MNIST from `dir`, with labels; images are kept as bytes.
///
/// ```
/// use elbo::data::idx::write_idx;
/// use elbo::data::mnist::{Split, load};
/// // A two-image stand-in in MNIST's layout (the real files load the same way).
/// let dir = tempfile::tempdir().unwrap();
/// write_idx(dir.path().join("t10k-images-idx3-ubyte"), &[2, 28, 28], &[9; 2 * 784])?;
/// write_idx(dir.path().join("t10k-labels-idx1-ubyte"), &[2], &[3, 7])?;
/// let test = load(dir.path(), Split::Test)?;
/// assert_eq!((test.len(), test.dim(), test.labels.clone()), (2, 784, Some(vec![3, 7])));
/// assert!(load(dir.path(), Split::Train).is_err());       // no training files there
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn load(dir: impl AsRef<Path>, split: Split) -> Result<Dataset> {
    let dir = dir.as_ref();
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let img_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lbl_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx(&img_path)?;
    let labels = read_idx(&lbl_path)?;
    if images.dims.len() != 3 {
        return Err(Error::malformed(
            &img_path,
            format!(
                "expected 3 dimensions (count, rows, columns), found {:?}",
                images.dims
            ),
        ));
    }
    if labels.dims.len() != 1 {
        return Err(Error::malformed(
            &lbl_path,
            format!("expected 1 dimension (count), found {:?}", labels.dims),
        ));
    }
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        return Err(Error::malformed(
            &lbl_path,
            format!("{} labels for {n} images", labels.dims[0]),
        ));
    }
    if let Some(&bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(Error::malformed(
            &lbl_path,
            format!("label {bad} is not a digit"),
        ));
    }
    let mut ds = Dataset::from_bytes(n, h * w, images.data)
        .map_err(|e| Error::malformed(&img_path, e.to_string()))?;
    ds.labels = Some(labels.data);
    ds.image_shape = Some((h, w));
    Ok(ds)
}
