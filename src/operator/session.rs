//! [`SessionWindowAggregate`]: `GROUP BY keys, SESSION(ts, gap)`.
//!
//! A session of a key is a run of its rows, in time order, where each row follows the previous
//! one by at most `gap`; it is named by its first time. An insertion can merge two sessions and
//! a deletion can split one, so the operator keeps each key's rows (in row format, ordered by
//! time), and at each barrier re-derives the sessions of the keys that changed. Rows whose
//! session changed are retracted from their old session and inserted into the new one, into a
//! [`GroupAggregateOperator`] grouped by the keys and the session start: aggregates stay exact
//! under retraction, and only changed sessions are emitted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::keys::GroupKeys;
use super::{GroupAggregateOperator, OperatorError};
use crate::state::{StateError, columns};
use crate::stream::{ChangeBatch, Timestamp};

const NAME: &str = "SessionWindowAggregate";

fn df(source: datafusion::error::DataFusionError) -> OperatorError {
    OperatorError::datafusion(NAME, source)
}

fn arrow(source: datafusion::arrow::error::ArrowError) -> OperatorError {
    OperatorError::arrow(NAME, source)
}

/// The input column the operator adds: the start of the row's session.
pub const SESSION_COLUMN: &str = "_sluice_session";

/// A row of a key, ordered by time: (time, row bytes).
type TimedRow = (Timestamp, Box<[u8]>);

/// One row of a key: how many copies are alive, and the (session start, copies) it was last fed
/// to the aggregate with.
#[derive(Debug, Default)]
struct RowState {
    count: i64,
    fed: Option<(Timestamp, i64)>,
}

/// A key's first session: how many rows it holds and when it ends (its last row's time plus
/// the gap). Rows with no live copy (a retraction ahead of its insertion) are not in any
/// session and end the search.
fn first_session(rows: &BTreeMap<TimedRow, RowState>, gap: i64) -> Option<(usize, Timestamp)> {
    let mut last: Option<Timestamp> = None;
    let mut count = 0;
    for ((t, _), state) in rows {
        if state.count <= 0 || last.is_some_and(|l| t - l > gap) {
            break;
        }
        last = Some(*t);
        count += 1;
    }
    last.map(|l| (count, l + gap))
}

/// Maintains session windows per key.
#[derive(Debug)]
pub struct SessionWindowAggregate {
    keys: GroupKeys,
    time: Arc<dyn PhysicalExpr>,
    gap: i64,
    /// Encodes whole input rows.
    row_converter: RowConverter,
    /// The input schema plus [`SESSION_COLUMN`].
    extended: SchemaRef,
    /// Key → its rows in time order.
    by_key: HashMap<Box<[u8]>, BTreeMap<TimedRow, RowState>>,
    touched: HashSet<Box<[u8]>>,
    inner: GroupAggregateOperator,
    /// The position of the session start among the inner aggregate's keys (the others are
    /// this operator's keys, in order).
    session_key: usize,
    /// Over append-only input whose watermark is on `time`: drop the rows and groups of
    /// sessions the watermark closed.
    expire: bool,
    /// With `expire`: end of a key's first session (its last row's time plus the gap) → the
    /// key. An entry may be stale (the session grew); a key with rows always has one at or
    /// before its first session's end.
    due: BTreeMap<Timestamp, Vec<Box<[u8]>>>,
    /// Entries in `due`, and the bytes of their keys.
    due_entries: usize,
    due_bytes: usize,
    /// Rows kept over all keys.
    rows: usize,
    /// Bytes the keys and rows own (see [`row_entry_bytes`]).
    heap: usize,
}

/// Bytes a kept row costs: its encoding, its entry and its share of a B-tree node.
fn row_entry_bytes(row: &[u8]) -> usize {
    row.len() + std::mem::size_of::<(TimedRow, RowState)>() + super::BTREE_ENTRY_OVERHEAD
}

