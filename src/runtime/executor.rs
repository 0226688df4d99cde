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

use rayon::prelude::*;
use tokio::sync::watch;

use crate::catalog::registry::TableRegistry;
use crate::catalog::views::{
    Backfill, OperatorState, Published, SubscriptionInfo, ViewRegistry, ViewSnapshot,
};
use crate::connector::queue::QueueTable;
use crate::error::{Error, Result, sqlstate};
use crate::planner::{SourceRef, StreamPlan};
use crate::state::writer::{PieceData, SinkState};
use crate::state::{CheckpointJob, CheckpointWriter, RecoveredView, StateError, ViewState};
use crate::stream::{ChangeBatch, Timestamp};
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::contents::{ViewContents, ViewRows};
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
/// A new view over tables with more log records than this to read reads them on a thread of
/// its own before it joins the epochs.
const BACKFILL_RECORDS: u64 = READ_CHUNK as u64;
/// Rounds of reading up to a fresh cut a backfill makes at most before it joins the epochs
/// with what is left.
const BACKFILL_ROUNDS: usize = 8;

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
    /// It has run (or been fed the views it reads): it is not fed them again.
    started: bool,
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
    /// A view about to start: every table source reads its log from position 0. Its rows are
    /// kept unindexed when it only ever inserts (`append_only`, or a plan of filters and
    /// projections over append-only input): nothing will look a row up to retract it.
    pub fn new(id: u32, name: String, plan: StreamPlan, append_only: bool) -> Result<Self> {
        let append_only = append_only || plan.append_only;
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
            started: false,
            cancel: Arc::default(),
        })
    }

    /// The view stops on `error`: it keeps its last contents and reads nothing more.
    fn fail(&mut self, error: Error) {
        if error.sqlstate() == sqlstate::QUERY_CANCELED {
            tracing::info!(view = %self.name, "view stopped: its creation was cancelled");
        } else {
            tracing::error!(view = %self.name, %error, "view failed");
        }
        self.failed = Some((error.sqlstate(), error.to_string()));
    }

    /// The tables it reads.
    fn tables(&self) -> impl Iterator<Item = &Arc<QueueTable>> {
        self.sources.iter().filter_map(|s| match &s.source {
            SourceRef::Table(table) => Some(table),
            SourceRef::View(_) => None,
        })
    }

    /// The ids of the tables it reads.
    fn table_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.tables().map(|t| t.def().id)
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
    fn checkpoint(
        &mut self,
        everything: bool,
    ) -> std::result::Result<Option<ViewState>, StateError> {
        if self.failed.is_some() || !self.published {
            return Ok(None);
        }
        let pieces = if self.changed_since_checkpoint || everything {
            let (schema, rows) = self.contents.checkpoint();
            let mut pieces = vec![(CONTENTS.to_string(), schema, rows)];
            for (name, batch) in self.root.checkpoint()? {
                pieces.push((name, batch.schema(), PieceData::Ready(vec![batch])));
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
    /// Whether it has the view's contents (it starts once the view has run).
    started: bool,
    /// Messages its channel had no room for, oldest first. While any waits, its view does not
    /// run: the sink holds back its own view, and nothing else.
    waiting: std::collections::VecDeque<SinkEpoch>,
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
    /// It resumes a checkpoint's batches: the view's contents are not sent again.
    resumed: bool,
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

/// What a view stood at after the last epoch: what other threads read of it between epochs
/// (its contents for a new subscriber, sink or view over it), without waiting for the executor.
#[derive(Debug)]
struct ViewAt {
    name: String,
    published: bool,
    /// Its rows (shared with the runtime's chunks) or why it failed.
    snapshot: ViewSnapshot,
    watermark: Option<Timestamp>,
}

/// A view reading its backlog on a thread of its own.
#[derive(Debug)]
struct Backfilling {
    published: bool,
    cancel: Arc<AtomicBool>,
    /// The tables it reads: their logs are not truncated while it reads them.
    tables: Vec<u32>,
}

/// What the executor thread shares with everybody else. Held only for short, bounded work:
/// never while views run, and never across a send that can wait.
#[derive(Debug, Default)]
struct ViewSet {
    /// Views to start at the next epoch, in creation order (a view back from reading its
    /// backlog too).
    added: Vec<RunningView>,
    /// Views dropped since the last epoch began.
    removed: Vec<u32>,
    /// Views reading their backlog on a thread of their own, by id.
    backfilling: HashMap<u32, Backfilling>,
    sinks: Vec<SinkFeed>,
    subscribers: Vec<SubscriberFeed>,
    /// The last completed epoch.
    epoch: u64,
    /// Every view that has run, as of `epoch`.
    views: HashMap<u32, ViewAt>,
}

impl ViewSet {
    /// Stops and forgets view `id`: the executor drops it at its next epoch; a backfill stops
    /// at its next chunk.
    fn remove_view(&mut self, id: u32) {
        self.removed.push(id);
        self.added.retain(|v| v.id != id);
        self.views.remove(&id);
        if let Some(backfill) = self.backfilling.get(&id) {
            backfill.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Whether view `id` exists but has not run yet (added, or reading its backlog).
    fn starting(&self, id: u32) -> bool {
        self.backfilling.contains_key(&id) || self.added.iter().any(|v| v.id == id)
    }

    /// Moves the added views into `running`, in creation order. A new view over a view is
    /// fed that view's contents and watermark; it waits while that view has not run yet.
    fn start_added(&mut self, running: &mut Vec<RunningView>) {
        loop {
            let mut waiting = Vec::new();
            let mut started = false;
            for mut view in std::mem::take(&mut self.added) {
                let mut ready = true;
                let fresh = !view.restored && !view.started;
                for source in view.sources.iter().filter(|_| fresh) {
                    if let SourceRef::View(upstream) = &source.source
                        && !running.iter().any(|v| v.id == upstream.id)
                    {
                        ready = false;
                    }
                }
                if !ready {
                    waiting.push(view);
                    continue;
                }
                if fresh {
                    let fed = view.sources.iter_mut().try_for_each(|source| {
                        if let SourceRef::View(upstream) = &source.source
                            && let Some(up) = running.iter().find(|v| v.id == upstream.id)
                        {
                            source.pending = up.contents.as_inserts()?;
                            source.watermark = up.watermark;
                        }
                        Ok::<_, Error>(())
                    });
                    if let Err(e) = fed {
                        view.fail(e);
                    }
                }
                view.started = true;
                started = true;
                running.push(view);
            }
            // A view whose upstream was dropped or failed to start waits for nothing.
            let (stuck, still): (Vec<RunningView>, Vec<RunningView>) =
                waiting.into_iter().partition(|v| {
                    v.sources.iter().any(|s| match &s.source {
                        SourceRef::View(up) => {
                            !running.iter().any(|r| r.id == up.id) && !self.starting(up.id)
                        }
                        SourceRef::Table(_) => false,
                    })
                });
            self.added = still;
            for mut view in stuck {
                view.fail(Error::unsupported(format!(
                    "view \"{}\" reads a view that is not running",
                    view.name
                )));
                view.started = true;
                running.push(view);
                started = true;
            }
            if !started || self.added.is_empty() {
                return;
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    set: Mutex<ViewSet>,
    requests: AtomicU64,
    wake: Mutex<bool>,
    wake_cond: Condvar,
    completed: watch::Sender<u64>,
    /// Counts backfills that ended (their views then start at the next epoch).
    backfills: watch::Sender<u64>,
    stop: AtomicBool,
    /// While positive, no epoch runs (views restored from a checkpoint are being added: they
    /// must all see the same epochs from the barrier they were taken at).
    held: std::sync::atomic::AtomicUsize,
    interval: Duration,
    tables: Arc<TableRegistry>,
    views: Arc<ViewRegistry>,
    commit_gate: Arc<RwLock<()>>,
    checkpoints: Option<Checkpoints>,
    /// The workers epochs run views and their keyed partitions on.
    pool: rayon::ThreadPool,
}

/// Checkpointing: the writer thread and when the last checkpoint was taken.
#[derive(Debug)]
pub struct Checkpoints {
    writer: CheckpointWriter,
    interval: Duration,
    last: Mutex<Instant>,
    /// What the checkpoints need of the sources' logs; touched by the executor thread only.
    retention: Mutex<Retention>,
}

impl Checkpoints {
    /// A checkpoint every `interval`, written by `writer`.
    pub fn new(writer: CheckpointWriter, interval: Duration) -> Self {
        Self {
            writer,
            interval,
            last: Mutex::new(Instant::now()),
            retention: Mutex::default(),
        }
    }
}

/// Per table, the first log position some view still needs, at one checkpoint.
type LogNeeds = HashMap<u32, u64>;

/// What recovery may need of the sources' logs. Recovery starts from the newest complete
/// checkpoint, or the one before it when a file of the newest is damaged (the writer keeps
/// those two), and replays each view's sources from the positions that checkpoint holds. So a
/// source's log may lose the records below the lowest of those positions in both, once both
/// were taken by this process (the needs of a checkpoint recovered from are not known).
#[derive(Debug, Default)]
struct Retention {
    /// Checkpoints handed to the writer and not yet complete.
    submitted: Vec<(u64, LogNeeds)>,
    /// The newest complete checkpoints, at most two, oldest first.
    complete: std::collections::VecDeque<(u64, LogNeeds)>,
}

/// The view runtime.
#[derive(Debug)]
pub struct Executor {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Executor {
    /// Starts the executor thread with a barrier every `interval`, and `workers` threads
    /// that run the views.
    pub fn start(
        interval: Duration,
        workers: usize,
        tables: Arc<TableRegistry>,
        views: Arc<ViewRegistry>,
        commit_gate: Arc<RwLock<()>>,
        checkpoints: Option<Checkpoints>,
    ) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .thread_name(|i| format!("sluice-worker-{i}"))
            .build()
            .map_err(|e| Error::internal(format!("cannot start the view workers: {e}")))?;
        let shared = Arc::new(Shared {
            set: Mutex::new(ViewSet::default()),
            requests: AtomicU64::new(0),
            wake: Mutex::new(false),
            wake_cond: Condvar::new(),
            completed: watch::channel(0).0,
            backfills: watch::channel(0).0,
            stop: AtomicBool::new(false),
            held: std::sync::atomic::AtomicUsize::new(0),
            interval,
            tables,
            views,
            commit_gate,
            checkpoints,
            pool,
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

    /// Adds a view; it starts from its sources' beginnings. A new view over tables whose
    /// backlog is more than [`BACKFILL_RECORDS`] log records reads it on a thread of its own
    /// first, so that other views' epochs go on meanwhile; then, and every other view at once,
    /// it joins the next epoch. A source that is a view starts from that view's contents.
    pub fn add(&self, view: RunningView) -> Result<()> {
        let tables_only = view
            .sources
            .iter()
            .all(|s| matches!(s.source, SourceRef::Table(_)));
        if view.restored || !tables_only || self.shared.backlog(&view, None) <= BACKFILL_RECORDS {
            self.shared.lock_set().added.push(view);
            return Ok(());
        }
        let id = view.id;
        self.shared.lock_set().backfilling.insert(
            id,
            Backfilling {
                published: view.published,
                cancel: view.cancel_flag(),
                tables: view.table_ids().collect(),
            },
        );
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("sluice-backfill".into())
            .spawn(move || shared.backfill(view));
        if let Err(e) = spawned {
            self.shared.lock_set().backfilling.remove(&id);
            return Err(Error::internal(format!(
                "cannot start reading the view's backlog: {e}"
            )));
        }
        Ok(())
    }

    /// Feeds view `view`'s changes to `sender`, one message per epoch that changed it,
    /// starting with its contents (once the view has run, if it has not yet). The channel is
    /// bounded: a sink that falls behind holds its own view back (the view does not run while
    /// a message for the sink waits), never the executor. A sink whose receiver is gone is
    /// forgotten.
    ///
    /// With `exactly_once`, changes go to the sink only at checkpoints, as one batch per
    /// checkpoint, and stay in every checkpoint until the sink confirms it committed them.
    pub fn add_sink(
        &self,
        view: u32,
        sender: std::sync::mpsc::SyncSender<SinkEpoch>,
        stats: Arc<crate::connector::sink::SinkStats>,
        exactly_once: Option<ExactlyOnce>,
    ) -> Result<()> {
        let mut set = self.shared.lock_set();
        if !set.views.contains_key(&view) && !set.starting(view) {
            return Err(Error::unsupported(format!("view {view} is not running")));
        }
        let exactly_once = exactly_once.map(
            |ExactlyOnce {
                 name,
                 confirmed,
                 resumed,
             }| {
                let resumed_batches = resumed.is_some();
                ExactlyOnceFeed {
                    name,
                    // Set with the contents when the sink starts.
                    schema: Arc::new(Schema::empty()),
                    pending: Vec::new(),
                    unconfirmed: resumed.unwrap_or_default(),
                    resumed: resumed_batches,
                    confirmed,
                }
            },
        );
        let mut feed = SinkFeed {
            view,
            sender,
            stats,
            exactly_once,
            started: false,
            waiting: std::collections::VecDeque::new(),
        };
        let epoch = set.epoch;
        if let Some(at) = set.views.get(&view) {
            feed.start(at, epoch)?;
        } else if let Some(resuming) = feed.exactly_once.as_mut().filter(|f| f.resumed)
            && let Some(restored) = set.added.iter().find(|v| v.id == view)
        {
            // Resuming a checkpoint's batches, the sink needs no contents: every change of
            // the restored view from its first epoch on is the sink's.
            resuming.schema = restored.contents.schema();
            feed.started = true;
        }
        if feed.deliver() == Delivery::Gone {
            return Err(Error::internal("the sink stopped before it started"));
        }
        set.sinks.push(feed);
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
    /// not kept); a view that has not run yet starts its feed at the epoch it first runs in.
    /// At most `capacity` messages wait unread before the subscriber is dropped.
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
        let at = set.views.get(&view);
        if at.is_none() && !set.starting(view) {
            return Err(Error::unsupported(format!("view {view} is not running")));
        }
        if let Some(ViewAt {
            name,
            snapshot: ViewSnapshot::Failed(code, message),
            ..
        }) = at
        {
            return Err(Error::user(
                code,
                format!("view \"{name}\" failed: {message}"),
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
        if feed.start == now
            && let Some(ViewAt {
                snapshot: ViewSnapshot::Rows(rows),
                ..
            }) = at
        {
            start_feed(&mut feed, rows, now)?;
        }
        set.subscribers.push(feed);
        Ok(Subscription::new(receiver, end, owned))
    }

    /// Live subscriptions, and views running only for one.
    pub fn subscriptions(&self) -> (usize, usize) {
        let set = self.shared.lock_set();
        let unpublished = set.views.values().filter(|v| !v.published).count()
            + set.added.iter().filter(|v| !v.published).count()
            + set.backfilling.values().filter(|b| !b.published).count();
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
        self.shared.wake();
    }

    /// Returns once an epoch that started after this call has completed: every write
    /// acknowledged before the call is then visible in every view that has run. (A view still
    /// reading its backlog shows nothing yet; [`Self::backfilled`] waits for it.)
    pub async fn flush(&self) {
        let target = self.shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.wake();
        let mut completed = self.shared.completed.subscribe();
        // The sender lives as long as `self`.
        let _ = completed.wait_for(|&c| c >= target).await;
    }

    /// Returns once view `id` (or, with `None`, every view reading its backlog now) has read
    /// it and runs with the others: the next epoch (a [`Self::flush`]) includes it.
    pub async fn backfilled(&self, id: Option<u32>) {
        let mut ended = self.shared.backfills.subscribe();
        let waiting: Vec<u32> = {
            let set = self.shared.lock_set();
            match id {
                Some(id) if set.backfilling.contains_key(&id) => vec![id],
                // A view waiting to start waits for a view it reads.
                Some(id) if !set.added.iter().any(|v| v.id == id) => Vec::new(),
                _ => set.backfilling.keys().copied().collect(),
            }
        };
        loop {
            let pending = {
                let set = self.shared.lock_set();
                waiting.iter().any(|id| set.backfilling.contains_key(id))
            };
            // The sender lives as long as `self`.
            if !pending || ended.changed().await.is_err() {
                return;
            }
        }
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
        // Backfills stop at their next chunk.
        for backfill in self.shared.lock_set().backfilling.values() {
            backfill.cancel.store(true, Ordering::Relaxed);
        }
        self.shared.wake();
        if let Some(thread) = crate::sync::lock_value(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

/// Whether a sink took what waited for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Everything was handed over.
    Done,
    /// Its channel is full: the rest waits, and the view is held back.
    Full,
    /// The sink is gone.
    Gone,
}

impl SinkFeed {
    /// Starts the sink at `epoch` with the view's contents then: sent at once (at-least-once)
    /// or at the next checkpoint (exactly-once, unless it resumes a checkpoint's batches).
    fn start(&mut self, at: &ViewAt, epoch: u64) -> Result<()> {
        let ViewSnapshot::Rows(rows) = &at.snapshot else {
            // A failed view feeds nothing.
            self.started = true;
            return Ok(());
        };
        match &mut self.exactly_once {
            None => self.waiting.push_back(SinkEpoch {
                epoch,
                changes: rows.as_inserts()?,
            }),
            Some(feed) => {
                feed.schema = Arc::clone(rows.schema());
                if !feed.resumed {
                    feed.pending = rows.as_inserts()?;
                }
            }
        }
        self.started = true;
        Ok(())
    }

    /// Hands the sink what waits for it, without waiting for room.
    fn deliver(&mut self) -> Delivery {
        use std::sync::mpsc::TrySendError;
        while let Some(message) = self.waiting.pop_front() {
            let epoch = message.epoch;
            match self.sender.try_send(message) {
                Ok(()) => self.stats.handed_over(epoch),
                Err(TrySendError::Full(message)) => {
                    self.waiting.push_front(message);
                    self.stats.set_blocked(true);
                    return Delivery::Full;
                }
                Err(TrySendError::Disconnected(_)) => return Delivery::Gone,
            }
        }
        self.stats.set_blocked(false);
        Delivery::Done
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

    /// A consistent cut: every table's log end, read while no write can commit.
    fn cut(&self) -> HashMap<u32, u64> {
        let _no_commits = crate::sync::write_value(&self.commit_gate);
        self.tables
            .all()
            .iter()
            .map(|t| (t.def().id, t.log().end()))
            .collect()
    }

    /// Log records `view` has not read: up to `cut`, or to each log's end.
    fn backlog(&self, view: &RunningView, cut: Option<&HashMap<u32, u64>>) -> u64 {
        backlog(&view.sources, cut)
    }

    /// Reads a new view's backlog on this thread, in rounds up to a fresh cut each, until
    /// what is left is small (or after [`BACKFILL_ROUNDS`] rounds, when its tables grow
    /// faster than it reads); then hands the view to the executor, which runs it from the
    /// next epoch on. Its changes while reading go nowhere: nothing reads the view yet (a
    /// sink or subscriber added meanwhile starts from its contents).
    fn backfill(&self, mut view: RunningView) {
        let started = Instant::now();
        for _ in 0..BACKFILL_ROUNDS {
            let cut = self.cut();
            if view.failed.is_some() || self.backlog(&view, Some(&cut)) <= BACKFILL_RECORDS {
                break;
            }
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_view(&mut view, &cut, &HashMap::new(), &self.views, false)
            }))
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref())));
            if let Err(e) = ran {
                view.fail(e);
            }
        }
        tracing::info!(
            view = %view.name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            failed = view.failed.is_some(),
            "backlog read"
        );
        {
            let mut set = self.lock_set();
            if let Some(backfill) = set.backfilling.remove(&view.id)
                && !backfill.cancel.load(Ordering::Relaxed)
            {
                set.added.push(view);
            }
        }
        self.backfills.send_modify(|ended| *ended += 1);
        self.wake();
    }

    fn run(&self) {
        // The running views belong to this thread alone.
        let mut running: Vec<RunningView> = Vec::new();
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
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(&mut running)));
            if let Err(panic) = result {
                let message = crate::sync::panic_message(panic.as_ref());
                tracing::error!(%message, "an epoch panicked outside the views");
            }
            self.completed.send_replace(serving);
        }
    }

    /// One epoch. The shared set is locked twice, briefly: to take in added and dropped views
    /// and hand sinks what waits for them, and to publish; the views run in between.
    fn step(&self, running: &mut Vec<RunningView>) {
        let started = Instant::now();
        let cut = self.cut();
        // Views whose sink has not taken their last changes: they sit this epoch out.
        let held: Vec<u32> = {
            let mut set = self.lock_set();
            let removed = std::mem::take(&mut set.removed);
            if !removed.is_empty() {
                running.retain(|v| !removed.contains(&v.id));
            }
            set.start_added(running);
            let mut held = Vec::new();
            set.sinks.retain_mut(|sink| match sink.deliver() {
                Delivery::Done => true,
                Delivery::Full => {
                    held.push(sink.view);
                    true
                }
                Delivery::Gone => false,
            });
            held
        };
        // Views run on the workers, level by level: a view over views after the views it
        // reads (their changes of this epoch are its input), the views of a level at once.
        let levels = levels(running);
        let mut outputs: HashMap<u32, (Vec<ChangeBatch>, Option<Timestamp>)> = HashMap::new();
        let mut changed = Vec::new();
        for level in 0..=levels.iter().copied().max().unwrap_or(0) {
            let ran: Vec<(u32, Option<Timestamp>, Option<Vec<ChangeBatch>>)> =
                self.pool.install(|| {
                    running
                        .par_iter_mut()
                        .zip(&levels)
                        .filter(|(_, l)| **l == level)
                        .map(|(view, _)| {
                            let changes = if view.failed.is_some() || held.contains(&view.id) {
                                Some(Vec::new())
                            } else {
                                self.run_one(view, &cut, &outputs)
                            };
                            (view.id, view.watermark, changes)
                        })
                        .collect()
                });
            for (id, watermark, changes) in ran {
                match changes {
                    Some(changes) => {
                        if !changes.is_empty() {
                            changed.push(id);
                        }
                        outputs.insert(id, (changes, watermark));
                    }
                    // It failed in this epoch.
                    None => {
                        changed.push(id);
                        outputs.insert(id, (Vec::new(), watermark));
                    }
                }
            }
        }
        // What `sluice_state` and `EXPLAIN ANALYZE` show, taken before publishing.
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
        let epoch = {
            let mut set = self.lock_set();
            // Epochs are milliseconds since 1970 when barriers are further apart than that,
            // so an epoch says when it was taken and keeps growing across restarts.
            let wall = crate::state::now_ms();
            set.epoch = (set.epoch + 1).max(wall);
            let epoch = set.epoch;
            // Views that have not run yet: their sinks and subscribers wait for them.
            let mut starting: Vec<u32> = set.added.iter().map(|v| v.id).collect();
            starting.extend(set.backfilling.keys().copied());
            let ViewSet {
                views,
                subscribers,
                sinks,
                removed,
                ..
            } = &mut *set;
            for view in running.iter() {
                if removed.contains(&view.id) {
                    continue;
                }
                let stale = !views.contains_key(&view.id);
                if !stale && !changed.contains(&view.id) {
                    if let Some(at) = views.get_mut(&view.id) {
                        at.watermark = view.watermark;
                    }
                    continue;
                }
                let snapshot = match &view.failed {
                    Some((code, message)) => ViewSnapshot::Failed(code, message.clone()),
                    None => ViewSnapshot::Rows(Arc::new(view.contents.snapshot())),
                };
                views.insert(
                    view.id,
                    ViewAt {
                        name: view.name.clone(),
                        published: view.published,
                        snapshot,
                        watermark: view.watermark,
                    },
                );
            }
            // Views dropped while they ran go now (their sinks and subscribers with them).
            running.retain(|v| !removed.contains(&v.id));
            removed.clear();
            sinks.retain_mut(|sink| {
                let Some(at) = views.get(&sink.view) else {
                    // The view has not run yet, or is gone.
                    return starting.contains(&sink.view);
                };
                if !sink.started {
                    if let Err(e) = sink.start(at, epoch) {
                        sink.stats.fail(&e);
                        return false;
                    }
                } else if let Some((changes, _)) = outputs.get(&sink.view)
                    && !changes.is_empty()
                {
                    match &mut sink.exactly_once {
                        Some(feed) => feed.pending.extend(changes.iter().cloned()),
                        None => sink.waiting.push_back(SinkEpoch {
                            epoch,
                            changes: changes.clone(),
                        }),
                    }
                }
                sink.deliver() != Delivery::Gone
            });
            // One shared copy of each view's changes, however many subscribe to it.
            let shared: HashMap<u32, Arc<Vec<ChangeBatch>>> = outputs
                .into_iter()
                .filter(|(id, (changes, _))| {
                    !changes.is_empty() && subscribers.iter().any(|f| f.view == *id)
                })
                .map(|(id, (changes, _))| (id, Arc::new(changes)))
                .collect();
            subscribers.retain_mut(|feed| {
                let waiting = starting.contains(&feed.view);
                // A view its sink held back did not reach this epoch: no progress mark.
                let behind = held.contains(&feed.view);
                feed_epoch(feed, views, waiting || behind, &shared, epoch)
            });
            let subscriptions = subscribers
                .iter()
                .map(|feed| SubscriptionInfo {
                    view: views
                        .get(&feed.view)
                        .filter(|v| v.published)
                        .map(|v| v.name.clone()),
                    start_epoch: feed.start,
                    progress: feed.progress,
                    queued: feed.sender.max_capacity() - feed.sender.capacity(),
                    capacity: feed.sender.max_capacity(),
                })
                .collect();
            self.views.publish(Published {
                epoch,
                views: views
                    .iter()
                    .filter(|(_, v)| v.published)
                    .map(|(id, v)| (*id, v.snapshot.clone()))
                    .collect(),
                subscriptions,
                state,
                operators,
            });
            self.views
                .metrics()
                .epoch_completed(wall, started.elapsed());
            epoch
        };
        self.checkpoint_if_due(running, epoch, started);
        let elapsed = started.elapsed();
        if elapsed > Duration::from_millis(100) {
            tracing::debug!(epoch, elapsed_ms = elapsed.as_millis() as u64, "epoch");
        }
    }
}

impl Shared {
    /// Runs one view's epoch; its changes, or `None` when it failed (a panic in an operator
    /// leaves its state half-applied: the view fails with the panic's message, and the
    /// other views go on).
    fn run_one(
        &self,
        view: &mut RunningView,
        cut: &HashMap<u32, u64>,
        outputs: &HashMap<u32, (Vec<ChangeBatch>, Option<Timestamp>)>,
    ) -> Option<Vec<ChangeBatch>> {
        let watermark_before = view.watermark;
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_view(view, cut, outputs, &self.views, true)
        }))
        .unwrap_or_else(|panic| Err(panicked(panic.as_ref())));
        match ran {
            Ok((changes, fed)) => {
                if fed || !changes.is_empty() || view.watermark != watermark_before {
                    view.changed_since_checkpoint = true;
                }
                Some(changes)
            }
            Err(e) => {
                view.fail(e);
                None
            }
        }
    }
}

/// Each running view's level: 0 for a view over tables only, otherwise one more than the
/// highest level among the views it reads (which come before it: views run in creation
/// order).
fn levels(running: &[RunningView]) -> Vec<usize> {
    let mut by_id: HashMap<u32, usize> = HashMap::with_capacity(running.len());
    running
        .iter()
        .map(|view| {
            let level = view
                .sources
                .iter()
                .filter_map(|s| match &s.source {
                    SourceRef::View(up) => Some(by_id.get(&up.id).map_or(0, |l| l + 1)),
                    SourceRef::Table(_) => None,
                })
                .max()
                .unwrap_or(0);
            by_id.insert(view.id, level);
            level
        })
        .collect()
}

/// Log records `sources` have not read: up to `cut`, or to each log's end.
fn backlog(sources: &[SourceState], cut: Option<&HashMap<u32, u64>>) -> u64 {
    sources
        .iter()
        .map(|s| match &s.source {
            SourceRef::Table(table) => {
                let end = match cut {
                    Some(cut) => cut.get(&table.def().id).copied().unwrap_or(0),
                    None => table.log().end(),
                };
                end.saturating_sub(s.position)
            }
            SourceRef::View(_) => 0,
        })
        .sum()
}

/// The error of a view whose operator panicked.
fn panicked(panic: &(dyn std::any::Any + Send)) -> Error {
    Error::internal(format!(
        "internal error: an operator panicked: {}",
        crate::sync::panic_message(panic)
    ))
}

impl Shared {
    /// Hands the checkpoint writer every view's state when a checkpoint is due and the
    /// previous one is written. The views' state is copied on this thread, without the
    /// shared set locked; the set is locked only to take the sinks' batches.
    fn checkpoint_if_due(&self, running: &mut [RunningView], epoch: u64, barrier: Instant) {
        let Some(checkpoints) = &self.checkpoints else {
            return;
        };
        self.truncate_logs(checkpoints, running);
        let mut last = crate::sync::lock_value(&checkpoints.last);
        if last.elapsed() < checkpoints.interval || checkpoints.writer.busy() {
            return;
        }
        *last = Instant::now();
        let everything = checkpoints.writer.take_failure();
        // The views' operator state is copied on the workers, a view (and a partition) each.
        let taken: Vec<_> = self.pool.install(|| {
            running
                .par_iter_mut()
                .map(|view| (view.name.clone(), view.checkpoint(everything)))
                .collect()
        });
        let mut views = Vec::new();
        for (name, state) in taken {
            match state {
                Ok(Some(state)) => views.push(state),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(view = %name, error = %e, "cannot checkpoint the view");
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
        let mut set = self.lock_set();
        crate::sync::lock_value(&checkpoints.retention)
            .submitted
            .push((epoch, log_needs(running, &set)));
        let mut sink_states = Vec::new();
        let mut batches = Vec::new();
        for (i, sink) in set.sinks.iter_mut().enumerate() {
            let Some(feed) = &mut sink.exactly_once else {
                continue;
            };
            if !sink.started {
                continue;
            }
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
        // The sinks send each batch once its checkpoint is durable; one that has no room
        // holds its view back until it takes the batch.
        for (i, changes) in batches {
            let sink = &mut set.sinks[i];
            sink.waiting.push_back(SinkEpoch { epoch, changes });
            sink.deliver();
        }
    }
}

impl Shared {
    /// Once a checkpoint completed, truncates each source's log below what the two newest
    /// complete checkpoints and every view now running or starting still need (see
    /// [`Retention`]). Only sources (`CREATE SOURCE`) are truncated: a table's log is its
    /// rows. A source no view reads keeps its whole log.
    fn truncate_logs(&self, checkpoints: &Checkpoints, running: &[RunningView]) {
        let done = *checkpoints.writer.completed().borrow();
        let mut retention = crate::sync::lock_value(&checkpoints.retention);
        let Some(i) = retention.submitted.iter().position(|(e, _)| *e == done) else {
            return;
        };
        let completed = retention.submitted.swap_remove(i);
        // Earlier ones never completed (the writer skips nothing, but one can fail).
        retention.submitted.retain(|(e, _)| *e > done);
        retention.complete.push_back(completed);
        if retention.complete.len() > 2 {
            retention.complete.pop_front();
        }
        let (Some((_, older)), Some((_, newer))) =
            (retention.complete.front(), retention.complete.get(1))
        else {
            return;
        };
        let mut sources: HashMap<u32, &Arc<QueueTable>> = HashMap::new();
        for view in running {
            for table in view.tables() {
                if table.def().source {
                    sources.insert(table.def().id, table);
                }
            }
        }
        let mut detached = Vec::new();
        {
            // Decided and detached with the set locked: a view added after this reads the log
            // from its new start, never across a part removed while it reads.
            let set = self.lock_set();
            let now = log_needs(running, &set);
            for (id, table) in sources {
                let (Some(a), Some(b), Some(c)) = (older.get(&id), newer.get(&id), now.get(&id))
                else {
                    continue;
                };
                let segments = table.log().detach_before(*a.min(b).min(c));
                if !segments.is_empty() {
                    detached.push((table, segments));
                }
            }
        }
        for (table, segments) in detached {
            match segments.remove() {
                Ok(cut) => {
                    tracing::debug!(source = %table.def().name, segments = cut.segments,
                        records = cut.records, bytes = cut.bytes, "source log truncated");
                    self.views.metrics().log_truncated(cut.bytes);
                }
                Err(e) => tracing::warn!(source = %table.def().name, error = %e,
                    "cannot remove a truncated segment of the source's log"),
            }
        }
    }
}

/// Per table some view reads, the first position of its log that a restart would read again:
/// a running view's next position, or 0 for a view that would be rebuilt from its sources'
/// start (failed, not yet running, or reading its backlog).
fn log_needs(running: &[RunningView], set: &ViewSet) -> LogNeeds {
    let mut needs = LogNeeds::new();
    let mut need = |id: u32, position: u64| {
        let at = needs.entry(id).or_insert(position);
        *at = (*at).min(position);
    };
    for view in running {
        for source in &view.sources {
            if let SourceRef::Table(table) = &source.source {
                let position = if view.failed.is_some() {
                    0
                } else {
                    source.position
                };
                need(table.def().id, position);
            }
        }
    }
    for view in &set.added {
        for id in view.table_ids() {
            need(id, 0);
        }
    }
    for backfill in set.backfilling.values() {
        for &id in &backfill.tables {
            need(id, 0);
        }
    }
    needs
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
fn start_feed(feed: &mut SubscriberFeed, rows: &ViewRows, epoch: u64) -> Result<bool> {
    feed.started = true;
    if feed.snapshot {
        let changes = Arc::new(rows.as_inserts()?);
        if !feed.offer(SubscribeEvent::Changes { epoch, changes }) {
            return Ok(false);
        }
    }
    Ok(!feed.progress || feed.offer(SubscribeEvent::Progress { epoch }))
}

/// Hands a subscriber its view's changes of this epoch; false when it is to be dropped.
/// `waiting`: the view has not run yet, or sat this epoch out (its sink held it back), so
/// nothing, not even a progress mark, is sent.
fn feed_epoch(
    feed: &mut SubscriberFeed,
    views: &HashMap<u32, ViewAt>,
    waiting: bool,
    changed: &HashMap<u32, Arc<Vec<ChangeBatch>>>,
    epoch: u64,
) -> bool {
    let Some(view) = views.get(&feed.view) else {
        if waiting {
            // The view has not run yet: the feed starts when it has.
            return !feed.sender.is_closed();
        }
        feed.end.set(super::subscribe::VIEW_DROPPED);
        return false;
    };
    let rows = match &view.snapshot {
        ViewSnapshot::Rows(rows) => rows,
        ViewSnapshot::Failed(_, message) => {
            feed.end
                .set(format!("view \"{}\" failed: {message}", view.name));
            return false;
        }
    };
    if waiting {
        // Held back by its sink: the view did not reach this epoch.
        return !feed.sender.is_closed();
    }
    if !feed.started {
        if epoch < feed.start {
            return !feed.sender.is_closed();
        }
        return start_feed(feed, rows, epoch).unwrap_or_else(|e| {
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

/// Feeds a view its input up to the cut; returns its output changes of the epoch (with
/// `keep`; otherwise they are only applied to its contents), and whether it was fed anything.
fn run_view(
    view: &mut RunningView,
    cut: &HashMap<u32, u64>,
    outputs: &HashMap<u32, (Vec<ChangeBatch>, Option<Timestamp>)>,
    registry: &ViewRegistry,
    keep: bool,
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
    let backlog = backlog(sources, Some(cut));
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
            if keep {
                changes.push(change);
            }
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
