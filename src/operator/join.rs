//! [`JoinOperator`]: an equi-join of two changing inputs (inner, left, right and full outer,
//! semi and anti), correct under retractions on either side.
//!
//! Each side keeps, per join key, how many rows it holds (`total`) and, where the output needs
//! them, the rows themselves in Arrow's row format with a count each. A change on one side is
//! joined against the other side's state as it stands, then folded into its own side's state,
//! row by row in input order; so a change on the left followed by one on the right gives
//! `ΔL ⋈ R + L' ⋈ ΔR`, the change of `L ⋈ R`. Outer joins emit a NULL-padded row while a row
//! has no match, and retract it when the first match arrives (and the other way round); semi
//! and anti joins emit a row of their output side while its key has (or has no) match on the
//! other side.
//!
//! The output is produced at update time and handed over at [`KeyedOperator::finish`]. A row
//! whose key has a NULL never matches (unless the join compares keys with `IS NOT DISTINCT
//! FROM`) and is kept in no state.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::keys::{GroupKeys, RowMap, row_map};
use super::{KeyedOperator, OperatorError, StateSize, map_bytes};
use crate::state::StateError;
use crate::state::columns;
use crate::stream::{ChangeBatch, Timestamp};

const NAME: &str = "Join";

fn arrow(source: datafusion::arrow::error::ArrowError) -> OperatorError {
    OperatorError::arrow(NAME, source)
}

/// What a join outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Matching pairs.
    Inner,
    /// Matching pairs, and left rows without a match padded with NULLs.
    Left,
    /// Matching pairs, and right rows without a match padded with NULLs.
    Right,
    /// Matching pairs, and rows of either side without a match padded with NULLs.
    Full,
    /// The rows of side `0` (left) or `1` (right) whose key has a match on the other side.
    Semi(usize),
    /// The rows of side `0` or `1` whose key has no match on the other side.
    Anti(usize),
}

impl JoinKind {
    /// Whether the output holds matching pairs (left columns, then right columns).
    fn pairs(self) -> bool {
        matches!(self, Self::Inner | Self::Left | Self::Right | Self::Full)
    }

    /// Whether rows of `side` without a match are output (padded, or alone for anti).
    fn keeps_unmatched(self, side: usize) -> bool {
        match self {
            Self::Inner | Self::Semi(_) => false,
            Self::Left => side == 0,
            Self::Right => side == 1,
            Self::Full => true,
            Self::Anti(s) => s == side,
        }
    }

    /// Whether the rows of `side` must be kept (not only a count per key).
    fn keeps_rows(self, side: usize) -> bool {
        match self {
            Self::Semi(s) | Self::Anti(s) => s == side,
            _ => true,
        }
    }

    /// The name `EXPLAIN` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Inner => "Inner",
            Self::Left => "Left",
            Self::Right => "Right",
            Self::Full => "Full",
            Self::Semi(0) => "LeftSemi",
            Self::Semi(_) => "RightSemi",
            Self::Anti(0) => "LeftAnti",
            Self::Anti(_) => "RightAnti",
        }
    }
}

/// Rows under one join key more than this are found through a map, not by a scan.
const INDEX_ABOVE: usize = 16;

/// A distinct row of one side.
#[derive(Debug)]
struct RowEntry {
    /// The row in row format.
    row: Box<[u8]>,
    /// How many times it is there (sum of weights).
    count: i64,
    /// With a join condition beyond the keys: how many rows of the other side it matches
    /// (sum of their counts), kept where a row's output depends on having a match.
    degree: i64,
    /// An interval join's: once the other side's watermark passes this, no row to come can
    /// match the row, and it is freed (`i64::MAX`: never).
    expires: i64,
}

/// One side's rows under one join key.
#[derive(Debug)]
struct KeyEntry {
    /// Rows (sum of weights) under the key.
    total: i64,
    /// Distinct rows (empty where only counts are kept).
    rows: Vec<RowEntry>,
    /// Row bytes → index in `rows`, once there are many.
    index: Option<RowMap<usize>>,
    /// Where only counts are kept, in a window join (whose key holds the window): when the
    /// key's window is over (`i64::MAX` otherwise).
    expires: i64,
    /// Where the key is listed in the operator's `expiring` (`i64::MAX`: not listed): the
    /// [`listing`] of the earliest time its rows expire. A key is listed once, not once per
    /// row; a listing elsewhere is stale.
    listed: i64,
}

impl Default for KeyEntry {
    fn default() -> Self {
        Self {
            total: 0,
            rows: Vec::new(),
            index: None,
            expires: i64::MAX,
            listed: i64::MAX,
        }
    }
}

/// Bytes a kept row costs beyond its encoding.
const ROW_ENTRY_BYTES: usize = std::mem::size_of::<RowEntry>();

/// Bytes a key's listing in `expiring` costs beyond the key.
const LISTING_BYTES: usize = std::mem::size_of::<usize>();

