//! [`SlicedWindowAggregate`]: `GROUP BY keys, HOP/TUMBLE window` with `EMIT ON WINDOW CLOSE`,
//! computed by slicing.
//!
//! Each event updates one slice of width gcd(slide, size) of its group: one hash lookup and a
//! few additions, whatever size/slide is. When the watermark passes a window's end, the window
//! is the merge of its slices' partial aggregates (COUNT and SUM add, MIN and MAX compare), and
//! slices that no open window needs any more are freed. So the cost per event does not grow
//! with the number of windows an event belongs to; only the output does.
//!
//! The input is insert-only (a table with a watermark is append-only), so MIN and MAX need no
//! retraction state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::OperatorError;
use super::keys::{GroupKeys, RowMap, row_map};
use crate::state::{StateError, columns};
use crate::stream::{ChangeBatch, Timestamp};

const NAME: &str = "SlicedWindowAggregate";

fn df(source: datafusion::error::DataFusionError) -> OperatorError {
    OperatorError::datafusion(NAME, source)
}

fn arrow(source: datafusion::arrow::error::ArrowError) -> OperatorError {
    OperatorError::arrow(NAME, source)
}

/// An aggregate whose partial states merge by addition or comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceAggregate {
    /// `COUNT(*)`.
    CountStar,
    /// `COUNT(x)`.
    Count,
    /// `SUM(x)` of integers.
    SumInt,
    /// `SUM(x)` of floats.
    SumFloat,
    /// `MIN(x)` of integers or timestamps (as i64).
    MinInt,
    /// `MAX(x)` of integers or timestamps (as i64).
    MaxInt,
    /// `MIN(x)` of floats.
    MinFloat,
    /// `MAX(x)` of floats.
    MaxFloat,
}

/// One output column of the group: a plain key, or the window (its start plus an offset:
/// 0 for `window_start`, the size for `window_end`).
#[derive(Debug, Clone, Copy)]
pub enum GroupColumn {
    /// The `i`-th plain key.
    Key(usize),
    /// The window start plus this many nanoseconds.
    Window(i64),
}

/// A partial aggregate of one slice.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Partial {
    /// Count of values (or rows), for COUNT and for "any value seen" of SUM/MIN/MAX.
    n: i64,
    /// Integer SUM (wrapping on overflow, like Arrow's sum) or MIN/MAX.
    int: i64,
    float: f64,
}

const EMPTY: Partial = Partial {
    n: 0,
    int: 0,
    float: 0.0,
};

#[derive(Debug, Default)]
struct Group {
    /// Slice start → slot.
    /// (slice start, slot), ascending. Events mostly land in the last slice or append one, so
    /// a deque searched from the back beats a tree.
    slices: VecDeque<(Timestamp, usize)>,
    /// Windows starting at or before this were emitted.
    emitted_through: Option<Timestamp>,
    /// Emitted on close: the watermark at which the group next has a window to emit or a
    /// slice to free; it is listed under that time in `due`.
    due: Option<Timestamp>,
    /// Updating: windows whose last row is remembered in `emitted` (not final yet).
    windows: usize,
}

/// Maintains `SELECT keys…, window…, aggregates… GROUP BY keys, window EMIT ON WINDOW CLOSE`.
#[derive(Debug)]
pub struct SlicedWindowAggregate {
    keys: GroupKeys,
    /// The event time, over the input.
    time: Arc<dyn PhysicalExpr>,
    aggregates: Vec<(SliceAggregate, Option<Arc<dyn PhysicalExpr>>)>,
    group_columns: Vec<GroupColumn>,
    slide: i64,
    size: i64,
    slice: i64,
    schema: SchemaRef,
    group_index: RowMap<usize>,
    group_keys: Vec<Box<[u8]>>,
    groups: Vec<Group>,
    /// Slot-major partials: slot `s` holds `partials[s * n .. (s + 1) * n]`.
    partials: Vec<Partial>,
    free_slots: Vec<usize>,
    /// The watermark last seen: slices behind it cannot change any more.
    watermark: Option<Timestamp>,
    /// Emit as events arrive (retract + insert per changed window) rather than on close.
    updating: bool,
    /// Updating: slices changed since the last emit, and whether each slot is among them.
    dirty: Vec<(usize, Timestamp)>,
    slot_dirty: Vec<bool>,
    /// Updating: (group, window start) → index of its last emitted partials in `emitted`.
    emitted_index: HashMap<(usize, Timestamp), usize>,
    emitted: Vec<Partial>,
    /// Updating: free places in `emitted`.
    free_emitted: Vec<usize>,
    /// Updating: window end → the (group, window start) whose remembered rows the watermark
    /// makes final when it reaches that end.
    final_at: BTreeMap<Timestamp, Vec<(usize, Timestamp)>>,
    /// Emitted on close: watermark → groups that have something to do when it is reached
    /// (an entry is stale unless the group's `due` still says that time).
    due: BTreeMap<Timestamp, Vec<usize>>,
    /// Freed group slots, for new groups.
    free_groups: Vec<usize>,
    /// Bytes of the group keys (each is kept in the index and in `group_keys`).
    key_bytes: usize,
}

