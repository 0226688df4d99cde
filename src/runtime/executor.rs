//! [`Executor`]: runs every view, one epoch at a time, on a thread of its own.
//!
//! An epoch is a barrier: the executor takes a consistent cut of every table's log (the end
//! positions, read while no write can commit), pushes each view's new input up to the cut
//! through its operators in creation order (so a view over a view sees this epoch's changes of
//! the view below), and then publishes every view's contents at once. A reader pins one
//! published epoch for a whole statement. Epochs run every barrier interval, or at once when a
//! statement asks (`FLUSH`, `CREATE MATERIALIZED VIEW`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::catalog::registry::TableRegistry;
use crate::catalog::views::{
    Backfill, OperatorState, Published, SubscriptionInfo, ViewRegistry, ViewSnapshot,
};
use crate::error::{Error, Result, sqlstate};
use crate::planner::{SourceRef, StreamPlan};
use crate::state::writer::SinkState;
use crate::state::{CheckpointJob, CheckpointWriter, RecoveredView, StateError, ViewState};
use crate::stream::{ChangeBatch, Timestamp};
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::contents::ViewContents;
use super::dataflow::Node;
use super::subscribe::{EndReason, SubscribeEvent, SubscribeOptions, SubscriberFeed, Subscription};

/// The name of a view's contents among its checkpoint pieces.
const CONTENTS: &str = "contents";

/// Log records read per chunk: bounds the memory a catching-up view holds at once.
const READ_CHUNK: usize = 64;
/// Log records after which a catching-up view ends a sub-epoch: keyed operators emit and
/// windows the watermark passed close, so state stays bounded however long the backlog is.
/// Nothing is published until the epoch ends.
const SUB_EPOCH_RECORDS: u64 = 16;

/// A running view: its operators, where each source stands, and its contents.
#[derive(Debug)]
pub struct RunningView {
    id: u32,
    name: String,
    root: Node,
    sources: Vec<SourceState>,
    contents: ViewContents,
    /// Why the view stopped: the SQLSTATE and message of its error.
    failed: Option<(&'static str, String)>,
    watermark: Option<Timestamp>,
    /// Published for `SELECT` at each epoch; false for a view that only feeds a subscription.
    published: bool,
    /// Whether its state moved since the last checkpoint (otherwise that one's files serve).
    changed_since_checkpoint: bool,
    /// Restored from a checkpoint: it is consistent with the views it reads as they stand.
    restored: bool,
    /// Set to stop the view mid-epoch (a cancelled `CREATE MATERIALIZED VIEW`): it fails at
    /// its next chunk of input, and is then dropped.
    cancel: Arc<AtomicBool>,
}

#[derive(Debug)]
struct SourceState {
    source: SourceRef,
    /// Next log position to read (tables).
    position: u64,
    /// The source's watermark so far.
    watermark: Option<Timestamp>,
    /// Changes to feed before anything else: a view's contents when this view was created.
    pending: Vec<ChangeBatch>,
}

impl RunningView {
    /// A view about to start: every table source reads its log from position 0.
    pub fn new(id: u32, name: String, plan: StreamPlan, append_only: bool) -> Result<Self> {
        Ok(Self {
            id,
            name,
            root: plan.root,
            sources: plan
                .sources
                .into_iter()
                .map(|source| SourceState {
                    source,
                    position: 0,
                    watermark: None,
                    pending: Vec::new(),
                })
                .collect(),
            contents: if append_only {
                ViewContents::append_only(plan.schema)?
            } else {
                ViewContents::new(plan.schema, plan.key)?
            },
            failed: None,
            watermark: None,
            published: true,
            changed_since_checkpoint: true,
            restored: false,
            cancel: Arc::default(),
        })
    }

    /// Setting it stops the view at its next chunk of input, with `57014`.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Puts the view back where a checkpoint left it: operator state, contents, the position
    /// and watermark of each source.
    pub fn restore(&mut self, recovered: &RecoveredView) -> std::result::Result<(), StateError> {
        let checkpoint = &recovered.checkpoint;
        if checkpoint.positions.len() != self.sources.len()
            || checkpoint.source_watermarks.len() != self.sources.len()
        {
            return Err(StateError::mismatch("the view's sources differ"));
        }
        // State written with another parallelism is re-partitioned as it is restored.
        let contents = recovered
            .pieces
            .get(CONTENTS)
            .ok_or_else(|| StateError::mismatch("no contents"))?;
        // The rows and the operators' state are independent: restored side by side.
        let (root, rows) = (&mut self.root, &mut self.contents);
        std::thread::scope(|scope| {
            let restoring_rows = scope.spawn(|| rows.restore(contents));
            root.restore(&recovered.pieces)?;
            restoring_rows
                .join()
                .unwrap_or_else(|_| Err(StateError::mismatch("restoring the view's rows panicked")))
        })?;
        for ((source, &position), &watermark) in self
            .sources
            .iter_mut()
            .zip(&checkpoint.positions)
            .zip(&checkpoint.source_watermarks)
        {
            source.position = position;
            source.watermark = watermark;
        }
        self.watermark = checkpoint.watermark;
        self.changed_since_checkpoint = false;
        self.restored = true;
        Ok(())
    }