impl KeyEntry {
    /// Adds `weight` to `row`'s count (a new row starts with `degree`); returns the change
    /// in bytes held and in distinct rows.
    fn add(&mut self, row: &[u8], weight: i64, degree: i64, expires: i64) -> (isize, i64) {
        let found = match &self.index {
            Some(index) => index.get(row).copied(),
            None => self.rows.iter().position(|r| &*r.row == row),
        };
        let entry_bytes = (ROW_ENTRY_BYTES + row.len()) as isize;
        match found {
            Some(i) => {
                self.rows[i].count += weight;
                if self.rows[i].count != 0 {
                    return (0, 0);
                }
                let gone = self.rows.swap_remove(i);
                let mut bytes = -entry_bytes;
                if let Some(index) = &mut self.index {
                    index.remove(&gone.row);
                    bytes -= row.len() as isize;
                    if let Some(moved) = self.rows.get(i) {
                        index.insert(moved.row.clone(), i);
                    }
                }
                (bytes, -1)
            }
            None => {
                let row: Box<[u8]> = row.into();
                let mut bytes = entry_bytes;
                if let Some(index) = &mut self.index {
                    index.insert(row.clone(), self.rows.len());
                    bytes += row.len() as isize;
                }
                self.rows.push(RowEntry {
                    row,
                    count: weight,
                    degree,
                    expires,
                });
                if self.index.is_none() && self.rows.len() > INDEX_ABOVE {
                    let mut index = row_map(self.rows.len() * 2);
                    for (i, r) in self.rows.iter().enumerate() {
                        index.insert(r.row.clone(), i);
                        bytes += r.row.len() as isize;
                    }
                    self.index = Some(index);
                }
                (bytes, 1)
            }
        }
    }
}

impl KeyEntry {
    /// Adds `row` with `weight` as an entry of its own, without looking for an equal row: on
    /// an append-only side no row is ever retracted, so copies need not share an entry (and
    /// no index is built). Returns the change in bytes held and in rows kept.
    fn push(&mut self, row: &[u8], weight: i64, degree: i64, expires: i64) -> (isize, i64) {
        if weight < 0 || self.index.is_some() {
            return self.add(row, weight, degree, expires);
        }
        self.rows.push(RowEntry {
            row: row.into(),
            count: weight,
            degree,
            expires,
        });
        ((ROW_ENTRY_BYTES + row.len()) as isize, 1)
    }

    /// Drops the rows that expire before `watermark` (indexing those left when `indexed` and
    /// there are many); returns the change in bytes held, in distinct rows and in the key's
    /// row count.
    fn expire(&mut self, watermark: i64, indexed: bool) -> (isize, i64, i64) {
        if self.rows.is_empty() && self.expires < watermark {
            let count = std::mem::take(&mut self.total);
            return (0, 0, -count);
        }
        let index_bytes =
            |rows: &[RowEntry]| -> isize { rows.iter().map(|r| r.row.len() as isize).sum() };
        let mut bytes = match &self.index {
            Some(_) => -index_bytes(&self.rows),
            None => 0,
        };
        let before = self.rows.len() as i64;
        let mut count = 0;
        self.rows.retain(|r| {
            if r.expires < watermark {
                bytes -= (ROW_ENTRY_BYTES + r.row.len()) as isize;
                count += r.count;
                false
            } else {
                true
            }
        });
        self.total -= count;
        if indexed && self.rows.len() > INDEX_ABOVE {
            let mut index = row_map(self.rows.len() * 2);
            for (i, r) in self.rows.iter().enumerate() {
                index.insert(r.row.clone(), i);
            }
            bytes += index_bytes(&self.rows);
            self.index = Some(index);
        } else {
            self.index = None;
        }
        (bytes, self.rows.len() as i64 - before, -count)
    }
}

/// An interval join's bounds: its condition keeps `left.t - right.t` within `[lo, hi]`, over
/// each side's watermarked time column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// Each side's time column, by its index in the side's schema.
    pub time: [usize; 2],
    /// `left.t - right.t >= lo` (nanoseconds): a left row is freed once the right side's
    /// watermark passes `left.t - lo`.
    pub lo: Option<i64>,
    /// `left.t - right.t <= hi`: a right row is freed once the left side's watermark passes
    /// `right.t + hi`.
    pub hi: Option<i64>,
    /// The left time column of the output keeps a watermark (an inner join).
    pub watermark: bool,
    /// A window join instead: the time columns are window bounds, equal on both sides, whose
    /// window ends at the value plus this offset (per side). A row is freed once both
    /// watermarks pass its window's end: no row of that window comes or leaves any more.
    pub window_end: Option<[i64; 2]>,
    /// Per side, what to add to the time column's value to get the time its watermark
    /// bounds: 0 for an event-time column, the offset to the window's end for a window bound
    /// (an aggregate's `window_end` or `window_start` over a watermarked column). `lo` and
    /// `hi` bound the difference of those times.
    pub shift: [i64; 2],
}

impl Interval {
    /// When a row of `side` whose time column holds `t` can match no row to come (`None`: it
    /// always may).
    fn expires(&self, side: usize, t: i64) -> Option<i64> {
        if let Some(end) = self.window_end {
            return Some(t.saturating_add(end[side]));
        }
        self.bound(side, t.saturating_add(self.shift[side]))
    }

    /// When a row of `side` at watermarked time `at` can match no row to come.
    fn bound(&self, side: usize, at: i64) -> Option<i64> {
        match side {
            0 => self.lo.map(|lo| at.saturating_sub(lo)),
            _ => self.hi.map(|hi| at.saturating_add(hi)),
        }
    }
}

/// Where a key whose rows expire at `expires` is listed in `expiring`: the last nanosecond of
/// the aligned 2^27 ns (134 ms) span holding it, so that keys expiring close together share a
/// listing (one buffer, not an allocation per key). A key is visited at most one span late.
fn listing(expires: i64) -> i64 {
    const SPAN: i64 = (1 << 27) - 1;
    (expires | SPAN).min(i64::MAX - 1)
}

