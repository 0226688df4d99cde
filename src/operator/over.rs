//! [`OverOperator`]: `OVER` window functions and top-N over a changing input.
//!
//! The input is split into partitions by the `PARTITION BY` keys (hash-partitioned over the
//! workers like any keyed operator), and each partition keeps its rows ordered by the
//! `ORDER BY` keys: an ordered map from the sort key's row-format bytes followed by the whole
//! row's (so equal sort keys are ordered by the row, which makes ties deterministic) to a count,
//! a sorted vector while the partition holds at most [`SMALL_ROWS`] rows (a top-N's partitions
//! nearly always: no tree node per partition) and a B-tree beyond.
//!
//! Two modes:
//! - **Top-N** ([`TopN`]): `ROW_NUMBER()`, `RANK()` or `DENSE_RANK()` filtered to a range of
//!   ranks (`rn <= 3`, `rn = 1`, `rn BETWEEN 2 AND 5`), and `ORDER BY … LIMIT … OFFSET …`
//!   (a row number without its column). Only the first ranks of a partition are visited. Over
//!   append-only input a row ranked past the range can never come back into it, so it is not
//!   kept: the state is the top rows only, and a row whose sort key is past a full partition's
//!   last is passed over before it is even encoded.
//! - **Functions**: any of DataFusion's window functions (`lag`, `lead`, `first_value`,
//!   running and sliding aggregates over `ROWS` and `RANGE` frames, ranks without a filter),
//!   evaluated by DataFusion over the partition's rows in order.
//!
//! In both, the first change to a partition in an epoch takes the partition's output as it
//! stood; at the end of the epoch its output is computed again and only the difference is
//! emitted, so a change re-emits only the rows whose result changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::window::WindowExpr;

use super::keys::{GroupKeys, RowMap, row_map};
use super::{BTREE_ENTRY_OVERHEAD, KeyedOperator, OperatorError, StateSize, map_bytes};
use crate::state::{StateError, columns};
use crate::stream::{ChangeBatch, Timestamp};

const NAME: &str = "Over";

fn arrow(source: datafusion::arrow::error::ArrowError) -> OperatorError {
    OperatorError::arrow(NAME, source)
}

/// Which rank a top-N filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankKind {
    /// `ROW_NUMBER()`: 1, 2, 3, … whatever the ties.
    RowNumber,
    /// `RANK()`: 1 + the rows before with a smaller sort key (ties share it, gaps follow).
    Rank,
    /// `DENSE_RANK()`: 1 + the distinct smaller sort keys.
    DenseRank,
}

impl RankKind {
    /// The rank function of this name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "row_number" => Some(Self::RowNumber),
            "rank" => Some(Self::Rank),
            "dense_rank" => Some(Self::DenseRank),
            _ => None,
        }
    }
}

/// A top-N: the rows of each partition whose rank is in `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopN {
    /// The rank.
    pub kind: RankKind,
    /// The first rank output (1-based).
    pub first: u64,
    /// The last rank output.
    pub last: u64,
    /// Whether the output has the rank as its last column (a `LIMIT` has none).
    pub rank_column: bool,
}

/// What the operator computes.
#[derive(Debug)]
pub enum OverMode {
    /// A top-N.
    TopN(TopN),
    /// Window functions, each a column after the input's.
    Functions(Vec<Arc<dyn WindowExpr>>),
}

/// A row of a partition: where its sort key ends in the B-tree key, and how many times it is
/// there.
#[derive(Debug, Clone, Copy)]
struct Entry {
    sort_len: u32,
    count: i64,
}

/// The rows of one partition, in order.
#[derive(Debug, Default)]
struct Partition {
    rows: SortedRows,
    /// A top-N's: changed this epoch (its output before the change is in `before`).
    touched: bool,
}

/// A partition's rows in order: a sorted vector while small (most partitions of a top-N hold a
/// few rows: one allocation per row and none per node), a B-tree once large.
#[derive(Debug)]
enum SortedRows {
    Small(Vec<(Box<[u8]>, Entry)>),
    Large(BTreeMap<Box<[u8]>, Entry>),
}

/// Rows a partition keeps in a vector before it moves them to a B-tree.
const SMALL_ROWS: usize = 32;

impl Default for SortedRows {
    fn default() -> Self {
        Self::Small(Vec::new())
    }
}

