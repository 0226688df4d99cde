//! Checkpoints: operator state, view contents and source positions written to the data
//! directory as Arrow IPC files, so that a restart resumes views where they stood instead of
//! replaying every log from its start.
//!
//! - [`columns`]: helpers that turn Rust-side state (row-format keys, counts, exact sums) into
//!   Arrow columns and back.
//! - [`files`]: one checkpoint on disk — a directory per epoch, an IPC file per piece of state,
//!   and a manifest written last, atomically, which is what makes the checkpoint complete.
//! - [`writer`]: the thread that writes checkpoints the executor hands it, so an epoch never
//!   waits for a disk.
//! - [`recovery`]: finds the newest complete checkpoint that reads back intact, falling back to
//!   older ones with a warning.

pub mod columns;
pub mod error;
pub mod files;
pub mod recovery;
pub mod writer;

pub use error::StateError;
pub use files::{FileEntry, Manifest, SinkCheckpoint, ViewCheckpoint};
pub use recovery::{Recovered, RecoveredView};
pub use writer::{CheckpointInfo, CheckpointJob, CheckpointWriter, ViewState, now_ms};
