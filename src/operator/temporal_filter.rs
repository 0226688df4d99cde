//! [`TemporalFilterOperator`]: `WHERE ts > now() - INTERVAL '1' HOUR` in a view.
//!
//! Each conjunct of a temporal filter compares `now()` (plus a constant) with an expression of
//! the row, so it gives each row a time from which it holds (`now() >= ts`) or one until which
//! it holds (`now() < ts + 1 hour`). A row is in the output while `from <= now < until`: it is
//! emitted when it comes, if it holds then, or when the clock reaches `from`; and retracted when
//! the clock reaches `until`. `now` is the wall clock at the end of each epoch (never going
//! back), so rows leave the view as time passes, with no change to the input.
//!
//! State: the rows waiting for their `from` and the rows shown that have an `until`, each
//! keyed by that time and its bytes (row format), with a count. A row that holds forever once
//! shown (no `until`) and a row whose interval has passed keep nothing. A retraction finds its
//! row by the same (time, bytes): the bounds depend only on the row.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampNanosecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::{OperatorError, StateSize};
use crate::state::{StateError, columns};
use crate::stream::ChangeBatch;

const NAME: &str = "TemporalFilter";

fn arrow(source: datafusion::arrow::error::ArrowError) -> OperatorError {
    OperatorError::arrow(NAME, source)
}

fn df(source: datafusion::error::DataFusionError) -> OperatorError {
    OperatorError::datafusion(NAME, source)
}

/// How a conjunct bounds the time a row holds: `now() <op> bound(row)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NowIs {
    /// `now() < bound`: holds until `bound`.
    Before,
    /// `now() <= bound`: holds until just after `bound`.
    AtOrBefore,
    /// `now() > bound`: holds from just after `bound`.
    After,
    /// `now() >= bound`: holds from `bound`.
    AtOrAfter,
}

impl NowIs {
    /// The comparison with its sides swapped (`bound <op> now()` as `now() <op'> bound`).
    pub fn flipped(self) -> Self {
        match self {
            Self::Before => Self::After,
            Self::AtOrBefore => Self::AtOrAfter,
            Self::After => Self::Before,
            Self::AtOrAfter => Self::AtOrBefore,
        }
    }
}

/// One conjunct: `now() <op> bound`, where `bound` is an expression of the row (a timestamp)
/// minus `offset` nanoseconds (`now() + offset <op> expr`).
#[derive(Debug, Clone)]
pub struct TimeBound {
    /// The row's side.
    pub expr: Arc<dyn PhysicalExpr>,
    /// What was added to `now()`, moved to the row's side.
    pub offset: i64,
    /// The comparison.
    pub now_is: NowIs,
}

/// A view's temporal filter: passes rows while the clock is within each row's interval.
#[derive(Debug)]
pub struct TemporalFilterOperator {
    bounds: Vec<TimeBound>,
    schema: SchemaRef,
    converter: RowConverter,
    /// The clock as of the last epoch (ns since 1970); rows are judged against it.
    now: i64,
    /// Rows that will hold from their time (`from`).
    waiting: Timed,
    /// Rows shown that stop holding at their time (`until`).
    shown: Timed,
    /// Changes of the epoch that pass now, emitted at its end.
    out: Vec<ChangeBatch>,
}

/// Rows by time, and each time's rows by their bytes (row format) with a count: a row is
/// found by its time and bytes without building a key.
#[derive(Debug, Default)]
struct Timed {
    times: BTreeMap<i64, BTreeMap<Box<[u8]>, i64>>,
    /// Rows held (distinct per time).
    rows: usize,
    /// Bytes of the rows held.
    bytes: usize,
}

impl Timed {
    /// Adds `weight` to the count of `row` at `time`, dropping it at zero.
    fn add(&mut self, time: i64, row: &[u8], weight: i64) {
        let at = self.times.entry(time).or_default();
        match at.get_mut(row) {
            Some(count) => {
                *count += weight;
                if *count == 0 {
                    at.remove(row);
                    self.rows -= 1;
                    self.bytes -= row.len();
                    if at.is_empty() {
                        self.times.remove(&time);
                    }
                }
            }
            None => {
                at.insert(row.into(), weight);
                self.rows += 1;
                self.bytes += row.len();
            }
        }
    }