impl SortedRows {
    fn len(&self) -> usize {
        match self {
            Self::Small(v) => v.len(),
            Self::Large(m) => m.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> RowsIter<'_> {
        match self {
            Self::Small(v) => RowsIter::Small(v.iter()),
            Self::Large(m) => RowsIter::Large(m.iter()),
        }
    }

    fn last(&self) -> Option<(&[u8], &Entry)> {
        match self {
            Self::Small(v) => v.last().map(|(k, e)| (&k[..], e)),
            Self::Large(m) => m.last_key_value().map(|(k, e)| (&k[..], e)),
        }
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        match self {
            Self::Small(v) => match v.binary_search_by(|(k, _)| (**k).cmp(key)) {
                Ok(i) => Some(&mut v[i].1),
                Err(_) => None,
            },
            Self::Large(m) => m.get_mut(key),
        }
    }

    fn insert(&mut self, key: Box<[u8]>, entry: Entry) {
        match self {
            Self::Small(v) => match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => v[i].1 = entry,
                Err(i) => {
                    if v.len() < SMALL_ROWS {
                        v.insert(i, (key, entry));
                    } else {
                        let mut m: BTreeMap<Box<[u8]>, Entry> =
                            std::mem::take(v).into_iter().collect();
                        m.insert(key, entry);
                        *self = Self::Large(m);
                    }
                }
            },
            Self::Large(m) => {
                m.insert(key, entry);
            }
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<(Box<[u8]>, Entry)> {
        match self {
            Self::Small(v) => match v.binary_search_by(|(k, _)| (**k).cmp(key)) {
                Ok(i) => Some(v.remove(i)),
                Err(_) => None,
            },
            Self::Large(m) => m.remove_entry(key),
        }
    }

    /// Drops the rows from `key` on: how many, and their bytes.
    fn drop_from(&mut self, key: &[u8]) -> (usize, usize) {
        let dropped: Vec<(Box<[u8]>, Entry)> = match self {
            Self::Small(v) => {
                let at = v.partition_point(|(k, _)| **k < *key);
                v.split_off(at)
            }
            Self::Large(m) => m.split_off(key).into_iter().collect(),
        };
        (dropped.len(), dropped.iter().map(|(k, _)| k.len()).sum())
    }

    fn pop_last(&mut self) -> Option<(Box<[u8]>, Entry)> {
        match self {
            Self::Small(v) => v.pop(),
            Self::Large(m) => m.pop_last(),
        }
    }

    fn last_mut(&mut self) -> Option<&mut Entry> {
        match self {
            Self::Small(v) => v.last_mut().map(|(_, e)| e),
            Self::Large(m) => m.last_entry().map(|e| e.into_mut()),
        }
    }
}

enum RowsIter<'a> {
    Small(std::slice::Iter<'a, (Box<[u8]>, Entry)>),
    Large(std::collections::btree_map::Iter<'a, Box<[u8]>, Entry>),
}

impl<'a> Iterator for RowsIter<'a> {
    type Item = (&'a [u8], &'a Entry);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Small(i) => i.next().map(|(k, e)| (&k[..], e)),
            Self::Large(i) => i.next().map(|(k, e)| (&k[..], e)),
        }
    }
}

/// A partition's output: rows of the output schema and their weights.
type Output = Option<(RecordBatch, Vec<i64>)>;

/// A top-N's output rows for one partition, in rank order: `(row bytes, rank, copies)` (rank 0
/// where the output has no rank column, so that a row that moves within the range is the same
/// output row).
fn top_picks<'a>(part: &'a Partition, top: &TopN, mut out: impl FnMut(&'a [u8], u64, i64)) {
    // Rows before this one, and distinct sort keys up to it.
    let mut before: u64 = 0;
    let mut dense: u64 = 0;
    let mut rank: u64 = 0;
    let mut last_sort: Option<&[u8]> = None;
    for (key, entry) in part.rows.iter() {
        if entry.count <= 0 {
            continue;
        }
        let count = entry.count as u64;
        let (sort, row) = key.split_at(entry.sort_len as usize);
        if last_sort != Some(sort) {
            dense += 1;
            rank = before + 1;
            last_sort = Some(sort);
        }
        match top.kind {
            RankKind::RowNumber => {
                // This row's copies are numbered before+1 ..= before+count.
                let from = (before + 1).max(top.first);
                let to = (before + count).min(top.last);
                if from <= to {
                    if top.rank_column {
                        for r in from..=to {
                            out(row, r, 1);
                        }
                    } else {
                        out(row, 0, (to - from + 1) as i64);
                    }
                }
                if before + count >= top.last {
                    break;
                }
            }
            RankKind::Rank | RankKind::DenseRank => {
                let r = if top.kind == RankKind::Rank {
                    rank
                } else {
                    dense
                };
                if r > top.last {
                    break;
                }
                if r >= top.first {
                    out(row, if top.rank_column { r } else { 0 }, count as i64);
                }
            }
        }
        before += count;
    }
}

/// Output rows taken before a change, owned: `(row bytes, rank, copies)` in one buffer.
#[derive(Debug, Default)]
struct Picks {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    ranks: Vec<u64>,
    weights: Vec<i64>,
}

impl Picks {
    fn push(&mut self, row: &[u8], rank: u64, weight: i64) {
        self.bytes.extend_from_slice(row);
        self.ends.push(self.bytes.len());
        self.ranks.push(rank);
        self.weights.push(weight);
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> (&[u8], u64, i64) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (
            &self.bytes[start..self.ends[i]],
            self.ranks[i],
            self.weights[i],
        )
    }
}

/// A top-N's partitions changed this epoch, in one buffer: each key, and the range of
/// `before` holding the partition's output before its first change.
#[derive(Debug, Default)]
struct Touched {
    keys: Vec<u8>,
    ends: Vec<usize>,
    before: Vec<(usize, usize)>,
}

impl Touched {
    fn push(&mut self, key: &[u8], before: (usize, usize)) {
        self.keys.extend_from_slice(key);
        self.ends.push(self.keys.len());
        self.before.push(before);
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], (usize, usize))> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .zip(&self.before)
            .map(|((start, &end), &range)| (&self.keys[start..end], range))
    }
}

