//! [`QueueTable`]: a table of the internal queue. Every write is decided, appended to the log and
//! applied to the in-memory contents under one lock, then acknowledged once the log says it is
//! durable.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use datafusion::physical_expr::PhysicalExpr;

use crate::catalog::TableDef;
use crate::error::{Error, Result, sqlstate};
use crate::storage::{FsyncPolicy, Log, RecordMeta};
use crate::stream::ChangeBatch;

use super::contents::TableContents;

/// A table: its definition, its durable log and its current contents.
#[derive(Debug)]
pub struct QueueTable {
    /// What `CREATE TABLE` declared.
    def: TableDef,
    /// The durable log of every change, the queue that views consume.
    log: Log,
    /// The current rows. The lock also serializes writers, so that what a write decides from
    /// the contents (which rows an upsert replaces) is still true when it is appended.
    contents: Mutex<TableContents>,
    /// The watermark and the late rows dropped, for a table with `WATERMARK FOR`.
    time: Mutex<EventTime>,
    /// Held shared while a change is appended; the view runtime holds it exclusively while it
    /// reads every table's end, so that its cut is consistent across tables.
    commit_gate: Arc<RwLock<()>>,
    /// The counters of the connector writing to it, once started.
    source_stats: Mutex<Option<Arc<crate::connector::source::SourceStats>>>,
}

/// What a connector writes in one record.
#[derive(Debug)]
pub struct ConnectorBatch {
    /// Rows to insert (upsert on a keyed table), in the table's schema.
    pub rows: RecordBatch,
    /// Key columns of rows to delete (tombstones of an upsert topic).
    pub deleted_keys: Option<RecordBatch>,
    /// The connector's watermark after these rows, when it tracks its own.
    pub watermark: Option<crate::stream::Timestamp>,
    /// Where the connector stands after these rows.
    pub position: String,
    /// A bounded source has nothing more: its watermark goes to the end of time.
    pub end_of_input: bool,
}

/// Where a table with a watermark stands in event time.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventTime {
    /// The watermark: no row with an earlier event time is accepted any more.
    pub watermark: Option<crate::stream::Timestamp>,
    /// Rows dropped because they were behind the watermark, since the table was created (each
    /// log record counts the rows its write dropped).
    pub late_rows: u64,
}

impl QueueTable {
    /// Opens the table's log under `tables_dir` (segments of `segment_size` bytes) and
    /// rebuilds its contents from it.
    pub fn open(
        def: TableDef,
        tables_dir: &Path,
        fsync: FsyncPolicy,
        segment_size: u64,
        commit_gate: Arc<RwLock<()>>,
    ) -> Result<Self> {
        let log =
            Log::open_with_segment_size(&tables_dir.join(def.id.to_string()), fsync, segment_size)?;
        let mut contents = if keeps_rows(&def) {
            TableContents::new(Arc::clone(&def.schema), &def.primary_key)?
        } else {
            TableContents::counted()
        };
        let mut position = 0;
        let mut time = EventTime::default();
        let mut end_of_input = false;
        loop {
            let records = log.read_with_meta(position, 256)?;
            let Some((last, _, _)) = records.last() else {
                break;
            };
            position = last + 1;
            for (_, change, meta) in &records {
                contents.apply(change)?;
                end_of_input |= meta.end_of_input;
                time.late_rows += meta.late_rows;
                match (meta.watermark, &def.watermark) {
                    (Some(w), _) => time.watermark = time.watermark.max(Some(w)),
                    (None, Some(wm)) => {
                        time.watermark = wm.advance(time.watermark, change.data())?;
                    }
                    (None, None) => {}
                }
            }
        }
        if end_of_input {
            time.watermark = Some(i64::MAX);
        }
        tracing::debug!(table = %def.name, records = position, rows = contents.num_rows(), "table restored");
        Ok(Self {
            def,
            log,
            contents: Mutex::new(contents),
            time: Mutex::new(time),
            commit_gate,
            source_stats: Mutex::new(None),
        })
    }