impl SessionWindowAggregate {
    /// The extended input schema the inner aggregate reads: `input` plus the session start.
    pub fn extended_schema(input: &Schema) -> SchemaRef {
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(
            SESSION_COLUMN,
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        )));
        Arc::new(Schema::new(fields))
    }

    /// Sessions of `gap` over `time`, per `keys`, aggregated by `inner` (grouped over
    /// [`Self::extended_schema`]).
    pub fn new(
        input: &Schema,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        time: Arc<dyn PhysicalExpr>,
        gap: i64,
        inner: GroupAggregateOperator,
        session_key: usize,
    ) -> Result<Self, OperatorError> {
        Ok(Self {
            keys: GroupKeys::new(keys, key_types).map_err(arrow)?,
            time,
            gap,
            row_converter: RowConverter::new(
                input
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )
            .map_err(arrow)?,
            extended: Self::extended_schema(input),
            by_key: HashMap::new(),
            touched: HashSet::new(),
            inner,
            session_key,
            expire: false,
            due: BTreeMap::new(),
            due_entries: 0,
            due_bytes: 0,
            rows: 0,
            heap: 0,
        })
    }

    /// The input is append-only and its watermark is on the session's time: a session whose
    /// last row is more than the gap behind the watermark can gain no row, so its rows and its
    /// aggregate's group are dropped (its row stays in the view).
    pub fn with_expiry(mut self) -> Self {
        self.expire = true;
        self
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    /// With expiry: lists `key` under the end of its first session.
    fn schedule(&mut self, key: &[u8]) {
        if !self.expire {
            return;
        }
        let Some(rows) = self.by_key.get(key) else {
            return;
        };
        if let Some((_, end)) = first_session(rows, self.gap) {
            self.due.entry(end).or_default().push(key.into());
            self.due_entries += 1;
            self.due_bytes += key.len();
        }
    }

    /// With expiry: drops the rows of every session that ends before `watermark`, and their
    /// groups in the inner aggregate.
    fn expire_sessions(&mut self, watermark: Timestamp) -> Result<(), OperatorError> {
        let mut keys = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if *entry.key() >= watermark {
                break;
            }
            let keys_due = entry.remove();
            self.due_entries -= keys_due.len();
            self.due_bytes -= keys_due.iter().map(|k| k.len()).sum::<usize>();
            keys.extend(keys_due);
        }
        keys.sort_unstable();
        keys.dedup();
        let mut closed_rows: Vec<Box<[u8]>> = Vec::new();
        let mut closed_starts: Vec<Timestamp> = Vec::new();
        for key in keys {
            let Some(key_rows) = self.by_key.get_mut(&key) else {
                continue;
            };
            let dropped = closed_rows.len();
            while let Some((count, end)) = first_session(key_rows, self.gap) {
                if end >= watermark {
                    break;
                }
                for i in 0..count {
                    let ((t, row), _) = key_rows.pop_first().expect("counted above");
                    self.rows -= 1;
                    self.heap -= row_entry_bytes(&row);
                    // The session's first row and its start name its group.
                    if i == 0 {
                        closed_rows.push(row);
                        closed_starts.push(t);
                    }
                }
            }
            if key_rows.is_empty() {
                self.heap -= key.len();
                self.by_key.remove(&key);
            } else if closed_rows.len() > dropped {
                // Its first session is a later one now. (A key whose session only grew was
                // listed again under the new end when it changed.)
                self.schedule(&key);
            }
        }
        if closed_rows.is_empty() {
            return Ok(());
        }
        let batch = self.extended_batch(&closed_rows, closed_starts)?;
        self.inner.forget(&batch)
    }

    /// Rows in row format, each with a session start, as a batch of the extended schema.
    fn extended_batch(
        &self,
        rows: &[Box<[u8]>],
        starts: Vec<Timestamp>,
    ) -> Result<RecordBatch, OperatorError> {
        let parser = self.row_converter.parser();
        let mut columns = self
            .row_converter
            .convert_rows(rows.iter().map(|r| parser.parse(r)))
            .map_err(arrow)?;
        columns.push(Arc::new(TimestampNanosecondArray::from(starts)) as ArrayRef);
        RecordBatch::try_new(Arc::clone(&self.extended), columns).map_err(arrow)
    }

    /// Records changes; sessions are re-derived at [`Self::emit`].
    pub fn update(&mut self, input: &ChangeBatch) -> Result<(), OperatorError> {
        let rows = input.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let data = input.data();
        let keys = self.keys.encode(data, NAME)?;
        let times = super::event_times(&self.time, data).map_err(df)?;
        let encoded = self
            .row_converter
            .convert_columns(data.columns())
            .map_err(arrow)?;
        for i in 0..rows {
            // A row without a time is in no session.
            if times.is_null(i) {
                continue;
            }
            let key = keys.key(i);
            let key_rows = match self.by_key.get_mut(key) {
                Some(r) => r,
                None => {
                    self.heap += key.len();
                    self.by_key.entry(key.into()).or_default()
                }
            };
            if !self.touched.contains(key) {
                self.touched.insert(key.into());
            }
            let row = (times.value(i), Box::<[u8]>::from(encoded.row(i).data()));
            let state = match key_rows.entry(row) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    self.rows += 1;
                    self.heap += row_entry_bytes(&v.key().1);
                    v.insert(RowState::default())
                }
            };
            state.count += input.weights().map_or(1, |w| w.value(i));
        }
        Ok(())
    }

    /// Re-derives the sessions of the keys that changed and emits the aggregates' changes.
    pub fn emit(&mut self) -> Result<Option<ChangeBatch>, OperatorError> {
        let touched = std::mem::take(&mut self.touched);
        let mut rescheduled = Vec::new();
        let mut rows: Vec<Box<[u8]>> = Vec::new();
        let mut starts: Vec<Timestamp> = Vec::new();
        let mut weights: Vec<i64> = Vec::new();
        for key in touched {
            let Some(key_rows) = self.by_key.get_mut(&key) else {
                continue;
            };
            let mut start = None;
            let mut previous: Option<Timestamp> = None;
            let mut gone = Vec::new();
            for ((t, row), state) in key_rows.iter_mut() {
                let now = (state.count > 0).then(|| {
                    if previous.is_none_or(|p| t - p > self.gap) {
                        start = Some(*t);
                    }
                    previous = Some(*t);
                    (start.expect("set just above"), state.count)
                });
                // Retract what changed, insert what is new.
                if state.fed != now {
                    if let Some((old_start, old_count)) = state.fed {
                        rows.push(row.clone());
                        starts.push(old_start);
                        weights.push(-old_count);
                    }
                    if let Some((new_start, new_count)) = now {
                        rows.push(row.clone());
                        starts.push(new_start);
                        weights.push(new_count);
                    }
                    state.fed = now;
                }
                if state.count == 0 {
                    gone.push((*t, row.clone()));
                }
            }
            for row in gone {
                self.rows -= 1;
                self.heap -= row_entry_bytes(&row.1);
                key_rows.remove(&row);
            }
            if key_rows.is_empty() {
                self.heap -= key.len();
                self.by_key.remove(&key);
            } else if self.expire {
                rescheduled.push(key);
            }
        }
        if !rows.is_empty() {
            let batch = self.extended_batch(&rows, starts)?;
            let change =
                ChangeBatch::with_weights(batch, Int64Array::from(weights)).map_err(arrow)?;
            self.inner.update(&change)?;
        }
        for key in rescheduled {
            self.schedule(&key);
        }
        self.inner.emit()
    }
}

