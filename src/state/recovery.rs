//! Recovery: the newest complete checkpoint whose every file reads back intact. A checkpoint
//! with a missing, truncated or damaged file is passed over with a warning and the one before
//! it is tried; with none left, views replay their logs from the start.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;

use super::StateError;
use super::files::{self, FORMAT, Manifest, ViewCheckpoint};

/// A view's state read back.
#[derive(Debug)]
pub struct RecoveredView {
    /// What the manifest says of it.
    pub checkpoint: ViewCheckpoint,
    /// Its pieces by name.
    pub pieces: HashMap<String, Vec<RecordBatch>>,
}

/// The checkpoint recovery starts from.
#[derive(Debug)]
pub struct Recovered {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its views by id.
    pub views: HashMap<u32, RecoveredView>,
    /// Per sink, its undelivered changes.
    pub sinks: HashMap<String, Vec<RecordBatch>>,
    /// Time to find and read it.
    pub elapsed: Duration,
}

/// Reads the newest intact checkpoint under `root`, if any.
pub fn recover(root: &Path) -> Option<Recovered> {
    let started = Instant::now();
    for (dir, manifest) in files::complete_checkpoints(root) {
        if manifest.format != FORMAT || manifest.version != env!("CARGO_PKG_VERSION") {
            tracing::warn!(
                dir = %dir.display(),
                version = %manifest.version,
                "checkpoint written by another version of Sluice; not used"
            );
            continue;
        }
        match load(root, &manifest) {
            Ok((views, sinks)) => {
                return Some(Recovered {
                    manifest,
                    views,
                    sinks,
                    elapsed: started.elapsed(),
                });
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "checkpoint damaged; falling back to the one before it"
            ),
        }
    }
    None
}

type Loaded = (
    HashMap<u32, RecoveredView>,
    HashMap<String, Vec<RecordBatch>>,
);

fn load(root: &Path, manifest: &Manifest) -> Result<Loaded, StateError> {
    let mut views = HashMap::new();
    for view in &manifest.views {
        // Files are read (and checked) on a thread each.
        let read: Vec<Result<Vec<RecordBatch>, StateError>> = std::thread::scope(|scope| {
            let reading: Vec<_> = view
                .files
                .iter()
                .map(|(_, entry)| scope.spawn(move || files::read_ipc(root, entry)))
                .collect();
            reading
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| Err(StateError::mismatch("reading a file panicked")))
                })
                .collect()
        });
        let mut pieces = HashMap::new();
        for ((name, _), batches) in view.files.iter().zip(read) {
            pieces.insert(name.clone(), batches?);
        }
        views.insert(
            view.id,
            RecoveredView {
                checkpoint: view.clone(),
                pieces,
            },
        );
    }
    let mut sinks = HashMap::new();
    for sink in &manifest.sinks {
        let pending = match &sink.pending {
            Some(entry) => files::read_ipc(root, entry)?,
            None => Vec::new(),
        };
        sinks.insert(sink.name.clone(), pending);
    }
    Ok((views, sinks))
}
