//! Running a source: one thread per source reads its connector, decodes batches of records
//! and writes them to the source's table with the position after them
//! ([`QueueTable::ingest`]). The views read that log like any table's.
//!
//! - [`SourceStats`]: rows, bad records and state, shown by `sluice_sources`.
//! - [`SourceContext`]: what a connector thread uses to write, count bad records and stop.
//! - [`SplitWatermarks`]: a watermark per partition (or file, or generator split); the
//!   source's is their minimum, skipping splits idle longer than the idle timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampNanosecondType;

use crate::connector::queue::QueueTable;
use crate::connector::queue::table::ConnectorBatch;
use crate::connector::spec::{OnError, SourceKind};
use crate::error::{Error, Result};
use crate::stream::Timestamp;

/// How many bad records of a source are logged one by one; the rest are only counted.
const LOGGED_BAD_RECORDS: u64 = 10;

/// What a running source has done, as `sluice_sources` shows it.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Rows written to the source's table.
    pub rows: AtomicU64,
    /// Records skipped because they did not decode.
    pub bad_records: AtomicU64,
    /// Bytes of the records received (message payloads, file bytes, WAL data).
    pub bytes: AtomicU64,
    status: Mutex<SourceStatus>,
    /// Where each split stands, for connectors that track it (Kafka partitions).
    splits: Mutex<Vec<SplitProgress>>,
}

/// One split's progress as `sluice_source_partitions` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitProgress {
    /// The split (a Kafka partition).
    pub split: i64,
    /// The next offset the source reads.
    pub position: Option<i64>,
    /// The split's end as the broker last reported it (Kafka: the high watermark).
    pub end: Option<i64>,
    /// Where the split stands.
    pub state: SplitState,
    /// The split's own watermark.
    pub watermark: Option<Timestamp>,
    /// Offsets the source could not read because the broker no longer held them.
    pub skipped: u64,
}

/// Where a split stands against its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitState {
    /// Behind its end, or its end is not known yet: it holds the watermark back.
    Lagging,
    /// Behind its end with no progress for longer than the stall bound: it holds the
    /// watermark back, and the source shows `stalled`.
    Stalled,
    /// At its end as the broker confirmed; it still holds the watermark back until it has
    /// had no data for the idle timeout.
    CaughtUp,
    /// At its end and without data for the idle timeout: it no longer holds the watermark back.
    Idle,
}

impl SplitState {
    /// The name `sluice_source_partitions` shows.
    pub fn name(self) -> &'static str {
        match self {
            SplitState::Lagging => "lagging",
            SplitState::Stalled => "stalled",
            SplitState::CaughtUp => "caught up",
            SplitState::Idle => "idle",
        }
    }
}

/// Where a source's thread stands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum SourceStatus {
    /// Reading.
    #[default]
    Running,
    /// Running, but a split behind its end has made no progress for a while (the reason).
    Stalled(String),
    /// A bounded source read everything.
    Finished,
    /// Stopped by an error (`on_error = 'fail'`, an unreachable broker at start, …).
    Failed(String),
}

impl SourceStats {
    /// The source's state.
    pub fn status(&self) -> SourceStatus {
        crate::sync::lock_value(&self.status).clone()
    }

    /// Sets the source's state.
    pub fn set_status(&self, status: SourceStatus) {
        *crate::sync::lock_value(&self.status) = status;
    }

    /// Where each split stands (empty for connectors that do not track splits).
    pub fn splits(&self) -> Vec<SplitProgress> {
        crate::sync::lock_value(&self.splits).clone()
    }

    /// Replaces what [`SourceStats::splits`] shows.
    pub fn set_splits(&self, splits: Vec<SplitProgress>) {
        *crate::sync::lock_value(&self.splits) = splits;
    }
}

/// A connector's position as stored in its log records.
pub fn position_text(position: &impl serde::Serialize) -> String {
    serde_json::to_string(position).unwrap_or_default()
}

/// Why a connector's session (one connection's life) ended.
#[derive(Debug)]
pub enum Failure {
    /// The connection failed, the server is restarting, or what it reads is not there yet:
    /// connect again after [`SourceContext::back_off`].
    Retry(String),
    /// Something the source cannot go on from (writing to its table failed, a record failed
    /// with `on_error = 'fail'`, a change it cannot follow): it stops.
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Fatal(e)
    }
}