/// Row-format rows (or keys) copied into one buffer.
#[derive(Debug, Default)]
struct RowBuffer {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl RowBuffer {
    fn push(&mut self, row: &[u8]) {
        self.bytes.extend_from_slice(row);
        self.ends.push(self.bytes.len());
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Rows `picks` (all when `None`) as columns.
    fn decode(
        &self,
        converter: &RowConverter,
        picks: Option<&[u32]>,
    ) -> Result<Vec<ArrayRef>, OperatorError> {
        let parser = converter.parser();
        let rows: Vec<_> = match picks {
            Some(picks) => picks
                .iter()
                .map(|&i| parser.parse(self.get(i as usize)))
                .collect(),
            None => (0..self.len()).map(|i| parser.parse(self.get(i))).collect(),
        };
        converter.convert_rows(rows).map_err(arrow)
    }
}

/// An equi-join of two inputs (see the module documentation).
#[derive(Debug)]
pub struct JoinOperator {
    kind: JoinKind,
    /// Join keys over each side's schema (of the same types on both sides).
    keys: [GroupKeys; 2],
    /// A condition beyond the keys, over the left columns then the right columns.
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// Encodes each side's whole rows.
    rows: [RowConverter; 2],
    /// Each side's schema.
    inputs: [SchemaRef; 2],
    /// Output schema.
    schema: SchemaRef,
    /// NULL keys match each other (`IS NOT DISTINCT FROM`).
    null_equal: bool,
    /// Per side: join key bytes → the side's rows under it.
    state: [RowMap<KeyEntry>; 2],
    /// Rows kept (distinct rows with a count) per side.
    kept: [u64; 2],
    /// An interval join's bounds.
    interval: Option<Interval>,
    /// A temporal join: the right side is a versioned table, looked up as it stands when a
    /// left row comes; its changes make no output, and left rows are not kept.
    lookup: bool,
    /// Per side: when rows expire → the keys they are under (an interval join's).
    expiring: [BTreeMap<i64, RowBuffer>; 2],
    /// Each input's watermark at the last finish.
    watermarks: [Option<Timestamp>; 2],
    /// Bytes owned through pointers: keys, rows, per-key indexes.
    heap: isize,
    /// Output since the last finish.
    pending: Vec<ChangeBatch>,
    /// Per side: the input only inserts, so its rows are kept as they come, copies apart,
    /// with no lookup and no index (see [`KeyEntry::push`]).
    append_only: [bool; 2],
}

impl JoinOperator {
    /// A join of `kind` on `keys[0][i] = keys[1][i]` and `filter` (over the left columns then
    /// the right ones); `inputs` are the two sides' schemas.
    pub fn new(
        kind: JoinKind,
        keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
        key_types: Vec<DataType>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        inputs: [SchemaRef; 2],
        schema: SchemaRef,
        null_equal: bool,
    ) -> Result<Self, OperatorError> {
        let converter = |schema: &SchemaRef| {
            RowConverter::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )
            .map_err(arrow)
        };
        let [left_keys, right_keys] = keys;
        Ok(Self {
            kind,
            keys: [
                GroupKeys::new(left_keys, key_types.clone()).map_err(arrow)?,
                GroupKeys::new(right_keys, key_types).map_err(arrow)?,
            ],
            filter,
            rows: [converter(&inputs[0])?, converter(&inputs[1])?],
            inputs,
            schema,
            null_equal,
            state: [row_map(0), row_map(0)],
            interval: None,
            lookup: false,
            expiring: [BTreeMap::new(), BTreeMap::new()],
            watermarks: [None, None],
            kept: [0, 0],
            heap: 0,
            pending: Vec::new(),
            append_only: [false, false],
        })
    }

    /// Marks each side whose input only ever inserts rows.
    pub fn with_append_only_inputs(mut self, append_only: [bool; 2]) -> Self {
        self.append_only = append_only;
        self
    }

    /// Keeps `row` under `entry` on `side`: [`KeyEntry::push`] on an append-only side,
    /// [`KeyEntry::add`] otherwise.
    fn keep(
        append_only: bool,
        entry: &mut KeyEntry,
        row: &[u8],
        weight: i64,
        degree: i64,
        expires: i64,
    ) -> (isize, i64) {
        if append_only {
            entry.push(row, weight, degree, expires)
        } else {
            entry.add(row, weight, degree, expires)
        }
    }

    /// Whether `side`'s rows keep their degree: under a condition, where a row's output
    /// depends on whether it has a match (a padded side, a semi join's output side).
    fn keeps_degree(&self, side: usize) -> bool {
        self.filter.is_some()
            && (self.kind.keeps_unmatched(side) || self.kind == JoinKind::Semi(side))
    }

    /// Makes the join temporal: the right side is looked up, as it stands, by left rows.
    pub fn with_lookup(mut self) -> Self {
        self.lookup = true;
        self
    }

    /// Frees rows by the interval join's bounds as the watermarks pass.
    pub fn with_interval(mut self, interval: Interval) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Whether `side`'s rows are kept (not only a count per key): the output shows them, or
    /// the condition reads them.
    fn keeps_rows(&self, side: usize) -> bool {
        !(self.lookup && side == 0) && (self.filter.is_some() || self.kind.keeps_rows(side))
    }