    /// The view's state for a checkpoint: `None` when it is not checkpointed (failed, or only
    /// feeding a subscription); no pieces when nothing changed since the last checkpoint and
    /// `everything` is false.
    fn checkpoint(&self, everything: bool) -> std::result::Result<Option<ViewState>, StateError> {
        if self.failed.is_some() || !self.published {
            return Ok(None);
        }
        let pieces = if self.changed_since_checkpoint || everything {
            let (schema, rows) = self.contents.checkpoint()?;
            let mut pieces = vec![(CONTENTS.to_string(), schema, rows)];
            for (name, batch) in self.root.checkpoint()? {
                pieces.push((name, batch.schema(), vec![batch]));
            }
            Some(pieces)
        } else {
            None
        };
        Ok(Some(ViewState {
            id: self.id,
            name: self.name.clone(),
            positions: self.sources.iter().map(|s| s.position).collect(),
            source_watermarks: self.sources.iter().map(|s| s.watermark).collect(),
            watermark: self.watermark,
            parallelism: self.root.parallelism(),
            pieces,
        }))
    }

    /// The state the view keeps: its rows, then each keyed operator's partitions. Constant
    /// time per operator partition.
    fn state(&self) -> Vec<OperatorState> {
        let mut keyed = Vec::new();
        self.root.state_sizes(&mut keyed);
        let mut out = Vec::with_capacity(keyed.len() + 1);
        out.push(OperatorState {
            operator_id: 0,
            operator: "Materialize".into(),
            partition: None,
            size: self.contents.state_size(),
        });
        let mut id = 0;
        for (label, partition, size) in keyed {
            // An operator's partitions are listed together, from 0.
            if partition == 0 {
                id += 1;
            }
            out.push(OperatorState {
                operator_id: id,
                operator: label.to_string(),
                partition: Some(partition as u32),
                size,
            });
        }
        out
    }

    /// A view that only feeds subscriptions (`SUBSCRIBE (SELECT …)`): never published.
    pub fn unpublished(mut self) -> Self {
        self.published = false;
        self
    }
}

/// One epoch's changes of a view, as a sink receives them.
#[derive(Debug, Clone)]
pub struct SinkEpoch {
    /// The epoch.
    pub epoch: u64,
    /// The view's changes in it (its whole contents, as inserts, for a sink's first epoch).
    pub changes: Vec<ChangeBatch>,
}

/// A sink fed by the executor.
#[derive(Debug)]
struct SinkFeed {
    view: u32,
    sender: std::sync::mpsc::SyncSender<SinkEpoch>,
    /// Its counters: the executor notes the newest epoch it handed over.
    stats: Arc<crate::connector::sink::SinkStats>,
    /// `None`: at-least-once, each epoch's changes sent at once.
    exactly_once: Option<ExactlyOnceFeed>,
}

/// An exactly-once sink's changes: gathered until a checkpoint, kept in every checkpoint
/// until the sink confirms it committed them.
#[derive(Debug)]
struct ExactlyOnceFeed {
    name: String,
    /// The view's schema.
    schema: SchemaRef,
    /// Changes since the last checkpoint.
    pending: Vec<ChangeBatch>,
    /// Batches handed to the sink and not yet confirmed, by checkpoint epoch.
    unconfirmed: Vec<(u64, Vec<ChangeBatch>)>,
    /// The newest batch the sink committed.
    confirmed: Arc<AtomicU64>,
}

impl ExactlyOnceFeed {
    /// The unconfirmed batches as stored in a checkpoint: the view's columns, the weight and
    /// the batch.
    fn stored(&self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut fields: Vec<Arc<Field>> = self.schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(
            crate::stream::columns::WEIGHT_COLUMN,
            DataType::Int64,
            false,
        )));
        fields.push(Arc::new(Field::new(
            SINK_BATCH_COLUMN,
            DataType::Int64,
            false,
        )));
        let schema = Arc::new(Schema::new(fields));
        let mut out = Vec::new();
        for (batch, changes) in &self.unconfirmed {
            for change in changes {
                let mut columns = change.with_weight_column()?.columns().to_vec();
                columns.push(Arc::new(Int64Array::from_value(
                    *batch as i64,
                    change.num_rows(),
                )));
                out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
            }
        }
        Ok((schema, out))
    }
}