/// Merges partial `p` into `m`: COUNT and SUM add, MIN and MAX compare.
fn merge(kind: SliceAggregate, m: &mut Partial, p: Partial) {
    if p.n == 0 {
        return;
    }
    match kind {
        SliceAggregate::MinInt if m.n > 0 => m.int = m.int.min(p.int),
        SliceAggregate::MaxInt if m.n > 0 => m.int = m.int.max(p.int),
        SliceAggregate::MinFloat if m.n > 0 => m.float = m.float.min(p.float),
        SliceAggregate::MaxFloat if m.n > 0 => m.float = m.float.max(p.float),
        SliceAggregate::MinInt | SliceAggregate::MaxInt => m.int = p.int,
        SliceAggregate::MinFloat | SliceAggregate::MaxFloat => m.float = p.float,
        _ => {
            m.int = m.int.wrapping_add(p.int);
            m.float += p.float;
        }
    }
    m.n += p.n;
}

/// The width of the slices of windows of `slide` and `size`: gcd(slide, size), so that every
/// window starts and ends on a slice boundary.
pub fn slice_width(slide: i64, size: i64) -> i64 {
    if size == 0 {
        slide
    } else {
        slice_width(size, slide % size)
    }
}

impl SlicedWindowAggregate {
    /// A sliced window aggregate. `group_columns` and then `aggregates` make up `schema`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        time: Arc<dyn PhysicalExpr>,
        slide: i64,
        size: i64,
        aggregates: Vec<(SliceAggregate, Option<Arc<dyn PhysicalExpr>>)>,
        group_columns: Vec<GroupColumn>,
        schema: SchemaRef,
    ) -> Result<Self, OperatorError> {
        Ok(Self {
            keys: GroupKeys::new(keys, key_types).map_err(arrow)?,
            time,
            aggregates,
            group_columns,
            slide,
            size,
            slice: slice_width(slide, size),
            schema,
            group_index: row_map(0),
            group_keys: Vec::new(),
            groups: Vec::new(),
            partials: Vec::new(),
            free_slots: Vec::new(),
            watermark: None,
            updating: false,
            dirty: Vec::new(),
            slot_dirty: Vec::new(),
            emitted_index: HashMap::new(),
            key_bytes: 0,
            emitted: Vec::new(),
            free_emitted: Vec::new(),
            final_at: BTreeMap::new(),
            due: BTreeMap::new(),
            free_groups: Vec::new(),
        })
    }

    /// Emits every change of a window as events arrive (retraction of its old row, insertion
    /// of the new one) instead of once on close. The input must still be append-only.
    pub fn updating(mut self) -> Self {
        self.updating = true;
        self
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn slot(&mut self) -> usize {
        let n = self.aggregates.len().max(1);
        match self.free_slots.pop() {
            Some(s) => {
                self.partials[s * n..(s + 1) * n].fill(EMPTY);
                s
            }
            None => {
                let s = self.partials.len() / n;
                self.partials.extend(std::iter::repeat_n(EMPTY, n));
                s
            }
        }
    }

    fn new_group(&mut self, key: &[u8]) -> usize {
        self.key_bytes += 2 * key.len();
        let g = match self.free_groups.pop() {
            Some(g) => {
                self.group_keys[g] = key.into();
                g
            }
            None => {
                self.group_keys.push(key.into());
                self.groups.push(Group::default());
                self.groups.len() - 1
            }
        };
        self.group_index.insert(key.into(), g);
        g
    }

    /// Drops group `g`, which has no slice and no remembered row left, and keeps its slot.
    fn free_group(&mut self, g: usize) {
        let key = std::mem::take(&mut self.group_keys[g]);
        self.key_bytes -= 2 * key.len();
        self.group_index.remove(&key);
        self.groups[g] = Group::default();
        self.free_groups.push(g);
    }

    /// Emitted on close: the watermark at which group `g` next has a window to emit or a slice
    /// to free: the end of the first window not emitted yet that holds its first slice.
    fn due_of(&self, g: usize) -> Option<Timestamp> {
        let group = &self.groups[g];
        let &(front, _) = group.slices.front()?;
        let mut w = self.first_window(front);
        if let Some(done) = group.emitted_through {
            w = w.max(done + self.slide);
        }
        Some(w + self.size)
    }

    /// The start of the earliest window holding time `t`.
    fn first_window(&self, t: Timestamp) -> Timestamp {
        let (slide, size) = (self.slide, self.size);
        let mut w = t - t.rem_euclid(slide);
        while w - slide + size > t {
            w -= slide;
        }
        w
    }

    /// Emitted on close: lists group `g` under its due time, if that is earlier than where it
    /// is listed.
    fn schedule(&mut self, g: usize) {
        if self.updating {
            return;
        }
        let Some(due) = self.due_of(g) else {
            return;
        };
        if self.groups[g].due.is_none_or(|d| due < d) {
            self.groups[g].due = Some(due);
            self.due.entry(due).or_default().push(g);
        }
    }

    /// Updating: forgets the rows of windows the watermark made final, frees the slices no
    /// open window holds, and frees groups with neither left. Rows for those windows can no
    /// longer arrive (they would be behind the watermark) and are dropped if they do.
    fn expire(&mut self, watermark: Timestamp) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
        let mut touched = Vec::new();
        while let Some(entry) = self.final_at.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            for (g, w) in entry.remove() {
                if let Some(i) = self.emitted_index.remove(&(g, w)) {
                    self.free_emitted.push(i);
                    self.groups[g].windows -= 1;
                    touched.push(g);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for g in touched {
            self.free_slices(g, watermark);
            let group = &self.groups[g];
            if group.slices.is_empty() && group.windows == 0 {
                self.free_group(g);
            }
        }
    }

    /// Frees group `g`'s slices whose last window ends at or before `watermark`.
    fn free_slices(&mut self, g: usize, watermark: Timestamp) {
        let group = &mut self.groups[g];
        while let Some(&(s, slot)) = group.slices.front() {
            let last_window = s - s.rem_euclid(self.slide);
            if last_window + self.size > watermark {
                break;
            }
            group.slices.pop_front();
            self.free_slots.push(slot);
        }
    }

    /// Folds insertions into their slices.
    pub fn update(&mut self, input: &ChangeBatch) -> Result<(), OperatorError> {
        let rows = input.num_rows();
        if rows == 0 {
            return Ok(());
        }
        if !input.is_insert_only() {
            return Err(arrow(
                datafusion::arrow::error::ArrowError::InvalidArgumentError(
                    "a window emitted on close got a retraction; its input must be append-only"
                        .into(),
                ),
            ));
        }
        let data = input.data();
        let keys = self.keys.encode(data, NAME)?;
        let times = super::event_times(&self.time, data).map_err(df)?;
        let arguments = self
            .aggregates
            .iter()
            .map(|(kind, arg)| {
                let Some(arg) = arg else { return Ok(None) };
                let values = arg
                    .evaluate(data)
                    .and_then(|v| v.into_array(rows))
                    .map_err(df)?;
                let target = match kind {
                    SliceAggregate::SumFloat
                    | SliceAggregate::MinFloat
                    | SliceAggregate::MaxFloat => DataType::Float64,
                    _ => DataType::Int64,
                };
                let values = match values.data_type() {
                    DataType::Timestamp(..) => cast(
                        &crate::stream::watermark::nanos(&values).map_err(df)?,
                        &DataType::Int64,
                    ),
                    _ => cast(&values, &target),
                }
                .map_err(arrow)?;
                Ok(Some(values))
            })
            .collect::<Result<Vec<Option<ArrayRef>>, OperatorError>>()?;
        let n = self.aggregates.len().max(1);
        let closed_before = self.watermark.map(|w| w - self.size);
        for row in 0..rows {
            let key = keys.key(row);
            if times.is_null(row) {
                // A NULL time is in no window.
                continue;
            }
            let t = times.value(row);
            let slice = t - t.rem_euclid(self.slice);
            // Every window holding this slice has been emitted: the row is late.
            let last_window = t - t.rem_euclid(self.slide);
            if closed_before.is_some_and(|c| last_window <= c) {
                continue;
            }
            let g = match self.group_index.get(key) {
                Some(&g) => g,
                None => self.new_group(key),
            };
            let slot = match self.groups[g].slices.back() {
                Some(&(t, s)) if t == slice => s,
                Some(&(t, _)) if t > slice => {
                    match self.groups[g]
                        .slices
                        .binary_search_by_key(&slice, |&(t, _)| t)
                    {
                        Ok(i) => self.groups[g].slices[i].1,
                        Err(i) => {
                            let s = self.slot();
                            self.groups[g].slices.insert(i, (slice, s));
                            self.schedule(g);
                            s
                        }
                    }
                }
                _ => {
                    let s = self.slot();
                    self.groups[g].slices.push_back((slice, s));
                    self.schedule(g);
                    s
                }
            };
            if self.updating {
                if self.slot_dirty.len() <= slot {
                    self.slot_dirty.resize(slot + 1, false);
                }
                if !std::mem::replace(&mut self.slot_dirty[slot], true) {
                    self.dirty.push((g, slice));
                }
            }
            let weight = input.weights().map_or(1, |w| w.value(row));
            for (a, ((kind, _), values)) in self.aggregates.iter().zip(&arguments).enumerate() {
                // The row as a one-row partial, merged like a slice.
                let one = match (kind, values) {
                    (SliceAggregate::CountStar, _) | (_, None) => Partial { n: weight, ..EMPTY },
                    (_, Some(values)) if values.is_null(row) => continue,
                    (SliceAggregate::SumInt, Some(values)) => Partial {
                        n: weight,
                        int: values
                            .as_primitive::<Int64Type>()
                            .value(row)
                            .wrapping_mul(weight),
                        ..EMPTY
                    },
                    (SliceAggregate::SumFloat, Some(values)) => Partial {
                        n: weight,
                        float: values.as_primitive::<Float64Type>().value(row) * weight as f64,
                        ..EMPTY
                    },
                    (SliceAggregate::MinInt | SliceAggregate::MaxInt, Some(values)) => Partial {
                        n: weight,
                        int: values.as_primitive::<Int64Type>().value(row),
                        ..EMPTY
                    },
                    (SliceAggregate::MinFloat | SliceAggregate::MaxFloat, Some(values)) => {
                        Partial {
                            n: weight,
                            float: values.as_primitive::<Float64Type>().value(row),
                            ..EMPTY
                        }
                    }
                    (SliceAggregate::Count, Some(_)) => Partial { n: weight, ..EMPTY },
                };
                merge(*kind, &mut self.partials[slot * n + a], one);
            }
        }
        Ok(())
    }

    /// The final rows of every window ending at or before `watermark`; frees slices no open
    /// window needs.
    pub fn close_windows(
        &mut self,
        watermark: Timestamp,
    ) -> Result<Option<ChangeBatch>, OperatorError> {
        if self.updating {
            self.expire(watermark);
            return Ok(None);
        }
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
        // Only the groups due by this watermark have anything to do.
        let mut ready = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let (t, groups) = entry.remove_entry();
            ready.extend(
                groups
                    .into_iter()
                    .filter(|&g| self.groups[g].due == Some(t)),
            );
        }
        ready.sort_unstable();
        ready.dedup();
        let n = self.aggregates.len().max(1);
        let (slide, size) = (self.slide, self.size);
        // Output, column-wise.
        let mut out_groups: Vec<usize> = Vec::new();
        let mut out_windows: Vec<Timestamp> = Vec::new();
        let mut out_partials: Vec<Partial> = Vec::new();
        let mut merged = vec![EMPTY; n];
        // Consecutive windows share all but `slide` of their slices: when every aggregate can
        // take a slice back out (COUNT, integer SUM; MIN/MAX unless the leaving slice held the
        // extreme), the next window is the previous one minus the slices that left plus those
        // that entered. Float sums are always merged afresh, to stay exact.
        let slidable = self
            .aggregates
            .iter()
            .all(|(k, _)| !matches!(k, SliceAggregate::SumFloat));
        let mut emptied = Vec::new();
        for g in ready {
            let group = &self.groups[g];
            if group.slices.is_empty() {
                continue;
            }
            let first_slice = group.slices.front().expect("not empty").0;
            // The earliest window holding the first slice.
            let mut w = self.first_window(first_slice);
            if let Some(done) = group.emitted_through {
                w = w.max(done + slide);
            }
            let mut emitted_through = group.emitted_through;
            // The group's slices in time order; the window [w, w + size) holds slices[lo..hi].
            let slices = &group.slices;
            let (mut lo, mut hi) = (0usize, 0usize);
            // The window `merged` currently holds.
            let mut held: Option<Timestamp> = None;
            while w + size <= watermark {
                let stepped = slidable && held == Some(w - slide);
                let mut recompute = !stepped;
                while lo < slices.len() && slices[lo].0 < w {
                    if stepped && lo < hi {
                        recompute |= self.take_out(&mut merged, slices[lo].1);
                    }
                    lo += 1;
                }
                hi = hi.max(lo);
                while hi < slices.len() && slices[hi].0 < w + size {
                    if stepped {
                        self.fold_in(&mut merged, slices[hi].1);
                    }
                    hi += 1;
                }
                if recompute {
                    merged.fill(EMPTY);
                    for &(_, slot) in slices.range(lo..hi) {
                        self.fold_in(&mut merged, slot);
                    }
                }
                held = Some(w);
                if hi > lo {
                    out_groups.push(g);
                    out_windows.push(w);
                    out_partials.extend_from_slice(&merged);
                    emitted_through = Some(w);
                    w += slide;
                    continue;
                }
                // No slice in this window: jump to the first window holding the next one.
                match slices.get(hi) {
                    Some(&(next, _)) => w = self.first_window(next).max(w + slide),
                    None => break,
                }
            }
            let group = &mut self.groups[g];
            group.emitted_through = emitted_through;
            group.due = None;
            // Free slices whose last window has closed, and the group once none is left.
            self.free_slices(g, watermark);
            if self.groups[g].slices.is_empty() {
                emptied.push(g);
            } else {
                self.schedule(g);
            }
        }
        let out = if out_groups.is_empty() {
            None
        } else {
            Some(self.build(&out_groups, &out_windows, &out_partials)?)
        };
        // Freed after their keys were written out.
        for g in emptied {
            self.free_group(g);
        }
        Ok(out)
    }

    /// Updating: every window holding a slice that changed since the last call, merged from
    /// its slices; a retraction of its previous row and an insertion of the new one.
    pub fn emit_updates(&mut self) -> Result<Option<ChangeBatch>, OperatorError> {
        if !self.updating || self.dirty.is_empty() {
            return Ok(None);
        }
        let n = self.aggregates.len().max(1);
        let (slide, size) = (self.slide, self.size);
        let dirty = std::mem::take(&mut self.dirty);
        self.slot_dirty.fill(false);
        let mut windows: Vec<(usize, Timestamp)> = Vec::with_capacity(dirty.len() * 2);
        for (g, slice) in dirty {
            let mut w = slice - slice.rem_euclid(slide);
            while w + size > slice {
                windows.push((g, w));
                w -= slide;
            }
        }
        windows.sort_unstable();
        windows.dedup();
        let mut merged = vec![EMPTY; n];
        let (mut old_groups, mut old_windows, mut old_partials) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut new_groups, mut new_windows, mut new_partials) =
            (Vec::new(), Vec::new(), Vec::new());
        for (g, w) in windows {
            merged.fill(EMPTY);
            let slices = &self.groups[g].slices;
            let start = slices.partition_point(|&(t, _)| t < w);
            for &(t, slot) in slices.range(start..) {
                if t >= w + size {
                    break;
                }
                self.fold_in(&mut merged, slot);
            }
            let previous = self.emitted_index.get(&(g, w)).copied();
            if let Some(i) = previous {
                if self.emitted[i * n..(i + 1) * n] == merged[..] {
                    continue;
                }
                old_groups.push(g);
                old_windows.push(w);
                old_partials.extend_from_slice(&self.emitted[i * n..(i + 1) * n]);
                self.emitted[i * n..(i + 1) * n].copy_from_slice(&merged);
            } else {
                let i = match self.free_emitted.pop() {
                    Some(i) => {
                        self.emitted[i * n..(i + 1) * n].copy_from_slice(&merged);
                        i
                    }
                    None => {
                        self.emitted.extend_from_slice(&merged);
                        self.emitted.len() / n - 1
                    }
                };
                self.emitted_index.insert((g, w), i);
                self.groups[g].windows += 1;
                self.final_at.entry(w + size).or_default().push((g, w));
            }
            new_groups.push(g);
            new_windows.push(w);
            new_partials.extend_from_slice(&merged);
        }
        let mut parts = Vec::with_capacity(2);
        if !old_groups.is_empty() {
            let old = self.build(&old_groups, &old_windows, &old_partials)?;
            parts.push(ChangeBatch::retractions(old.data().clone()));
        }
        if !new_groups.is_empty() {
            parts.push(self.build(&new_groups, &new_windows, &new_partials)?);
        }
        match parts.len() {
            0 => Ok(None),
            1 => Ok(parts.pop()),
            _ => Ok(Some(
                ChangeBatch::concat(&self.schema, &parts).map_err(arrow)?,
            )),
        }
    }

    /// Merges slot `slot`'s partials into `merged`.
    fn fold_in(&self, merged: &mut [Partial], slot: usize) {
        let n = self.aggregates.len().max(1);
        for (a, (kind, _)) in self.aggregates.iter().enumerate() {
            merge(*kind, &mut merged[a], self.partials[slot * n + a]);
        }
    }

    /// Takes slot `slot`'s partials back out of `merged`; true when that is not possible (the
    /// slice held a MIN or MAX) and the window must be merged afresh.
    fn take_out(&self, merged: &mut [Partial], slot: usize) -> bool {
        let n = self.aggregates.len().max(1);
        let mut recompute = false;
        for (a, (kind, _)) in self.aggregates.iter().enumerate() {
            let p = self.partials[slot * n + a];
            let m = &mut merged[a];
            if p.n == 0 {
                continue;
            }
            match kind {
                SliceAggregate::MinInt | SliceAggregate::MaxInt => recompute |= p.int == m.int,
                SliceAggregate::MinFloat | SliceAggregate::MaxFloat => {
                    recompute |= p.float == m.float
                }
                _ => {
                    m.int = m.int.wrapping_sub(p.int);
                    m.float -= p.float;
                }
            }
            m.n -= p.n;
        }
        recompute
    }

    fn build(
        &self,
        groups: &[usize],
        windows: &[Timestamp],
        partials: &[Partial],
    ) -> Result<ChangeBatch, OperatorError> {
        let n = self.aggregates.len().max(1);
        let rows = groups.len();
        // Decode each distinct group's key once, then gather them per output row.
        let mut position: HashMap<usize, u32> = HashMap::new();
        let mut distinct: Vec<usize> = Vec::new();
        let indexes: Vec<u32> = groups
            .iter()
            .map(|&g| {
                *position.entry(g).or_insert_with(|| {
                    distinct.push(g);
                    (distinct.len() - 1) as u32
                })
            })
            .collect();
        let indexes = datafusion::arrow::array::UInt32Array::from(indexes);
        let key_arrays = self
            .keys
            .decode(distinct.iter().map(|&g| self.group_keys[g].as_ref()))
            .map_err(arrow)?
            .iter()
            .map(|a| datafusion::arrow::compute::take(a.as_ref(), &indexes, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(arrow)?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for column in &self.group_columns {
            columns.push(match column {
                GroupColumn::Key(i) => Arc::clone(&key_arrays[*i]),
                GroupColumn::Window(offset) => Arc::new(
                    TimestampNanosecondArray::from_iter_values(windows.iter().map(|w| w + offset)),
                ),
            });
        }
        for (a, (kind, _)) in self.aggregates.iter().enumerate() {
            let at = |r: usize| partials[r * n + a];
            let array: ArrayRef = match kind {
                SliceAggregate::CountStar | SliceAggregate::Count => {
                    Arc::new(Int64Array::from_iter_values((0..rows).map(|r| at(r).n)))
                }
                SliceAggregate::SumInt | SliceAggregate::MinInt | SliceAggregate::MaxInt => {
                    Arc::new(Int64Array::from_iter(
                        (0..rows).map(|r| (at(r).n > 0).then_some(at(r).int)),
                    ))
                }
                SliceAggregate::SumFloat | SliceAggregate::MinFloat | SliceAggregate::MaxFloat => {
                    Arc::new(Float64Array::from_iter(
                        (0..rows).map(|r| (at(r).n > 0).then(|| at(r).float)),
                    ))
                }
            };
            columns.push(array);
        }
        let batch = super::cast_to_schema(columns, &self.schema).map_err(arrow)?;
        Ok(ChangeBatch::inserts(batch))
    }
}

/// Checkpoints: four batches — the groups (key, last window emitted), their slices with one
/// partial per aggregate, the partials last emitted per open window (updating mode), and the
/// watermark. Slots are renumbered densely on restore.
impl SlicedWindowAggregate {
    fn partial_columns(
        columns: &mut Vec<(String, ArrayRef)>,
        prefix: &str,
        n: usize,
        partials: &[Partial],
    ) {
        for a in 0..n {
            let p = |f: fn(&Partial) -> i64| partials.iter().skip(a).step_by(n).map(f).collect();
            columns.push((format!("{prefix}{a}_n"), columns::i64s(p(|p| p.n))));
            columns.push((format!("{prefix}{a}_int"), columns::i64s(p(|p| p.int))));
            let floats = partials
                .iter()
                .skip(a)
                .step_by(n)
                .map(|p| p.float)
                .collect();
            columns.push((format!("{prefix}{a}_float"), columns::f64s(floats)));
        }
    }

    fn read_partials(
        batch: &RecordBatch,
        prefix: &str,
        n: usize,
    ) -> Result<Vec<Partial>, StateError> {
        let rows = batch.num_rows();
        let mut partials = vec![EMPTY; rows * n];
        for a in 0..n {
            let ns = columns::i64_column(batch, &format!("{prefix}{a}_n"))?;
            let ints = columns::i64_column(batch, &format!("{prefix}{a}_int"))?;
            let floats = columns::f64_column(batch, &format!("{prefix}{a}_float"))?;
            for r in 0..rows {
                partials[r * n + a] = Partial {
                    n: ns[r],
                    int: ints[r],
                    float: floats[r],
                };
            }
        }
        Ok(partials)
    }

    /// The state as batches.
    pub fn checkpoint(&self) -> Result<Vec<RecordBatch>, StateError> {
        let n = self.aggregates.len().max(1);
        let named = |columns: Vec<(String, ArrayRef)>| {
            columns::batch(
                columns
                    .iter()
                    .map(|(n, c)| (n.as_str(), Arc::clone(c)))
                    .collect(),
            )
        };
        let groups = named(vec![
            (
                "key".into(),
                columns::blobs(self.group_keys.iter().map(|k| Some(&**k))),
            ),
            (
                "emitted_through".into(),
                columns::opt_i64s(self.groups.iter().map(|g| g.emitted_through).collect()),
            ),
        ])?;
        let mut owner = Vec::new();
        let mut starts = Vec::new();
        let mut partials = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            for &(start, slot) in &group.slices {
                owner.push(g as i64);
                starts.push(start);
                partials.extend_from_slice(&self.partials[slot * n..(slot + 1) * n]);
            }
        }
        let mut slices = vec![
            ("group".to_string(), columns::i64s(owner)),
            ("start".to_string(), columns::i64s(starts)),
        ];
        Self::partial_columns(&mut slices, "a", n, &partials);
        let mut owner = Vec::new();
        let mut windows = Vec::new();
        let mut partials = Vec::new();
        for (&(g, w), &i) in &self.emitted_index {
            owner.push(g as i64);
            windows.push(w);
            partials.extend_from_slice(&self.emitted[i * n..(i + 1) * n]);
        }
        let mut emitted = vec![
            ("group".to_string(), columns::i64s(owner)),
            ("window".to_string(), columns::i64s(windows)),
        ];
        Self::partial_columns(&mut emitted, "e", n, &partials);
        let meta = named(vec![(
            "watermark".into(),
            columns::opt_i64s(vec![self.watermark]),
        )])?;
        Ok(vec![groups, named(slices)?, named(emitted)?, meta])
    }

    /// Replaces the state with a checkpoint's.
    pub fn restore(&mut self, state: &[RecordBatch]) -> Result<(), StateError> {
        let [groups, slices, emitted, meta] = state else {
            return Err(StateError::mismatch(
                "a sliced window's state is four batches",
            ));
        };
        let n = self.aggregates.len().max(1);
        let keys = columns::blob_column(groups, "key")?;
        self.group_index = row_map(groups.num_rows());
        self.group_keys = Vec::with_capacity(groups.num_rows());
        self.groups = columns::opt_i64_column(groups, "emitted_through")?
            .into_iter()
            .map(|emitted_through| Group {
                emitted_through,
                ..Group::default()
            })
            .collect();
        let owner = columns::i64_column(slices, "group")?;
        let starts = columns::i64_column(slices, "start")?;
        self.partials = Self::read_partials(slices, "a", n)?;
        self.free_slots.clear();
        for (slot, (&g, &start)) in owner.iter().zip(&starts).enumerate() {
            let group = self
                .groups
                .get_mut(g as usize)
                .ok_or_else(|| StateError::mismatch("a slice of no group"))?;
            group.slices.push_back((start, slot));
        }
        self.dirty.clear();
        self.slot_dirty = vec![false; owner.len()];
        let owner = columns::i64_column(emitted, "group")?;
        let windows = columns::i64_column(emitted, "window")?;
        self.emitted = Self::read_partials(emitted, "e", n)?;
        self.emitted_index = owner
            .iter()
            .zip(&windows)
            .enumerate()
            .map(|(i, (&g, &w))| ((g as usize, w), i))
            .collect();
        self.free_emitted.clear();
        self.final_at.clear();
        for &(g, w) in self.emitted_index.keys() {
            let group = self
                .groups
                .get_mut(g)
                .ok_or_else(|| StateError::mismatch("an emitted window of no group"))?;
            group.windows += 1;
            self.final_at.entry(w + self.size).or_default().push((g, w));
        }
        self.watermark = columns::opt_i64_column(meta, "watermark")?
            .first()
            .copied()
            .flatten();
        // Groups with neither slices nor remembered rows are free slots.
        self.key_bytes = 0;
        self.due.clear();
        self.free_groups.clear();
        for g in 0..groups.num_rows() {
            if self.groups[g].slices.is_empty() && self.groups[g].windows == 0 {
                self.groups[g] = Group::default();
                self.group_keys.push(Box::new([]));
                self.free_groups.push(g);
                continue;
            }
            let key: Box<[u8]> = keys.value(g).into();
            self.key_bytes += 2 * key.len();
            self.group_index.insert(key.clone(), g);
            self.group_keys.push(key);
            self.schedule(g);
        }
        Ok(())
    }
}