    /// Joins a change of `side` against the other side and folds it into its own.
    fn apply(&mut self, side: usize, change: &ChangeBatch) -> Result<(), OperatorError> {
        let data = change.data();
        let n = data.num_rows();
        if n == 0 {
            return Ok(());
        }
        let other = 1 - side;
        let kind = self.kind;
        let keys = self.keys[side].encode(data, NAME)?;
        let row_bytes = if self.keeps_rows(side) {
            Some(
                self.rows[side]
                    .convert_columns(data.columns())
                    .map_err(arrow)?,
            )
        } else {
            None
        };
        let null_key = |i: usize| !self.null_equal && keys.columns.iter().any(|c| c.is_null(i));
        // An interval join's rows of this side expire by their time.
        let expiry = match &self.interval {
            Some(interval) if interval.expires(side, 0).is_some() => {
                let times = crate::stream::watermark::nanos(data.column(interval.time[side]))
                    .map_err(|e| OperatorError::datafusion(NAME, e))?;
                let times = times
                    .as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>()
                    .clone();
                Some((interval.clone(), times))
            }
            _ => None,
        };
        let expires = |i: usize| match &expiry {
            // A row without a time matches nothing under the condition: it goes at once.
            Some((interval, times)) if times.is_valid(i) => {
                interval.expires(side, times.value(i)).unwrap_or(i64::MAX)
            }
            Some(_) => i64::MIN,
            None => i64::MAX,
        };
        let weight = |i: usize| change.weights().map_or(1, |w| w.value(i));

        // A temporal join: changes of the versioned table only update it; the left side's
        // rows are looked up and not kept.
        let emit = !(self.lookup && side == 1);
        let store = !(self.lookup && side == 0);
        // The other side's rows under each row's key: the candidates, copied once.
        let mut candidates = RowBuffer::default();
        let mut candidate_delta: Vec<u32> = Vec::new();
        let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(n);
        for i in 0..n {
            let start = candidates.len();
            if emit
                && weight(i) != 0
                && !null_key(i)
                && let Some(e) = self.state[other].get(keys.key(i))
            {
                for r in &e.rows {
                    candidates.push(&r.row);
                    candidate_delta.push(i as u32);
                }
            }
            ranges.push((start, candidates.len()));
        }
        // Which candidates meet the condition.
        let passed: Option<Vec<bool>> = match &self.filter {
            Some(filter) if candidates.len() > 0 => {
                let mine = take_columns(data, &UInt32Array::from(candidate_delta))?;
                let theirs = candidates.decode(&self.rows[other], None)?;
                let (left, right) = if side == 0 {
                    (mine, theirs)
                } else {
                    (theirs, mine)
                };
                let columns: Vec<ArrayRef> = left.into_iter().chain(right).collect();
                let fields: Vec<_> = self.inputs[0]
                    .fields()
                    .iter()
                    .chain(self.inputs[1].fields().iter())
                    .cloned()
                    .collect();
                let pairs = RecordBatch::try_new(
                    Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
                    columns,
                )
                .map_err(arrow)?;
                let mask = filter
                    .evaluate(&pairs)
                    .and_then(|v| v.into_array(pairs.num_rows()))
                    .map_err(|e| OperatorError::datafusion(NAME, e))?;
                let mask = mask.as_boolean_opt().ok_or_else(|| {
                    arrow(datafusion::arrow::error::ArrowError::InvalidArgumentError(
                        "the join condition is not boolean".into(),
                    ))
                })?;
                Some(
                    (0..mask.len())
                        .map(|i| mask.is_valid(i) && mask.value(i))
                        .collect(),
                )
            }
            _ => None,
        };
        let meets = |c: usize| passed.as_ref().is_none_or(|p| p[c]);

        let (own_degree, their_degree) = (self.keeps_degree(side), self.keeps_degree(other));
        let (first, second) = self.state.split_at_mut(1);
        let (own, theirs) = if side == 0 {
            (&mut first[0], &mut second[0])
        } else {
            (&mut second[0], &mut first[0])
        };
        let their_alone = |gained: bool| -> Option<i64> {
            let sign = if gained { 1 } else { -1 };
            match kind {
                JoinKind::Semi(s) if s == other => Some(sign),
                JoinKind::Anti(s) if s == other => Some(-sign),
                k if k.pairs() && k.keeps_unmatched(other) => Some(-sign),
                _ => None,
            }
        };
        // Pairs (delta row, candidate); delta rows alone; the other side's rows alone.
        let (mut pair_delta, mut pair_candidate, mut pair_w) = (Vec::new(), Vec::new(), Vec::new());
        let (mut alone, mut alone_w) = (Vec::new(), Vec::new());
        let (mut others, mut others_w) = (RowBuffer::default(), Vec::new());
        let mut heap = 0isize;
        let mut kept = 0i64;
        let mut new_expiring: Vec<(i64, usize)> = Vec::new();
        for (i, &(start, end)) in ranges.iter().enumerate() {
            let w = weight(i);
            if w == 0 {
                continue;
            }
            if null_key(i) {
                if emit && kind.keeps_unmatched(side) {
                    alone.push(i as u32);
                    alone_w.push(w);
                }
                continue;
            }
            let key = keys.key(i);
            let mut their_entry = if emit { theirs.get_mut(key) } else { None };
            // How many rows of the other side this row matches.
            let matched = match (&self.filter, &their_entry) {
                (_, None) => 0,
                (None, Some(e)) => e.total,
                (Some(_), Some(e)) => (start..end)
                    .filter(|&c| meets(c))
                    .map(|c| e.rows[c - start].count)
                    .sum(),
            };
            if !emit {
                // The versioned table changed: no output.
            } else if kind.pairs() {
                if let Some(e) = &their_entry {
                    for c in (start..end).filter(|&c| meets(c)) {
                        pair_delta.push(i as u32);
                        pair_candidate.push(c as u32);
                        pair_w.push(w * e.rows[c - start].count);
                    }
                }
                if matched <= 0 && kind.keeps_unmatched(side) {
                    alone.push(i as u32);
                    alone_w.push(w);
                }
            } else if (kind == JoinKind::Semi(side) && matched > 0)
                || (kind == JoinKind::Anti(side) && matched <= 0)
            {
                alone.push(i as u32);
                alone_w.push(w);
            }
            // The other side's rows this row matches gain (or lose) it: those whose first
            // match comes, or last match goes, enter or leave the output alone.
            if !store {
                continue;
            }
            let own_entry = own.get_mut(key);
            if let Some(e) = their_entry.as_mut() {
                if their_degree {
                    for c in (start..end).filter(|&c| meets(c)) {
                        let r = &mut e.rows[c - start];
                        let before = r.degree;
                        r.degree += w;
                        let gained = before <= 0 && r.degree > 0;
                        let lost = before > 0 && r.degree <= 0;
                        if (gained || lost)
                            && let Some(sign) = their_alone(gained)
                        {
                            others.push(&r.row);
                            others_w.push(sign * r.count);
                        }
                    }
                } else if self.filter.is_none() {
                    let before = own_entry.as_ref().map_or(0, |o| o.total);
                    let after = before + w;
                    let gained = before <= 0 && after > 0;
                    let lost = before > 0 && after <= 0;
                    if (gained || lost)
                        && let Some(sign) = their_alone(gained)
                    {
                        for r in &e.rows {
                            others.push(&r.row);
                            others_w.push(sign * r.count);
                        }
                    }
                }
            }
            let entry = match own_entry {
                Some(e) => e,
                None => {
                    heap += (2 * key.len()) as isize;
                    let entry = own.entry(key.into()).or_default();
                    if row_bytes.is_none() && expires(i) != i64::MAX {
                        // Counts only: the key (which holds the window) expires whole.
                        entry.expires = expires(i);
                        new_expiring.push((entry.expires, i));
                    }
                    entry
                }
            };
            entry.total += w;
            if let Some(rows) = &row_bytes {
                let degree = if own_degree { matched } else { 0 };
                let expires = expires(i);
                let (bytes, rows) = Self::keep(
                    self.append_only[side],
                    entry,
                    rows.row(i).data(),
                    w,
                    degree,
                    expires,
                );
                heap += bytes;
                kept += rows;
                if rows > 0 && expires != i64::MAX && listing(expires) < entry.listed {
                    entry.listed = listing(expires);
                    new_expiring.push((entry.listed, i));
                }
            }
            if entry.total == 0 && entry.rows.is_empty() {
                heap -= (2 * key.len()) as isize;
                own.remove(key);
            }
        }
        for (at, i) in new_expiring {
            let key = keys.key(i);
            heap += (key.len() + LISTING_BYTES) as isize;
            self.expiring[side].entry(at).or_default().push(key);
        }
        self.heap += heap;
        self.kept[side] = (self.kept[side] as i64 + kept).max(0) as u64;

        let types = [&self.inputs[0], &self.inputs[1]];
        if !pair_delta.is_empty() {
            let mine = take_columns(data, &UInt32Array::from(pair_delta))?;
            let theirs = candidates.decode(&self.rows[other], Some(&pair_candidate))?;
            let out = output(
                kind,
                types,
                &self.schema,
                side,
                Some(mine),
                Some(theirs),
                pair_w,
            )?;
            self.pending.push(out);
        }
        if !alone.is_empty() {
            let mine = take_columns(data, &UInt32Array::from(alone))?;
            let out = output(kind, types, &self.schema, side, Some(mine), None, alone_w)?;
            self.pending.push(out);
        }
        if others.len() > 0 {
            let theirs = others.decode(&self.rows[other], None)?;
            let out = output(
                kind,
                types,
                &self.schema,
                side,
                None,
                Some(theirs),
                others_w,
            )?;
            self.pending.push(out);
        }
        Ok(())
    }
}

impl JoinOperator {
    /// Frees `side`'s rows that expire before `watermark` (the other side's).
    fn expire(&mut self, side: usize, watermark: Timestamp) {
        while let Some(entry) = self.expiring[side].first_entry() {
            if *entry.key() >= watermark {
                break;
            }
            let at = *entry.key();
            let listed = entry.remove();
            for j in 0..listed.len() {
                let key = listed.get(j);
                let listing_bytes = (key.len() + LISTING_BYTES) as isize;
                self.heap -= listing_bytes;
                let Some(rows) = self.state[side].get_mut(key) else {
                    continue;
                };
                // Listed again under an earlier time since: that listing frees it.
                if !rows.rows.is_empty() && rows.listed != at {
                    continue;
                }
                let (bytes, kept, _) = rows.expire(watermark, !self.append_only[side]);
                self.heap += bytes;
                self.kept[side] = (self.kept[side] as i64 + kept).max(0) as u64;
                if rows.total == 0 && rows.rows.is_empty() {
                    self.heap -= (2 * key.len()) as isize;
                    self.state[side].remove(key);
                    continue;
                }
                // Listed again where the earliest of its rows left expires (at or past the
                // watermark: this loop ends before it).
                rows.listed = match rows.rows.iter().map(|r| r.expires).min() {
                    Some(e) if e != i64::MAX => listing(e),
                    _ => i64::MAX,
                };
                if rows.listed != i64::MAX {
                    self.heap += listing_bytes;
                    self.expiring[side]
                        .entry(rows.listed)
                        .or_default()
                        .push(key);
                }
            }
        }
        // A map emptied by expiry gives back what it grew to at its peak.
        let map = &mut self.state[side];
        if map.capacity() > 1024 && map.len() * 4 < map.capacity() {
            map.shrink_to(map.len() * 2);
        }
    }