/// `OVER` window functions or a top-N (see the module documentation).
#[derive(Debug)]
pub struct OverOperator {
    mode: OverMode,
    /// `PARTITION BY`.
    partition: GroupKeys,
    /// `ORDER BY`, with each key's direction and place of NULLs.
    order: Vec<Arc<dyn PhysicalExpr>>,
    order_rows: RowConverter,
    /// Encodes whole input rows.
    rows: RowConverter,
    /// Encodes output rows, to tell which changed.
    out_rows: RowConverter,
    input: SchemaRef,
    schema: SchemaRef,
    /// The input only inserts: a top-N keeps only the rows in its range.
    append_only: bool,
    state: RowMap<Partition>,
    /// Partitions changed this epoch → their output before the first change (functions).
    touched: RowMap<Output>,
    /// A top-N's partitions changed this epoch (each marked `touched`; one emptied meanwhile
    /// stays until the epoch ends).
    touched_top: Touched,
    before: Picks,
    /// Rows kept (distinct, with a count).
    kept: u64,
    /// Bytes owned through pointers: partition keys and B-tree keys.
    heap: isize,
    /// A window top-N over append-only input: the partition key column that is a window's
    /// start, and the window's end offset from it. A partition is freed once the watermark
    /// passes its window's end (no row can come for it).
    expiry: Option<(usize, i64)>,
    /// Window end → the partitions of that window.
    windows: BTreeMap<i64, Vec<Box<[u8]>>>,
    /// `EMIT ON WINDOW CLOSE` (a window top-N): nothing is emitted while a window is open;
    /// its top rows are emitted once, final, when the watermark passes its end.
    emit_on_close: bool,
}

impl OverOperator {
    /// An operator over `input` partitioned by `partition` (of types `partition_types`) and
    /// ordered by `order` (`order_fields` gives each key's type and direction), with output
    /// `schema`.
    pub fn new(
        mode: OverMode,
        partition: Vec<Arc<dyn PhysicalExpr>>,
        partition_types: Vec<DataType>,
        order: Vec<Arc<dyn PhysicalExpr>>,
        order_fields: Vec<SortField>,
        input: SchemaRef,
        schema: SchemaRef,
    ) -> Result<Self, OperatorError> {
        let fields = |s: &SchemaRef| {
            s.fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect::<Vec<_>>()
        };
        Ok(Self {
            mode,
            partition: GroupKeys::new(partition, partition_types).map_err(arrow)?,
            order,
            order_rows: RowConverter::new(order_fields).map_err(arrow)?,
            rows: RowConverter::new(fields(&input)).map_err(arrow)?,
            out_rows: RowConverter::new(fields(&schema)).map_err(arrow)?,
            input,
            schema,
            append_only: false,
            state: row_map(0),
            touched: row_map(0),
            touched_top: Touched::default(),
            before: Picks::default(),
            kept: 0,
            heap: 0,
            expiry: None,
            windows: BTreeMap::new(),
            emit_on_close: false,
        })
    }

    /// Frees each partition once the watermark passes the end of its window: partition key
    /// `key` is a window start and `end_offset` the window's length. Only over append-only
    /// input, where no row comes for a window the watermark passed.
    pub fn with_window_expiry(mut self, key: usize, end_offset: i64) -> Self {
        self.expiry = Some((key, end_offset));
        self
    }

    /// `EMIT ON WINDOW CLOSE`: a window's top rows are emitted once its window closes (with
    /// [`Self::with_window_expiry`]).
    pub fn with_emit_on_window_close(mut self) -> Self {
        self.emit_on_close = true;
        self
    }

    /// Emits the top rows of every partition whose window ended at or before `watermark`,
    /// then frees them.
    fn close_windows(
        &mut self,
        top: TopN,
        watermark: Timestamp,
    ) -> Result<Option<ChangeBatch>, OperatorError> {
        let mut picks: Vec<(&[u8], u64, i64)> = Vec::new();
        for (_, keys) in self.windows.range(..=watermark) {
            for key in keys {
                if let Some(part) = self.state.get(key) {
                    top_picks(part, &top, |row, rank, weight| {
                        picks.push((row, rank, weight))
                    });
                }
            }
        }
        let out = if picks.is_empty() {
            None
        } else {
            Some(self.picks_batch(&picks, top)?)
        };
        self.expire(watermark);
        Ok(out)
    }

    /// Top-N rows (row bytes, rank, weight) as a change batch of the output schema.
    fn picks_batch(
        &self,
        picks: &[(&[u8], u64, i64)],
        top: TopN,
    ) -> Result<ChangeBatch, OperatorError> {
        let parser = self.rows.parser();
        let mut columns = self
            .rows
            .convert_rows(picks.iter().map(|c| parser.parse(c.0)))
            .map_err(arrow)?;
        if top.rank_column {
            columns.push(
                Arc::new(UInt64Array::from_iter_values(picks.iter().map(|c| c.1))) as ArrayRef,
            );
        }
        let data = super::cast_to_schema(columns, &self.schema).map_err(arrow)?;
        let weights = Int64Array::from_iter_values(picks.iter().map(|c| c.2));
        ChangeBatch::with_weights(data, weights).map_err(arrow)
    }