impl SlicedWindowAggregate {
    /// Slices in use, and the bytes the operator holds: the capacity of its tables, the group
    /// keys, and a slot of a group's slice list per slice.
    pub fn state_size(&self) -> super::StateSize {
        use super::{map_bytes, vec_bytes};
        let n = self.aggregates.len().max(1);
        let slices = self.partials.len() / n - self.free_slots.len();
        let bytes = self.key_bytes
            + map_bytes(&self.group_index)
            + vec_bytes(&self.group_keys)
            + vec_bytes(&self.groups)
            + slices * std::mem::size_of::<(Timestamp, usize)>()
            + vec_bytes(&self.partials)
            + vec_bytes(&self.free_slots)
            + vec_bytes(&self.dirty)
            + vec_bytes(&self.slot_dirty)
            + map_bytes(&self.emitted_index)
            + vec_bytes(&self.emitted)
            + vec_bytes(&self.free_emitted)
            + vec_bytes(&self.free_groups)
            // an entry per remembered window, and per due group, plus their lists
            + self.emitted_index.len() * std::mem::size_of::<(usize, Timestamp)>()
            + (self.final_at.len() + self.due.len()) * (64 + super::BTREE_ENTRY_OVERHEAD)
            + self.group_index.len() * std::mem::size_of::<usize>();
        super::StateSize {
            rows: slices as u64,
            bytes: bytes as u64,
        }
    }
}