    /// Takes out every row of a time at or before `time`, with its count.
    fn take_until(&mut self, time: i64) -> Vec<(Box<[u8]>, i64)> {
        let later = self.times.split_off(&time.saturating_add(1));
        let due = std::mem::replace(&mut self.times, later);
        let rows: Vec<(Box<[u8]>, i64)> = due.into_values().flatten().collect();
        self.rows -= rows.len();
        self.bytes -= rows.iter().map(|(r, _)| r.len()).sum::<usize>();
        rows
    }

    /// Every row: (time, bytes, count).
    fn iter(&self) -> impl Iterator<Item = (i64, &[u8], i64)> {
        self.times
            .iter()
            .flat_map(|(t, rows)| rows.iter().map(|(r, c)| (*t, r.as_ref(), *c)))
    }
}

/// The wall clock in nanoseconds since 1970.
fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl TemporalFilterOperator {
    /// A filter passing rows of `schema` while every bound holds.
    pub fn new(bounds: Vec<TimeBound>, schema: SchemaRef) -> Result<Self, OperatorError> {
        let converter = RowConverter::new(
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )
        .map_err(arrow)?;
        Ok(Self {
            bounds,
            schema,
            converter,
            now: wall_clock_ns(),
            waiting: Timed::default(),
            shown: Timed::default(),
            out: Vec::new(),
        })
    }

    /// Each row's interval `[from, until)`; `None` for a row whose bound is NULL (the
    /// comparison is NULL: it never holds).
    fn intervals(&self, data: &RecordBatch) -> Result<Vec<Option<(i64, i64)>>, OperatorError> {
        let rows = data.num_rows();
        let mut out = vec![Some((i64::MIN, i64::MAX)); rows];
        for bound in &self.bounds {
            let values = bound
                .expr
                .evaluate(data)
                .and_then(|v| v.into_array(rows))
                .map_err(df)?;
            let values =
                cast(&values, &DataType::Timestamp(TimeUnit::Nanosecond, None)).map_err(arrow)?;
            let values = values.as_primitive::<TimestampNanosecondType>();
            for (i, slot) in out.iter_mut().enumerate() {
                let Some((from, until)) = slot else { continue };
                if values.is_null(i) {
                    *slot = None;
                    continue;
                }
                let at = values.value(i).saturating_sub(bound.offset);
                match bound.now_is {
                    NowIs::Before => *until = (*until).min(at),
                    NowIs::AtOrBefore => *until = (*until).min(at.saturating_add(1)),
                    NowIs::After => *from = (*from).max(at.saturating_add(1)),
                    NowIs::AtOrAfter => *from = (*from).max(at),
                }
            }
        }
        Ok(out)
    }

    /// Folds a batch of changes: rows that hold now pass (at the epoch's end), the others
    /// wait for their time or are dropped.
    pub fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        let data = change.data();
        let rows = data.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let intervals = self.intervals(data)?;
        let encoded = self
            .converter
            .convert_columns(data.columns())
            .map_err(arrow)?;
        let weight = |i: usize| change.weights().map_or(1, |w| w.value(i));
        let mut pass = Vec::with_capacity(rows);
        for (i, interval) in intervals.iter().enumerate() {
            let holds = match *interval {
                Some((from, until)) if from < until && until > self.now => {
                    if from > self.now {
                        self.waiting.add(from, encoded.row(i).data(), weight(i));
                        false
                    } else {
                        if until != i64::MAX {
                            self.shown.add(until, encoded.row(i).data(), weight(i));
                        }
                        true
                    }
                }
                _ => false,
            };
            pass.push(holds);
        }
        let mask = BooleanArray::from(pass);
        let kept = filter_record_batch(data, &mask).map_err(arrow)?;
        if kept.num_rows() > 0 {
            self.out.push(match change.weights() {
                None => ChangeBatch::inserts(kept),
                Some(w) => {
                    let w = datafusion::arrow::compute::filter(w, &mask).map_err(arrow)?;
                    ChangeBatch::with_weights(kept, w.as_primitive().clone()).map_err(arrow)?
                }
            });
        }
        Ok(())
    }

    /// Moves the clock to `now`: rows whose time came are shown, rows whose time passed are
    /// retracted; returns the epoch's changes.
    pub fn advance(&mut self, now: i64) -> Result<Vec<ChangeBatch>, OperatorError> {
        let now = now.max(self.now);
        self.now = now;
        let mut rows: Vec<Box<[u8]>> = Vec::new();
        let mut weights: Vec<i64> = Vec::new();
        // Waiting rows whose `from` came: shown, unless their `until` passed too.
        let due = self.waiting.take_until(now);
        if !due.is_empty() {
            // Their `until`, from the rows themselves.
            let batch = self.decode(due.iter().map(|(r, _)| r.as_ref()))?;
            let intervals = self.intervals(&batch)?;
            for ((row, count), interval) in due.into_iter().zip(intervals) {
                let Some((_, until)) = interval else { continue };
                if until <= now {
                    continue;
                }
                if until != i64::MAX {
                    self.shown.add(until, &row, count);
                }
                rows.push(row);
                weights.push(count);
            }
        }
        // Shown rows whose `until` passed: retracted.
        for (row, count) in self.shown.take_until(now) {
            rows.push(row);
            weights.push(-count);
        }
        let mut out = std::mem::take(&mut self.out);
        if !rows.is_empty() {
            let batch = self.decode(rows.iter().map(|r| r.as_ref()))?;
            out.push(ChangeBatch::with_weights(batch, Int64Array::from(weights)).map_err(arrow)?);
        }
        Ok(out)
    }

    /// Rows in row format, decoded into a batch of the schema.
    fn decode<'a>(
        &self,
        rows: impl Iterator<Item = &'a [u8]>,
    ) -> Result<RecordBatch, OperatorError> {
        let parser = self.converter.parser();
        let columns: Vec<ArrayRef> = self
            .converter
            .convert_rows(rows.map(|r| parser.parse(r)))
            .map_err(arrow)?;
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(arrow)
    }

    /// Rows waiting and rows shown that will leave, and the bytes held.
    pub fn state_size(&self) -> StateSize {
        let entries = self.waiting.rows + self.shown.rows;
        StateSize {
            rows: entries as u64,
            bytes: (self.waiting.bytes
                + self.shown.bytes
                + entries * (std::mem::size_of::<(Box<[u8]>, i64)>() + super::BTREE_ENTRY_OVERHEAD)
                + self
                    .out
                    .iter()
                    .map(|c| c.data().get_array_memory_size())
                    .sum::<usize>()) as u64,
        }
    }

    /// The state as one batch: kind (0 waiting, 1 shown), time, row bytes, count; and the
    /// clock, in a row of kind 2. Taken right after [`Self::advance`].
    pub fn checkpoint(&self) -> Result<RecordBatch, StateError> {
        let mut kinds = Vec::new();
        let mut times = Vec::new();
        let mut counts = Vec::new();
        let mut rows: Vec<Option<&[u8]>> = Vec::new();
        for (kind, map) in [(0, &self.waiting), (1, &self.shown)] {
            for (time, row, count) in map.iter() {
                kinds.push(kind);
                times.push(time);
                counts.push(count);
                rows.push(Some(row));
            }
        }
        kinds.push(2);
        times.push(self.now);
        counts.push(0);
        rows.push(None);
        columns::batch(vec![
            ("kind", columns::i64s(kinds)),
            ("time", columns::i64s(times)),
            ("row", columns::blobs(rows.into_iter())),
            ("count", columns::i64s(counts)),
        ])
    }

    /// Replaces the state with a checkpoint's.
    pub fn restore(&mut self, batch: &RecordBatch) -> Result<(), StateError> {
        let kinds = columns::i64_column(batch, "kind")?;
        let times = columns::i64_column(batch, "time")?;
        let counts = columns::i64_column(batch, "count")?;
        let rows = columns::blob_column(batch, "row")?;
        self.waiting = Timed::default();
        self.shown = Timed::default();
        self.out.clear();
        for i in 0..batch.num_rows() {
            let map = match kinds[i] {
                0 => &mut self.waiting,
                1 => &mut self.shown,
                2 => {
                    self.now = self.now.max(times[i]);
                    continue;
                }
                k => {
                    return Err(StateError::mismatch(format!(
                        "a temporal filter's state has a row of kind {k}"
                    )));
                }
            };
            let row = columns::blob_at(rows, i)
                .ok_or_else(|| StateError::mismatch("a temporal filter's row is NULL"))?;
            map.add(times[i], row, counts[i]);
        }
        Ok(())
    }
}

