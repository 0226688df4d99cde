//! [`CheckpointWriter`]: a thread that writes the checkpoints the executor hands it. The
//! executor copies its state into Arrow batches at a barrier (a consistent cut) and goes on;
//! files, fsyncs and the manifest happen here. One checkpoint is written at a time: when the
//! previous one is still being written, the executor skips a checkpoint rather than queueing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::watch;

use super::StateError;
use super::files::{self, FORMAT, Manifest, SinkCheckpoint, ViewCheckpoint};

/// A piece of a view's state: a file name (without extension), its schema and its batches.
pub type Piece = (String, SchemaRef, PieceData);

/// A piece's batches: made at the barrier, or made on the checkpoint thread from state the
/// executor shares and never changes in place (a view's rows), so that the executor does not
/// copy them.
pub enum PieceData {
    /// The batches.
    Ready(Vec<RecordBatch>),
    /// Makes the batches.
    Deferred(Box<dyn FnOnce() -> Result<Vec<RecordBatch>, StateError> + Send>),
}

impl std::fmt::Debug for PieceData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready(batches) => f.debug_tuple("Ready").field(&batches.len()).finish(),
            Self::Deferred(_) => f.write_str("Deferred"),
        }
    }
}

impl PieceData {
    /// The batches, made now if deferred.
    pub fn batches(self) -> Result<Vec<RecordBatch>, StateError> {
        match self {
            Self::Ready(batches) => Ok(batches),
            Self::Deferred(make) => make(),
        }
    }
}

/// A view's state at a barrier.
#[derive(Debug)]
pub struct ViewState {
    /// Catalog id.
    pub id: u32,
    /// Name, for logs.
    pub name: String,
    /// Per source, the next log position.
    pub positions: Vec<u64>,
    /// Per source, its watermark.
    pub source_watermarks: Vec<Option<i64>>,
    /// The view's watermark.
    pub watermark: Option<i64>,
    /// Partitions of its keyed operators.
    pub parallelism: usize,
    /// Its state, or `None` when nothing changed since the last checkpoint.
    pub pieces: Option<Vec<Piece>>,
}

/// A sink's undelivered changes at a barrier (data columns plus a weight column).
#[derive(Debug)]
pub struct SinkState {
    /// The sink's name.
    pub name: String,
    /// The schema of `pending`.
    pub schema: SchemaRef,
    /// Changes not yet delivered.
    pub pending: Vec<RecordBatch>,
}

/// One checkpoint to write.
#[derive(Debug)]
pub struct CheckpointJob {
    /// The epoch of the barrier.
    pub epoch: u64,
    /// Every view that can checkpoint.
    pub views: Vec<ViewState>,
    /// Every exactly-once sink.
    pub sinks: Vec<SinkState>,
}

/// A finished checkpoint, as `sluice_checkpoints` shows it.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    /// `checkpoint`, or `recovery` for the checkpoint a start recovered from (then the views
    /// counts are views restored and views replayed from their logs' start).
    pub kind: &'static str,
    /// Its epoch.
    pub epoch: u64,
    /// When it completed, ms since 1970.
    pub completed_at_ms: u64,
    /// From the barrier to the manifest being durable, ms.
    pub duration_ms: u64,
    /// Bytes written by this checkpoint.
    pub bytes_written: u64,
    /// Bytes of every file it uses (including earlier checkpoints' files of unchanged views).
    pub total_bytes: u64,
    /// Views written.
    pub views_written: usize,
    /// Views unchanged since the previous checkpoint, not written again.
    pub views_reused: usize,
}

impl CheckpointInfo {
    /// The row for a recovery from `manifest` that took `elapsed` in all.
    pub fn recovery(
        manifest: &Manifest,
        elapsed: std::time::Duration,
        restored: usize,
        replayed: usize,
    ) -> Self {
        Self {
            kind: "recovery",
            epoch: manifest.epoch,
            completed_at_ms: now_ms(),
            duration_ms: elapsed.as_millis() as u64,
            bytes_written: 0,
            total_bytes: manifest.bytes(),
            views_written: restored,
            views_reused: replayed,
        }
    }
}

/// The checkpoint thread.
#[derive(Debug)]
pub struct CheckpointWriter {
    sender: Option<SyncSender<(CheckpointJob, Instant)>>,
    busy: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    completed: watch::Sender<u64>,
    thread: Option<JoinHandle<()>>,
}

impl CheckpointWriter {
    /// Starts the thread writing under `root`. `previous` is the checkpoint recovery started
    /// from: unchanged views refer to its files. `on_complete` hears of each checkpoint.
    pub fn start(
        root: PathBuf,
        previous: Option<Manifest>,
        on_complete: Box<dyn Fn(CheckpointInfo) + Send>,
    ) -> Result<Self, StateError> {
        std::fs::create_dir_all(&root).map_err(|e| StateError::io("creating", &root, e))?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let busy = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let completed = watch::channel(previous.as_ref().map_or(0, |m| m.epoch)).0;
        let thread = {
            let busy = Arc::clone(&busy);
            let failed = Arc::clone(&failed);
            let completed = completed.clone();
            let last: HashMap<u32, ViewCheckpoint> = previous
                .map(|m| m.views.into_iter().map(|v| (v.id, v)).collect())
                .unwrap_or_default();
            std::thread::Builder::new()
                .name("sluice-checkpoint".into())
                .spawn(move || {
                    run(
                        &root,
                        receiver,
                        last,
                        &busy,
                        &failed,
                        &completed,
                        &*on_complete,
                    )
                })
                .map_err(|e| StateError::io("starting the checkpoint thread", "", e))?
        };
        Ok(Self {
            sender: Some(sender),
            busy,
            failed,
            completed,
            thread: Some(thread),
        })
    }

