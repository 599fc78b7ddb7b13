//! The one error type of the library.

use std::path::PathBuf;

/// Everything that can go wrong on user input, files or a run. Library code returns this and
/// never panics on user input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An array whose size does not match what the model or another array needs.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        /// Which input.
        what: String,
        /// What was expected, in words.
        expected: String,
        /// What was given.
        got: String,
    },
    /// Data values that the model cannot use (NaN, infinite, out of range).
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// A request that cannot apply to these (valid) data or this model, such as pictures of
    /// data that are not images.
    #[error("not possible here: {0}")]
    Unsupported(String),
    /// A hyper-parameter or size that is impossible.
    #[error("invalid setting {name} = {value}: {reason}")]
    InvalidConfig {
        /// The setting's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A file that is not what it claims to be (truncated, wrong magic number, wrong sizes).
    #[error("malformed file {path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An operating-system error on a file.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Training stopped at the caller's request (the stop flag), after a whole step.
    #[error("interrupted after step {step} (epoch {epoch}, batch {batch} of {batches})")]
    Interrupted {
        /// The epoch under way (1-based).
        epoch: usize,
        /// Steps completed in the run.
        step: u64,
        /// Batches completed in the epoch.
        batch: usize,
        /// Batches in the epoch.
        batches: usize,
    },
    /// Processes training together disagree, or one of them failed.
    #[error("distributed training: {0}")]
    Distributed(String),
    /// The loss became NaN or infinite during training.
    #[error("training diverged at epoch {epoch}, step {step}: the loss is {loss}; {hint}")]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the run (1-based).
        step: u64,
        /// The loss that was seen.
        loss: f64,
        /// The likely cause.
        hint: &'static str,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An impossible setting.
    pub fn config(name: &'static str, value: impl ToString, reason: &'static str) -> Self {
        Error::InvalidConfig {
            name,
            value: value.to_string(),
            reason,
        }
    }

    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl ToString,
        got: impl ToString,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    /// An OS error on a file.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A file that is not what it claims to be.
    pub fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