/// Checkpoints: each key's rows (key, time, row, live copies, and the session and copies it
/// was last fed to the aggregate with), then the inner aggregate's state.
impl SessionWindowAggregate {
    /// The state as two batches.
    pub fn checkpoint(&self) -> Result<Vec<RecordBatch>, StateError> {
        let entries: Vec<(&Box<[u8]>, &TimedRow, &RowState)> = self
            .by_key
            .iter()
            .flat_map(|(key, rows)| rows.iter().map(move |(row, state)| (key, row, state)))
            .collect();
        let rows = columns::batch(vec![
            (
                "key",
                columns::blobs(entries.iter().map(|(k, _, _)| Some(&***k))),
            ),
            (
                "time",
                columns::i64s(entries.iter().map(|(_, (t, _), _)| *t).collect()),
            ),
            (
                "row",
                columns::blobs(entries.iter().map(|(_, (_, r), _)| Some(&**r))),
            ),
            (
                "count",
                columns::i64s(entries.iter().map(|(_, _, s)| s.count).collect()),
            ),
            (
                "fed_start",
                columns::opt_i64s(entries.iter().map(|(_, _, s)| s.fed.map(|f| f.0)).collect()),
            ),
            (
                "fed_count",
                columns::opt_i64s(entries.iter().map(|(_, _, s)| s.fed.map(|f| f.1)).collect()),
            ),
        ])?;
        Ok(vec![rows, self.inner.checkpoint()?])
    }