impl super::KeyedOperator for SlicedWindowAggregate {
    fn schema(&self) -> SchemaRef {
        SlicedWindowAggregate::schema(self)
    }

    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        SlicedWindowAggregate::update(self, change)
    }

    fn checkpoint(&self) -> Result<Vec<RecordBatch>, StateError> {
        SlicedWindowAggregate::checkpoint(self)
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<(), StateError> {
        SlicedWindowAggregate::restore(self, state)
    }

    fn state_size(&self) -> super::StateSize {
        SlicedWindowAggregate::state_size(self)
    }

    fn repartition(
        &self,
        old: &[Vec<RecordBatch>],
        n: usize,
        assign: &super::Assign<'_>,
    ) -> Result<Vec<Vec<RecordBatch>>, StateError> {
        let mut group_parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        let mut slice_parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        let mut emitted_parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        // Groups placed in each new partition so far: the next one's index there.
        let mut placed = vec![0i64; n];
        let mut watermark: Option<Timestamp> = None;
        let mut schemas = None;
        for state in old {
            let [groups, slices, emitted, meta] = state.as_slice() else {
                return Err(StateError::mismatch(
                    "a sliced window's state is four batches",
                ));
            };
            let slice_owner = columns::i64_column(slices, "group")?;
            let emitted_owner = columns::i64_column(emitted, "group")?;
            // Groups with neither slices nor remembered rows are free slots: left behind.
            let mut live = vec![false; groups.num_rows()];
            for &g in slice_owner.iter().chain(&emitted_owner) {
                *usize::try_from(g)
                    .ok()
                    .and_then(|g| live.get_mut(g))
                    .ok_or_else(|| StateError::mismatch("state of no group"))? = true;
            }
            let live_groups: Vec<u32> = (0..groups.num_rows() as u32)
                .filter(|&g| live[g as usize])
                .collect();
            let keys = columns::blob_column(groups, "key")?;
            let decoded = self
                .keys
                .decode(live_groups.iter().map(|&g| keys.value(g as usize)))?;
            let targets = assign(&decoded, live_groups.len())?;
            // old group → (new partition, index there)
            let mut moved = vec![(0usize, 0i64); groups.num_rows()];
            for (&g, &q) in live_groups.iter().zip(&targets) {
                moved[g as usize] = (q, placed[q]);
                placed[q] += 1;
            }
            let kept = datafusion::arrow::compute::take_record_batch(
                groups,
                &datafusion::arrow::array::UInt32Array::from(live_groups),
            )?;
            for (q, piece) in super::split_rows(&kept, &targets, n)?
                .into_iter()
                .enumerate()
            {
                group_parts[q].push(piece);
            }
            for (batch, owner, parts) in [
                (slices, &slice_owner, &mut slice_parts),
                (emitted, &emitted_owner, &mut emitted_parts),
            ] {
                let targets: Vec<usize> = owner.iter().map(|&g| moved[g as usize].0).collect();
                let renumbered: Vec<i64> = owner.iter().map(|&g| moved[g as usize].1).collect();
                let at = batch.schema().index_of("group")?;
                let mut columns = batch.columns().to_vec();
                columns[at] = columns::i64s(renumbered);
                let batch = RecordBatch::try_new(batch.schema(), columns)?;
                for (q, piece) in super::split_rows(&batch, &targets, n)?
                    .into_iter()
                    .enumerate()
                {
                    parts[q].push(piece);
                }
            }
            if let Some(w) = columns::opt_i64_column(meta, "watermark")?
                .first()
                .copied()
                .flatten()
            {
                watermark = Some(watermark.map_or(w, |m| m.max(w)));
            }
            schemas = Some((groups.schema(), slices.schema(), emitted.schema()));
        }
        let (groups, slices, emitted) =
            schemas.ok_or_else(|| StateError::mismatch("no partition's state"))?;
        let groups = super::concat_parts(&groups, group_parts)?;
        let slices = super::concat_parts(&slices, slice_parts)?;
        let emitted = super::concat_parts(&emitted, emitted_parts)?;
        let meta = columns::batch(vec![("watermark", columns::opt_i64s(vec![watermark]))])?;
        Ok(groups
            .into_iter()
            .zip(slices)
            .zip(emitted)
            .map(|((g, s), e)| vec![g, s, e, meta.clone()])
            .collect())
    }

    fn finish(&mut self, watermark: Option<Timestamp>) -> Result<Vec<ChangeBatch>, OperatorError> {
        let mut out: Vec<ChangeBatch> = self.emit_updates()?.into_iter().collect();
        if let Some(watermark) = watermark {
            out.extend(self.close_windows(watermark)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::KeyedOperator;
    use crate::operator::test_util::{changes, sorted_lines, timed_input as input};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::col;

    /// `SELECT k, window_start, count(*), sum(v) … GROUP BY HOP(t, 10, 20), k`.
    fn hop() -> SlicedWindowAggregate {
        let schema = input();
        SlicedWindowAggregate::new(
            vec![col("k", &schema).unwrap()],
            vec![DataType::Utf8],
            col("t", &schema).unwrap(),
            10,
            20,
            vec![
                (SliceAggregate::CountStar, None),
                (SliceAggregate::SumInt, Some(col("v", &schema).unwrap())),
            ],
            vec![GroupColumn::Key(0), GroupColumn::Window(0)],
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("window_start", DataType::Int64, true),
                Field::new("n", DataType::Int64, true),
                Field::new("s", DataType::Int64, true),
            ])),
        )
        .unwrap()
    }

    /// The changes `finish` emits, one sorted line each.
    fn finish(op: &mut SlicedWindowAggregate, watermark: Option<Timestamp>) -> Vec<String> {
        sorted_lines(&KeyedOperator::finish(op, watermark).unwrap())
    }

    #[test]
    fn slices_are_the_gcd_of_slide_and_size() {
        assert_eq!(slice_width(10, 20), 10);
        assert_eq!(slice_width(4, 6), 2);
        assert_eq!(slice_width(5, 5), 5);
    }

    /// Emitted on close: each window once, when the watermark passes its end, with every row
    /// of its slices; nothing before.
    #[test]
    fn hop_windows_close_once_with_their_rows() {
        let mut op = hop();
        op.update(&changes(&input(), "+ a 5 1\n+ a 15 2\n+ b 25 4"))
            .unwrap();
        assert!(finish(&mut op, Some(9)).is_empty(), "no window ends by 9");
        assert_eq!(finish(&mut op, Some(20)), ["+ a -10 1 1", "+ a 0 2 3"]);
        // A window is never emitted twice.
        assert!(finish(&mut op, Some(20)).is_empty());
        op.update(&changes(&input(), "+ b 39 10")).unwrap();
        assert_eq!(
            finish(&mut op, Some(40)),
            ["+ a 10 1 2", "+ b 10 1 4", "+ b 20 2 14"]
        );
        assert!(
            op.update(&changes(&input(), "- a 5 1")).is_err(),
            "retractions are refused"
        );
    }

    /// Updating: every change of a window as rows arrive, the old row retracted.
    #[test]
    fn updating_hop_windows_retract_and_insert() {
        let mut op = hop().updating();
        op.update(&changes(&input(), "+ a 5 1")).unwrap();
        assert_eq!(finish(&mut op, None), ["+ a -10 1 1", "+ a 0 1 1"]);
        op.update(&changes(&input(), "+ a 15 2")).unwrap();
        assert_eq!(
            finish(&mut op, None),
            ["+ a 0 2 3", "+ a 10 1 2", "- a 0 1 1"]
        );
        // Nothing changed: nothing emitted, whatever the watermark.
        assert!(finish(&mut op, Some(100)).is_empty());
    }

    /// A checkpoint restored into a new operator carries on as the old one would.
    #[test]
    fn checkpoint_and_restore_carry_open_windows() {
        let mut op = hop();
        op.update(&changes(&input(), "+ a 5 1\n+ a 15 2")).unwrap();
        let state = op.checkpoint().unwrap();
        let mut restored = hop();
        restored.restore(&state).unwrap();
        assert_eq!(finish(&mut restored, Some(20)), finish(&mut op, Some(20)));
        assert_eq!(finish(&mut restored, Some(30)), ["+ a 10 1 2"]);
    }

    /// Keys that come and go over time: groups, slices and remembered rows whose windows the
    /// watermark passed are freed, in both modes, so state follows the open windows, not every
    /// key ever seen; a restored operator carries on with the same figures.
    #[test]
    fn state_behind_the_watermark_is_freed() {
        for updating in [false, true] {
            let mut op = if updating { hop().updating() } else { hop() };
            let mut emitted = 0;
            for epoch in 0..50i64 {
                // 20 new keys per epoch, one row each at time 10 * epoch
                let rows: String = (0..20)
                    .map(|k| format!("+ e{epoch}k{k} {} 1\n", 10 * epoch))
                    .collect();
                op.update(&changes(&input(), &rows)).unwrap();
                emitted += finish(&mut op, Some(10 * epoch)).len();
                // windows are 20 wide: a key's slice is needed for three epochs at most
                assert!(
                    op.group_index.len() <= 60,
                    "{} groups",
                    op.group_index.len()
                );
                assert!(op.groups.len() <= 80, "{} group slots", op.groups.len());
                assert!(op.emitted_index.len() <= 120);
                assert!(op.state_size().rows <= 60);
                if epoch == 25 {
                    let mut restored = if updating { hop().updating() } else { hop() };
                    restored.restore(&op.checkpoint().unwrap()).unwrap();
                    assert_eq!(restored.state_size().rows, op.state_size().rows);
                    assert_eq!(restored.group_index.len(), op.group_index.len());
                    assert_eq!(restored.emitted_index.len(), op.emitted_index.len());
                    op = restored;
                }
            }
            // every key's two windows were emitted (updating: once each, as rows arrived)
            let closed = if updating { 50 * 20 * 2 } else { 48 * 20 * 2 };
            assert!(
                emitted >= closed,
                "{emitted} rows emitted, updating: {updating}"
            );
            // a late row for a freed group is dropped, not counted into a final window
            assert!(finish(&mut op, Some(1000)).len() <= 40 * 2);
            op.update(&changes(&input(), "+ e0k0 0 1")).unwrap();
            assert_eq!(finish(&mut op, Some(1000)), Vec::<String>::new());
            assert_eq!(op.state_size().rows, 0);
            assert_eq!(op.group_index.len(), 0);
        }
    }
}