/// The column of a stored sink change naming its batch.
const SINK_BATCH_COLUMN: &str = "_sluice_sink_batch";

/// Splits what [`ExactlyOnceFeed::stored`] wrote back into batches of changes.
pub fn sink_batches(stored: &[RecordBatch]) -> Result<Vec<(u64, Vec<ChangeBatch>)>> {
    let mut out: Vec<(u64, Vec<ChangeBatch>)> = Vec::new();
    for batch in stored {
        let index = batch.schema().index_of(SINK_BATCH_COLUMN)?;
        let ids = batch
            .column(index)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::internal("a stored sink batch id is not BIGINT"))?;
        let Some(id) = ids.iter().next().flatten() else {
            continue;
        };
        let mut data = batch.clone();
        data.remove_column(index);
        let change = ChangeBatch::from_stored(data)?;
        match out.last_mut() {
            Some((last, changes)) if *last == id as u64 => changes.push(change),
            _ => out.push((id as u64, vec![change])),
        }
    }
    Ok(out)
}

/// How a sink is fed exactly once.
#[derive(Debug)]
pub struct ExactlyOnce {
    /// The sink's name.
    pub name: String,
    /// Where the sink says which batch it committed last.
    pub confirmed: Arc<AtomicU64>,
    /// Recovered: the batches of the checkpoint not confirmed before the restart (the sink
    /// resends what of them is missing); the view's contents are not sent again.
    pub resumed: Option<Vec<(u64, Vec<ChangeBatch>)>>,
}

#[derive(Debug, Default)]
struct ViewSet {
    running: Vec<RunningView>,
    sinks: Vec<SinkFeed>,
    subscribers: Vec<SubscriberFeed>,
    epoch: u64,
    snapshots: HashMap<u32, ViewSnapshot>,
}

impl ViewSet {
    /// Stops and forgets view `id`.
    fn remove_view(&mut self, id: u32) {
        self.running.retain(|v| v.id != id);
        self.snapshots.remove(&id);
    }
}

#[derive(Debug)]
struct Shared {
    set: Mutex<ViewSet>,
    requests: AtomicU64,
    wake: Mutex<bool>,
    wake_cond: Condvar,
    completed: watch::Sender<u64>,
    stop: AtomicBool,
    /// While positive, no epoch runs (views restored from a checkpoint are being added: they
    /// must all see the same epochs from the barrier they were taken at).
    held: std::sync::atomic::AtomicUsize,
    interval: Duration,
    tables: Arc<TableRegistry>,
    views: Arc<ViewRegistry>,
    commit_gate: Arc<RwLock<()>>,
    checkpoints: Option<Checkpoints>,
}

/// Checkpointing: the writer thread and when the last checkpoint was taken.
#[derive(Debug)]
pub struct Checkpoints {
    writer: CheckpointWriter,
    interval: Duration,
    last: Mutex<Instant>,
}

impl Checkpoints {
    /// A checkpoint every `interval`, written by `writer`.
    pub fn new(writer: CheckpointWriter, interval: Duration) -> Self {
        Self {
            writer,
            interval,
            last: Mutex::new(Instant::now()),
        }
    }
}