    /// Replaces the state with a checkpoint's.
    pub fn restore(&mut self, state: &[RecordBatch]) -> Result<(), StateError> {
        let [rows, inner] = state else {
            return Err(StateError::mismatch(
                "a session window's state is two batches",
            ));
        };
        let keys = columns::blob_column(rows, "key")?;
        let times = columns::i64_column(rows, "time")?;
        let encoded = columns::blob_column(rows, "row")?;
        let counts = columns::i64_column(rows, "count")?;
        let fed_starts = columns::opt_i64_column(rows, "fed_start")?;
        let fed_counts = columns::opt_i64_column(rows, "fed_count")?;
        self.by_key.clear();
        self.touched.clear();
        self.rows = rows.num_rows();
        self.heap = (0..rows.num_rows())
            .map(|i| row_entry_bytes(encoded.value(i)))
            .sum();
        for i in 0..rows.num_rows() {
            let fed = fed_starts[i].zip(fed_counts[i]);
            self.by_key.entry(keys.value(i).into()).or_default().insert(
                (times[i], encoded.value(i).into()),
                RowState {
                    count: counts[i],
                    fed,
                },
            );
        }
        self.heap += self.by_key.keys().map(|k| k.len()).sum::<usize>();
        self.due.clear();
        self.due_entries = 0;
        self.due_bytes = 0;
        let keys: Vec<Box<[u8]>> = self.by_key.keys().cloned().collect();
        for key in keys {
            self.schedule(&key);
        }
        self.inner.restore(inner)
    }
}

impl SessionWindowAggregate {
    /// Rows kept plus the inner aggregate's sessions, and the bytes of both.
    pub fn state_size(&self) -> super::StateSize {
        let mut size = self.inner.state_size();
        size.rows += self.rows as u64;
        size.bytes += (self.heap
            + super::map_bytes(&self.by_key)
            + self.touched.capacity() * (std::mem::size_of::<Box<[u8]>>() + 1)
            + self.due_bytes
            + self.due_entries * std::mem::size_of::<Box<[u8]>>()
            + self.due.len() * (48 + super::BTREE_ENTRY_OVERHEAD)) as u64;
        size
    }

    /// What `heap` should be, counted over every key: for tests.
    #[cfg(test)]
    fn count_heap(&self) -> usize {
        self.by_key
            .iter()
            .map(|(k, rows)| k.len() + rows.keys().map(|(_, r)| row_entry_bytes(r)).sum::<usize>())
            .sum()
    }
}

impl super::KeyedOperator for SessionWindowAggregate {
    fn checkpoint(&self) -> Result<Vec<RecordBatch>, StateError> {
        SessionWindowAggregate::checkpoint(self)
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<(), StateError> {
        SessionWindowAggregate::restore(self, state)
    }

    fn schema(&self) -> SchemaRef {
        SessionWindowAggregate::schema(self)
    }

    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        SessionWindowAggregate::update(self, change)
    }