    /// True while a checkpoint is being written.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// True (once) when the last checkpoint failed: the next one must write every view.
    pub fn take_failure(&self) -> bool {
        self.failed.swap(false, Ordering::SeqCst)
    }

    /// Hands a checkpoint over; `started` is when the barrier was taken.
    pub fn submit(&self, job: CheckpointJob, started: Instant) {
        self.busy.store(true, Ordering::SeqCst);
        if let Some(sender) = &self.sender
            && sender.send((job, started)).is_err()
        {
            self.busy.store(false, Ordering::SeqCst);
        }
    }

    /// The epoch of the newest complete checkpoint, as it changes.
    pub fn completed(&self) -> watch::Receiver<u64> {
        self.completed.subscribe()
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    root: &Path,
    receiver: Receiver<(CheckpointJob, Instant)>,
    mut last: HashMap<u32, ViewCheckpoint>,
    busy: &AtomicBool,
    failed: &AtomicBool,
    completed: &watch::Sender<u64>,
    on_complete: &dyn Fn(CheckpointInfo),
) {
    for (job, started) in receiver {
        let epoch = job.epoch;
        let span = tracing::info_span!("checkpoint", epoch);
        let _entered = span.enter();
        match write(root, job, &last) {
            Ok((manifest, written, bytes_written)) => {
                let info = CheckpointInfo {
                    kind: "checkpoint",
                    epoch,
                    completed_at_ms: now_ms(),
                    duration_ms: started.elapsed().as_millis() as u64,
                    bytes_written,
                    total_bytes: manifest.bytes(),
                    views_written: written,
                    views_reused: manifest.views.len() - written,
                };
                tracing::info!(
                    duration_ms = info.duration_ms,
                    bytes_written = info.bytes_written,
                    total_bytes = info.total_bytes,
                    views_written = info.views_written,
                    views_reused = info.views_reused,
                    "checkpoint complete"
                );
                last = manifest.views.iter().map(|v| (v.id, v.clone())).collect();
                completed.send_replace(epoch);
                // Keep this checkpoint and the one before it: recovery falls back to that one
                // when a file of this one turns out damaged.
                let complete = files::complete_checkpoints(root);
                let keep: Vec<&Manifest> = complete.iter().take(2).map(|(_, m)| m).collect();
                files::remove_unused(root, &keep);
                on_complete(info);
            }
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint failed; the next one writes every view");
                failed.store(true, Ordering::SeqCst);
            }
        }
        busy.store(false, Ordering::SeqCst);
    }
}

/// Writes a checkpoint; returns its manifest, the views written and the bytes written.
fn write(
    root: &Path,
    job: CheckpointJob,
    last: &HashMap<u32, ViewCheckpoint>,
) -> Result<(Manifest, usize, u64), StateError> {
    let dir_name = files::dir_name(job.epoch);
    let dir = root.join(&dir_name);
    std::fs::create_dir_all(&dir).map_err(|e| StateError::io("creating", &dir, e))?;
    let mut views = Vec::with_capacity(job.views.len());
    let mut written = 0;
    let mut bytes = 0;
    for view in job.views {
        let (written_at, entries) = match view.pieces {
            Some(pieces) => {
                let view_dir = format!("{dir_name}/view-{}", view.id);
                let path = root.join(&view_dir);
                std::fs::create_dir_all(&path).map_err(|e| StateError::io("creating", &path, e))?;
                let mut entries = Vec::with_capacity(pieces.len());
                for (name, schema, data) in pieces {
                    let batches = data.batches()?;
                    let entry = files::write_ipc(
                        root,
                        &format!("{view_dir}/{name}.arrow"),
                        &schema,
                        &batches,
                    )?;
                    bytes += entry.bytes;
                    entries.push((name, entry));
                }
                files::sync_dir(&path)?;
                written += 1;
                (job.epoch, entries)
            }
            None => {
                let previous = last.get(&view.id).ok_or_else(|| {
                    StateError::mismatch(format!(
                        "view {} is unchanged but no earlier checkpoint holds it",
                        view.name
                    ))
                })?;
                (previous.written_at, previous.files.clone())
            }
        };
        views.push(ViewCheckpoint {
            id: view.id,
            name: view.name,
            written_at,
            files: entries,
            positions: view.positions,
            source_watermarks: view.source_watermarks,
            watermark: view.watermark,
            parallelism: view.parallelism,
        });
    }
    let mut sinks = Vec::with_capacity(job.sinks.len());
    for sink in job.sinks {
        let pending = if sink.pending.is_empty() {
            None
        } else {
            let entry = files::write_ipc(
                root,
                &format!("{dir_name}/sink-{}.arrow", sink.name),
                &sink.schema,
                &sink.pending,
            )?;
            bytes += entry.bytes;
            Some(entry)
        };
        sinks.push(SinkCheckpoint {
            name: sink.name,
            batch: job.epoch,
            pending,
        });
    }
    files::sync_dir(&dir)?;
    files::sync_dir(root)?;
    let manifest = Manifest {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").to_string(),
        epoch: job.epoch,
        taken_at_ms: now_ms(),
        views,
        sinks,
    };
    files::write_manifest(&dir, &manifest)?;
    Ok((manifest, written, bytes))
}

/// Milliseconds since 1970, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