/// The view runtime.
#[derive(Debug)]
pub struct Executor {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Executor {
    /// Starts the executor thread with a barrier every `interval`.
    pub fn start(
        interval: Duration,
        tables: Arc<TableRegistry>,
        views: Arc<ViewRegistry>,
        commit_gate: Arc<RwLock<()>>,
        checkpoints: Option<Checkpoints>,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            set: Mutex::new(ViewSet::default()),
            requests: AtomicU64::new(0),
            wake: Mutex::new(false),
            wake_cond: Condvar::new(),
            completed: watch::channel(0).0,
            stop: AtomicBool::new(false),
            held: std::sync::atomic::AtomicUsize::new(0),
            interval,
            tables,
            views,
            commit_gate,
            checkpoints,
        });
        let runner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sluice-views".into())
            .spawn(move || runner.run())
            .map_err(|e| Error::internal(format!("cannot start the view runtime: {e}")))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Adds a view; it starts from its sources' beginnings at the next epoch. A source that is
    /// a view starts from that view's current contents.
    pub fn add(&self, mut view: RunningView) -> Result<()> {
        let mut set = self.shared.lock_set();
        // A restored view stands at the same barrier as the views it reads: nothing to feed.
        let sources = if view.restored {
            &mut [][..]
        } else {
            &mut view.sources[..]
        };
        for source in sources {
            if let SourceRef::View(upstream) = &source.source {
                let running = set
                    .running
                    .iter()
                    .find(|v| v.id == upstream.id)
                    .ok_or_else(|| {
                        Error::unsupported(format!("view \"{}\" is not running", upstream.name))
                    })?;
                source.pending = running.contents.as_inserts()?;
                source.watermark = running.watermark;
            }
        }
        set.running.push(view);
        Ok(())
    }

    /// Feeds view `view`'s changes to `sender`, one message per epoch that changed it,
    /// starting with its current contents. The channel is bounded: a slow sink holds the
    /// executor back rather than letting changes pile up. A sink whose receiver is gone is
    /// forgotten.
    ///
    /// With `exactly_once`, changes go to the sink only at checkpoints, as one batch per
    /// checkpoint, and stay in every checkpoint until the sink confirms them.
    pub fn add_sink(
        &self,
        view: u32,
        sender: std::sync::mpsc::SyncSender<SinkEpoch>,
        stats: Arc<crate::connector::sink::SinkStats>,
        exactly_once: Option<ExactlyOnce>,
    ) -> Result<()> {
        let mut set = self.shared.lock_set();
        let running = set
            .running
            .iter()
            .find(|v| v.id == view)
            .ok_or_else(|| Error::unsupported(format!("view {view} is not running")))?;
        let exactly_once = match exactly_once {
            None => {
                let first = SinkEpoch {
                    epoch: set.epoch,
                    changes: running.contents.as_inserts()?,
                };
                stats.handed.fetch_max(set.epoch, Ordering::Relaxed);
                sender
                    .send(first)
                    .map_err(|_| Error::internal("the sink stopped before it started"))?;
                None
            }
            Some(ExactlyOnce {
                name,
                confirmed,
                resumed,
            }) => {
                let (pending, unconfirmed) = match resumed {
                    Some(batches) => (Vec::new(), batches),
                    None => (running.contents.as_inserts()?, Vec::new()),
                };
                Some(ExactlyOnceFeed {
                    name,
                    schema: running.contents.schema(),
                    pending,
                    unconfirmed,
                    confirmed,
                })
            }
        };
        set.sinks.push(SinkFeed {
            view,
            sender,
            stats,
            exactly_once,
        });
        Ok(())
    }

    /// The epoch of the newest durable checkpoint, as it changes (`None`: no checkpoints).
    pub fn checkpoint_completed(&self) -> Option<watch::Receiver<u64>> {
        self.shared
            .checkpoints
            .as_ref()
            .map(|c| c.writer.completed())
    }

    /// Subscribes to view `view`'s changes: with `snapshot`, its contents first (as inserts);
    /// then one message per epoch that changed it, and with `progress` one after every epoch.
    /// `as_of` starts the feed at that epoch, which must not have passed (earlier epochs are
    /// not kept). At most `capacity` messages wait unread before the subscriber is dropped.
    pub fn subscribe(
        &self,
        view: u32,
        options: &SubscribeOptions,
        capacity: usize,
        owned: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Result<Subscription> {
        let SubscribeOptions {
            snapshot,
            progress,
            as_of,
        } = *options;
        let mut set = self.shared.lock_set();
        let now = set.epoch;
        let running = set
            .running
            .iter()
            .find(|v| v.id == view)
            .ok_or_else(|| Error::unsupported(format!("view {view} is not running")))?;
        if let Some((code, message)) = &running.failed {
            return Err(Error::user(
                code,
                format!("view \"{}\" failed: {message}", running.name),
            ));
        }
        if let Some(epoch) = as_of
            && epoch < now
        {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "AS OF {epoch} is before the current epoch {now}: \
                     past epochs are not kept; use AS OF {now} or later"
                ),
            ));
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(2));
        let end = Arc::new(EndReason::default());
        let mut feed = SubscriberFeed {
            view,
            progress,
            start: as_of.unwrap_or(now),
            started: false,
            snapshot,
            sender,
            end: Arc::clone(&end),
        };
        if feed.start == now {
            start_feed(&mut feed, running, now)?;
        }
        set.subscribers.push(feed);
        Ok(Subscription::new(receiver, end, owned))
    }

    /// Live subscriptions, and views running only for one.
    pub fn subscriptions(&self) -> (usize, usize) {
        let set = self.shared.lock_set();
        let unpublished = set.running.iter().filter(|v| !v.published).count();
        (set.subscribers.len(), unpublished)
    }

    /// A guard that stops view `id` when dropped (a view that exists only for a subscription).
    pub fn stop_on_drop(&self, id: u32) -> ViewGuard {
        ViewGuard {
            shared: Arc::downgrade(&self.shared),
            id,
        }
    }

    /// Stops and forgets view `id`.
    pub fn remove(&self, id: u32) {
        self.shared.lock_set().remove_view(id);
    }

    /// Returns once an epoch that started after this call has completed: every write
    /// acknowledged before the call is then visible in every view.
    pub async fn flush(&self) {
        let target = self.shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.wake();
        let mut completed = self.shared.completed.subscribe();
        // The sender lives as long as `self`.
        let _ = completed.wait_for(|&c| c >= target).await;
    }
}