/// What a connector thread works with.
#[derive(Debug)]
pub struct SourceContext {
    /// The source's table.
    pub table: Arc<QueueTable>,
    /// Its counters.
    pub stats: Arc<SourceStats>,
    /// The directory file sources may read below.
    pub file_root: std::path::PathBuf,
    stop: Arc<AtomicBool>,
}

impl SourceContext {
    /// True once the source is dropped (or the engine stops).
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Writes a batch to the source's table.
    pub fn write(&self, batch: ConnectorBatch) -> Result<()> {
        let rows = self.table.ingest(batch)?;
        self.stats.rows.fetch_add(rows, Ordering::Relaxed);
        Ok(())
    }

    /// Where the connector stopped: the position in the last record it wrote (the default
    /// for a new source), or `None` once it wrote its end of input.
    pub fn resume<P: serde::de::DeserializeOwned + Default>(&self) -> Result<Option<P>> {
        let (resumed, finished) = self.table.last_source_position()?;
        if finished {
            return Ok(None);
        }
        match resumed {
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                Error::internal(format!(
                    "source \"{}\": bad stored position: {e}",
                    self.table.def().name
                ))
            }),
            None => Ok(Some(P::default())),
        }
    }

    /// Writes a record without rows: the watermark moved on (`end_of_input`: the source is
    /// exhausted, which closes every window).
    pub fn write_mark(
        &self,
        watermark: Option<Timestamp>,
        position: &impl serde::Serialize,
        end_of_input: bool,
    ) -> Result<()> {
        self.write(ConnectorBatch {
            rows: RecordBatch::new_empty(Arc::clone(&self.table.def().schema)),
            deleted_keys: None,
            watermark,
            position: position_text(position),
            end_of_input,
        })
    }

    /// Returns once every record written to the table is durable (fsynced under the log's
    /// policy): what a connector waits for before it tells its upstream the records are kept.
    pub async fn durable(&self) -> Result<()> {
        let log = self.table.log();
        if let Some(last) = log.end().checked_sub(1) {
            log.wait_durable(last).await?;
        }
        Ok(())
    }

    /// A connector lost its connection: shows `stalled` with the reason, waits `backoff`
    /// (less if the source is stopped meanwhile), and doubles it, up to 5 s.
    pub async fn back_off(&self, connector: &str, reason: &str, backoff: &mut Duration) {
        tracing::warn!(%reason, retry_in = ?backoff, "{connector}: reconnecting");
        self.stats
            .set_status(SourceStatus::Stalled(format!("{connector}: {reason}")));
        let until = Instant::now() + *backoff;
        while Instant::now() < until && !self.stopped() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }

    /// Counts `bytes` of records received from upstream.
    pub fn received(&self, bytes: usize) {
        self.stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a record that did not decode; with `on_error = 'fail'` it is an error.
    pub fn bad_record(&self, location: &str, reason: &str) -> Result<()> {
        let n = self.stats.bad_records.fetch_add(1, Ordering::Relaxed) + 1;
        let source = &self.table.def().name;
        let fail = self
            .table
            .def()
            .connector
            .as_ref()
            .is_some_and(|c| c.on_error == OnError::Fail);
        if fail {
            return Err(Error::user(
                crate::error::sqlstate::BAD_COPY_FORMAT,
                format!("source \"{source}\": bad record at {location}: {reason}"),
            ));
        }
        if n <= LOGGED_BAD_RECORDS {
            tracing::warn!(%source, %location, %reason, bad_records = n, "bad record skipped");
        } else if n == LOGGED_BAD_RECORDS + 1 {
            tracing::warn!(%source, "more bad records: only counted from now on (see sluice_sources)");
        }
        Ok(())
    }
}