    /// Notes the window end of each partition key of `keys` new in this batch.
    fn note_windows(
        &mut self,
        columns: &[ArrayRef],
        new: &[(usize, Box<[u8]>)],
    ) -> Result<(), OperatorError> {
        let Some((key, end_offset)) = self.expiry else {
            return Ok(());
        };
        if new.is_empty() {
            return Ok(());
        }
        let starts = crate::stream::watermark::nanos(&columns[key])
            .map_err(|e| OperatorError::datafusion(NAME, e))?;
        let starts = starts.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
        for (row, partition) in new {
            if starts.is_valid(*row) {
                let end = starts.value(*row).saturating_add(end_offset);
                self.heap += (partition.len() + BTREE_ENTRY_OVERHEAD) as isize;
                self.windows.entry(end).or_default().push(partition.clone());
            }
        }
        Ok(())
    }

    /// Frees the partitions of windows that ended at or before `watermark`.
    fn expire(&mut self, watermark: Timestamp) {
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            for key in entry.remove() {
                self.heap -= (key.len() + BTREE_ENTRY_OVERHEAD) as isize;
                if let Some(part) = self.state.remove(&key) {
                    self.heap -= (2 * key.len()) as isize;
                    for (k, _) in part.rows.iter() {
                        self.heap -= (k.len() + BTREE_ENTRY_OVERHEAD) as isize;
                    }
                    self.kept = self.kept.saturating_sub(part.rows.len() as u64);
                }
            }
        }
    }

    /// The input only ever inserts rows: a top-N then keeps only its range's rows.
    pub fn with_append_only_input(mut self) -> Self {
        self.append_only = true;
        self
    }

    /// The output of the partition `part` as it stands.
    /// The window functions' output over partition `part` (a top-N's output is taken as row
    /// bytes by `top_picks` instead).
    fn evaluate_functions(
        &self,
        part: Option<&Partition>,
        exprs: &[Arc<dyn WindowExpr>],
    ) -> Result<Output, OperatorError> {
        let Some(part) = part else { return Ok(None) };
        // Every copy of a row is a row the functions see.
        let mut picks: Vec<&[u8]> = Vec::new();
        for (key, entry) in part.rows.iter() {
            for _ in 0..entry.count.max(0) {
                picks.push(&key[entry.sort_len as usize..]);
            }
        }
        if picks.is_empty() {
            return Ok(None);
        }
        let n = picks.len();
        let parser = self.rows.parser();
        let mut columns = self
            .rows
            .convert_rows(picks.into_iter().map(|r| parser.parse(r)))
            .map_err(arrow)?;
        let rows = RecordBatch::try_new(Arc::clone(&self.input), columns.clone()).map_err(arrow)?;
        for expr in exprs {
            columns.push(
                expr.evaluate(&rows)
                    .map_err(|e| OperatorError::datafusion(NAME, e))?,
            );
        }
        let batch = super::cast_to_schema(columns, &self.schema).map_err(arrow)?;
        Ok(Some((batch, vec![1; n])))
    }

    /// The change from `old` to `new`: rows whose weight differs.
    fn diff(&self, old: Output, new: Output) -> Result<Option<ChangeBatch>, OperatorError> {
        let mut batches = Vec::with_capacity(2);
        let mut weights = Vec::new();
        if let Some((batch, w)) = old {
            weights.extend(w.into_iter().map(|w| -w));
            batches.push(batch);
        }
        if let Some((batch, w)) = new {
            weights.extend(w);
            batches.push(batch);
        }
        if batches.is_empty() {
            return Ok(None);
        }
        let all = concat_batches(&self.schema, &batches).map_err(arrow)?;
        let encoded = self
            .out_rows
            .convert_columns(all.columns())
            .map_err(arrow)?;
        // Output row → (first index, summed weight), in first-seen order.
        let mut sums: std::collections::HashMap<&[u8], usize> =
            std::collections::HashMap::with_capacity(weights.len());
        let mut firsts: Vec<(u32, i64)> = Vec::new();
        for (i, &w) in weights.iter().enumerate() {
            let row = encoded.row(i).data();
            match sums.get(row) {
                Some(&slot) => firsts[slot].1 += w,
                None => {
                    sums.insert(row, firsts.len());
                    firsts.push((i as u32, w));
                }
            }
        }
        // Retractions first, so that a replaced row leaves before its successor comes.
        firsts.retain(|&(_, w)| w != 0);
        if firsts.is_empty() {
            return Ok(None);
        }
        firsts.sort_by_key(|&(i, w)| (w > 0, i));
        let idx = datafusion::arrow::array::UInt32Array::from(
            firsts.iter().map(|&(i, _)| i).collect::<Vec<_>>(),
        );
        let data = take_record_batch(&all, &idx).map_err(arrow)?;
        let weights = Int64Array::from(firsts.iter().map(|&(_, w)| w).collect::<Vec<_>>());
        ChangeBatch::with_weights(data, weights)
            .map(Some)
            .map_err(arrow)
    }

    /// A top-N's end of epoch: per changed partition, the output rows whose copies differ
    /// from before, all decoded at once into one batch (retractions first).
    fn finish_top(&mut self, top: TopN) -> Result<Vec<ChangeBatch>, OperatorError> {
        let touched = std::mem::take(&mut self.touched_top);
        let before = std::mem::take(&mut self.before);
        let mut out = Vec::new();
        {
            let mut changes: Vec<(&[u8], u64, i64)> = Vec::new();
            let mut scratch: Vec<(&[u8], u64, i64)> = Vec::new();
            for (key, (start, end)) in touched.iter() {
                scratch.clear();
                for i in start..end {
                    let (row, rank, weight) = before.get(i);
                    scratch.push((row, rank, -weight));
                }
                if let Some(part) = self.state.get(key) {
                    top_picks(part, &top, |row, rank, weight| {
                        scratch.push((row, rank, weight))
                    });
                }
                scratch.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
                let mut i = 0;
                while i < scratch.len() {
                    let (row, rank, mut weight) = scratch[i];
                    let mut j = i + 1;
                    while j < scratch.len() && scratch[j].0 == row && scratch[j].1 == rank {
                        weight += scratch[j].2;
                        j += 1;
                    }
                    if weight != 0 {
                        changes.push((row, rank, weight));
                    }
                    i = j;
                }
            }
            if !changes.is_empty() {
                // Retractions first, so that a replaced row leaves before its successor comes.
                changes.sort_by_key(|c| c.2 > 0);
                out.push(self.picks_batch(&changes, top)?);
            }
        }
        self.settle(&touched);
        Ok(out)
    }

    /// A top-N's end of epoch for the partitions it changed: each is no longer marked, an
    /// emptied one is freed, and over append-only input the rows ranked past the range are
    /// dropped.
    fn settle(&mut self, touched: &Touched) {
        for (key, _) in touched.iter() {
            let Some(part) = self.state.get_mut(key) else {
                continue;
            };
            part.touched = false;
            if self.append_only
                && let OverMode::TopN(top) = self.mode
            {
                let (rows, bytes) = Self::trim(part, top);
                self.kept = self.kept.saturating_sub(rows);
                self.heap -= bytes;
            }
            // Emptied by the epoch, or by the trim (a range that ends before rank 1).
            if part.rows.is_empty() {
                self.state.remove(key);
                self.heap -= (2 * key.len()) as isize;
            }
        }
    }

    /// Over append-only input, for a top-N by row number or rank: the rows of a batch of
    /// `n` that can enter the range, or `None` for all of them. A row cannot when its
    /// partition already holds at least `last` rows and its sort key is past the greatest
    /// one's: at least `last` rows come strictly before it.
    fn ranked_in(
        &self,
        keys: &super::keys::EncodedKeys,
        sorts: Option<&datafusion::arrow::row::Rows>,
        n: usize,
    ) -> Option<datafusion::arrow::array::UInt32Array> {
        let OverMode::TopN(top) = self.mode else {
            return None;
        };
        if !self.append_only || top.kind == RankKind::DenseRank {
            return None;
        }
        let sorts = sorts?;
        let mut kept: Option<Vec<u32>> = None;
        for i in 0..n {
            let past = self.state.get(keys.key(i)).is_some_and(|part| {
                part.rows.len() as u64 >= top.last
                    && part
                        .rows
                        .last()
                        .is_some_and(|(k, e)| sorts.row(i).data() > &k[..e.sort_len as usize])
            });
            match (&mut kept, past) {
                (None, true) => kept = Some((0..i as u32).collect()),
                (Some(kept), false) => kept.push(i as u32),
                _ => {}
            }
        }
        kept.map(datafusion::arrow::array::UInt32Array::from)
    }

    /// Over append-only input: drops the rows of a partition ranked past the top-N's range.
    /// Returns how many rows it dropped, and their bytes as the state counts them.
    fn trim(part: &mut Partition, top: TopN) -> (u64, isize) {
        let mut freed = (0, 0);
        if top.kind == RankKind::RowNumber {
            // Drop the last rows while the rest still fill the range, then shorten the last
            // row's copies to it (no key is copied).
            let mut total: u64 = part.rows.iter().map(|(_, e)| e.count.max(0) as u64).sum();
            while total > top.last {
                let Some((_, last)) = part.rows.last() else {
                    break;
                };
                let count = last.count.max(0) as u64;
                if total - count >= top.last {
                    if let Some((k, _)) = part.rows.pop_last() {
                        freed.0 += 1;
                        freed.1 += (k.len() + BTREE_ENTRY_OVERHEAD) as isize;
                    }
                    total -= count;
                } else {
                    if let Some(last) = part.rows.last_mut() {
                        last.count = (count - (total - top.last)) as i64;
                    }
                    total = top.last;
                }
            }
            return freed;
        }
        let mut before: u64 = 0;
        let mut dense: u64 = 0;
        let mut last_sort: Option<&[u8]> = None;
        // Ranks: cut at the first row ranked past the range.
        let mut cut: Option<Box<[u8]>> = None;
        for (k, entry) in part.rows.iter() {
            let count = entry.count.max(0) as u64;
            let sort = &k[..entry.sort_len as usize];
            let new_sort = last_sort != Some(sort);
            if new_sort {
                dense += 1;
            }
            let drop = if top.kind == RankKind::Rank {
                new_sort && before + 1 > top.last
            } else {
                dense > top.last
            };
            if drop {
                cut = Some(k.into());
                break;
            }
            if new_sort {
                last_sort = Some(sort);
            }
            before += count;
        }
        if let Some(cut) = cut {
            let (rows, bytes) = part.rows.drop_from(&cut);
            freed = (rows as u64, (bytes + rows * BTREE_ENTRY_OVERHEAD) as isize);
        }
        freed
    }
}