/// Holds epochs back until dropped.
#[derive(Debug)]
pub struct EpochHold {
    shared: Arc<Shared>,
}

impl Drop for EpochHold {
    fn drop(&mut self) {
        self.shared.held.fetch_sub(1, Ordering::SeqCst);
        self.shared.wake();
    }
}

impl Executor {
    /// No epoch runs until the returned guard is dropped.
    pub fn hold(&self) -> EpochHold {
        self.shared.held.fetch_add(1, Ordering::SeqCst);
        EpochHold {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Stops a view when dropped.
#[derive(Debug)]
pub struct ViewGuard {
    shared: std::sync::Weak<Shared>,
    id: u32,
}

impl Drop for ViewGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.lock_set().remove_view(self.id);
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(thread) = crate::sync::lock_value(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock_set(&self) -> MutexGuard<'_, ViewSet> {
        crate::sync::lock(&self.set, "the running views")
    }

    fn wake(&self) {
        *crate::sync::lock_value(&self.wake) = true;
        self.wake_cond.notify_all();
    }

    fn run(&self) {
        loop {
            {
                let mut woken = crate::sync::lock_value(&self.wake);
                if !*woken {
                    woken = self
                        .wake_cond
                        .wait_timeout(woken, self.interval)
                        // The flag is a plain bool.
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                *woken = false;
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            if self.held.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let serving = self.requests.load(Ordering::SeqCst);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step()));
            if let Err(panic) = result {
                let message = crate::sync::panic_message(panic.as_ref());
                tracing::error!(%message, "an epoch panicked outside the views");
            }
            self.completed.send_replace(serving);
        }
    }

    /// One epoch.
    fn step(&self) {
        let started = Instant::now();
        let cut: HashMap<u32, u64> = {
            let _no_commits = crate::sync::write_value(&self.commit_gate);
            self.tables
                .all()
                .iter()
                .map(|t| (t.def().id, t.log().end()))
                .collect()
        };
        let mut set = self.lock_set();
        let mut outputs: HashMap<u32, (Vec<ChangeBatch>, Option<Timestamp>)> = HashMap::new();
        let mut changed = Vec::new();
        for view in set.running.iter_mut() {
            if view.failed.is_some() {
                outputs.insert(view.id, (Vec::new(), view.watermark));
                continue;
            }
            let watermark_before = view.watermark;
            // A panic in an operator leaves the view's state half-applied: the view fails
            // with the panic's message, and the other views go on.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_view(view, &cut, &outputs, &self.views)
            }))
            .unwrap_or_else(|panic| {
                Err(Error::internal(format!(
                    "internal error: an operator panicked: {}",
                    crate::sync::panic_message(panic.as_ref())
                )))
            });
            match ran {
                Ok((changes, fed)) => {
                    if fed || !changes.is_empty() || view.watermark != watermark_before {
                        view.changed_since_checkpoint = true;
                    }
                    if !changes.is_empty() {
                        changed.push(view.id);
                    }
                    outputs.insert(view.id, (changes, view.watermark));
                }
                Err(e) if e.sqlstate() == sqlstate::QUERY_CANCELED => {
                    tracing::info!(view = %view.name, "view stopped: its creation was cancelled");
                    view.failed = Some((e.sqlstate(), e.to_string()));
                    changed.push(view.id);
                    outputs.insert(view.id, (Vec::new(), view.watermark));
                }
                Err(e) => {
                    tracing::error!(view = %view.name, error = %e, "view failed");
                    view.failed = Some((e.sqlstate(), e.to_string()));
                    changed.push(view.id);
                    outputs.insert(view.id, (Vec::new(), view.watermark));
                }
            }
        }
        // Epochs are milliseconds since 1970 when barriers are further apart than that, so an
        // epoch says when it was taken and keeps growing across restarts.
        let wall = crate::state::now_ms();
        set.epoch = (set.epoch + 1).max(wall);
        let epoch_now = set.epoch;
        set.sinks.retain_mut(|sink| {
            let Some((changes, _)) = outputs.get(&sink.view) else {
                // The view is gone.
                return false;
            };
            if changes.is_empty() {
                return true;
            }
            if let Some(feed) = &mut sink.exactly_once {
                feed.pending.extend(changes.iter().cloned());
                return true;
            }
            sink.stats.handed.fetch_max(epoch_now, Ordering::Relaxed);
            sink.sender
                .send(SinkEpoch {
                    epoch: epoch_now,
                    changes: changes.clone(),
                })
                .is_ok()
        });
        let ViewSet {
            running,
            snapshots,
            epoch,
            subscribers,
            sinks,
        } = &mut *set;
        // One shared copy of each view's changes, however many subscribe to it.
        let shared: HashMap<u32, Arc<Vec<ChangeBatch>>> = outputs
            .into_iter()
            .filter(|(id, (changes, _))| {
                !changes.is_empty() && subscribers.iter().any(|f| f.view == *id)
            })
            .map(|(id, (changes, _))| (id, Arc::new(changes)))
            .collect();
        subscribers.retain_mut(|feed| feed_epoch(feed, running, &shared, epoch_now));
        for view in running.iter() {
            if !view.published {
                continue;
            }
            let stale = !snapshots.contains_key(&view.id);
            if !stale && !changed.contains(&view.id) {
                continue;
            }
            let snapshot = match &view.failed {
                Some((code, message)) => ViewSnapshot::Failed(code, message.clone()),
                None => ViewSnapshot::Rows(Arc::new(view.contents.snapshot())),
            };
            snapshots.insert(view.id, snapshot);
        }
        let subscriptions = subscribers
            .iter()
            .map(|feed| SubscriptionInfo {
                view: running
                    .iter()
                    .find(|v| v.id == feed.view && v.published)
                    .map(|v| v.name.clone()),
                start_epoch: feed.start,
                progress: feed.progress,
                queued: feed.sender.max_capacity() - feed.sender.capacity(),
                capacity: feed.sender.max_capacity(),
            })
            .collect();
        let state = running
            .iter()
            .filter(|v| v.published)
            .map(|v| (v.id, v.state()))
            .collect();
        let operators = running
            .iter()
            .filter(|v| v.published)
            .map(|v| {
                let names: Vec<String> = v
                    .sources
                    .iter()
                    .map(|s| s.source.name().to_string())
                    .collect();
                (v.id, v.root.operator_stats(&names))
            })
            .collect();
        self.views.publish(Published {
            epoch: *epoch,
            views: snapshots.clone(),
            subscriptions,
            state,
            operators,
        });
        let epoch = *epoch;
        self.checkpoint_if_due(running, sinks, epoch, started);
        let elapsed = started.elapsed();
        self.views.metrics().epoch_completed(wall, elapsed);
        if elapsed > Duration::from_millis(100) {
            tracing::debug!(epoch, elapsed_ms = elapsed.as_millis() as u64, "epoch");
        }
    }
}

