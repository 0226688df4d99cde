//! The PostgreSQL sink: a view's changes written into a PostgreSQL table, one transaction per
//! batch.
//!
//! A batch is one epoch's changes (at-least-once) or one checkpoint's (exactly once, the
//! default while checkpoints are on). Its changes are netted per key: a key that ends the batch
//! with a row is upserted (`INSERT … ON CONFLICT (key) DO UPDATE`), a key that lost its row is
//! deleted; an append-only sink inserts. Rows travel by `COPY … FROM STDIN` in PostgreSQL's
//! text form (the same text Sluice's own server prints), into session-temporary tables from
//! which one statement each applies them, so PostgreSQL parses every value into the column's
//! own type (`NUMERIC`, `TIMESTAMPTZ`, `JSONB`, arrays).
//!
//! The same transaction records the batch in `sluice_sink_progress` (one row per sink, in the
//! target's schema). A batch whose number is not above the recorded one was committed already
//! and is skipped: after a crash, the checkpoint's unconfirmed batches are offered again and
//! only those PostgreSQL does not hold are applied, so each change lands exactly once and a
//! reader never sees half a batch.
//!
//! A lost connection (PostgreSQL restarting, a network fault) is retried with back-off, the
//! same batch again; any other error (a constraint the rows break, a column of the wrong type)
//! stops the sink, with the error in `sluice_sinks`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use futures::SinkExt;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;

use crate::connector::sink::SinkStats;
use crate::connector::spec::{Format, PostgresTarget, quote_identifier};
use crate::error::{Error, Result, sqlstate};
use crate::runtime::executor::SinkEpoch;
use crate::stream::ChangeBatch;

/// The table, in the target's schema, that holds each sink's last committed batch.
pub const PROGRESS_TABLE: &str = "sluice_sink_progress";

/// Rows per `COPY` message.
const COPY_CHUNK: usize = 4096;

/// What the sink's thread needs.
#[derive(Debug)]
pub struct PostgresSink {
    /// The sink's name: its row in the progress table.
    pub name: String,
    /// The server and table.
    pub target: PostgresTarget,
    /// How rows are applied.
    pub writer: RowWriter,
    /// Batches from the executor.
    pub receiver: Receiver<SinkEpoch>,
    /// Counters.
    pub stats: Arc<SinkStats>,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// Exactly once: batches wait for their checkpoint, and are confirmed once committed.
    pub exactly_once: Option<Checkpointed>,
}

/// An exactly-once sink's link to checkpoints.
#[derive(Debug)]
pub struct Checkpointed {
    /// The newest batch committed, for the executor.
    pub confirmed: Arc<AtomicU64>,
    /// The epoch of the newest durable checkpoint.
    pub checkpoints: watch::Receiver<u64>,
    /// Batches of the recovered checkpoint not confirmed before the restart.
    pub resume: Vec<(u64, Vec<ChangeBatch>)>,
}

/// How a view's changes become statements on the target table.
#[derive(Debug, Clone)]
pub struct RowWriter {
    /// The view's schema.
    schema: SchemaRef,
    /// Upsert by these columns of the view; empty: append-only.
    key_columns: Vec<usize>,
    /// An append-only sink over an updating view drops retractions.
    force_append_only: bool,
}

