//! [`StateError`]: what can go wrong writing or reading a checkpoint.

use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;

/// An error of a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or directory could not be written or read.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding or decoding Arrow IPC failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// The state read back does not fit what the operator expects.
    #[error("checkpoint state does not match: {0}")]
    Mismatch(String),
    /// A file is shorter or different than its manifest says.
    #[error("checkpoint file {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
}

impl StateError {
    /// An I/O failure while `context` on `path`.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// State that does not fit.
    pub fn mismatch(reason: impl Into<String>) -> Self {
        Self::Mismatch(reason.into())
    }
}
