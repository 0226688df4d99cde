//! Durable storage: the internal queue's segmented, append-only log of change batches.
//!
//! A table's changes are kept as a [`Log`] in a directory under the data dir. Each appended
//! [`ChangeBatch`](crate::stream::ChangeBatch) becomes one record at the next position; the
//! records live in size-bounded segment files ([`segment`]) and become durable according to
//! an [`FsyncPolicy`], with concurrent writers sharing fsyncs ([`fsync`]).
//!
//! Writers call [`Log::append`] and then [`Log::wait_durable`] before acknowledging; readers
//! tail the log with [`Log::read`] and [`Log::wait_for`].

pub mod durable;
pub mod error;
pub mod fsync;
pub mod log;
pub mod segment;

pub use error::StorageError;
pub use fsync::{FsyncPolicy, ParseFsyncPolicyError};
pub use log::{DEFAULT_SEGMENT_SIZE, Detached, Log, LogSize, Truncated};
pub use segment::RecordMeta;