impl RowWriter {
    /// A writer for a view of `schema`; checks the key columns and that a sink without a key
    /// reads an append-only view.
    pub fn new(
        schema: &SchemaRef,
        format: Format,
        primary_key: &[String],
        force_append_only: bool,
        append_only: bool,
    ) -> Result<Self> {
        let key_columns = primary_key
            .iter()
            .map(|name| {
                schema.index_of(name).map_err(|_| {
                    Error::user(
                        sqlstate::UNDEFINED_COLUMN,
                        format!("primary_key column \"{name}\" is not a column of the sink's view"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let key_columns = if format == Format::Upsert {
            key_columns
        } else {
            Vec::new()
        };
        if key_columns.is_empty() && !append_only && !force_append_only {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                "the view is not append-only, so an append-only postgres sink would lose its \
                 updates and deletes: give primary_key = '…' (upsert), or force_append_only = 'true'",
            ));
        }
        Ok(Self {
            schema: Arc::clone(schema),
            key_columns,
            force_append_only,
        })
    }

    /// One batch's changes as the rows to write and the keys to delete.
    pub fn plan(&self, changes: &[ChangeBatch]) -> Result<Planned> {
        let changes: Vec<&ChangeBatch> = changes.iter().filter(|c| c.num_rows() > 0).collect();
        if changes.is_empty() {
            return Ok(Planned::default());
        }
        let batches: Vec<&RecordBatch> = changes.iter().map(|c| c.data()).collect();
        let weight = |b: usize, r: usize| changes[b].weights().map_or(1, |w| w.value(r));
        if self.key_columns.is_empty() {
            // Append-only: each inserted copy once.
            let mut picks = Vec::new();
            for (b, change) in changes.iter().enumerate() {
                for r in 0..change.num_rows() {
                    let w = weight(b, r);
                    if w < 0 && !self.force_append_only {
                        return Err(Error::internal(
                            "an append-only postgres sink got a retraction",
                        ));
                    }
                    picks.extend(std::iter::repeat_n((b, r), w.max(0) as usize));
                }
            }
            return Ok(Planned {
                rows: take(&self.schema, &batches, &picks)?,
                deleted_keys: None,
            });
        }
        // Per key, each distinct row's net weight; the key ends with the last row whose net
        // weight is positive, or with none.
        let sort_fields = |columns: &[usize]| {
            columns
                .iter()
                .map(|&i| SortField::new(self.schema.field(i).data_type().clone()))
                .collect::<Vec<_>>()
        };
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let key_converter = RowConverter::new(sort_fields(&self.key_columns))?;
        let row_converter = RowConverter::new(sort_fields(&all))?;
        let mut keys = Vec::with_capacity(batches.len());
        let mut rows = Vec::with_capacity(batches.len());
        for batch in &batches {
            keys.push(key_converter.convert_columns(batch.project(&self.key_columns)?.columns())?);
            rows.push(row_converter.convert_columns(batch.columns())?);
        }
        let mut order = Vec::new();
        let mut by_key: HashMap<_, Vec<(_, i64, (usize, usize))>> = HashMap::new();
        for (b, batch) in batches.iter().enumerate() {
            for r in 0..batch.num_rows() {
                let key = keys[b].row(r);
                let row = rows[b].row(r);
                let entry = by_key.entry(key).or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                });
                match entry.iter_mut().find(|(v, _, _)| *v == row) {
                    Some((_, w, at)) => {
                        *w += weight(b, r);
                        *at = (b, r);
                    }
                    None => entry.push((row, weight(b, r), (b, r))),
                }
            }
        }
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for key in order {
            let values = &by_key[&key];
            if let Some((_, _, at)) = values.iter().rev().find(|(_, w, _)| *w > 0) {
                upserts.push(*at);
            } else if let Some((_, _, at)) = values.iter().find(|(_, w, _)| *w < 0) {
                deletes.push(*at);
            }
        }
        let deleted_keys = take(&self.schema, &batches, &deletes)?
            .map(|b| b.project(&self.key_columns))
            .transpose()?;
        Ok(Planned {
            rows: take(&self.schema, &batches, &upserts)?,
            deleted_keys,
        })
    }

    /// The view's column names, quoted, comma-separated (`None`: the key columns).
    fn column_list(&self, key: bool) -> String {
        let columns: Vec<usize> = if key {
            self.key_columns.clone()
        } else {
            (0..self.schema.fields().len()).collect()
        };
        columns
            .iter()
            .map(|&i| quote_identifier(self.schema.field(i).name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Rows `picks` of `batches`, as one batch; `None` when there are none.
fn take(
    schema: &SchemaRef,
    batches: &[&RecordBatch],
    picks: &[(usize, usize)],
) -> Result<Option<RecordBatch>> {
    if picks.is_empty() {
        return Ok(None);
    }
    let batch = interleave_record_batch(batches, picks)?;
    Ok(Some(batch.with_schema(Arc::clone(schema))?))
}

/// A batch's effect on the target.
#[derive(Debug, Default)]
pub struct Planned {
    /// Rows to insert (append-only) or upsert.
    pub rows: Option<RecordBatch>,
    /// Keys whose row is gone.
    pub deleted_keys: Option<RecordBatch>,
}

impl Planned {
    /// Rows written or deleted.
    pub fn len(&self) -> usize {
        self.rows.as_ref().map_or(0, RecordBatch::num_rows)
            + self.deleted_keys.as_ref().map_or(0, RecordBatch::num_rows)
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn pg_error(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::connector(format!("postgres sink: {what}: {}", super::describe(&e)))
}

/// Connects to the target.
pub async fn connect(
    target: &PostgresTarget,
) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
    super::connect(&target.config()).await
}

/// Makes the target ready: the table (created with the view's columns if it does not exist;
/// otherwise it must have every column of the view), the progress table and the session's
/// temporary tables.
async fn prepare_session(
    client: &tokio_postgres::Client,
    target: &PostgresTarget,
    writer: &RowWriter,
) -> std::result::Result<(), PrepareError> {
    let table = target.qualified_table();
    let existing: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if existing.is_empty() {
        let mut columns: Vec<String> = writer
            .schema
            .fields()
            .iter()
            .map(|f| {
                format!(
                    "{} {}{}",
                    quote_identifier(f.name()),
                    crate::catalog::pg_types::format_type(f.data_type()),
                    if f.is_nullable() { "" } else { " NOT NULL" }
                )
            })
            .collect();
        if !writer.key_columns.is_empty() {
            columns.push(format!("PRIMARY KEY ({})", writer.column_list(true)));
        }
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} ({})",
                columns.join(", ")
            ))
            .await?;
    } else if let Some(missing) = writer
        .schema
        .fields()
        .iter()
        .find(|f| !existing.iter().any(|c| c == f.name()))
    {
        return Err(PrepareError::Sluice(Error::user(
            sqlstate::UNDEFINED_COLUMN,
            format!(
                "postgres table {}.{} has no column \"{}\" (the sink writes every column of its view)",
                target.schema,
                target.table,
                missing.name()
            ),
        )));
    }
    let schema = quote_identifier(&target.schema);
    let setup = format!(
        "CREATE TABLE IF NOT EXISTS {schema}.{PROGRESS_TABLE} (\
                 sink_name text PRIMARY KEY, \
                 batch bigint NOT NULL, \
                 committed_at timestamptz NOT NULL DEFAULT now()); \
             CREATE TEMP TABLE IF NOT EXISTS sluice_rows ON COMMIT DELETE ROWS AS \
                 SELECT {columns} FROM {table} WITH NO DATA; \
             CREATE TEMP TABLE IF NOT EXISTS sluice_keys ON COMMIT DELETE ROWS AS \
                 SELECT {keys} FROM {table} WITH NO DATA",
        columns = writer.column_list(false),
        keys = if writer.key_columns.is_empty() {
            writer.column_list(false)
        } else {
            writer.column_list(true)
        },
    );
    // Sinks starting together race to create the progress table: the loser's error
    // (23505 on pg_type, or 42P07) only means the table is there now.
    for attempt in 0..3 {
        match client.batch_execute(&setup).await {
            Err(e)
                if attempt < 2
                    && e.code().is_some_and(|c| {
                        *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE
                    }) => {}
            other => return other.map_err(PrepareError::from),
        }
    }
    Ok(())
}

/// Why preparing failed: PostgreSQL's error, or the table does not fit.
#[derive(Debug)]
enum PrepareError {
    Postgres(tokio_postgres::Error),
    Sluice(Error),
}

impl From<tokio_postgres::Error> for PrepareError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

impl PrepareError {
    fn into_error(self, what: &str) -> Error {
        match self {
            Self::Postgres(e) => pg_error(what)(e),
            Self::Sluice(e) => e,
        }
    }
}

/// At `CREATE SINK`: connects, makes the table ready and forgets the progress of an earlier
/// sink of the same name, so that a bad target is refused at once.
pub async fn check_target(name: &str, target: &PostgresTarget, writer: &RowWriter) -> Result<()> {
    let client = connect(target).await.map_err(|e| {
        Error::user(
            sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            format!(
                "postgres sink: cannot connect to {}:{} database {}: {e}",
                target.host, target.port, target.database
            ),
        )
    })?;
    prepare_session(&client, target, writer)
        .await
        .map_err(|e| e.into_error("preparing the table"))?;
    client
        .execute(
            &format!(
                "DELETE FROM {}.{PROGRESS_TABLE} WHERE sink_name = $1",
                quote_identifier(&target.schema)
            ),
            &[&name],
        )
        .await
        .map_err(pg_error("clearing the progress of an earlier sink"))?;
    Ok(())
}

/// Starts the sink's thread.
pub fn spawn(sink: PostgresSink) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("sink-{}", sink.name))
        .spawn(move || {
            let span = tracing::info_span!("sink", sink = %sink.name, table = %sink.target.table);
            let _entered = span.enter();
            let stats = Arc::clone(&sink.stats);
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    stats.fail(&Error::internal(format!("postgres sink runtime: {e}")));
                    return;
                }
            };
            if let Err(e) = run(&runtime, sink) {
                stats.fail(&e);
            }
        })
        .map_err(|e| Error::internal(format!("cannot start sink thread: {e}")))
}