impl KeyedOperator for OverOperator {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        let data = change.data();
        if data.num_rows() == 0 {
            return Ok(());
        }
        let keys = self.partition.encode(data, NAME)?;
        let order = super::evaluate_all(&self.order, data)
            .map_err(|e| OperatorError::datafusion(NAME, e))?;
        // Without ORDER BY every row has the empty sort key (the row format has no rows for
        // zero columns).
        let sorts = if self.order.is_empty() {
            None
        } else {
            Some(self.order_rows.convert_columns(&order).map_err(arrow)?)
        };
        let weights = change.weights();
        // Over append-only input a top-N passes over rows ranked past its range by the state
        // as it stood before this batch (rows are only ever added, so ranks only grow): they
        // are neither encoded nor kept.
        let applied = self.ranked_in(&keys, sorts.as_ref(), data.num_rows());
        let rows = match &applied {
            None => self.rows.convert_columns(data.columns()),
            Some(idx) => {
                let taken = take_record_batch(data, idx).map_err(arrow)?;
                self.rows.convert_columns(taken.columns())
            }
        }
        .map_err(arrow)?;
        let mut buffer = Vec::new();
        let mut created = Vec::new();
        let n = applied.as_ref().map_or(data.num_rows(), |a| a.len());
        for j in 0..n {
            let i = applied.as_ref().map_or(j, |a| a.value(j) as usize);
            let weight = weights.map_or(1, |w| w.value(i));
            if weight == 0 {
                continue;
            }
            let key = keys.key(i);
            if let OverMode::Functions(exprs) = &self.mode
                && !self.touched.contains_key(key)
            {
                let before = self.evaluate_functions(self.state.get(key), exprs)?;
                self.touched.insert(key.into(), before);
            }
            let part = match self.state.get_mut(key) {
                Some(p) => p,
                None => {
                    self.heap += (2 * key.len()) as isize;
                    if self.expiry.is_some() {
                        created.push((i, key.into()));
                    }
                    self.state.entry(key.into()).or_default()
                }
            };
            if let OverMode::TopN(top) = &self.mode
                && !part.touched
            {
                part.touched = true;
                let start = self.before.len();
                // Emitting on close, nothing was emitted to take back.
                if !self.emit_on_close {
                    let before = &mut self.before;
                    top_picks(part, top, |row, rank, weight| {
                        before.push(row, rank, weight)
                    });
                }
                self.touched_top.push(key, (start, self.before.len()));
            }
            let sort: &[u8] = sorts.as_ref().map_or(&[], |s| s.row(i).data());
            buffer.clear();
            buffer.extend_from_slice(sort);
            buffer.extend_from_slice(rows.row(j).data());
            match part.rows.get_mut(buffer.as_slice()) {
                Some(entry) => {
                    entry.count += weight;
                    if entry.count == 0 {
                        part.rows.remove(buffer.as_slice());
                        self.heap -= (buffer.len() + BTREE_ENTRY_OVERHEAD) as isize;
                        self.kept = self.kept.saturating_sub(1);
                    }
                }
                None => {
                    part.rows.insert(
                        buffer.as_slice().into(),
                        Entry {
                            sort_len: sort.len() as u32,
                            count: weight,
                        },
                    );
                    self.heap += (buffer.len() + BTREE_ENTRY_OVERHEAD) as isize;
                    self.kept += 1;
                }
            }
            // A top-N's emptied partition stays until the epoch ends (it is in `touched_top`).
            if part.rows.is_empty() && !part.touched {
                self.state.remove(key);
                self.heap -= (2 * key.len()) as isize;
            }
        }
        self.note_windows(&keys.columns, &created)
    }

    fn finish(&mut self, watermark: Option<Timestamp>) -> Result<Vec<ChangeBatch>, OperatorError> {
        if let OverMode::TopN(top) = self.mode
            && self.emit_on_close
        {
            // The epoch's changes stay in the state; over append-only input (always, here)
            // the rows ranked past the range are dropped.
            let touched = std::mem::take(&mut self.touched_top);
            self.before = Picks::default();
            self.settle(&touched);
            return Ok(match watermark {
                Some(w) => self.close_windows(top, w)?.into_iter().collect(),
                None => Vec::new(),
            });
        }
        if let OverMode::TopN(top) = self.mode {
            let out = self.finish_top(top)?;
            // Output first: a window's rows are final once the watermark passes its end.
            if let Some(w) = watermark {
                self.expire(w);
            }
            return Ok(out);
        }
        let touched = std::mem::replace(&mut self.touched, row_map(0));
        let OverMode::Functions(exprs) = &self.mode else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (key, before) in touched {
            let after = self.evaluate_functions(self.state.get(&key), exprs)?;
            if let Some(change) = self.diff(before, after)? {
                out.push(change);
            }
        }
        Ok(out)
    }

    fn checkpoint(&self) -> Result<Vec<RecordBatch>, StateError> {
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut entries: Vec<&[u8]> = Vec::new();
        let mut sort_lens = Vec::new();
        let mut counts = Vec::new();
        for (key, part) in &self.state {
            for (k, e) in part.rows.iter() {
                keys.push(key);
                entries.push(k);
                sort_lens.push(i64::from(e.sort_len));
                counts.push(e.count);
            }
        }
        Ok(vec![columns::batch(vec![
            ("key", columns::blobs(keys.into_iter().map(Some))),
            ("entry", columns::blobs(entries.into_iter().map(Some))),
            ("sort_len", columns::i64s(sort_lens)),
            ("count", columns::i64s(counts)),
        ])?])
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<(), StateError> {
        let [batch] = state else {
            return Err(StateError::mismatch(
                "an OVER operator's state is one batch",
            ));
        };
        let keys = columns::blob_column(batch, "key")?;
        let entries = columns::blob_column(batch, "entry")?;
        let sort_lens = columns::i64_column(batch, "sort_len")?;
        let counts = columns::i64_column(batch, "count")?;
        self.state = row_map(0);
        self.touched = row_map(0);
        self.touched_top = Touched::default();
        self.before = Picks::default();
        self.heap = 0;
        self.kept = 0;
        for i in 0..batch.num_rows() {
            let key = keys.value(i);
            let entry = entries.value(i);
            let sort_len = u32::try_from(sort_lens[i])
                .ok()
                .filter(|&l| l as usize <= entry.len())
                .ok_or_else(|| StateError::mismatch("a sort key longer than its row"))?;
            let part = match self.state.get_mut(key) {
                Some(p) => p,
                None => {
                    self.heap += (2 * key.len()) as isize;
                    self.state.entry(key.into()).or_default()
                }
            };
            part.rows.insert(
                entry.into(),
                Entry {
                    sort_len,
                    count: counts[i],
                },
            );
            self.heap += (entry.len() + BTREE_ENTRY_OVERHEAD) as isize;
            self.kept += 1;
        }
        self.windows.clear();
        if self.expiry.is_some() && !self.state.is_empty() {
            let partitions: Vec<Box<[u8]>> = self.state.keys().cloned().collect();
            let columns = self
                .partition
                .decode(partitions.iter().map(|k| k.as_ref()))?;
            let new: Vec<(usize, Box<[u8]>)> = partitions.into_iter().enumerate().collect();
            self.note_windows(&columns, &new)
                .map_err(|e| StateError::mismatch(e.to_string()))?;
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: self.kept,
            bytes: (self.heap.max(0) as usize + map_bytes(&self.state)) as u64,
        }
    }

    fn repartition(
        &self,
        old: &[Vec<RecordBatch>],
        n: usize,
        assign: &super::Assign<'_>,
    ) -> Result<Vec<Vec<RecordBatch>>, StateError> {
        let batches = old
            .iter()
            .map(|state| {
                state
                    .first()
                    .ok_or_else(|| StateError::mismatch("an OVER operator's state is one batch"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let parts = super::split_by_key(
            &batches,
            n,
            |keys| {
                Ok(self
                    .partition
                    .decode((0..keys.len()).map(|i| keys.value(i)))?)
            },
            assign,
        )?;
        Ok(parts.into_iter().map(|b| vec![b]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::test_util::{changes, sorted_lines};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// Top-`last` by `v` descending per `k`, with the rank column.
    fn top(kind: RankKind, last: u64) -> OverOperator {
        let mut fields: Vec<Field> = input()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("rn", DataType::UInt64, false));
        OverOperator::new(
            OverMode::TopN(TopN {
                kind,
                first: 1,
                last,
                rank_column: true,
            }),
            vec![Arc::new(Column::new("k", 0))],
            vec![DataType::Utf8],
            vec![Arc::new(Column::new("v", 1))],
            vec![SortField::new_with_options(
                DataType::Int64,
                SortOptions {
                    descending: true,
                    nulls_first: false,
                },
            )],
            input(),
            Arc::new(Schema::new(fields)),
        )
        .expect("an operator")
    }

    fn step(op: &mut OverOperator, table: &str) -> Vec<String> {
        op.update(&changes(&input(), table)).expect("update");
        sorted_lines(&op.finish(None).expect("finish"))
    }

    #[test]
    fn the_next_row_moves_into_the_top_when_one_leaves() {
        let mut op = top(RankKind::RowNumber, 2);
        assert_eq!(
            step(&mut op, "+ a 1\n+ a 5\n+ a 3\n+ b 7"),
            ["+ a 3 2", "+ a 5 1", "+ b 7 1"]
        );
        // 5 leaves: 3 moves up to 1, and 1 comes in at 2.
        assert_eq!(
            step(&mut op, "- a 5"),
            ["+ a 1 2", "+ a 3 1", "- a 3 2", "- a 5 1"]
        );
        // A row below the top changes nothing.
        assert_eq!(step(&mut op, "+ a 0"), Vec::<String>::new());
    }

    /// (Two equal rows are one output row of weight 2: a line each below.)
    #[test]
    fn ties_share_a_rank_and_dense_ranks_leave_no_gap() {
        let mut rank = top(RankKind::Rank, 2);
        assert_eq!(step(&mut rank, "+ a 5\n+ a 5\n+ a 3"), ["+ a 5 1"]);
        let mut dense = top(RankKind::DenseRank, 2);
        assert_eq!(
            step(&mut dense, "+ a 5\n+ a 5\n+ a 3"),
            ["+ a 3 2", "+ a 5 1"]
        );
    }

    #[test]
    fn append_only_input_keeps_only_the_top_and_state_round_trips() {
        let mut op = top(RankKind::RowNumber, 2).with_append_only_input();
        step(&mut op, "+ a 1\n+ a 2\n+ a 3\n+ a 4\n+ b 1");
        assert_eq!(op.state_size().rows, 3);
        let saved = op.checkpoint().expect("checkpoint");
        let mut again = top(RankKind::RowNumber, 2).with_append_only_input();
        again.restore(&saved).expect("restore");
        assert_eq!(again.state_size(), op.state_size());
        assert_eq!(
            step(&mut again, "+ a 9"),
            ["+ a 4 2", "+ a 9 1", "- a 3 2", "- a 4 1"]
        );
    }

    #[test]
    fn a_range_ending_before_rank_one_keeps_no_partition() {
        // `rn <= 0` over append-only input: every row is trimmed, and so is its partition.
        let mut op = top(RankKind::RowNumber, 0).with_append_only_input();
        assert!(step(&mut op, "+ a 1\n+ b 2").is_empty());
        assert!(op.state.is_empty(), "no partition kept");
        assert_eq!((op.heap, op.kept), (0, 0));
    }

    /// The ranks of every kind, brute force: `(k, v, rank)` of rows ranked in `first..=last`
    /// by `v` descending per `k`.
    fn brute(rows: &[(String, i64)], kind: RankKind, first: u64, last: u64) -> Vec<String> {
        let mut out = Vec::new();
        let mut keys: Vec<&String> = rows.iter().map(|(k, _)| k).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let mut vs: Vec<i64> = rows.iter().filter(|(k, _)| k == key).map(|r| r.1).collect();
            vs.sort_by(|a, b| b.cmp(a));
            for (i, v) in vs.iter().enumerate() {
                let rank = match kind {
                    RankKind::RowNumber => i as u64 + 1,
                    RankKind::Rank => vs.iter().filter(|w| *w > v).count() as u64 + 1,
                    RankKind::DenseRank => {
                        let mut bigger: Vec<&i64> = vs.iter().filter(|w| *w > v).collect();
                        bigger.dedup();
                        bigger.len() as u64 + 1
                    }
                };
                if (first..=last).contains(&rank) {
                    out.push(format!("+ {key} {v} {rank}"));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn random_changes_keep_every_rank_equal_to_a_recount() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let kinds = [RankKind::RowNumber, RankKind::Rank, RankKind::DenseRank];
        // Each kind over updating input, then over append-only input (which trims).
        for (kind, append_only) in kinds.iter().flat_map(|&k| [(k, false), (k, true)]) {
            let (first, last) = (rng.random_range(1..3), rng.random_range(1..5));
            let mut op = top(kind, last);
            if append_only {
                op = op.with_append_only_input();
            }
            if let OverMode::TopN(t) = &mut op.mode {
                t.first = first;
            }
            let mut rows: Vec<(String, i64)> = Vec::new();
            // The output so far, as a multiset of lines.
            let mut view: std::collections::BTreeMap<String, i64> = Default::default();
            for _ in 0..60 {
                let mut lines = Vec::new();
                for _ in 0..rng.random_range(1..8) {
                    if !append_only && !rows.is_empty() && rng.random_bool(0.4) {
                        let (k, v) = rows.swap_remove(rng.random_range(0..rows.len()));
                        lines.push(format!("- {k} {v}"));
                    } else {
                        let row = (
                            format!("k{}", rng.random_range(0..3)),
                            rng.random_range(0..6),
                        );
                        lines.push(format!("+ {} {}", row.0, row.1));
                        rows.push(row);
                    }
                }
                // One or two batches an epoch (the second sees the first's rows untrimmed).
                let cut = rng.random_range(0..=lines.len());
                for part in [&lines[..cut], &lines[cut..]] {
                    if !part.is_empty() {
                        op.update(&changes(&input(), &part.join("\n")))
                            .expect("update");
                    }
                }
                for batch in op.finish(None).expect("finish") {
                    let rendered = crate::operator::test_util::render(&batch);
                    let weights = batch.weights().cloned();
                    for (i, line) in rendered.lines().enumerate() {
                        let w = weights.as_ref().map_or(1, |w| w.value(i));
                        *view.entry(format!("+{}", &line[1..])).or_default() += w;
                    }
                }
                view.retain(|_, w| *w != 0);
                let got: Vec<String> = view
                    .iter()
                    .flat_map(|(l, &w)| std::iter::repeat_n(l.clone(), w.max(0) as usize))
                    .collect();
                assert_eq!(
                    got,
                    brute(&rows, kind, first, last),
                    "{kind:?} {first}..={last} append-only {append_only}, seed {seed}"
                );
            }
        }
    }
}