    fn finish(&mut self, watermark: Option<Timestamp>) -> Result<Vec<ChangeBatch>, OperatorError> {
        let out = self.emit()?.into_iter().collect();
        if let (true, Some(watermark)) = (self.expire, watermark) {
            self.expire_sessions(watermark)?;
        }
        Ok(out)
    }

    fn state_size(&self) -> super::StateSize {
        SessionWindowAggregate::state_size(self)
    }

    fn repartition(
        &self,
        old: &[Vec<RecordBatch>],
        n: usize,
        assign: &super::Assign<'_>,
    ) -> Result<Vec<Vec<RecordBatch>>, StateError> {
        let mut rows = Vec::with_capacity(old.len());
        let mut inner = Vec::with_capacity(old.len());
        for state in old {
            let [rows_state, inner_state] = state.as_slice() else {
                return Err(StateError::mismatch(
                    "a session window's state is two batches",
                ));
            };
            rows.push(rows_state);
            inner.push(inner_state);
        }
        let rows = super::split_by_key(
            &rows,
            n,
            |keys| Ok(self.keys.decode((0..keys.len()).map(|i| keys.value(i)))?),
            assign,
        )?;
        // The inner aggregate's groups go where their key's rows go: its keys without the
        // session start.
        let position = self.session_key;
        let inner = self.inner.repartition_batches(
            &inner,
            n,
            |mut columns| {
                if position >= columns.len() {
                    return Err(StateError::mismatch("a session group without its start"));
                }
                columns.remove(position);
                Ok(columns)
            },
            assign,
        )?;
        Ok(rows
            .into_iter()
            .zip(inner)
            .map(|(r, i)| vec![r, i])
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::test_util::{changes, sorted_lines, timed_input as input};
    use crate::operator::{AggregateCall, AggregateKind, KeyedOperator};
    use datafusion::physical_expr::expressions::col;

    /// `SELECT k, session_start, count(*), sum(v) … GROUP BY SESSION(t, 10), k`.
    fn sessions() -> SessionWindowAggregate {
        let schema = input();
        let extended = SessionWindowAggregate::extended_schema(&schema);
        let inner = GroupAggregateOperator::new(
            vec![
                col("k", &extended).unwrap(),
                col(SESSION_COLUMN, &extended).unwrap(),
            ],
            vec![
                DataType::Utf8,
                DataType::Timestamp(TimeUnit::Nanosecond, None),
            ],
            vec![
                AggregateCall {
                    kind: AggregateKind::CountStar,
                    argument: None,
                    argument_type: DataType::Int64,
                },
                AggregateCall {
                    kind: AggregateKind::Sum,
                    argument: Some(col("v", &extended).unwrap()),
                    argument_type: DataType::Int64,
                },
            ],
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("session", DataType::Int64, true),
                Field::new("n", DataType::Int64, true),
                Field::new("s", DataType::Int64, true),
            ])),
        )
        .unwrap();
        SessionWindowAggregate::new(
            &schema,
            vec![col("k", &schema).unwrap()],
            vec![DataType::Utf8],
            col("t", &schema).unwrap(),
            10,
            inner,
            1,
        )
        .unwrap()
    }

    fn step(op: &mut SessionWindowAggregate, table: &str) -> Vec<String> {
        op.update(&changes(&input(), table)).unwrap();
        sorted_lines(&KeyedOperator::finish(op, None).unwrap())
    }

    /// Rows closer than the gap share a session; a row that bridges two sessions merges
    /// them, and deleting it splits them again.
    #[test]
    fn sessions_merge_and_split() {
        let mut op = sessions();
        assert_eq!(
            step(&mut op, "+ a 0 1\n+ a 5 2\n+ a 30 4\n+ b 0 8"),
            ["+ a 0 2 3", "+ a 30 1 4", "+ b 0 1 8"]
        );
        // 20 is more than the gap after 5 but exactly the gap before 30 (the gap is
        // inclusive): it joins 30's session, which now starts at 20.
        assert_eq!(step(&mut op, "+ a 20 16"), ["+ a 20 2 20", "- a 30 1 4"]);
        // 12 bridges 5 and 20: one session from 0.
        assert_eq!(
            step(&mut op, "+ a 12 32"),
            ["+ a 0 5 55", "- a 0 2 3", "- a 20 2 20"]
        );
        // Deleting the bridge splits them again.
        assert_eq!(
            step(&mut op, "- a 12 32"),
            ["+ a 0 2 3", "+ a 20 2 20", "- a 0 5 55"]
        );
        // Nothing changed: nothing emitted.
        assert!(step(&mut op, "").is_empty());
    }

    /// Over append-only input: a session more than the gap behind the watermark is final,
    /// its rows and group are dropped, and later rows start new sessions.
    #[test]
    fn sessions_the_watermark_closed_are_dropped() {
        let mut op = sessions().with_expiry();
        let mut reference = sessions();
        let feed = |op: &mut SessionWindowAggregate, rows: &str, watermark| {
            op.update(&changes(&input(), rows)).unwrap();
            sorted_lines(&KeyedOperator::finish(op, Some(watermark)).unwrap())
        };
        for (rows, watermark) in [
            ("+ a 0 1\n+ a 5 2\n+ b 3 8", 5),
            ("+ a 12 1\n+ b 30 1", 16),
            // a's session [0, 5] ended at 15 < 16: final; (a, 12) and b's two stay
            ("+ a 40 1\n+ c 41 1", 41),
            ("+ a 45 1", 60),
            // d's session ends at 110, the watermark: a row at 110 may still join it
            ("+ d 100 1", 110),
            ("+ d 110 1", 110),
            ("", 121),
        ] {
            assert_eq!(
                feed(&mut op, rows, watermark),
                feed(&mut reference, rows, watermark),
                "at watermark {watermark}"
            );
            assert_eq!(op.heap, op.count_heap());
        }
        // at 121 every session ended (d's at 120): nothing is kept
        assert_eq!((op.rows, op.heap, op.by_key.len()), (0, 0, 0));
        assert_eq!(op.state_size().rows, 0);
        assert!(reference.state_size().rows > 0);
        // a checkpoint restores the schedule: a's new session closes after restore
        op.update(&changes(&input(), "+ a 130 1")).unwrap();
        KeyedOperator::finish(&mut op, Some(130)).unwrap();
        let mut restored = sessions().with_expiry();
        restored.restore(&op.checkpoint().unwrap()).unwrap();
        assert_eq!(restored.state_size().rows, 2);
        KeyedOperator::finish(&mut restored, Some(141)).unwrap();
        assert_eq!(restored.state_size().rows, 0);
        // A key that never pauses: its session stays open, and its schedule stays short.
        for t in (200..1200).step_by(2) {
            restored
                .update(&changes(&input(), &format!("+ z {t} 1")))
                .unwrap();
            KeyedOperator::finish(&mut restored, Some(t - 5)).unwrap();
            assert!(
                restored.due_entries <= 10,
                "{} entries",
                restored.due_entries
            );
        }
    }

    /// Kept rows and their bytes follow inserts and deletes, down to nothing.
    #[test]
    fn state_size_counts_kept_rows() {
        let mut op = sessions();
        step(&mut op, "+ a 0 1\n+ a 5 2\n+ a 5 2\n+ bb 0 8");
        assert_eq!((op.rows, op.heap), (3, op.count_heap()));
        // one session of `a` (a row twice) and one of `bb`: 3 rows kept, 2 sessions
        assert_eq!(op.state_size().rows, 3 + 2);
        step(&mut op, "- a 5 2\n+ a 40 1");
        assert_eq!((op.rows, op.heap), (4, op.count_heap()));
        let mut restored = sessions();
        restored
            .restore(&op.checkpoint().unwrap())
            .expect("restore");
        assert_eq!((restored.rows, restored.heap), (op.rows, op.heap));
        step(&mut op, "- a 0 1\n- a 5 2\n- a 40 1\n- bb 0 8");
        assert_eq!((op.rows, op.heap), (0, 0));
        assert_eq!(op.state_size().rows, 0);
    }
}