impl Shared {
    /// Hands the checkpoint writer every view's state when a checkpoint is due and the
    /// previous one is written.
    fn checkpoint_if_due(
        &self,
        running: &mut [RunningView],
        sinks: &mut [SinkFeed],
        epoch: u64,
        barrier: Instant,
    ) {
        let Some(checkpoints) = &self.checkpoints else {
            return;
        };
        let mut last = crate::sync::lock_value(&checkpoints.last);
        if last.elapsed() < checkpoints.interval || checkpoints.writer.busy() {
            return;
        }
        *last = Instant::now();
        let everything = checkpoints.writer.take_failure();
        let mut views = Vec::new();
        for view in running.iter() {
            match view.checkpoint(everything) {
                Ok(Some(state)) => views.push(state),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(view = %view.name, error = %e, "cannot checkpoint the view");
                }
            }
        }
        if views.iter().all(|v| v.pieces.is_none()) {
            // Nothing moved since the last checkpoint: it still holds.
            return;
        }
        for view in running.iter_mut() {
            view.changed_since_checkpoint = false;
        }
        let mut sink_states = Vec::new();
        let mut batches = Vec::new();
        for (i, sink) in sinks.iter_mut().enumerate() {
            let Some(feed) = &mut sink.exactly_once else {
                continue;
            };
            let confirmed = feed.confirmed.load(Ordering::SeqCst);
            feed.unconfirmed.retain(|(batch, _)| *batch > confirmed);
            if !feed.pending.is_empty() {
                let changes = std::mem::take(&mut feed.pending);
                feed.unconfirmed.push((epoch, changes.clone()));
                batches.push((i, changes));
            }
            match feed.stored() {
                Ok((schema, pending)) => sink_states.push(SinkState {
                    name: feed.name.clone(),
                    schema,
                    pending,
                }),
                Err(e) => {
                    tracing::error!(sink = %feed.name, error = %e, "cannot checkpoint the sink")
                }
            }
        }
        checkpoints.writer.submit(
            CheckpointJob {
                epoch,
                views,
                sinks: sink_states,
            },
            barrier,
        );
        // The sinks send each batch once its checkpoint is durable.
        for (i, changes) in batches {
            sinks[i].stats.handed.fetch_max(epoch, Ordering::Relaxed);
            let _ = sinks[i].sender.send(SinkEpoch { epoch, changes });
        }
    }
}