/// A source's thread; dropping it stops the thread.
#[derive(Debug)]
pub struct RunningSource {
    /// Its counters.
    pub stats: Arc<SourceStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RunningSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the connector of `table` on a thread of its own (file sources read below
/// `file_root`).
pub fn start(table: Arc<QueueTable>, file_root: std::path::PathBuf) -> Result<RunningSource> {
    let spec = table
        .def()
        .connector
        .clone()
        .ok_or_else(|| Error::internal("a table without a connector has no source to run"))?;
    let stats = Arc::new(SourceStats::default());
    table.set_source_stats(Arc::clone(&stats));
    let stop = Arc::new(AtomicBool::new(false));
    let context = SourceContext {
        table: Arc::clone(&table),
        stats: Arc::clone(&stats),
        file_root,
        stop: Arc::clone(&stop),
    };
    let name = table.def().name.clone();
    let thread = std::thread::Builder::new()
        .name(format!("source-{name}"))
        .spawn(move || {
            let span = tracing::info_span!("source", source = %name, connector = spec.connector());
            let _entered = span.enter();
            let result = match &spec.kind {
                SourceKind::Kafka(kafka) => super::kafka::source::run(&context, &spec, kafka),
                SourceKind::File { path } => super::file::run(&context, &spec, path),
                SourceKind::Nexmark(nexmark) => super::nexmark::source::run(&context, nexmark),
                SourceKind::RabbitMq(rabbit) => super::rabbitmq::run(&context, &spec, rabbit),
                SourceKind::PostgresCdc(cdc) => super::postgres::cdc::run(&context, cdc),
            };
            match result {
                Ok(()) if context.stopped() => {}
                Ok(()) => {
                    tracing::info!("source finished");
                    context.stats.set_status(SourceStatus::Finished);
                }
                Err(e) => {
                    tracing::error!(error = %e, "source failed");
                    context
                        .stats
                        .set_status(SourceStatus::Failed(e.to_string()));
                }
            }
        })
        .map_err(|e| Error::internal(format!("cannot start source thread: {e}")))?;
    Ok(RunningSource {
        stats,
        stop,
        thread: Some(thread),
    })
}

/// Per-split event time.
#[derive(Debug, Clone, Copy)]
struct SplitTime {
    /// The split's own watermark (its greatest watermark candidate so far).
    watermark: Option<Timestamp>,
    last_data: Instant,
    /// Read up to the split's end (no record is waiting in it): only then may it go idle, so
    /// a reader that falls behind never mistakes its own lag for a quiet split.
    caught_up: bool,
    done: bool,
}

impl SplitTime {
    fn is_idle(&self, now: Instant, idle_timeout: Duration) -> bool {
        self.caught_up && now.duration_since(self.last_data) >= idle_timeout
    }
}

/// A watermark per split; the source's is their minimum.
#[derive(Debug)]
pub struct SplitWatermarks {
    splits: BTreeMap<i64, SplitTime>,
    idle_timeout: Duration,
}

impl SplitWatermarks {
    /// No split seen yet.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            splits: BTreeMap::new(),
            idle_timeout,
        }
    }

    /// Restores a split's watermark (after a restart).
    pub fn restore(&mut self, split: i64, watermark: Option<Timestamp>) {
        self.splits.insert(
            split,
            SplitTime {
                watermark,
                last_data: Instant::now(),
                caught_up: false,
                done: false,
            },
        );
    }

    /// The split's watermark.
    pub fn split(&self, split: i64) -> Option<Timestamp> {
        self.splits.get(&split).and_then(|s| s.watermark)
    }

    /// Moves each row's split on to the row's watermark candidate (`candidates[i]` for the
    /// row from split `split_of(i)`).
    pub fn observe(&mut self, candidates: Option<&RecordBatch>, splits: impl Iterator<Item = i64>) {
        let now = Instant::now();
        let values = candidates.map(|c| c.column(0).as_primitive::<TimestampNanosecondType>());
        // Rows come in runs of one split: one map lookup per run, not per row.
        let mut run: Option<(i64, Option<Timestamp>)> = None;
        for (i, split) in splits.enumerate() {
            let value = values.filter(|v| v.is_valid(i)).map(|v| v.value(i));
            match &mut run {
                Some((current, max)) if *current == split => *max = (*max).max(value),
                _ => {
                    if let Some((done, max)) = run.replace((split, value)) {
                        self.advance(done, max, now);
                    }
                }
            }
        }
        if let Some((split, max)) = run {
            self.advance(split, max, now);
        }
    }

