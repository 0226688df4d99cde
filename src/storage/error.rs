//! [`StorageError`]: everything that can go wrong reading or writing the log.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::error::ArrowError;

/// An error of the durable log.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O operation failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done, e.g. "writing to segment".
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Encoding or decoding a record's Arrow IPC payload failed.
    #[error("arrow ipc: {0}")]
    Arrow(#[from] ArrowError),

    /// A record on disk is damaged somewhere other than the tail of the log.
    #[error("corrupt log at {path} offset {offset}: {reason}")]
    Corrupt {
        /// The segment file holding the damaged record.
        path: PathBuf,
        /// The byte offset of the damaged record in that file.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// An fsync failed earlier; the log refuses to claim durability from then on, because
    /// after a failed fsync the kernel may have dropped the dirty pages and a retry could
    /// falsely succeed.
    #[error("log {path} is unusable after a failed fsync: {source}")]
    SyncFailed {
        /// The log directory.
        path: PathBuf,
        /// The fsync error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A write failed and could not be rolled back; the log refuses further appends.
    #[error("log {path} is unusable after a failed write that could not be undone")]
    Broken {
        /// The log directory.
        path: PathBuf,
    },

    /// A record is too large for the 32-bit length in its header.
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// The encoded payload length.
        len: usize,
        /// The largest payload a record can hold.
        max: usize,
    },

    /// [`Log::wait_durable`](super::Log::wait_durable) was asked about a position that has not
    /// been appended.
    #[error("position {position} has not been appended (the log ends at {end})")]
    NotAppended {
        /// The position asked about.
        position: u64,
        /// The position after the last appended record.
        end: u64,
    },

    /// Another [`Log`](super::Log) (in this or another process) has the directory open.
    #[error("log directory {path} is locked by another open log")]
    Locked {
        /// The log directory.
        path: PathBuf,
    },
}

impl StorageError {
    /// Wraps an I/O error with what was being done and to which path.
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