/// A view's backlog as `sluice_progress` shows it while it is read; gone when dropped.
struct BackfillShown<'a> {
    registry: &'a ViewRegistry,
    id: u32,
    shown: Backfill,
    /// When it was last written to the registry.
    written: Instant,
}

impl<'a> BackfillShown<'a> {
    fn new(registry: &'a ViewRegistry, id: u32, shown: Backfill) -> Self {
        registry.show_backfill(id, Some(shown.clone()));
        Self {
            registry,
            id,
            shown,
            written: Instant::now(),
        }
    }

    /// `records` more records of `rows` rows read; shown at most every 100 ms.
    fn read(&mut self, records: u64, rows: u64) {
        self.shown.records_done += records;
        self.shown.rows_done += rows;
        if self.written.elapsed() >= Duration::from_millis(100) {
            self.registry
                .show_backfill(self.id, Some(self.shown.clone()));
            self.written = Instant::now();
        }
    }
}

impl Drop for BackfillShown<'_> {
    fn drop(&mut self) {
        self.registry.show_backfill(self.id, None);
    }
}

/// A subscriber's first message(s): the snapshot (if asked for) and a progress mark.
fn start_feed(feed: &mut SubscriberFeed, view: &RunningView, epoch: u64) -> Result<bool> {
    feed.started = true;
    if feed.snapshot {
        let changes = Arc::new(view.contents.as_inserts()?);
        if !feed.offer(SubscribeEvent::Changes { epoch, changes }) {
            return Ok(false);
        }
    }
    Ok(!feed.progress || feed.offer(SubscribeEvent::Progress { epoch }))
}

/// Hands a subscriber its view's changes of this epoch; false when it is to be dropped.
fn feed_epoch(
    feed: &mut SubscriberFeed,
    running: &[RunningView],
    changed: &HashMap<u32, Arc<Vec<ChangeBatch>>>,
    epoch: u64,
) -> bool {
    let Some(view) = running.iter().find(|v| v.id == feed.view) else {
        feed.end.set(super::subscribe::VIEW_DROPPED);
        return false;
    };
    if let Some((_, message)) = &view.failed {
        feed.end
            .set(format!("view \"{}\" failed: {message}", view.name));
        return false;
    }
    if !feed.started {
        if epoch < feed.start {
            return !feed.sender.is_closed();
        }
        return start_feed(feed, view, epoch).unwrap_or_else(|e| {
            feed.end.set(e.to_string());
            false
        });
    }
    if let Some(changes) = changed.get(&feed.view) {
        let changes = Arc::clone(changes);
        if !feed.offer(SubscribeEvent::Changes { epoch, changes }) {
            return false;
        }
    }
    if feed.progress {
        return feed.offer(SubscribeEvent::Progress { epoch });
    }
    !feed.sender.is_closed()
}