    fn advance(&mut self, split: i64, watermark: Option<Timestamp>, now: Instant) {
        let entry = self.splits.entry(split).or_insert(SplitTime {
            watermark: None,
            last_data: now,
            caught_up: false,
            done: false,
        });
        entry.last_data = now;
        entry.caught_up = false;
        entry.watermark = entry.watermark.max(watermark);
    }

    /// Notes that the reader has reached the split's current end: once no data has come for
    /// the idle timeout, the split no longer holds the watermark back.
    pub fn caught_up(&mut self, split: i64) {
        if let Some(s) = self.splits.get_mut(&split) {
            s.caught_up = true;
        }
    }

    /// Notes that the split is behind its end (or its end is not known): it may not go idle,
    /// however long no data comes, because the quiet is the reader's, not the split's.
    pub fn lagging(&mut self, split: i64) {
        if let Some(s) = self.splits.get_mut(&split) {
            s.caught_up = false;
        }
    }

    /// True when the split is caught up and has had no data for the idle timeout.
    pub fn is_idle(&self, split: i64) -> bool {
        self.splits
            .get(&split)
            .is_some_and(|s| s.is_idle(Instant::now(), self.idle_timeout))
    }

    /// Marks a split as read to its end: it no longer holds the watermark back.
    pub fn finish(&mut self, split: i64) {
        if let Some(s) = self.splits.get_mut(&split) {
            s.done = true;
        }
    }

    /// The source's watermark: the minimum over active splits (not done, and not caught up
    /// with no data for the idle timeout); when every split is idle or
    /// done, the maximum (nothing is coming that could be late).
    pub fn current(&self) -> Option<Timestamp> {
        let now = Instant::now();
        let active: Vec<Option<Timestamp>> = self
            .splits
            .values()
            .filter(|s| !s.done && !s.is_idle(now, self.idle_timeout))
            .map(|s| s.watermark)
            .collect();
        if active.is_empty() {
            return self.splits.values().filter_map(|s| s.watermark).max();
        }
        if active.iter().any(Option::is_none) {
            return None;
        }
        active.into_iter().flatten().min()
    }
}

/// Each row's watermark candidate (`ts - delay`), as a one-column batch, when the source has
/// a watermark.
pub fn watermark_candidates(table: &QueueTable, rows: &RecordBatch) -> Result<Option<RecordBatch>> {
    let Some(wm) = &table.def().watermark else {
        return Ok(None);
    };
    let values = wm.candidates(rows)?;
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
        datafusion::arrow::datatypes::Field::new("w", values.data_type().clone(), true),
    ]));
    Ok(Some(RecordBatch::try_new(schema, vec![values])?))
}

/// Watermark candidates as [`SplitWatermarks::observe`] takes them, for tests.
#[cfg(test)]
pub(crate) fn candidate_batch(values: Vec<i64>) -> RecordBatch {
    use datafusion::arrow::array::TimestampNanosecondArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "w",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )])),
        vec![Arc::new(TimestampNanosecondArray::from(values))],
    )
    .expect("a timestamp column")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_watermark_is_the_minimum_of_active_splits() {
        let batch = candidate_batch;
        let mut w = SplitWatermarks::new(Duration::from_secs(60));
        w.observe(Some(&batch(vec![10, 30, 20])), [0, 0, 1].into_iter());
        assert_eq!(w.current(), Some(20));
        w.observe(Some(&batch(vec![50])), [1].into_iter());
        assert_eq!(w.current(), Some(30));
        w.finish(0);
        assert_eq!(w.current(), Some(50));
        w.finish(1);
        assert_eq!(w.current(), Some(50));
        // A split goes idle only once it is caught up: lagging behind is not being quiet.
        let mut idle = SplitWatermarks::new(Duration::ZERO);
        idle.observe(Some(&batch(vec![10, 40])), [0, 1].into_iter());
        assert_eq!(idle.current(), Some(10));
        idle.caught_up(0);
        assert_eq!(idle.current(), Some(40));
        idle.observe(Some(&batch(vec![45])), [0].into_iter());
        assert_eq!(idle.current(), Some(40));
    }
}