fn run(runtime: &tokio::runtime::Runtime, mut sink: PostgresSink) -> Result<()> {
    let mut session = Session::default();
    let resume = sink
        .exactly_once
        .as_mut()
        .map(|e| std::mem::take(&mut e.resume))
        .unwrap_or_default();
    for (batch, changes) in resume {
        if !runtime.block_on(session.apply(&sink, batch, &changes, true))? {
            return Ok(());
        }
    }
    while !sink.stop.load(Ordering::Relaxed) {
        let epoch = match sink.receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(epoch) => epoch,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Some(exactly_once) = &mut sink.exactly_once {
            // The batch's changes are durable in a checkpoint before any of them is written.
            while *exactly_once.checkpoints.borrow_and_update() < epoch.epoch {
                if sink.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if !runtime.block_on(session.apply(&sink, epoch.epoch, &epoch.changes, false))? {
            break;
        }
    }
    Ok(())
}

/// The sink's connection, made (and made again) when needed.
#[derive(Default)]
struct Session {
    client: Option<tokio_postgres::Client>,
}

impl Session {
    /// Applies batch `batch` once, retrying on a new connection while the failure is the
    /// connection's; `false` if the sink was stopped first.
    async fn apply(
        &mut self,
        sink: &PostgresSink,
        batch: u64,
        changes: &[ChangeBatch],
        resumed: bool,
    ) -> Result<bool> {
        let planned = sink.writer.plan(changes)?;
        let mut backoff = Duration::from_millis(100);
        loop {
            if sink.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let result = match self.client(sink).await {
                Ok(_) => {
                    let client = self.client.as_mut().expect("connected just now");
                    write_batch(client, sink, batch, &planned, resumed).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(written) => {
                    sink.stats.records.fetch_add(written, Ordering::Relaxed);
                    sink.stats.epoch.store(batch, Ordering::Relaxed);
                    if let Some(exactly_once) = &sink.exactly_once {
                        exactly_once.confirmed.fetch_max(batch, Ordering::SeqCst);
                    }
                    return Ok(true);
                }
                Err(PrepareError::Postgres(e)) if super::is_transient(&e) => {
                    sink.stats
                        .failed_records
                        .fetch_add(planned.len() as u64, Ordering::Relaxed);
                    tracing::warn!(batch, error = %e, retry_in = ?backoff, "postgres sink: retrying on a new connection");
                    self.client = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.into_error(&format!("batch {batch}"))),
            }
        }
    }

    /// The connection, connected and prepared if there is none.
    async fn client(
        &mut self,
        sink: &PostgresSink,
    ) -> std::result::Result<&tokio_postgres::Client, PrepareError> {
        if self
            .client
            .as_ref()
            .is_some_and(tokio_postgres::Client::is_closed)
        {
            self.client = None;
        }
        let client = match self.client.take() {
            Some(client) => client,
            None => {
                let client = connect(&sink.target).await?;
                prepare_session(&client, &sink.target, &sink.writer).await?;
                client
            }
        };
        Ok(self.client.insert(client))
    }
}

/// Writes one batch in one transaction, unless the progress table shows it committed;
/// returns the rows written.
async fn write_batch(
    client: &mut tokio_postgres::Client,
    sink: &PostgresSink,
    batch: u64,
    planned: &Planned,
    resumed: bool,
) -> std::result::Result<u64, PrepareError> {
    let schema = quote_identifier(&sink.target.schema);
    let table = sink.target.qualified_table();
    let batch_number = i64::try_from(batch)
        .map_err(|_| PrepareError::Sluice(Error::internal("a sink batch number beyond BIGINT")))?;
    let transaction = client.transaction().await?;
    let committed: Option<i64> = transaction
        .query_opt(
            &format!("SELECT batch FROM {schema}.{PROGRESS_TABLE} WHERE sink_name = $1 FOR UPDATE"),
            &[&sink.name],
        )
        .await?
        .map(|row| row.get(0));
    // Only a batch offered again after a restart can be in PostgreSQL already; any other is
    // new, whatever its number (epochs follow the clock, which may step back).
    if resumed && committed.is_some_and(|c| c >= batch_number) {
        tracing::info!(
            batch,
            "postgres sink: batch committed before the restart; skipped"
        );
        transaction.rollback().await?;
        return Ok(0);
    }
    let writer = &sink.writer;
    if let Some(keys) = &planned.deleted_keys {
        copy_in(
            &transaction,
            &format!("sluice_keys ({})", writer.column_list(true)),
            keys,
        )
        .await?;
        let matches: Vec<String> = writer
            .key_columns
            .iter()
            .map(|&i| {
                let c = quote_identifier(writer.schema.field(i).name());
                format!("t.{c} = k.{c}")
            })
            .collect();
        transaction
            .execute(
                &format!(
                    "DELETE FROM {table} t USING sluice_keys k WHERE {}",
                    matches.join(" AND ")
                ),
                &[],
            )
            .await?;
    }
    if let Some(rows) = &planned.rows {
        let columns = writer.column_list(false);
        if writer.key_columns.is_empty() {
            copy_in(&transaction, &format!("{table} ({columns})"), rows).await?;
        } else {
            copy_in(&transaction, &format!("sluice_rows ({columns})"), rows).await?;
            let updates: Vec<String> = (0..writer.schema.fields().len())
                .filter(|i| !writer.key_columns.contains(i))
                .map(|i| {
                    let c = quote_identifier(writer.schema.field(i).name());
                    format!("{c} = EXCLUDED.{c}")
                })
                .collect();
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {table} ({columns}) SELECT {columns} FROM sluice_rows \
                         ON CONFLICT ({}) DO {action}",
                        writer.column_list(true)
                    ),
                    &[],
                )
                .await?;
        }
    }
    transaction
        .execute(
            &format!(
                "INSERT INTO {schema}.{PROGRESS_TABLE} (sink_name, batch) VALUES ($1, $2) \
                 ON CONFLICT (sink_name) DO UPDATE \
                 SET batch = greatest({PROGRESS_TABLE}.batch, EXCLUDED.batch), committed_at = now()"
            ),
            &[
                &sink.name as &(dyn tokio_postgres::types::ToSql + Sync),
                &batch_number,
            ],
        )
        .await?;
    transaction.commit().await?;
    Ok(planned.len() as u64)
}

/// `COPY <into> FROM STDIN` of `rows`, in PostgreSQL's text form.
async fn copy_in(
    transaction: &tokio_postgres::Transaction<'_>,
    into: &str,
    rows: &RecordBatch,
) -> std::result::Result<(), tokio_postgres::Error> {
    let sink = transaction
        .copy_in::<_, Bytes>(&format!("COPY {into} FROM STDIN"))
        .await?;
    futures::pin_mut!(sink);
    let mut at = 0;
    while at < rows.num_rows() {
        let len = COPY_CHUNK.min(rows.num_rows() - at);
        let lines = crate::serve::encode::copy_lines(&rows.slice(at, len), false);
        let mut chunk = Vec::with_capacity(lines.iter().map(Bytes::len).sum());
        for line in &lines {
            chunk.extend_from_slice(line);
        }
        sink.send(Bytes::from(chunk)).await?;
        at += len;
    }
    sink.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn rows(k: &[i64], v: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("v", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(k.to_vec())),
                Arc::new(StringArray::from(v.to_vec())),
            ],
        )
        .unwrap()
    }

    fn text(batch: &Option<RecordBatch>) -> Vec<String> {
        let Some(batch) = batch else {
            return Vec::new();
        };
        let lines = crate::serve::encode::copy_lines(batch, false);
        lines
            .iter()
            .map(|l| {
                String::from_utf8(l.to_vec())
                    .unwrap()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn upserts_net_each_key_and_delete_keys_left_without_a_row() {
        let schema = rows(&[], &[]).schema();
        let writer = RowWriter::new(&schema, Format::Upsert, &["k".into()], false, false).unwrap();
        let planned = writer
            .plan(&[
                ChangeBatch::inserts(rows(&[1, 2, 3], &["a", "b", "c"])),
                ChangeBatch::retractions(rows(&[1, 2, 4], &["a", "b", "d"])),
                ChangeBatch::inserts(rows(&[1], &["a\tz"])),
            ])
            .unwrap();
        assert_eq!(text(&planned.rows), vec!["1\ta\\tz", "3\tc"]);
        // Key 2 came and went within the batch: PostgreSQL never had it.
        assert_eq!(text(&planned.deleted_keys), vec!["4"]);
        // Taken out and put back in one batch: nothing to do.
        let same = writer
            .plan(&[
                ChangeBatch::retractions(rows(&[5], &["e"])),
                ChangeBatch::inserts(rows(&[5], &["e"])),
            ])
            .unwrap();
        assert!(same.is_empty());
    }

    #[test]
    fn append_only_writes_each_copy_and_refuses_retractions() {
        let schema = rows(&[], &[]).schema();
        let writer = RowWriter::new(&schema, Format::Plain, &[], false, true).unwrap();
        let planned = writer
            .plan(&[ChangeBatch::inserts(rows(&[1, 1], &["a", "a"]))])
            .unwrap();
        assert_eq!(text(&planned.rows), vec!["1\ta", "1\ta"]);
        assert!(
            writer
                .plan(&[ChangeBatch::retractions(rows(&[1], &["a"]))])
                .is_err()
        );
        assert!(RowWriter::new(&schema, Format::Plain, &[], false, false).is_err());
        let forced = RowWriter::new(&schema, Format::Plain, &[], true, false).unwrap();
        assert!(
            forced
                .plan(&[ChangeBatch::retractions(rows(&[1], &["a"]))])
                .unwrap()
                .is_empty()
        );
    }
}