    /// One side's state as a batch: per key a row with `row` NULL and the key's total in
    /// `count`, then one row per kept row with its count and degree.
    fn side_checkpoint(&self, side: usize) -> Result<RecordBatch, StateError> {
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut rows: Vec<Option<&[u8]>> = Vec::new();
        let mut counts = Vec::new();
        let mut degrees = Vec::new();
        let mut expires = Vec::new();
        for (key, entry) in &self.state[side] {
            keys.push(key);
            rows.push(None);
            counts.push(entry.total);
            degrees.push(0);
            expires.push(entry.expires);
            for r in &entry.rows {
                keys.push(key);
                rows.push(Some(&r.row));
                counts.push(r.count);
                degrees.push(r.degree);
                expires.push(r.expires);
            }
        }
        columns::batch(vec![
            ("key", columns::blobs(keys.into_iter().map(Some))),
            ("row", columns::blobs(rows.into_iter())),
            ("count", columns::i64s(counts)),
            ("degree", columns::i64s(degrees)),
            ("expires", columns::i64s(expires)),
        ])
    }

    fn side_restore(&mut self, side: usize, batch: &RecordBatch) -> Result<(), StateError> {
        let keys = columns::blob_column(batch, "key")?;
        let rows = columns::blob_column(batch, "row")?;
        let counts = columns::i64_column(batch, "count")?;
        let degrees = columns::i64_column(batch, "degree")?;
        let expires = columns::i64_column(batch, "expires")?;
        let mut expiring: BTreeMap<i64, RowBuffer> = BTreeMap::new();
        // One row per key has no `row`: the key's count.
        let mut state: RowMap<KeyEntry> = row_map(rows.null_count());
        let mut heap = 0isize;
        let mut kept = 0i64;
        for (i, count) in counts.into_iter().enumerate() {
            let key = keys.value(i);
            let entry = match state.get_mut(key) {
                Some(e) => e,
                None => {
                    heap += (2 * key.len()) as isize;
                    state.entry(key.into()).or_default()
                }
            };
            match columns::blob_at(rows, i) {
                None => {
                    entry.total = count;
                    entry.expires = expires[i];
                    if expires[i] != i64::MAX {
                        heap += (key.len() + LISTING_BYTES) as isize;
                        expiring.entry(expires[i]).or_default().push(key);
                    }
                }
                Some(row) => {
                    let (bytes, added) = Self::keep(
                        self.append_only[side],
                        entry,
                        row,
                        count,
                        degrees[i],
                        expires[i],
                    );
                    heap += bytes;
                    kept += added;
                    if expires[i] != i64::MAX && listing(expires[i]) < entry.listed {
                        entry.listed = listing(expires[i]);
                        heap += (key.len() + LISTING_BYTES) as isize;
                        expiring.entry(entry.listed).or_default().push(key);
                    }
                }
            }
        }
        self.state[side] = state;
        self.expiring[side] = expiring;
        self.kept[side] = kept.max(0) as u64;
        self.heap += heap;
        Ok(())
    }
}

/// An output batch of a `kind` join from `side`'s columns and the other side's (`None`:
/// NULLs, or absent in a semi or anti join's output); `inputs` are the sides' schemas.
fn output(
    kind: JoinKind,
    inputs: [&SchemaRef; 2],
    schema: &SchemaRef,
    side: usize,
    mine: Option<Vec<ArrayRef>>,
    theirs: Option<Vec<ArrayRef>>,
    weights: Vec<i64>,
) -> Result<ChangeBatch, OperatorError> {
    let rows = weights.len();
    let other = 1 - side;
    let nulls = |s: usize| -> Vec<ArrayRef> {
        inputs[s]
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), rows))
            .collect()
    };
    let columns = match kind {
        JoinKind::Semi(s) | JoinKind::Anti(s) => {
            if s == side { mine } else { theirs }.unwrap_or_else(|| nulls(s))
        }
        _ => {
            let mine = mine.unwrap_or_else(|| nulls(side));
            let theirs = theirs.unwrap_or_else(|| nulls(other));
            if side == 0 {
                mine.into_iter().chain(theirs).collect()
            } else {
                theirs.into_iter().chain(mine).collect()
            }
        }
    };
    let data = super::cast_to_schema(columns, schema).map_err(arrow)?;
    ChangeBatch::with_weights(data, Int64Array::from(weights)).map_err(arrow)
}