impl super::KeyedOperator for TemporalFilterOperator {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        TemporalFilterOperator::update(self, change)
    }

    fn finish(
        &mut self,
        _watermark: Option<crate::stream::Timestamp>,
    ) -> Result<Vec<ChangeBatch>, OperatorError> {
        self.advance(wall_clock_ns())
    }

    fn checkpoint(&self) -> Result<Vec<RecordBatch>, StateError> {
        Ok(vec![TemporalFilterOperator::checkpoint(self)?])
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<(), StateError> {
        let [batch] = state else {
            return Err(StateError::mismatch(
                "a temporal filter's state is one batch",
            ));
        };
        TemporalFilterOperator::restore(self, batch)
    }

    fn state_size(&self) -> StateSize {
        TemporalFilterOperator::state_size(self)
    }

    fn repartition(
        &self,
        old: &[Vec<RecordBatch>],
        n: usize,
        _assign: &super::Assign<'_>,
    ) -> Result<Vec<Vec<RecordBatch>>, StateError> {
        // One partition (the filter has no key): the state moves whole.
        super::whole_state(old, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampNanosecondArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    const S: i64 = 1_000_000_000;

    fn filter(bounds: &[(i64, NowIs)]) -> TemporalFilterOperator {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]));
        let bounds = bounds
            .iter()
            .map(|&(offset, now_is)| TimeBound {
                expr: Arc::new(Column::new("ts", 0)),
                offset,
                now_is,
            })
            .collect();
        let mut f = TemporalFilterOperator::new(bounds, schema).expect("filter");
        f.now = 0;
        f
    }

    fn rows(ts: &[Option<i64>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampNanosecondArray::from(ts.to_vec())) as ArrayRef],
        )
        .expect("batch")
    }

    /// (ts, weight) of every change, in order.
    fn seen(changes: Vec<ChangeBatch>) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for c in changes {
            let ts = c
                .data()
                .column(0)
                .as_primitive::<TimestampNanosecondType>()
                .clone();
            for i in 0..c.num_rows() {
                out.push((ts.value(i), c.weights().map_or(1, |w| w.value(i))));
            }
        }
        out
    }

    #[test]
    fn rows_enter_and_leave_as_the_clock_moves() {
        // ts > now() - 10s AND ts <= now(): holds from ts until ts + 10s.
        let mut f = filter(&[(-10 * S, NowIs::Before), (0, NowIs::AtOrAfter)]);
        f.update(&ChangeBatch::inserts(rows(&[
            Some(-20 * S),
            Some(-5 * S),
            Some(3 * S),
            None,
        ])))
        .expect("update");
        assert_eq!(seen(f.advance(0).expect("advance")), vec![(-5 * S, 1)]);
        assert_eq!(
            f.state_size().rows,
            2,
            "one row shown with an end, one waiting"
        );
        assert_eq!(seen(f.advance(3 * S).expect("advance")), vec![(3 * S, 1)]);
        assert_eq!(seen(f.advance(5 * S).expect("advance")), vec![(-5 * S, -1)]);
        // A deletion of a shown row retracts it and forgets its end.
        f.update(&ChangeBatch::retractions(rows(&[Some(3 * S)])))
            .expect("delete");
        assert_eq!(seen(f.advance(6 * S).expect("advance")), vec![(3 * S, -1)]);
        assert_eq!(f.state_size().rows, 0);
        assert!(seen(f.advance(20 * S).expect("advance")).is_empty());
        // The clock never goes back: the row is judged at 20 s, where it holds.
        f.update(&ChangeBatch::inserts(rows(&[Some(15 * S)])))
            .expect("update");
        assert_eq!(seen(f.advance(0).expect("advance")), vec![(15 * S, 1)]);
    }

    #[test]
    fn a_deleted_waiting_row_never_shows_and_state_survives_a_checkpoint() {
        let mut f = filter(&[(0, NowIs::After)]);
        f.update(&ChangeBatch::inserts(rows(&[
            Some(5 * S),
            Some(7 * S),
            Some(7 * S),
        ])))
        .expect("update");
        assert!(seen(f.advance(S).expect("advance")).is_empty());
        f.update(&ChangeBatch::retractions(rows(&[Some(5 * S)])))
            .expect("delete");
        let state = f.checkpoint().expect("checkpoint");
        // Restored at another parallelism: the state moves whole to the one partition.
        let parts =
            super::super::KeyedOperator::repartition(&f, &[vec![state], Vec::new()], 1, &|_, n| {
                Ok(vec![0; n])
            })
            .expect("repartition");
        let mut g = filter(&[(0, NowIs::After)]);
        super::super::KeyedOperator::restore(&mut g, &parts[0]).expect("restore");
        assert_eq!(g.now, S);
        assert_eq!(seen(g.advance(10 * S).expect("advance")), vec![(7 * S, 2)]);
        assert_eq!(
            g.state_size().rows,
            0,
            "rows without an end keep nothing once shown"
        );
    }
}