/// Feeds a view its input up to the cut; returns its output changes of the epoch, and whether
/// it was fed anything.
fn run_view(
    view: &mut RunningView,
    cut: &HashMap<u32, u64>,
    outputs: &HashMap<u32, (Vec<ChangeBatch>, Option<Timestamp>)>,
    registry: &ViewRegistry,
) -> Result<(Vec<ChangeBatch>, bool)> {
    let mut changes = Vec::new();
    let mut fed = false;
    let RunningView {
        id,
        name,
        root,
        sources,
        contents,
        watermark,
        cancel,
        ..
    } = view;
    // A backlog of more than a chunk is shown in `sluice_progress` while it is read.
    let backlog: u64 = sources
        .iter()
        .map(|s| match &s.source {
            SourceRef::Table(table) => cut
                .get(&table.def().id)
                .map_or(0, |end| end.saturating_sub(s.position)),
            SourceRef::View(_) => 0,
        })
        .sum();
    let mut progress = (backlog > READ_CHUNK as u64).then(|| {
        BackfillShown::new(
            registry,
            *id,
            Backfill {
                view: name.clone(),
                started_at_ms: crate::state::now_ms(),
                records_done: 0,
                records_total: backlog,
                rows_done: 0,
            },
        )
    });
    let mut emit = |out: Vec<ChangeBatch>, changes: &mut Vec<ChangeBatch>| -> Result<()> {
        for change in out {
            contents.apply(&change)?;
            changes.push(change);
        }
        Ok(())
    };
    // Watermarks as of the last sub-epoch: sources not read yet keep the previous epoch's.
    let mut sub_watermarks: Vec<Option<Timestamp>> = sources.iter().map(|s| s.watermark).collect();
    let mut since_finish = 0u64;
    for (index, source) in sources.iter_mut().enumerate() {
        for change in std::mem::take(&mut source.pending) {
            fed = true;
            emit(root.push(index, &change)?, &mut changes)?;
        }
        match &source.source {
            SourceRef::Table(table) => {
                let end = cut.get(&table.def().id).copied().unwrap_or(source.position);
                while source.position < end {
                    let want = usize::try_from(end - source.position)
                        .unwrap_or(READ_CHUNK)
                        .min(READ_CHUNK);
                    if cancel.load(Ordering::Relaxed) {
                        return Err(Error::user(
                            sqlstate::QUERY_CANCELED,
                            "canceling statement due to user request",
                        ));
                    }
                    let records = table.log().read_with_meta(source.position, want)?;
                    if records.is_empty() {
                        break;
                    }
                    if let Some(progress) = &mut progress {
                        progress.read(
                            records.len() as u64,
                            records.iter().map(|(_, c, _)| c.num_rows() as u64).sum(),
                        );
                    }
                    for (position, change, meta) in records {
                        if position >= end {
                            break;
                        }
                        // The record says the watermark after it. A connector's record
                        // without one means the connector holds its watermark back (a split
                        // has not reported yet): the rows must not move it. Older logs had no
                        // watermark in their records, and theirs follows from the rows.
                        let connector = meta.source_position.is_some();
                        match (meta.watermark, connector, &table.def().watermark) {
                            (Some(w), _, _) => source.watermark = source.watermark.max(Some(w)),
                            (None, false, Some(wm)) => {
                                source.watermark = wm.advance(source.watermark, change.data())?;
                            }
                            (None, _, _) => {}
                        }
                        // A connector's record may carry only a watermark.
                        if change.num_rows() > 0 {
                            emit(root.push(index, &change)?, &mut changes)?;
                        }
                        source.position = position + 1;
                        since_finish += 1;
                        fed = true;
                    }
                    if since_finish >= SUB_EPOCH_RECORDS {
                        since_finish = 0;
                        sub_watermarks[index] = source.watermark;
                        emit(root.finish(&sub_watermarks)?.changes, &mut changes)?;
                    }
                }
            }
            SourceRef::View(upstream) => {
                if let Some((upstream_changes, upstream_watermark)) = outputs.get(&upstream.id) {
                    for change in upstream_changes {
                        fed = true;
                        emit(root.push(index, change)?, &mut changes)?;
                    }
                    source.watermark = *upstream_watermark;
                }
            }
        }
    }
    let watermarks: Vec<Option<Timestamp>> = sources.iter().map(|s| s.watermark).collect();
    let finished = root.finish(&watermarks)?;
    *watermark = finished.watermark;
    emit(finished.changes, &mut changes)?;
    Ok((changes, fed))
}