fn take_columns(data: &RecordBatch, idx: &UInt32Array) -> Result<Vec<ArrayRef>, OperatorError> {
    data.columns()
        .iter()
        .map(|c| take(c.as_ref(), idx, None))
        .collect::<Result<_, _>>()
        .map_err(arrow)
}

impl KeyedOperator for JoinOperator {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        self.apply(0, change)
    }

    fn update_input(&mut self, input: usize, change: &ChangeBatch) -> Result<(), OperatorError> {
        self.apply(input.min(1), change)
    }

    fn finish(&mut self, _watermark: Option<Timestamp>) -> Result<Vec<ChangeBatch>, OperatorError> {
        Ok(std::mem::take(&mut self.pending))
    }

    fn finish_inputs(
        &mut self,
        watermarks: &[Option<Timestamp>],
    ) -> Result<Vec<ChangeBatch>, OperatorError> {
        self.watermarks = [
            watermarks.first().copied().flatten(),
            watermarks.get(1).copied().flatten(),
        ];
        match &self.interval {
            Some(i) if i.window_end.is_some() => {
                if let [Some(left), Some(right)] = self.watermarks {
                    for side in 0..2 {
                        self.expire(side, left.min(right));
                    }
                }
            }
            Some(interval) => {
                let interval = interval.clone();
                for side in 0..2 {
                    let Some(mut watermark) = self.watermarks[1 - side] else {
                        continue;
                    };
                    // A side that retracts keeps a row until its own watermark passes it too:
                    // until then the row may still be retracted, and the retraction must
                    // find it.
                    if !self.append_only[side] {
                        match self.watermarks[side].and_then(|own| interval.bound(side, own)) {
                            Some(own) => watermark = watermark.min(own),
                            None => continue,
                        }
                    }
                    self.expire(side, watermark);
                }
            }
            None => {}
        }
        Ok(std::mem::take(&mut self.pending))
    }

    fn output_watermark(&self, _input: Option<Timestamp>) -> Option<Timestamp> {
        // A row of one side may join a much older row of the other: no output column is
        // bounded by the inputs' watermarks, unless an interval bounds how much older. Then
        // an output row to come has a left time of at least the left watermark (a left row
        // to come) or the right watermark plus `lo` (a right row to come, matching a left
        // row at most `lo` before it).
        match &self.interval {
            Some(Interval {
                lo: Some(lo),
                watermark: true,
                ..
            }) => match self.watermarks {
                [Some(left), Some(right)] => Some(left.min(right.saturating_add(*lo))),
                _ => None,
            },
            _ => None,
        }
    }

    fn checkpoint(&self) -> Result<Vec<RecordBatch>, StateError> {
        Ok(vec![self.side_checkpoint(0)?, self.side_checkpoint(1)?])
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<(), StateError> {
        let [left, right] = state else {
            return Err(StateError::mismatch("a join's state is two batches"));
        };
        self.heap = 0;
        self.pending.clear();
        self.side_restore(0, left)?;
        self.side_restore(1, right)
    }

    fn state_size(&self) -> StateSize {
        // Keys and kept rows; bytes: the maps, plus the keys, rows and per-key row lists
        // counted in `heap` as they come and go.
        let keys = self.state[0].len() + self.state[1].len();
        StateSize {
            rows: (keys as u64) + self.kept[0] + self.kept[1],
            bytes: (self.heap.max(0) as usize
                + map_bytes(&self.state[0])
                + map_bytes(&self.state[1])) as u64,
        }
    }

    fn repartition(
        &self,
        old: &[Vec<RecordBatch>],
        n: usize,
        assign: &super::Assign<'_>,
    ) -> Result<Vec<Vec<RecordBatch>>, StateError> {
        let mut sides = Vec::with_capacity(2);
        for side in 0..2 {
            let batches = old
                .iter()
                .map(|state| {
                    state
                        .get(side)
                        .ok_or_else(|| StateError::mismatch("a join's state is two batches"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            sides.push(super::split_by_key(
                &batches,
                n,
                |keys| Ok(self.keys[side].decode((0..keys.len()).map(|i| keys.value(i)))?),
                assign,
            )?);
        }
        let right = sides.pop().unwrap_or_default();
        let left = sides.pop().unwrap_or_default();
        Ok(left
            .into_iter()
            .zip(right)
            .map(|(l, r)| vec![l, r])
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::test_util::{changes, sorted_lines};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn side() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn join(kind: JoinKind) -> JoinOperator {
        let key = || vec![Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>];
        let fields: Vec<Field> = ["lk", "lv", "rk", "rv"]
            .iter()
            .zip([
                DataType::Int64,
                DataType::Utf8,
                DataType::Int64,
                DataType::Utf8,
            ])
            .map(|(n, t)| Field::new(*n, t, true))
            .collect();
        let schema = match kind {
            JoinKind::Semi(_) | JoinKind::Anti(_) => side(),
            _ => Arc::new(Schema::new(fields)),
        };
        JoinOperator::new(
            kind,
            [key(), key()],
            vec![DataType::Int64],
            None,
            [side(), side()],
            schema,
            false,
        )
        .expect("a join")
    }

    fn step(op: &mut JoinOperator, input: usize, table: &str) -> Vec<String> {
        op.update_input(input, &changes(&side(), table))
            .expect("update");
        sorted_lines(&op.finish(None).expect("finish"))
    }

    /// Bytes and rows counted from scratch, to check the counters kept as state changes.
    fn recount(op: &JoinOperator) -> (isize, u64) {
        let mut heap = 0;
        let mut rows = 0;
        for state in &op.state {
            for (key, entry) in state {
                heap += 2 * key.len() as isize;
                for r in &entry.rows {
                    heap += (ROW_ENTRY_BYTES + r.row.len()) as isize;
                    if entry.index.is_some() {
                        heap += r.row.len() as isize;
                    }
                    rows += 1;
                }
            }
        }
        (heap, rows)
    }

    #[test]
    fn a_left_row_is_padded_until_its_first_match_and_after_its_last() {
        let mut op = join(JoinKind::Left);
        assert_eq!(
            step(&mut op, 0, "+ 1 a\n+ NULL n"),
            ["+ 1 a NULL NULL", "+ NULL n NULL NULL"]
        );
        assert_eq!(
            step(&mut op, 1, "+ 1 x\n+ 1 y"),
            ["+ 1 a 1 x", "+ 1 a 1 y", "- 1 a NULL NULL"]
        );
        assert_eq!(step(&mut op, 1, "- 1 x"), ["- 1 a 1 x"]);
        assert_eq!(step(&mut op, 1, "- 1 y"), ["+ 1 a NULL NULL", "- 1 a 1 y"]);
        assert_eq!(
            step(&mut op, 0, "- 1 a\n- NULL n"),
            ["- 1 a NULL NULL", "- NULL n NULL NULL"]
        );
        assert_eq!(op.state_size().rows, 0);
        assert!(
            op.state[0].is_empty() && op.state[1].is_empty(),
            "all state freed"
        );
    }

    #[test]
    fn an_anti_join_keeps_only_counts_of_the_side_it_does_not_output() {
        let mut op = join(JoinKind::Anti(0));
        assert_eq!(step(&mut op, 0, "+ 1 a\n+ 2 b"), ["+ 1 a", "+ 2 b"]);
        assert_eq!(step(&mut op, 1, "+ 1 x\n+ 1 y"), ["- 1 a"]);
        assert_eq!(op.kept, [2, 0], "right rows are only counted");
        assert_eq!(step(&mut op, 1, "- 1 x"), Vec::<String>::new());
        assert_eq!(step(&mut op, 1, "- 1 y"), ["+ 1 a"]);
    }

    #[test]
    fn counters_match_a_recount_and_state_round_trips_a_checkpoint() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut op = join(JoinKind::Full);
        // Live rows per side, so that only present rows are retracted.
        let mut live: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..300 {
            let input = rng.random_range(0..2);
            let line = if !live[input].is_empty() && rng.random_bool(0.4) {
                let row = live[input].swap_remove(rng.random_range(0..live[input].len()));
                format!("- {row}")
            } else {
                // Few keys, so that some keys hold more rows than are scanned.
                let row = format!("{} v{}", rng.random_range(0..3), rng.random_range(0..40));
                live[input].push(row.clone());
                format!("+ {row}")
            };
            step(&mut op, input, &line);
            let (heap, rows) = recount(&op);
            assert_eq!((op.heap, op.kept[0] + op.kept[1]), (heap, rows));
        }
        let mut back = join(JoinKind::Full);
        back.restore(&op.checkpoint().expect("checkpoint"))
            .expect("restore");
        assert_eq!((back.heap, back.kept), (op.heap, op.kept));
        assert_eq!(back.state_size().rows, op.state_size().rows);
        // Both go on alike.
        for table in ["- 0 v1\n+ 1 v2", "+ 2 v3\n+ 0 v9"] {
            assert_eq!(step(&mut back, 1, table), step(&mut op, 1, table));
        }
    }

    #[test]
    fn an_append_only_side_keeps_copies_apart_and_joins_as_if_it_merged_them() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // The left side only inserts (with many copies, many rows per key); the right side
        // inserts and deletes. The same join without the mark is the oracle.
        let mut fast = join(JoinKind::Full).with_append_only_inputs([true, false]);
        let mut slow = join(JoinKind::Full);
        let mut right: Vec<String> = Vec::new();
        // Each output row with its weight (a merged copy has weight 2, copies apart 1 each).
        let apply = |op: &mut JoinOperator,
                     input: usize,
                     line: &str,
                     view: &mut std::collections::BTreeMap<String, i64>| {
            op.update_input(input, &changes(&side(), line))
                .expect("update");
            for batch in op.finish(None).expect("finish") {
                let rendered = crate::operator::test_util::render(&batch);
                for (i, line) in rendered.lines().enumerate() {
                    let w = batch.weights().map_or(1, |w| w.value(i));
                    *view.entry(line[1..].to_string()).or_default() += w;
                }
            }
            view.retain(|_, w| *w != 0);
        };
        let (mut got, mut want) = (Default::default(), Default::default());
        for round in 0..400 {
            let (input, line) = if rng.random_bool(0.5) {
                let row = format!("{} v{}", rng.random_range(0..3), rng.random_range(0..8));
                (0, format!("+ {row}"))
            } else if !right.is_empty() && rng.random_bool(0.4) {
                let row = right.swap_remove(rng.random_range(0..right.len()));
                (1, format!("- {row}"))
            } else {
                let row = format!("{} w{}", rng.random_range(0..3), rng.random_range(0..8));
                right.push(row.clone());
                (1, format!("+ {row}"))
            };
            apply(&mut fast, input, &line, &mut got);
            apply(&mut slow, input, &line, &mut want);
            assert_eq!(got, want, "round {round}, seed {seed}");
            let (heap, rows) = recount(&fast);
            assert_eq!((fast.heap, fast.kept[0] + fast.kept[1]), (heap, rows));
            assert!(
                fast.state[0].values().all(|e| e.index.is_none()),
                "no index"
            );
            if round == 200 {
                let mut back = join(JoinKind::Full).with_append_only_inputs([true, false]);
                back.restore(&fast.checkpoint().expect("checkpoint"))
                    .expect("restore");
                assert_eq!(back.state_size(), fast.state_size());
                fast = back;
            }
        }
    }
}