    /// The table's watermark and late-row count (all `None`/0 without `WATERMARK FOR`).
    pub fn event_time(&self) -> EventTime {
        *crate::sync::lock_value(&self.time)
    }

    /// The counters of its connector, once it has run.
    pub fn source_stats(&self) -> Option<Arc<crate::connector::source::SourceStats>> {
        crate::sync::lock_value(&self.source_stats).clone()
    }

    /// Records the counters of the connector that writes to it.
    pub fn set_source_stats(&self, stats: Arc<crate::connector::source::SourceStats>) {
        *crate::sync::lock_value(&self.source_stats) = Some(stats);
    }

    /// The table's definition.
    pub fn def(&self) -> &TableDef {
        &self.def
    }

    /// The table's log: read from a position, wait for data past it.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Whether the table keeps its rows in memory; else they are read back from its log (a
    /// source, an append-only table without a primary key).
    pub fn keeps_rows(&self) -> bool {
        keeps_rows(&self.def)
    }

    /// The current rows, all in memory. A table that does not keep its rows reads them back
    /// from its log (a scan reads them a record at a time instead: [`Self::scan_log`]).
    pub fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        if !self.keeps_rows() {
            let end = self.log.end();
            let mut batches = Vec::new();
            let mut position = 0;
            while position < end {
                let records = self.log.read(position, 256)?;
                let Some((last, _)) = records.last() else {
                    break;
                };
                position = last + 1;
                batches.extend(records.into_iter().map(|(_, c)| c.data().clone()));
            }
            return Ok(batches);
        }
        Ok(self.lock().snapshot()?)
    }

    /// Number of rows now.
    pub fn num_rows(&self) -> usize {
        self.lock().num_rows()
    }

    /// The rows held in memory and their bytes (none when they are in the log only).
    pub fn state_size(&self) -> crate::operator::StateSize {
        self.lock().state_size()
    }

    /// Writes what a connector decoded: `rows` (upserted by key on a table with a primary
    /// key), then `deleted_keys` (rows of the key columns whose rows to delete). Rows behind
    /// the watermark are dropped and counted. The record carries `position`, so that after a
    /// restart the connector resumes right after the last record the log kept, and the
    /// watermark: `watermark` when the connector tracks its own (the minimum over its
    /// partitions), else the table's own advance over the rows. Returns the rows written.
    ///
    /// It does not wait for an fsync: the source position travels with the rows, so a record
    /// lost in a crash is read again from the source.
    pub fn ingest(&self, batch: ConnectorBatch) -> Result<u64> {
        let ConnectorBatch {
            rows,
            deleted_keys,
            watermark,
            position,
            end_of_input,
        } = batch;
        let mut contents = self.lock();
        let (rows, watermark_after, late) = self.admit(rows, Some(watermark))?;
        let mut parts = Vec::new();
        let written = rows.num_rows() as u64;
        if rows.num_rows() > 0 {
            parts.push(self.upsert_change(&contents, rows)?);
        }
        if let Some(keys) = deleted_keys
            && keys.num_rows() > 0
            && let Some(keyed) = contents.keyed()
        {
            let keys_bytes = keyed.key_rows_of(&keys)?;
            let gone = keyed.lookup(keys_bytes.iter().map(|k| k.data()))?;
            if gone.num_rows() > 0 {
                parts.push(ChangeBatch::retractions(gone));
            }
        }
        let change = match parts.len() {
            0 => ChangeBatch::inserts(RecordBatch::new_empty(Arc::clone(&self.def.schema))),
            1 => parts.pop().unwrap_or_else(|| unreachable!()),
            _ => ChangeBatch::concat(&self.def.schema, &parts)?,
        };
        let meta = RecordMeta {
            watermark: if end_of_input {
                Some(i64::MAX)
            } else {
                watermark_after
            },
            source_position: Some(position),
            end_of_input,
            late_rows: late,
        };
        self.commit(&mut contents, change, meta)?;
        let shown = if end_of_input {
            Some(i64::MAX)
        } else {
            watermark_after
        };
        self.record_time(shown, late);
        Ok(written)
    }

    /// The source position and end-of-input flag of the last record a connector wrote.
    pub fn last_source_position(&self) -> Result<(Option<String>, bool)> {
        let end = self.log.end();
        if end == 0 {
            return Ok((None, false));
        }
        let records = self.log.read_with_meta(end - 1, 1)?;
        Ok(records
            .into_iter()
            .next()
            .map(|(_, _, meta)| (meta.source_position, meta.end_of_input))
            .unwrap_or((None, false)))
    }

    /// Drops the rows behind the watermark and works out where it moves: to the connector's
    /// own watermark when it tracks one (`Some`), else by the table's watermark expression
    /// over the rows kept.
    ///
    /// Returns the rows kept, the watermark after them and how many were late. The caller
    /// holds the contents lock (writes are serialized) and records the new time with
    /// [`Self::record_time`] once the write is in the log: a watermark shown before its
    /// record is in the log could run ahead of what a FLUSH makes visible.
    fn admit(
        &self,
        batch: RecordBatch,
        next: Option<Option<crate::stream::Timestamp>>,
    ) -> Result<(RecordBatch, Option<crate::stream::Timestamp>, u64)> {
        let Some(wm) = &self.def.watermark else {
            return Ok((batch, None, 0));
        };
        let current = crate::sync::lock_value(&self.time).watermark;
        let (batch, late) = match wm.on_time(current, &batch)? {
            None => (batch, 0),
            Some(mask) => {
                let kept = filter_record_batch(&batch, &mask)?;
                let late = (batch.num_rows() - kept.num_rows()) as u64;
                tracing::debug!(table = %self.def.name, late, "late rows dropped");
                (kept, late)
            }
        };
        let after = match next {
            Some(next) => current.max(next),
            None => wm.advance(current, &batch)?,
        };
        Ok((batch, after, late))
    }

    /// Moves the shown event time on after a write (see [`Self::admit`]).
    fn record_time(&self, watermark: Option<crate::stream::Timestamp>, late: u64) {
        if self.def.watermark.is_none() && watermark.is_none() {
            return;
        }
        let mut time = crate::sync::lock_value(&self.time);
        time.watermark = time.watermark.max(watermark);
        time.late_rows += late;
    }

    /// Inserting `batch`: on a keyed table each row replaces the row of its key.
    fn upsert_change(&self, contents: &TableContents, batch: RecordBatch) -> Result<ChangeBatch> {
        Ok(match contents.keyed() {
            None => ChangeBatch::inserts(batch),
            Some(keyed) => {
                let batch = last_row_per_key(keyed, &batch)?;
                let keys = keyed.keys_of(&batch)?;
                let replaced = keyed.lookup(keys.iter().map(|k| k.data()))?;
                if replaced.num_rows() == 0 {
                    ChangeBatch::inserts(batch)
                } else {
                    ChangeBatch::concat(
                        &self.def.schema,
                        &[
                            ChangeBatch::retractions(replaced),
                            ChangeBatch::inserts(batch),
                        ],
                    )?
                }
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, TableContents> {
        // A writer that panicked may have logged a change it did not apply: not reused.
        crate::sync::lock(&self.contents, "the table's rows")
    }

    /// Inserts rows in the table's schema; on a table with a primary key a row replaces the
    /// row with the same key (upsert). Returns the number of rows written once durable.
    pub async fn insert(&self, batch: RecordBatch) -> Result<u64> {
        match self.insert_unsynced(batch)? {
            None => Ok(0),
            Some((position, rows)) => {
                self.log.wait_durable(position).await?;
                Ok(rows)
            }
        }
    }

    /// Inserts batch after batch (a COPY's), each one record, as one INSERT of all their rows
    /// would: no other write comes between them, every row is judged late or not against the
    /// watermark as it stood before the first, and the watermark moves on once, with the last
    /// record (earlier records carry the old one). Returns the rows written once the last is
    /// durable.
    pub async fn insert_all(
        &self,
        batches: impl Iterator<Item = Result<RecordBatch>>,
    ) -> Result<u64> {
        self.refuse_if_source("write to")?;
        let (written, last) = {
            let mut contents = self.lock();
            let before = crate::sync::lock_value(&self.time).watermark;
            let mut after = before;
            let (mut written, mut late, mut last) = (0u64, 0u64, None);
            let mut carried_after = false;
            let mut batches = batches.peekable();
            while let Some(batch) = batches.next() {
                let batch = batch?;
                let final_batch = batches.peek().is_none();
                self.check_not_null(&batch)?;
                let batch =
                    RecordBatch::try_new(Arc::clone(&self.def.schema), batch.columns().to_vec())?;
                let (batch, _, dropped) = self.admit(batch, Some(before))?;
                late += dropped;
                if let Some(wm) = &self.def.watermark {
                    after = after.max(wm.advance(before, &batch)?);
                }
                if batch.num_rows() == 0 {
                    continue;
                }
                written += batch.num_rows() as u64;
                let change = self.upsert_change(&contents, batch)?;
                // A record without a watermark would let the views advance theirs over its
                // rows; one that holds the old watermark (the lowest, when there is none yet)
                // keeps them where the COPY found them until its last record.
                let held = match &self.def.watermark {
                    Some(_) => before.or(Some(crate::stream::Timestamp::MIN)),
                    None => None,
                };
                let meta = RecordMeta {
                    watermark: if final_batch { after } else { held },
                    ..RecordMeta::default()
                };
                last = Some(self.commit(&mut contents, change, meta)?);
                carried_after = final_batch;
            }
            // The late count goes into the log with the last record; when the last batch was
            // all late, an empty record carries it and the watermark the COPY moved to.
            if late > 0 || (last.is_some() && !carried_after) {
                let meta = RecordMeta {
                    watermark: after,
                    late_rows: late,
                    ..RecordMeta::default()
                };
                let empty =
                    ChangeBatch::inserts(RecordBatch::new_empty(Arc::clone(&self.def.schema)));
                last = Some(self.commit(&mut contents, empty, meta)?);
            }
            self.record_time(after, late);
            (written, last)
        };
        if let Some(position) = last {
            self.log.wait_durable(position).await?;
        }
        Ok(written)
    }

    /// Appends an insert without waiting for it to be durable: its log position and rows.
    fn insert_unsynced(&self, batch: RecordBatch) -> Result<Option<(u64, u64)>> {
        self.refuse_if_source("write to")?;
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        self.check_not_null(&batch)?;
        // The input may differ from the table in nullability only (checked just above).
        let batch = RecordBatch::try_new(Arc::clone(&self.def.schema), batch.columns().to_vec())?;
        let written = {
            let mut contents = self.lock();
            let (batch, watermark, late) = self.admit(batch, None)?;
            let rows = batch.num_rows() as u64;
            if rows == 0 && late == 0 {
                return Ok(None);
            }
            // All rows late: an empty record keeps the count of rows dropped.
            let change = self.upsert_change(&contents, batch)?;
            let meta = RecordMeta {
                watermark,
                late_rows: late,
                ..RecordMeta::default()
            };
            let position = self.commit(&mut contents, change, meta)?;
            self.record_time(watermark, late);
            (position, rows)
        };
        Ok(Some(written))
    }

    /// Deletes the rows for which `predicate` is true (all rows when `None`).
    pub async fn delete(&self, predicate: Option<&Arc<dyn PhysicalExpr>>) -> Result<u64> {
        self.refuse_if_append_only("DELETE")?;
        let (position, count) = {
            let mut contents = self.lock();
            let matched = matching_rows(&contents.snapshot()?, predicate)?;
            let count = matched.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
            if count == 0 {
                return Ok(0);
            }
            let retractions: Vec<ChangeBatch> =
                matched.into_iter().map(ChangeBatch::retractions).collect();
            let change = ChangeBatch::concat(&self.def.schema, &retractions)?;
            (
                self.commit(&mut contents, change, RecordMeta::default())?,
                count,
            )
        };
        self.log.wait_durable(position).await?;
        Ok(count)
    }

    /// Replaces each row for which `predicate` is true by `new_row` evaluated over it (one
    /// expression per column of the table).
    pub async fn update(
        &self,
        predicate: Option<&Arc<dyn PhysicalExpr>>,
        new_row: &[Arc<dyn PhysicalExpr>],
    ) -> Result<u64> {
        self.refuse_if_append_only("UPDATE")?;
        let (position, count) = {
            let mut contents = self.lock();
            let old = matching_rows(&contents.snapshot()?, predicate)?;
            let count = old.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
            if count == 0 {
                return Ok(0);
            }
            let mut parts = Vec::with_capacity(old.len() * 2);
            let mut new_batches = Vec::with_capacity(old.len());
            for batch in &old {
                let columns = new_row
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
                    .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
                let new = RecordBatch::try_new(Arc::new(nullable(&self.def.schema)), columns)?;
                self.check_not_null(&new)?;
                let new =
                    RecordBatch::try_new(Arc::clone(&self.def.schema), new.columns().to_vec())?;
                new_batches.push(new);
            }
            if let Some(keyed) = contents.keyed() {
                self.check_unique_after_update(keyed, &old, &new_batches)?;
            }
            parts.extend(old.into_iter().map(ChangeBatch::retractions));
            parts.extend(new_batches.into_iter().map(ChangeBatch::inserts));
            let change = ChangeBatch::concat(&self.def.schema, &parts)?;
            (
                self.commit(&mut contents, change, RecordMeta::default())?,
                count,
            )
        };
        self.log.wait_durable(position).await?;
        Ok(count)
    }

    fn commit(
        &self,
        contents: &mut TableContents,
        change: ChangeBatch,
        meta: RecordMeta,
    ) -> Result<u64> {
        let _gate = crate::sync::read_value(&self.commit_gate);
        let position = self.log.append_with_meta(&change, &meta)?;
        contents.apply(&change)?;
        Ok(position)
    }

    fn refuse_if_append_only(&self, what: &str) -> Result<()> {
        self.refuse_if_source(what)?;
        if self.def.append_only {
            return Err(Error::unsupported(format!(
                "{what} is not supported on append-only table \"{}\"",
                self.def.name
            )));
        }
        Ok(())
    }

    /// Only a connector writes to its source or table: a write of a user's between two of the
    /// connector's would hide the position the connector resumes from after a restart.
    pub fn refuse_if_source(&self, what: &str) -> Result<()> {
        if self.def.source || self.def.connector.is_some() {
            let kind = if self.def.source { "source" } else { "table" };
            return Err(Error::user(
                sqlstate::WRONG_OBJECT_TYPE,
                format!(
                    "cannot {what} {kind} \"{}\": only its connector writes to it",
                    self.def.name
                ),
            ));
        }
        Ok(())
    }

    /// NOT NULL, and the length of `VARCHAR(n)` and `CHAR(n)` values: longer is 22001, as
    /// in PostgreSQL (which also cuts off excess spaces; here they make the value too long).
    fn check_not_null(&self, batch: &RecordBatch) -> Result<()> {
        check_not_null(&self.def.schema, &self.def.name, batch.columns())?;
        for (i, column) in batch.columns().iter().enumerate() {
            let Some(Some((oid, typmod))) = self.def.declared_types.get(i) else {
                continue;
            };
            let (Some(limit), Some(values)) = (
                usize::try_from(typmod - 4).ok().filter(|_| *typmod >= 4),
                column.as_string_opt::<i32>(),
            ) else {
                continue;
            };
            // Bytes bound characters: only a value longer in bytes is counted.
            let too_long = values
                .iter()
                .flatten()
                .find(|v| v.len() > limit && v.chars().count() > limit);
            if too_long.is_some() {
                let name = if *oid == 1042 {
                    "character"
                } else {
                    "character varying"
                };
                return Err(Error::user(
                    sqlstate::STRING_DATA_RIGHT_TRUNCATION,
                    format!("value too long for type {name}({limit})"),
                ));
            }
        }
        Ok(())
    }

    /// After an update every key must still name one row: a new key may only be one of the
    /// updated rows' old keys or a key not in the table.
    fn check_unique_after_update(
        &self,
        keyed: &super::contents::KeyedRows,
        old: &[RecordBatch],
        new: &[RecordBatch],
    ) -> Result<()> {
        let mut freed = HashSet::new();
        for batch in old {
            for key in keyed.keys_of(batch)?.iter() {
                freed.insert(key.as_ref().to_vec());
            }
        }
        let mut taken = HashSet::new();
        for batch in new {
            for key in keyed.keys_of(batch)?.iter() {
                let key = key.as_ref();
                let clash =
                    (keyed.contains(key) && !freed.contains(key)) || !taken.insert(key.to_vec());
                if clash {
                    return Err(Error::user(
                        sqlstate::UNIQUE_VIOLATION,
                        format!(
                            "duplicate key value violates unique constraint \"{}_pkey\"",
                            self.def.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The schema with every column nullable, to hold rows before NOT NULL is checked.
fn nullable(schema: &datafusion::arrow::datatypes::Schema) -> datafusion::arrow::datatypes::Schema {
    datafusion::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    )
}

/// The rows of `batches` for which `predicate` is true (NULL counts as false).
fn matching_rows(
    batches: &[RecordBatch],
    predicate: Option<&Arc<dyn PhysicalExpr>>,
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for batch in batches {
        let matched = match predicate {
            None => batch.clone(),
            Some(p) => {
                let mask = p.evaluate(batch)?.into_array(batch.num_rows())?;
                let mask: &BooleanArray = mask.as_boolean();
                filter_record_batch(batch, mask)?
            }
        };
        if matched.num_rows() > 0 {
            out.push(matched);
        }
    }
    Ok(out)
}

/// Within one insert, the last row of a key wins, as if the rows had been inserted one by one.
fn last_row_per_key(
    keyed: &super::contents::KeyedRows,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let keys = keyed.keys_of(batch)?;
    let mut seen = HashSet::with_capacity(batch.num_rows());
    let mut keep: Vec<u32> = Vec::with_capacity(batch.num_rows());
    for i in (0..batch.num_rows()).rev() {
        if seen.insert(keys.row(i).as_ref().to_vec()) {
            keep.push(i as u32);
        }
    }
    if keep.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    keep.reverse();
    Ok(take_record_batch(batch, &UInt32Array::from(keep))?)
}

/// Whether a table keeps its rows in memory. A source's and an append-only table's rows are
/// read back from the log instead (no DELETE or UPDATE needs them, and a view reads the log
/// anyway), so they cost memory only while a query reads them. A primary key needs them for
/// its upserts.
fn keeps_rows(def: &TableDef) -> bool {
    !(def.source || (def.append_only && def.primary_key.is_empty()))
}

/// `23502` unless every NOT NULL column of `schema` (a table `table`'s) is free of NULLs in
/// `columns`.
pub fn check_not_null(
    schema: &datafusion::arrow::datatypes::Schema,
    table: &str,
    columns: &[datafusion::arrow::array::ArrayRef],
) -> Result<()> {
    for (field, column) in schema.fields().iter().zip(columns) {
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::user(
                sqlstate::NOT_NULL_VIOLATION,
                format!(
                    "null value in column \"{}\" of relation \"{table}\" violates not-null constraint",
                    field.name(),
                ),
            ));
        }
    }
    Ok(())
}
