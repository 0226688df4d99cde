//! [`GroupAggregateOperator`]: `GROUP BY` with aggregates that stay right under retractions.
//!
//! Group keys go through Arrow's row format; each group has an index into typed state vectors
//! (one per aggregate), so a batch updates state with plain arithmetic per row and no per-row
//! allocation. MIN, MAX, BOOL_AND/OR, STRING_AGG and COUNT(DISTINCT) keep a count per value
//! (deleting the current minimum gives the next one).
//!
//! [`update`](GroupAggregateOperator::update) folds changes into the state and marks groups
//! dirty; [`emit`](GroupAggregateOperator::emit) (at a barrier) emits, per dirty group, the
//! retraction of its old output row and the insertion of its new one; a group whose row count
//! drops to zero emits only the retraction and disappears. The old row is computed from the
//! state when a group is first changed after an emit, so the operator keeps no copy of its
//! output, only of the groups that changed in the epoch. Without `GROUP BY` there is always
//! exactly one output row, as in batch SQL.
//!
//! With `EMIT ON WINDOW CLOSE`, nothing is emitted while a window is open:
//! [`close_windows`](GroupAggregateOperator::close_windows) emits each group once, final, when
//! the watermark passes the end of its window, and frees its state.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray,
    UInt32Array,
};
use datafusion::arrow::compute::{cast, take, take_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Float64Type, Int64Type, SchemaRef, TimestampNanosecondType,
};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::keys::{EncodedKeys, GroupKeys, RowMap, row_map};
use super::{Operator, OperatorError};
use crate::state::{StateError, columns};
use crate::stream::{ChangeBatch, Timestamp};

const NAME: &str = "GroupAggregate";

/// A count per integer value, for `COUNT(DISTINCT)` of an integer.
type IntCounts = std::collections::HashMap<i64, i64, datafusion::common::hash_utils::RandomState>;

/// What one value of [`IntCounts`] costs: its entry and the table's control byte, at the
/// table's usual load.
const INT_ENTRY_BYTES: usize = 2 * std::mem::size_of::<(i64, i64)>() + 2;

/// Integer types whose every value is an `i64`.
fn fits_i64(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}
const ACCUMULATORS: &str = "an aggregate's accumulators";

/// The aggregate functions the operator maintains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateKind {
    /// `COUNT(*)`: rows in the group.
    CountStar,
    /// `COUNT(x)`: non-null values.
    Count,
    /// `COUNT(DISTINCT x)`: distinct non-null values.
    CountDistinct,
    /// `SUM(x)` over integers (Int64 result) or floats (Float64 result); NULL when no value.
    Sum,
    /// `AVG(x)` as Float64; NULL when no value.
    Avg,
    /// `MIN(x)` of any orderable type.
    Min,
    /// `MAX(x)` of any orderable type.
    Max,
    /// `BOOL_AND(x)`: the minimum of booleans.
    BoolAnd,
    /// `BOOL_OR(x)`: the maximum of booleans.
    BoolOr,
    /// `STRING_AGG(x, separator)`: the values in ascending order, joined.
    StringAgg(String),
    /// Any other aggregate function of DataFusion, kept by its `Accumulator`s, one per group.
    DataFusion(Arc<DataFusionAggregate>),
}

/// An aggregate DataFusion computes (`array_agg`, `stddev`, `percentile_cont`, `bit_and`, …):
/// each group keeps one of its `Accumulator`s, fed the group's rows of a batch in one call.
/// Over input that retracts, only functions whose `retract_batch` removes any earlier value
/// (not only the oldest, as a sliding window frame does) are planned: see
/// [`DataFusionAggregate::retracts_exactly`].
#[derive(Debug)]
pub struct DataFusionAggregate {
    /// The function with its arguments, `DISTINCT` and `ORDER BY`.
    pub expr: Arc<datafusion::physical_expr::aggregate::AggregateFunctionExpr>,
    /// `FILTER (WHERE …)`: rows where it is not true are skipped.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Whether the input retracts: accumulators are made for `retract_batch`.
    pub retracting: bool,
}

impl PartialEq for DataFusionAggregate {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for DataFusionAggregate {}

impl DataFusionAggregate {
    /// Functions whose `retract_batch` removes the values it is given, whichever rows they
    /// came in: sums and counts of them (`avg`, the variances, the regressions), XOR, and the
    /// exact percentiles, which count each value. Others (`array_agg`, `first_value`, `min` as
    /// a sliding window) retract the oldest rows, whatever they are passed.
    pub fn retracts_exactly(name: &str, distinct: bool) -> bool {
        !distinct
            && (matches!(
                name,
                "sum"
                    | "count"
                    | "avg"
                    | "stddev"
                    | "stddev_pop"
                    | "var"
                    | "var_pop"
                    | "corr"
                    | "covar_samp"
                    | "covar_pop"
                    | "bit_xor"
                    | "median"
                    | "percentile_cont"
            ) || name.starts_with("regr_"))
    }

    /// A new accumulator for one group.
    fn accumulator(
        &self,
    ) -> datafusion::error::Result<Box<dyn datafusion::logical_expr::Accumulator>> {
        if self.retracting {
            self.expr.create_sliding_accumulator()
        } else {
            self.expr.create_accumulator()
        }
    }

    /// The accumulator's input columns over `batch`: the arguments, then the `ORDER BY` keys.
    fn inputs(&self, batch: &RecordBatch) -> datafusion::error::Result<Vec<ArrayRef>> {
        let rows = batch.num_rows();
        self.expr
            .expressions()
            .iter()
            .chain(self.expr.order_bys().iter().map(|s| &s.expr))
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(rows)))
            .collect()
    }
}

/// One aggregate of the select list.
#[derive(Debug)]
pub struct AggregateCall {
    /// Which function.
    pub kind: AggregateKind,
    /// Its argument over the input schema (`None` for `COUNT(*)`).
    pub argument: Option<Arc<dyn PhysicalExpr>>,
    /// The argument's type (for MIN/MAX output and SUM's integer or float path).
    pub argument_type: DataType,
}

/// The group key that names a window, for `EMIT ON WINDOW CLOSE`.
#[derive(Debug, Clone, Copy)]
pub struct WindowKey {
    /// Index of the key among the group keys.
    pub key: usize,
    /// The window ends at key + `end_offset` (the size for a window start, 0 for an end).
    pub end_offset: i64,
}

/// Per-aggregate state, one slot per group index.
#[derive(Debug)]
enum AggregateState {
    /// COUNT(*) and COUNT(x).
    Counts(Vec<i64>),
    /// SUM/AVG of integers: exact sums and counts of non-null values.
    IntSums { sums: Vec<i128>, counts: Vec<i64> },
    /// SUM of decimals: exact unscaled sums at the argument's scale.
    DecimalSums {
        sums: Vec<i128>,
        counts: Vec<i64>,
        scale: i8,
    },
    /// SUM/AVG of floats.
    FloatSums { sums: Vec<f64>, counts: Vec<i64> },
    /// MIN, MAX, COUNT(DISTINCT), …: a count per value, values in row format (ordered).
    Values {
        converter: RowConverter,
        values: Vec<BTreeMap<Box<[u8]>, i64>>,
    },
    /// COUNT(DISTINCT): a count per value, values in row format, hashed (no order needed).
    Distinct {
        converter: RowConverter,
        values: Vec<RowMap<i64>>,
    },
    /// COUNT(DISTINCT) of an integer: a count per value, the values as they are (no row
    /// encoding, no allocation per value). `converter` writes checkpoints in `Distinct`'s form.
    DistinctInts {
        converter: RowConverter,
        argument_type: DataType,
        values: Vec<IntCounts>,
    },
    /// MIN, MAX, BOOL_AND/OR over an append-only input: only the extreme, in row format.
    Extreme {
        converter: RowConverter,
        values: Vec<Option<Box<[u8]>>>,
        smallest: bool,
    },
    /// A DataFusion aggregate: an accumulator per group (made at its first value) and the
    /// bytes it reported last (its `size()`, counted in `heap`). Behind a mutex because
    /// DataFusion evaluates and reads state through `&mut`, and a checkpoint reads `&self`.
    Accumulators {
        aggregate: Arc<DataFusionAggregate>,
        slots: std::sync::Mutex<Vec<Option<Box<dyn datafusion::logical_expr::Accumulator>>>>,
        sizes: Vec<usize>,
    },
}

/// Maintains `SELECT keys…, aggregates… GROUP BY keys`.
#[derive(Debug)]
pub struct GroupAggregateOperator {
    /// Group keys over the input schema.
    keys: GroupKeys,
    /// Aggregates, in output order after the keys.
    aggregates: Vec<AggregateCall>,
    /// Output schema: the keys, then the aggregates.
    schema: SchemaRef,
    /// Group key bytes → group index.
    group_index: RowMap<usize>,
    /// Group index → key bytes (to rebuild key columns on output).
    group_keys: Vec<Box<[u8]>>,
    /// Rows (sum of weights) per group; a group with 0 rows has no output row.
    group_rows: Vec<i64>,
    /// State of each aggregate, indexed by group.
    states: Vec<AggregateState>,
    /// The output rows of the groups changed since the last emit, as they stood before their
    /// first change (what the last emit gave for them), to retract; in the order of
    /// `before_groups`, a subsequence of `dirty`. Only changed groups are kept: the operator
    /// holds no copy of its whole output.
    before: Vec<RecordBatch>,
    before_groups: Vec<usize>,
    /// Encodes output rows.
    out_converter: RowConverter,
    /// Groups changed since the last emit, in first-touched order.
    dirty: Vec<usize>,
    /// Whether each group is in `dirty`.
    is_dirty: Vec<bool>,
    /// No `GROUP BY`: one group that always has an output row.
    global: bool,
    /// `EMIT ON WINDOW CLOSE` on this window key.
    emit_on_close: Option<WindowKey>,
    /// Over append-only input, without `EMIT ON WINDOW CLOSE`: the window key whose windows
    /// are final once the watermark passes their end, and then freed (their rows stay in the
    /// view; no change can reach them, as the table drops rows behind its watermark).
    expire: Option<WindowKey>,
    /// Open windows: window key (ns) → groups, for closing in order. A group freed before its
    /// window closed may still be listed; `group_window` tells.
    open_windows: BTreeMap<Timestamp, Vec<usize>>,
    /// The window each group belongs to, while it is listed in `open_windows`.
    group_window: Vec<Option<Timestamp>>,
    /// Group indexes freed (their rows all retracted, or their window closed), reused by new
    /// groups, so that the state is as large as the groups alive, not every group ever seen.
    free_groups: Vec<usize>,
    /// Bytes owned through pointers: group keys (in the index and the key list), MIN/MAX
    /// values and per-value counts. Kept as they change; see [`Self::state_size`].
    heap: usize,
}

fn df(source: datafusion::error::DataFusionError) -> OperatorError {
    OperatorError::datafusion(NAME, source)
}

fn arrow(source: datafusion::arrow::error::ArrowError) -> OperatorError {
    OperatorError::arrow(NAME, source)
}

fn is_float(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

impl GroupAggregateOperator {
    /// An operator grouping by `group_by` (with their types) and computing `aggregates`.
    pub fn new(
        group_by: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        aggregates: Vec<AggregateCall>,
        schema: SchemaRef,
    ) -> Result<Self, OperatorError> {
        let states = aggregates
            .iter()
            .map(|a| {
                Ok(match a.kind {
                    AggregateKind::CountStar | AggregateKind::Count => {
                        AggregateState::Counts(Vec::new())
                    }
                    AggregateKind::Sum | AggregateKind::Avg if is_float(&a.argument_type) => {
                        AggregateState::FloatSums {
                            sums: Vec::new(),
                            counts: Vec::new(),
                        }
                    }
                    AggregateKind::Sum => match a.argument_type {
                        DataType::Decimal128(_, scale) => AggregateState::DecimalSums {
                            sums: Vec::new(),
                            counts: Vec::new(),
                            scale,
                        },
                        _ => AggregateState::IntSums {
                            sums: Vec::new(),
                            counts: Vec::new(),
                        },
                    },
                    AggregateKind::Avg => AggregateState::IntSums {
                        sums: Vec::new(),
                        counts: Vec::new(),
                    },
                    AggregateKind::CountDistinct if fits_i64(&a.argument_type) => {
                        AggregateState::DistinctInts {
                            converter: RowConverter::new(vec![SortField::new(
                                a.argument_type.clone(),
                            )])
                            .map_err(arrow)?,
                            argument_type: a.argument_type.clone(),
                            values: Vec::new(),
                        }
                    }
                    AggregateKind::CountDistinct => AggregateState::Distinct {
                        converter: RowConverter::new(vec![SortField::new(a.argument_type.clone())])
                            .map_err(arrow)?,
                        values: Vec::new(),
                    },
                    AggregateKind::Min
                    | AggregateKind::Max
                    | AggregateKind::BoolAnd
                    | AggregateKind::BoolOr
                    | AggregateKind::StringAgg(_) => AggregateState::Values {
                        converter: RowConverter::new(vec![SortField::new(a.argument_type.clone())])
                            .map_err(arrow)?,
                        values: Vec::new(),
                    },
                    AggregateKind::DataFusion(ref aggregate) => AggregateState::Accumulators {
                        aggregate: Arc::clone(aggregate),
                        slots: std::sync::Mutex::new(Vec::new()),
                        sizes: Vec::new(),
                    },
                })
            })
            .collect::<Result<Vec<_>, OperatorError>>()?;
        // Without GROUP BY there is one group, which always has an output row.
        let global = group_by.is_empty();
        let out_converter = RowConverter::new(
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )
        .map_err(arrow)?;
        let mut operator = Self {
            out_converter,
            keys: GroupKeys::new(group_by, key_types).map_err(arrow)?,
            aggregates,
            schema,
            group_index: row_map(0),
            group_keys: Vec::new(),
            group_rows: Vec::new(),
            states,
            before: Vec::new(),
            before_groups: Vec::new(),
            dirty: Vec::new(),
            is_dirty: Vec::new(),
            global,
            emit_on_close: None,
            expire: None,
            open_windows: BTreeMap::new(),
            group_window: Vec::new(),
            free_groups: Vec::new(),
            heap: 0,
        };
        if global {
            // The one group exists from the start, so that an empty input has its row.
            let g = operator.new_group(Box::new([]));
            operator.mark_dirty(g);
        }
        Ok(operator)
    }

    /// The input never retracts (an append-only table, an `EMIT ON WINDOW CLOSE` view): MIN,
    /// MAX and BOOL_AND/OR keep only the extreme instead of a count per value.
    pub fn with_append_only_input(mut self) -> Self {
        for (call, state) in self.aggregates.iter().zip(self.states.iter_mut()) {
            let smallest = match call.kind {
                AggregateKind::Min | AggregateKind::BoolAnd => true,
                AggregateKind::Max | AggregateKind::BoolOr => false,
                _ => continue,
            };
            if let AggregateState::Values { converter, values } = state
                && values.iter().all(BTreeMap::is_empty)
            {
                let converter = std::mem::replace(
                    converter,
                    RowConverter::new(Vec::new()).expect("an empty row converter"),
                );
                *state = AggregateState::Extreme {
                    converter,
                    values: vec![None; values.len()],
                    smallest,
                };
            }
        }
        self
    }

    /// Emits each window once, when the watermark passes its end (`EMIT ON WINDOW CLOSE`).
    pub fn with_emit_on_window_close(mut self, window: WindowKey) -> Self {
        self.emit_on_close = Some(window);
        self
    }

    /// Over append-only input: frees each window's groups once the watermark passes the
    /// window's end (their last rows were emitted before).
    pub fn with_window_expiry(mut self, window: WindowKey) -> Self {
        self.expire = Some(window);
        self
    }

    /// The window key windows are closed on, in either mode.
    fn closing(&self) -> Option<WindowKey> {
        self.emit_on_close.or(self.expire)
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn new_group(&mut self, key: Box<[u8]>) -> usize {
        self.heap += 2 * key.len();
        if let Some(g) = self.free_groups.pop() {
            // `free` left the slot's state empty; it may still be listed as dirty, which
            // `emit` handles like any dirty group.
            self.group_index.insert(key.clone(), g);
            self.group_keys[g] = key;
            return g;
        }
        let i = self.group_keys.len();
        self.group_index.insert(key.clone(), i);
        self.group_keys.push(key);
        self.group_rows.push(0);
        self.is_dirty.push(false);
        self.group_window.push(None);
        for state in &mut self.states {
            match state {
                AggregateState::Counts(c) => c.push(0),
                AggregateState::IntSums { sums, counts }
                | AggregateState::DecimalSums { sums, counts, .. } => {
                    sums.push(0);
                    counts.push(0);
                }
                AggregateState::FloatSums { sums, counts } => {
                    sums.push(0.0);
                    counts.push(0);
                }
                AggregateState::Values { values, .. } => values.push(BTreeMap::new()),
                AggregateState::Distinct { values, .. } => values.push(row_map(0)),
                AggregateState::DistinctInts { values, .. } => values.push(IntCounts::default()),
                AggregateState::Extreme { values, .. } => values.push(None),
                AggregateState::Accumulators { slots, sizes, .. } => {
                    crate::sync::lock(slots, ACCUMULATORS).push(None);
                    sizes.push(0);
                }
            }
        }
        i
    }

    /// Marks `groups` changed; for each first changed since the last emit that has an output
    /// row, keeps that row (computed from the state before the change) to retract at emit.
    fn remember_before(&mut self, groups: &[usize]) -> Result<(), OperatorError> {
        let start = self.before_groups.len();
        for &g in groups {
            if !std::mem::replace(&mut self.is_dirty[g], true) {
                self.dirty.push(g);
                if self.emit_on_close.is_none() && (self.global || self.group_rows[g] > 0) {
                    self.before_groups.push(g);
                }
            }
        }
        if self.before_groups.len() > start {
            let batch = self.output_batch(&self.before_groups[start..])?;
            self.before.push(batch);
        }
        Ok(())
    }

    fn mark_dirty(&mut self, g: usize) {
        if !std::mem::replace(&mut self.is_dirty[g], true) {
            self.dirty.push(g);
        }
    }

    /// The group index of each input row, creating groups as needed; new groups are listed
    /// with the first row that made them.
    fn group_indexes(
        &mut self,
        keys: &EncodedKeys,
        rows: usize,
        created: &mut Vec<(usize, usize)>,
    ) -> Vec<usize> {
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let key = keys.key(row);
            let index = match self.group_index.get(key) {
                Some(&i) => i,
                None => {
                    let i = self.new_group(key.into());
                    created.push((i, row));
                    i
                }
            };
            out.push(index);
        }
        out
    }

    /// Folds a batch of changes into the state.
    pub fn update(&mut self, input: &ChangeBatch) -> Result<(), OperatorError> {
        let rows = input.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let data = input.data();
        let keys = self.keys.encode(data, NAME)?;
        let mut created = Vec::new();
        let groups = self.group_indexes(&keys, rows, &mut created);
        if let Some(window) = self.closing()
            && !created.is_empty()
        {
            let times = crate::stream::watermark::nanos(&keys.columns[window.key]).map_err(df)?;
            let times = times.as_primitive::<TimestampNanosecondType>();
            for (g, row) in created {
                // A NULL window never closes; it is emitted by no watermark.
                if times.is_valid(row) {
                    self.open_windows
                        .entry(times.value(row))
                        .or_default()
                        .push(g);
                    self.group_window[g] = Some(times.value(row));
                }
            }
        }
        self.remember_before(&groups)?;
        let weight = |i: usize| input.weights().map_or(1, |w| w.value(i));
        for (i, &g) in groups.iter().enumerate() {
            self.group_rows[g] += weight(i);
        }
        // Each row's weight, once for every DataFusion aggregate of the batch.
        let mut weights: Option<Vec<i64>> = None;
        for (call, state) in self.aggregates.iter().zip(self.states.iter_mut()) {
            if let AggregateState::Accumulators {
                aggregate,
                slots,
                sizes,
            } = state
            {
                let weights = weights.get_or_insert_with(|| (0..rows).map(weight).collect());
                let mut slots = crate::sync::lock(slots, ACCUMULATORS);
                update_accumulators(
                    aggregate,
                    &mut slots,
                    sizes,
                    &mut self.heap,
                    data,
                    &groups,
                    weights,
                )?;
                continue;
            }
            let argument = match &call.argument {
                None => None,
                Some(e) => Some(
                    e.evaluate(data)
                        .and_then(|v| v.into_array(rows))
                        .map_err(df)?,
                ),
            };
            match state {
                AggregateState::Counts(counts) => {
                    for (i, &g) in groups.iter().enumerate() {
                        if argument.as_ref().is_none_or(|a| a.is_valid(i)) {
                            counts[g] += weight(i);
                        }
                    }
                }
                AggregateState::IntSums { sums, counts } => {
                    let values = cast(
                        argument.as_ref().expect("SUM has an argument"),
                        &DataType::Int64,
                    )
                    .map_err(arrow)?;
                    let values = values.as_primitive::<Int64Type>();
                    add_exact(sums, counts, &groups, weight, |i| {
                        values.is_valid(i).then(|| i128::from(values.value(i)))
                    });
                }
                AggregateState::DecimalSums {
                    sums,
                    counts,
                    scale,
                } => {
                    let values = cast(
                        argument.as_ref().expect("SUM has an argument"),
                        &DataType::Decimal128(38, *scale),
                    )
                    .map_err(arrow)?;
                    let values = values.as_primitive::<Decimal128Type>();
                    add_exact(sums, counts, &groups, weight, |i| {
                        values.is_valid(i).then(|| values.value(i))
                    });
                }
                AggregateState::FloatSums { sums, counts } => {
                    let values = cast(
                        argument.as_ref().expect("SUM has an argument"),
                        &DataType::Float64,
                    )
                    .map_err(arrow)?;
                    let values = values.as_primitive::<Float64Type>();
                    for (i, &g) in groups.iter().enumerate() {
                        if values.is_valid(i) {
                            sums[g] += values.value(i) * weight(i) as f64;
                            counts[g] += weight(i);
                        }
                    }
                }
                AggregateState::Extreme {
                    converter,
                    values,
                    smallest,
                } => {
                    let argument = argument.expect("MIN/MAX have an argument");
                    let encoded = converter
                        .convert_columns(std::slice::from_ref(&argument))
                        .map_err(arrow)?;
                    for (i, &g) in groups.iter().enumerate() {
                        if argument.is_null(i) {
                            continue;
                        }
                        if weight(i) < 0 {
                            return Err(arrow(
                                datafusion::arrow::error::ArrowError::InvalidArgumentError(
                                    "a retraction reached MIN/MAX planned for an append-only input"
                                        .into(),
                                ),
                            ));
                        }
                        let value = encoded.row(i).data();
                        let better = match &values[g] {
                            None => true,
                            Some(current) if *smallest => value < current.as_ref(),
                            Some(current) => value > current.as_ref(),
                        };
                        if better {
                            self.heap += value.len();
                            if let Some(old) = values[g].replace(value.into()) {
                                self.heap -= old.len();
                            }
                        }
                    }
                }
                // Fed above, a group at a time.
                AggregateState::Accumulators { .. } => {}
                AggregateState::DistinctInts { values, .. } => {
                    let argument = argument.expect("COUNT(DISTINCT) has an argument");
                    let ints = cast(&argument, &DataType::Int64).map_err(arrow)?;
                    let ints = ints.as_primitive::<Int64Type>();
                    for (i, &g) in groups.iter().enumerate() {
                        if ints.is_null(i) {
                            continue;
                        }
                        match values[g].entry(ints.value(i)) {
                            std::collections::hash_map::Entry::Occupied(mut entry) => {
                                *entry.get_mut() += weight(i);
                                if *entry.get() == 0 {
                                    entry.remove();
                                    self.heap -= INT_ENTRY_BYTES;
                                }
                            }
                            std::collections::hash_map::Entry::Vacant(entry) => {
                                if weight(i) != 0 {
                                    entry.insert(weight(i));
                                    self.heap += INT_ENTRY_BYTES;
                                }
                            }
                        }
                    }
                }
                AggregateState::Distinct { converter, values } => {
                    let argument = argument.expect("COUNT(DISTINCT) has an argument");
                    count_values(
                        converter,
                        values,
                        &mut self.heap,
                        &argument,
                        &groups,
                        weight,
                    )?;
                }
                AggregateState::Values { converter, values } => {
                    let argument = argument.expect("value aggregates have an argument");
                    count_values(
                        converter,
                        values,
                        &mut self.heap,
                        &argument,
                        &groups,
                        weight,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The changes to the output since the last emit: per dirty group, a retraction of its old
    /// row and an insertion of its new one. Nothing with `EMIT ON WINDOW CLOSE`.
    pub fn emit(&mut self) -> Result<Option<ChangeBatch>, OperatorError> {
        let dirty = std::mem::take(&mut self.dirty);
        for &g in &dirty {
            self.is_dirty[g] = false;
        }
        let before_groups = std::mem::take(&mut self.before_groups);
        let before = std::mem::take(&mut self.before);
        if self.emit_on_close.is_some() || dirty.is_empty() {
            return Ok(None);
        }
        let mut old_rows = self.out_converter.empty_rows(before_groups.len(), 0);
        for batch in &before {
            self.out_converter
                .append(&mut old_rows, batch.columns())
                .map_err(arrow)?;
        }
        let live: Vec<usize> = dirty
            .iter()
            .copied()
            .filter(|&g| self.global || self.group_rows[g] > 0)
            .collect();
        let new_batch = self.output_batch(&live)?;
        let new_rows = self
            .out_converter
            .convert_columns(new_batch.columns())
            .map_err(arrow)?;
        let mut retracted: Vec<usize> = Vec::new();
        let mut inserted: Vec<u32> = Vec::new();
        let mut next_live = 0;
        let mut next_before = 0;
        let mut empty = Vec::new();
        for g in dirty {
            if !self.global && self.group_rows[g] == 0 {
                empty.push(g);
            }
            let new = if next_live < live.len() && live[next_live] == g {
                next_live += 1;
                Some(next_live - 1)
            } else {
                None
            };
            let old = if next_before < before_groups.len() && before_groups[next_before] == g {
                next_before += 1;
                Some(next_before - 1)
            } else {
                None
            };
            if old.map(|i| old_rows.row(i).data()) == new.map(|i| new_rows.row(i).data()) {
                continue;
            }
            retracted.extend(old);
            inserted.extend(new.map(|i| i as u32));
        }
        // A group whose rows were all retracted has nothing left to remember.
        for g in empty {
            self.free(g);
        }
        let mut parts = Vec::with_capacity(2);
        if !retracted.is_empty() {
            let columns = self
                .out_converter
                .convert_rows(retracted.iter().map(|&i| old_rows.row(i)))
                .map_err(arrow)?;
            let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(arrow)?;
            parts.push(ChangeBatch::retractions(batch));
        }
        if !inserted.is_empty() {
            let batch = if inserted.len() == new_batch.num_rows() {
                new_batch
            } else {
                take_record_batch(&new_batch, &UInt32Array::from(inserted)).map_err(arrow)?
            };
            parts.push(ChangeBatch::inserts(batch));
        }
        match parts.len() {
            0 => Ok(None),
            1 => Ok(parts.pop()),
            _ => Ok(Some(
                ChangeBatch::concat(&self.schema, &parts).map_err(arrow)?,
            )),
        }
    }

    /// The output rows of `groups`, built column by column from the state.
    fn output_batch(&self, groups: &[usize]) -> Result<RecordBatch, OperatorError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        columns.extend(
            self.keys
                .decode(groups.iter().map(|&g| self.group_keys[g].as_ref()))
                .map_err(arrow)?,
        );
        for (call, state) in self.aggregates.iter().zip(&self.states) {
            let array: ArrayRef = match (&call.kind, state) {
                (_, AggregateState::Counts(c)) => {
                    Arc::new(Int64Array::from_iter_values(groups.iter().map(|&g| c[g])))
                }
                (
                    _,
                    AggregateState::DecimalSums {
                        sums,
                        counts,
                        scale,
                    },
                ) => Arc::new(
                    Decimal128Array::from_iter(
                        groups.iter().map(|&g| (counts[g] > 0).then_some(sums[g])),
                    )
                    .with_precision_and_scale(38, *scale)
                    .map_err(arrow)?,
                ),
                (AggregateKind::Sum, AggregateState::IntSums { sums, counts }) => {
                    Arc::new(Int64Array::from_iter(
                        groups
                            .iter()
                            .map(|&g| (counts[g] > 0).then(|| sums[g] as i64)),
                    ))
                }
                (_, AggregateState::IntSums { sums, counts }) => {
                    Arc::new(Float64Array::from_iter(groups.iter().map(|&g| {
                        (counts[g] > 0).then(|| sums[g] as f64 / counts[g] as f64)
                    })))
                }
                (AggregateKind::Sum, AggregateState::FloatSums { sums, counts }) => {
                    Arc::new(Float64Array::from_iter(
                        groups.iter().map(|&g| (counts[g] > 0).then_some(sums[g])),
                    ))
                }
                (_, AggregateState::FloatSums { sums, counts }) => {
                    Arc::new(Float64Array::from_iter(
                        groups
                            .iter()
                            .map(|&g| (counts[g] > 0).then(|| sums[g] / counts[g] as f64)),
                    ))
                }
                (_, AggregateState::Distinct { values, .. }) => Arc::new(
                    Int64Array::from_iter_values(groups.iter().map(|&g| values[g].len() as i64)),
                ),
                (_, AggregateState::DistinctInts { values, .. }) => Arc::new(
                    Int64Array::from_iter_values(groups.iter().map(|&g| values[g].len() as i64)),
                ),
                (AggregateKind::StringAgg(_), AggregateState::Values { .. }) => {
                    let values = groups
                        .iter()
                        .map(|&g| self.string_agg(call, state, g))
                        .collect::<Result<Vec<Option<String>>, _>>()?;
                    Arc::new(StringArray::from(values))
                }
                (
                    _,
                    AggregateState::Extreme {
                        converter, values, ..
                    },
                ) => decode_values(converter, groups.iter().map(|&g| values[g].as_deref()))?,
                (
                    _,
                    AggregateState::Accumulators {
                        aggregate, slots, ..
                    },
                ) => evaluate_accumulators(
                    aggregate,
                    &mut crate::sync::lock(slots, ACCUMULATORS),
                    groups,
                )?,
                (kind, AggregateState::Values { converter, values }) => {
                    // MIN/MAX (and BOOL_AND/OR): the first or last value of each group's map.
                    let smallest = matches!(kind, AggregateKind::Min | AggregateKind::BoolAnd);
                    decode_values(
                        converter,
                        groups.iter().map(|&g| {
                            let value = if smallest {
                                values[g].keys().next()
                            } else {
                                values[g].keys().next_back()
                            };
                            value.map(|v| v.as_ref())
                        }),
                    )?
                }
            };
            columns.push(array);
        }
        super::cast_to_schema(columns, &self.schema).map_err(arrow)
    }

    /// STRING_AGG of group `g`: its values in ascending order, joined.
    fn string_agg(
        &self,
        call: &AggregateCall,
        state: &AggregateState,
        g: usize,
    ) -> Result<Option<String>, OperatorError> {
        let (AggregateKind::StringAgg(separator), AggregateState::Values { converter, values }) =
            (&call.kind, state)
        else {
            return Ok(None);
        };
        if values[g].is_empty() {
            return Ok(None);
        }
        let parser = converter.parser();
        let arrays = converter
            .convert_rows(values[g].keys().map(|b| parser.parse(b)))
            .map_err(arrow)?;
        let strings = cast(&arrays[0], &DataType::Utf8).map_err(arrow)?;
        let strings = strings.as_string::<i32>();
        let mut pieces: Vec<&str> = Vec::new();
        for (i, count) in values[g].values().enumerate() {
            for _ in 0..*count {
                pieces.push(strings.value(i));
            }
        }
        Ok(Some(pieces.join(separator)))
    }

    /// Frees every window that ends at or before `watermark`; with `EMIT ON WINDOW CLOSE`,
    /// returns their final rows.
    pub fn close_windows(
        &mut self,
        watermark: Timestamp,
    ) -> Result<Option<ChangeBatch>, OperatorError> {
        let Some(window) = self.closing() else {
            return Ok(None);
        };
        let Some(bound) = watermark.checked_sub(window.end_offset) else {
            return Ok(None);
        };
        // Windows with key + end_offset <= watermark, i.e. key <= bound.
        let still_open = match bound.checked_add(1) {
            Some(b) => self.open_windows.split_off(&b),
            None => BTreeMap::new(),
        };
        let closed = std::mem::replace(&mut self.open_windows, still_open);
        let mut groups = Vec::new();
        for (t, listed) in closed {
            groups.extend(
                listed
                    .into_iter()
                    .filter(|&g| self.group_window[g] == Some(t)),
            );
        }
        let emitted: Vec<usize> = if self.emit_on_close.is_some() {
            groups
                .iter()
                .copied()
                .filter(|&g| self.group_rows[g] > 0)
                .collect()
        } else {
            Vec::new()
        };
        let batch = if emitted.is_empty() {
            None
        } else {
            Some(self.output_batch(&emitted)?)
        };
        for g in groups {
            self.free(g);
        }
        Ok(batch.map(ChangeBatch::inserts))
    }

    /// Drops the state of group `g` (its window closed, or it has no rows left) and keeps its
    /// index for a new group.
    fn free(&mut self, g: usize) {
        self.heap -= self.group_heap(g);
        self.group_index.remove(&self.group_keys[g]);
        self.group_keys[g] = Box::new([]);
        self.group_rows[g] = 0;
        self.group_window[g] = None;
        for state in &mut self.states {
            match state {
                AggregateState::Counts(c) => c[g] = 0,
                AggregateState::IntSums { sums, counts }
                | AggregateState::DecimalSums { sums, counts, .. } => {
                    sums[g] = 0;
                    counts[g] = 0;
                }
                AggregateState::FloatSums { sums, counts } => {
                    sums[g] = 0.0;
                    counts[g] = 0;
                }
                AggregateState::Values { values, .. } => values[g] = BTreeMap::new(),
                AggregateState::Distinct { values, .. } => values[g] = row_map(0),
                AggregateState::DistinctInts { values, .. } => values[g] = IntCounts::default(),
                AggregateState::Extreme { values, .. } => values[g] = None,
                AggregateState::Accumulators { slots, sizes, .. } => {
                    crate::sync::lock(slots, ACCUMULATORS)[g] = None;
                    sizes[g] = 0;
                }
            }
        }
        self.free_groups.push(g);
    }

    /// Drops the groups of `rows`' keys without emitting anything: their rows in the view are
    /// final (a session the watermark closed). Call right after [`Self::emit`].
    pub fn forget(&mut self, rows: &RecordBatch) -> Result<(), OperatorError> {
        let keys = self.keys.encode(rows, NAME)?;
        for i in 0..rows.num_rows() {
            if let Some(&g) = self.group_index.get(keys.key(i)) {
                self.free(g);
            }
        }
        Ok(())
    }

    /// Splits checkpoint batches (one per old partition) over `n` partitions by each group's
    /// key: `project` picks the partitioning columns out of the decoded key columns.
    pub fn repartition_batches(
        &self,
        batches: &[&RecordBatch],
        n: usize,
        project: impl Fn(Vec<ArrayRef>) -> Result<Vec<ArrayRef>, StateError>,
        assign: &super::Assign<'_>,
    ) -> Result<Vec<RecordBatch>, StateError> {
        super::split_by_key(
            batches,
            n,
            |keys| project(self.keys.decode((0..keys.len()).map(|i| keys.value(i)))?),
            assign,
        )
    }

    /// Groups with state (alive, or freed and not reused yet: their slots are counted).
    pub fn groups(&self) -> (usize, usize) {
        (self.group_index.len(), self.group_keys.len())
    }

    /// The bytes group `g` owns through pointers (counted in `heap`).
    fn group_heap(&self, g: usize) -> usize {
        let mut bytes = 2 * self.group_keys[g].len();
        for state in &self.states {
            match state {
                AggregateState::Values { values, .. } => {
                    bytes += values[g]
                        .keys()
                        .map(|v| value_entry_bytes(v))
                        .sum::<usize>();
                }
                AggregateState::Distinct { values, .. } => {
                    bytes += values[g]
                        .keys()
                        .map(|v| value_entry_bytes(v))
                        .sum::<usize>();
                }
                AggregateState::DistinctInts { values, .. } => {
                    bytes += values[g].len() * INT_ENTRY_BYTES;
                }
                AggregateState::Extreme { values, .. } => {
                    bytes += values[g].as_ref().map_or(0, |v| v.len());
                }
                AggregateState::Accumulators { sizes, .. } => bytes += sizes[g],
                _ => {}
            }
        }
        bytes
    }

    /// The live groups, and the bytes the operator holds: the capacity of its tables plus
    /// what they own.
    pub fn state_size(&self) -> super::StateSize {
        use super::{map_bytes, vec_bytes};
        let mut bytes = self.heap
            + map_bytes(&self.group_index)
            + vec_bytes(&self.group_keys)
            + vec_bytes(&self.group_rows)
            + self.before.iter().map(RecordBatch::get_array_memory_size).sum::<usize>()
            + vec_bytes(&self.before_groups)
            + vec_bytes(&self.dirty)
            + vec_bytes(&self.is_dirty)
            + vec_bytes(&self.group_window)
            + vec_bytes(&self.free_groups)
            // each open window's entry and its list of groups
            + self.open_windows.len() * (64 + super::BTREE_ENTRY_OVERHEAD);
        if self.closing().is_some() {
            bytes += self.group_index.len() * std::mem::size_of::<usize>();
        }
        for state in &self.states {
            bytes += match state {
                AggregateState::Counts(c) => vec_bytes(c),
                AggregateState::IntSums { sums, counts }
                | AggregateState::DecimalSums { sums, counts, .. } => {
                    vec_bytes(sums) + vec_bytes(counts)
                }
                AggregateState::FloatSums { sums, counts } => vec_bytes(sums) + vec_bytes(counts),
                AggregateState::Values { values, .. } => vec_bytes(values),
                AggregateState::Distinct { values, .. } => vec_bytes(values),
                AggregateState::DistinctInts { values, .. } => vec_bytes(values),
                AggregateState::Extreme { values, .. } => vec_bytes(values),
                AggregateState::Accumulators { slots, sizes, .. } => {
                    vec_bytes(&crate::sync::lock(slots, ACCUMULATORS)) + vec_bytes(sizes)
                }
            };
        }
        super::StateSize {
            rows: self.group_index.len() as u64,
            bytes: bytes as u64,
        }
    }

    /// What `heap` should be, counted over every group: for restore and for tests.
    fn count_heap(&self) -> usize {
        (0..self.group_keys.len()).map(|g| self.group_heap(g)).sum()
    }
}

/// The counted values of groups `live`, one blob per group (a checkpoint column).
fn counted_column<'a, M>(values: &'a [M], live: &[usize]) -> ArrayRef
where
    &'a M: IntoIterator<Item = (&'a Box<[u8]>, &'a i64)>,
{
    let mut blob = Vec::new();
    let mut builder = datafusion::arrow::array::LargeBinaryBuilder::new();
    for &g in live {
        columns::encode_counted(&values[g], &mut blob);
        builder.append_value(&blob);
    }
    Arc::new(builder.finish())
}

/// The counted values of every group of a checkpoint, from its column `name`.
fn counted_maps<M: Default + Extend<(Box<[u8]>, i64)>>(
    batch: &RecordBatch,
    name: &str,
) -> Result<Vec<M>, StateError> {
    let blobs = columns::blob_column(batch, name)?;
    (0..batch.num_rows())
        .map(|g| columns::decode_counted(blobs.value(g)))
        .collect()
}

/// A count per row-format value: a B-tree where the order is read (MIN/MAX, STRING_AGG), a
/// hash map where it is not (COUNT(DISTINCT)).
trait CountedValues {
    fn count_mut(&mut self, value: &[u8]) -> Option<&mut i64>;
    fn new_count(&mut self, value: &[u8]) -> &mut i64;
    fn remove_value(&mut self, value: &[u8]);
}

impl CountedValues for BTreeMap<Box<[u8]>, i64> {
    fn count_mut(&mut self, value: &[u8]) -> Option<&mut i64> {
        self.get_mut(value)
    }
    fn new_count(&mut self, value: &[u8]) -> &mut i64 {
        self.entry(value.into()).or_insert(0)
    }
    fn remove_value(&mut self, value: &[u8]) {
        self.remove(value);
    }
}

impl CountedValues for RowMap<i64> {
    fn count_mut(&mut self, value: &[u8]) -> Option<&mut i64> {
        self.get_mut(value)
    }
    fn new_count(&mut self, value: &[u8]) -> &mut i64 {
        self.entry(value.into()).or_insert(0)
    }
    fn remove_value(&mut self, value: &[u8]) {
        self.remove(value);
    }
}

/// Adds each row's weight to its group's count of its (non-null) value; a value whose count
/// reaches 0 leaves. `heap` follows the values kept.
fn count_values<M: CountedValues>(
    converter: &RowConverter,
    values: &mut [M],
    heap: &mut usize,
    argument: &ArrayRef,
    groups: &[usize],
    weight: impl Fn(usize) -> i64,
) -> Result<(), OperatorError> {
    let encoded = converter
        .convert_columns(std::slice::from_ref(argument))
        .map_err(arrow)?;
    for (i, &g) in groups.iter().enumerate() {
        if argument.is_null(i) {
            continue;
        }
        let value = encoded.row(i).data();
        let count = match values[g].count_mut(value) {
            Some(count) => count,
            None => {
                *heap += value_entry_bytes(value);
                values[g].new_count(value)
            }
        };
        *count += weight(i);
        if *count == 0 {
            values[g].remove_value(value);
            *heap -= value_entry_bytes(value);
        }
    }
    Ok(())
}

/// Adds each row's value (times its weight) to its group's exact sum, and counts the values.
fn add_exact(
    sums: &mut [i128],
    counts: &mut [i64],
    groups: &[usize],
    weight: impl Fn(usize) -> i64,
    value: impl Fn(usize) -> Option<i128>,
) {
    for (i, &g) in groups.iter().enumerate() {
        if let Some(v) = value(i) {
            sums[g] += v * i128::from(weight(i));
            counts[g] += weight(i);
        }
    }
}

/// Feeds each group's rows of a batch to its accumulator in one call: the inserted rows
/// (repeated by their weight) to `update_batch`, then the retracted ones to `retract_batch`
/// (after the inserts, so that a value inserted and retracted in one batch is there to
/// remove). Rows that `FILTER (WHERE …)` rejects are skipped. `heap` follows the
/// accumulators' sizes.
fn update_accumulators(
    aggregate: &DataFusionAggregate,
    slots: &mut [Option<Box<dyn datafusion::logical_expr::Accumulator>>],
    sizes: &mut [usize],
    heap: &mut usize,
    data: &RecordBatch,
    groups: &[usize],
    weights: &[i64],
) -> Result<(), OperatorError> {
    let inputs = aggregate.inputs(data).map_err(df)?;
    let keep = match &aggregate.filter {
        None => None,
        Some(f) => {
            let mask = f
                .evaluate(data)
                .and_then(|v| v.into_array(data.num_rows()))
                .map_err(df)?;
            Some(mask.as_boolean().clone())
        }
    };
    // The rows in group order (one sort per batch), then one run per group.
    let mut order: Vec<u32> = (0..groups.len() as u32)
        .filter(|&i| {
            keep.as_ref()
                .is_none_or(|m| m.is_valid(i as usize) && m.value(i as usize))
        })
        .collect();
    order.sort_by_key(|&i| groups[i as usize]);
    let mut inserted: Vec<u32> = Vec::new();
    let mut retracted: Vec<u32> = Vec::new();
    for run in order.chunk_by(|&a, &b| groups[a as usize] == groups[b as usize]) {
        let g = groups[run[0] as usize];
        inserted.clear();
        retracted.clear();
        for &i in run {
            let w = weights[i as usize];
            let to = if w > 0 { &mut inserted } else { &mut retracted };
            to.extend(std::iter::repeat_n(i, w.unsigned_abs() as usize));
        }
        if !retracted.is_empty() && !aggregate.retracting {
            return Err(arrow(
                datafusion::arrow::error::ArrowError::InvalidArgumentError(format!(
                    "a retraction reached {} planned for an append-only input",
                    aggregate.expr.fun().name()
                )),
            ));
        }
        let slot = &mut slots[g];
        let accumulator = match slot {
            Some(a) => a,
            None => slot.insert(aggregate.accumulator().map_err(df)?),
        };
        for (rows, retract) in [(&inserted, false), (&retracted, true)] {
            if rows.is_empty() {
                continue;
            }
            let indices = UInt32Array::from_iter_values(rows.iter().copied());
            let values = inputs
                .iter()
                .map(|a| take(a, &indices, None))
                .collect::<Result<Vec<_>, _>>()
                .map_err(arrow)?;
            if retract {
                accumulator.retract_batch(&values).map_err(df)?;
            } else {
                accumulator.update_batch(&values).map_err(df)?;
            }
        }
        let size = accumulator.size();
        *heap = *heap + size - sizes[g];
        sizes[g] = size;
    }
    Ok(())
}

/// Each group's aggregate value, from its accumulator (a group without one, which had no
/// value, from a new accumulator: `count` gives 0, most others NULL).
fn evaluate_accumulators(
    aggregate: &DataFusionAggregate,
    slots: &mut [Option<Box<dyn datafusion::logical_expr::Accumulator>>],
    groups: &[usize],
) -> Result<ArrayRef, OperatorError> {
    let mut empty: Option<datafusion::common::ScalarValue> = None;
    let mut values = Vec::with_capacity(groups.len());
    for &g in groups {
        values.push(match &mut slots[g] {
            Some(a) => a.evaluate().map_err(df)?,
            None => match &empty {
                Some(v) => v.clone(),
                None => empty
                    .insert(
                        aggregate
                            .accumulator()
                            .and_then(|mut a| a.evaluate())
                            .map_err(df)?,
                    )
                    .clone(),
            },
        });
    }
    if values.is_empty() {
        return Ok(datafusion::arrow::array::new_empty_array(
            aggregate.expr.field().data_type(),
        ));
    }
    datafusion::common::ScalarValue::iter_to_array(values).map_err(df)
}

/// One value per group, in row format, decoded into an array (NULL where a group has none).
fn decode_values<'a>(
    converter: &RowConverter,
    values: impl Iterator<Item = Option<&'a [u8]>>,
) -> Result<ArrayRef, OperatorError> {
    let mut present: Vec<&[u8]> = Vec::new();
    let mut index: Vec<Option<u32>> = Vec::new();
    for value in values {
        match value {
            Some(v) => {
                index.push(Some(present.len() as u32));
                present.push(v);
            }
            None => index.push(None),
        }
    }
    let parser = converter.parser();
    let arrays = converter
        .convert_rows(present.iter().map(|v| parser.parse(v)))
        .map_err(arrow)?;
    take(&arrays[0], &UInt32Array::from(index), None).map_err(arrow)
}

/// Checkpoints: one row per live group — its key, row count, open window,
/// and per aggregate its state columns (`a{i}_…`). Taken at a barrier, when no group is dirty.
impl GroupAggregateOperator {
    /// The state as one batch.
    pub fn checkpoint(&self) -> Result<RecordBatch, StateError> {
        let live: Vec<usize> = (0..self.group_keys.len())
            .filter(|&g| self.group_index.get(&self.group_keys[g]) == Some(&g))
            .collect();
        let mut columns: Vec<(String, ArrayRef)> = vec![
            (
                "key".into(),
                columns::blobs(live.iter().map(|&g| Some(&*self.group_keys[g]))),
            ),
            (
                "rows".into(),
                columns::i64s(live.iter().map(|&g| self.group_rows[g]).collect()),
            ),
            (
                "open_window".into(),
                columns::opt_i64s(live.iter().map(|&g| self.group_window[g]).collect()),
            ),
        ];
        let pick = |v: &[i64]| live.iter().map(|&g| v[g]).collect::<Vec<_>>();
        for (a, state) in self.states.iter().enumerate() {
            match state {
                AggregateState::Counts(c) => {
                    columns.push((format!("a{a}_count"), columns::i64s(pick(c))))
                }
                AggregateState::IntSums { sums, counts }
                | AggregateState::DecimalSums { sums, counts, .. } => {
                    let s = live.iter().map(|&g| sums[g]).collect();
                    columns.push((format!("a{a}_sum"), columns::i128s(s)));
                    columns.push((format!("a{a}_count"), columns::i64s(pick(counts))));
                }
                AggregateState::FloatSums { sums, counts } => {
                    let s = live.iter().map(|&g| sums[g]).collect();
                    columns.push((format!("a{a}_sum"), columns::f64s(s)));
                    columns.push((format!("a{a}_count"), columns::i64s(pick(counts))));
                }
                AggregateState::Values { values, .. } => {
                    columns.push((format!("a{a}_values"), counted_column(values, &live)))
                }
                // The same form as `Values` (a checkpoint of any of them reads into another).
                AggregateState::DistinctInts {
                    converter,
                    argument_type,
                    values,
                } => {
                    let mut blob = Vec::new();
                    let mut builder = datafusion::arrow::array::LargeBinaryBuilder::new();
                    for &g in &live {
                        let ints = Int64Array::from_iter_values(values[g].keys().copied());
                        let typed = cast(&ints, argument_type).map_err(StateError::Arrow)?;
                        let rows = converter
                            .convert_columns(&[typed])
                            .map_err(StateError::Arrow)?;
                        let entries: Vec<(Box<[u8]>, i64)> = values[g]
                            .values()
                            .enumerate()
                            .map(|(i, count)| (Box::from(rows.row(i).data()), *count))
                            .collect();
                        columns::encode_counted(entries.iter().map(|(v, c)| (v, c)), &mut blob);
                        builder.append_value(&blob);
                    }
                    columns.push((format!("a{a}_values"), Arc::new(builder.finish())));
                }
                AggregateState::Distinct { values, .. } => {
                    columns.push((format!("a{a}_values"), counted_column(values, &live)))
                }
                AggregateState::Extreme { values, .. } => columns.push((
                    format!("a{a}_extreme"),
                    columns::blobs(live.iter().map(|&g| values[g].as_deref())),
                )),
                AggregateState::Accumulators {
                    aggregate, slots, ..
                } => {
                    let mut slots = crate::sync::lock(slots, ACCUMULATORS);
                    let states = accumulator_states(aggregate, &mut slots, &live)
                        .map_err(|e| StateError::Arrow(e.into()))?;
                    for (j, state) in states.into_iter().enumerate() {
                        columns.push((format!("a{a}_s{j}"), state));
                    }
                }
            }
        }
        columns::batch(
            columns
                .iter()
                .map(|(n, c)| (n.as_str(), Arc::clone(c)))
                .collect(),
        )
    }

    /// Replaces the state with a checkpoint's.
    pub fn restore(&mut self, batch: &RecordBatch) -> Result<(), StateError> {
        let keys = columns::blob_column(batch, "key")?;
        let n = batch.num_rows();
        self.group_index = row_map(n);
        self.group_keys = Vec::with_capacity(n);
        for g in 0..n {
            let key: Box<[u8]> = keys.value(g).into();
            self.group_index.insert(key.clone(), g);
            self.group_keys.push(key);
        }
        self.group_rows = columns::i64_column(batch, "rows")?;
        self.before.clear();
        self.before_groups.clear();
        self.dirty.clear();
        self.is_dirty = vec![false; n];
        self.open_windows.clear();
        self.free_groups.clear();
        self.group_window = vec![None; n];
        for (g, t) in columns::opt_i64_column(batch, "open_window")?
            .into_iter()
            .enumerate()
        {
            if let Some(t) = t {
                self.open_windows.entry(t).or_default().push(g);
                self.group_window[g] = Some(t);
            }
        }
        for (a, state) in self.states.iter_mut().enumerate() {
            match state {
                AggregateState::Counts(c) => {
                    *c = columns::i64_column(batch, &format!("a{a}_count"))?
                }
                AggregateState::IntSums { sums, counts }
                | AggregateState::DecimalSums { sums, counts, .. } => {
                    *sums = columns::i128_column(batch, &format!("a{a}_sum"))?;
                    *counts = columns::i64_column(batch, &format!("a{a}_count"))?;
                }
                AggregateState::FloatSums { sums, counts } => {
                    *sums = columns::f64_column(batch, &format!("a{a}_sum"))?;
                    *counts = columns::i64_column(batch, &format!("a{a}_count"))?;
                }
                AggregateState::Values { values, .. } => {
                    *values = counted_maps(batch, &format!("a{a}_values"))?
                }
                AggregateState::Distinct { values, .. } => {
                    *values = counted_maps(batch, &format!("a{a}_values"))?
                }
                AggregateState::DistinctInts {
                    converter, values, ..
                } => {
                    let blobs = columns::blob_column(batch, &format!("a{a}_values"))?;
                    *values = Vec::with_capacity(n);
                    for g in 0..n {
                        let entries: Vec<(Box<[u8]>, i64)> =
                            columns::decode_counted(blobs.value(g))?;
                        let parser = converter.parser();
                        let typed = converter
                            .convert_rows(entries.iter().map(|(v, _)| parser.parse(v)))
                            .map_err(StateError::Arrow)?;
                        let ints = cast(&typed[0], &DataType::Int64).map_err(StateError::Arrow)?;
                        let ints = ints.as_primitive::<Int64Type>();
                        values.push(
                            entries
                                .iter()
                                .enumerate()
                                .map(|(i, (_, count))| (ints.value(i), *count))
                                .collect(),
                        );
                    }
                }
                AggregateState::Extreme { values, .. } => {
                    let blobs = columns::blob_column(batch, &format!("a{a}_extreme"))?;
                    *values = (0..n)
                        .map(|g| columns::blob_at(blobs, g).map(Box::from))
                        .collect();
                }
                AggregateState::Accumulators {
                    aggregate,
                    slots,
                    sizes,
                } => {
                    let fields = aggregate
                        .expr
                        .state_fields()
                        .map_err(|e| StateError::Arrow(e.into()))?;
                    let states = (0..fields.len())
                        .map(|j| {
                            let name = format!("a{a}_s{j}");
                            batch
                                .column_by_name(&name)
                                .cloned()
                                .ok_or_else(|| StateError::mismatch(format!("no column {name}")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut restored = Vec::with_capacity(n);
                    *sizes = Vec::with_capacity(n);
                    for g in 0..n {
                        let row: Vec<ArrayRef> = states.iter().map(|s| s.slice(g, 1)).collect();
                        let mut accumulator = aggregate
                            .accumulator()
                            .map_err(|e| StateError::Arrow(e.into()))?;
                        accumulator
                            .merge_batch(&row)
                            .map_err(|e| StateError::Arrow(e.into()))?;
                        sizes.push(accumulator.size());
                        restored.push(Some(accumulator));
                    }
                    *crate::sync::lock(slots, ACCUMULATORS) = restored;
                }
            }
        }
        self.heap = self.count_heap();
        Ok(())
    }
}

/// The intermediate state of `groups`' accumulators, one array per state field. Reading a
/// DataFusion accumulator's state may consume it, so each is rebuilt from what it gave.
fn accumulator_states(
    aggregate: &DataFusionAggregate,
    slots: &mut [Option<Box<dyn datafusion::logical_expr::Accumulator>>],
    groups: &[usize],
) -> datafusion::error::Result<Vec<ArrayRef>> {
    let fields = aggregate.expr.state_fields()?;
    let mut columns: Vec<Vec<datafusion::common::ScalarValue>> =
        vec![Vec::with_capacity(groups.len()); fields.len()];
    for &g in groups {
        let accumulator = match &mut slots[g] {
            Some(a) => a,
            slot => slot.insert(aggregate.accumulator()?),
        };
        let state = accumulator.state()?;
        let arrays = state
            .iter()
            .map(|v| v.to_array())
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let mut rebuilt = aggregate.accumulator()?;
        rebuilt.merge_batch(&arrays)?;
        *accumulator = rebuilt;
        for (column, value) in columns.iter_mut().zip(state) {
            column.push(value);
        }
    }
    columns
        .into_iter()
        .zip(&fields)
        .map(|(values, field)| {
            if values.is_empty() {
                Ok(datafusion::arrow::array::new_empty_array(field.data_type()))
            } else {
                datafusion::common::ScalarValue::iter_to_array(values)
            }
        })
        .collect()
}

/// Bytes a value of MIN/MAX/COUNT(DISTINCT)'s per-value counts holds: its bytes, its count,
/// the box and its share of a B-tree node.
fn value_entry_bytes(value: &[u8]) -> usize {
    value.len() + std::mem::size_of::<(Box<[u8]>, i64)>() + super::BTREE_ENTRY_OVERHEAD
}

impl super::KeyedOperator for GroupAggregateOperator {
    fn schema(&self) -> SchemaRef {
        GroupAggregateOperator::schema(self)
    }

    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        GroupAggregateOperator::update(self, change)
    }

    fn checkpoint(&self) -> Result<Vec<RecordBatch>, StateError> {
        Ok(vec![GroupAggregateOperator::checkpoint(self)?])
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<(), StateError> {
        let [batch] = state else {
            return Err(StateError::mismatch(
                "a group aggregate's state is one batch",
            ));
        };
        GroupAggregateOperator::restore(self, batch)
    }

    fn state_size(&self) -> super::StateSize {
        GroupAggregateOperator::state_size(self)
    }

    fn repartition(
        &self,
        old: &[Vec<RecordBatch>],
        n: usize,
        assign: &super::Assign<'_>,
    ) -> Result<Vec<Vec<RecordBatch>>, StateError> {
        let batches = old
            .iter()
            .map(|state| match state.as_slice() {
                [batch] => Ok(batch),
                _ => Err(StateError::mismatch(
                    "a group aggregate's state is one batch",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let parts = self.repartition_batches(&batches, n, Ok, assign)?;
        Ok(parts.into_iter().map(|b| vec![b]).collect())
    }

    fn finish(&mut self, watermark: Option<Timestamp>) -> Result<Vec<ChangeBatch>, OperatorError> {
        let mut out: Vec<ChangeBatch> = self.emit()?.into_iter().collect();
        if let Some(watermark) = watermark {
            out.extend(self.close_windows(watermark)?);
        }
        Ok(out)
    }
}

impl Operator for GroupAggregateOperator {
    fn name(&self) -> &'static str {
        NAME
    }

    fn process(&mut self, input: ChangeBatch) -> Result<Option<ChangeBatch>, OperatorError> {
        self.update(&input)?;
        self.emit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::test_util::{changes, render};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::col;

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn operator(kinds: &[AggregateKind]) -> GroupAggregateOperator {
        let schema = input();
        let mut fields = vec![Field::new("k", DataType::Utf8, true)];
        let calls = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let out = match kind {
                    AggregateKind::Avg => DataType::Float64,
                    _ => DataType::Int64,
                };
                fields.push(Field::new(format!("a{i}"), out, true));
                AggregateCall {
                    kind: kind.clone(),
                    argument: (*kind != AggregateKind::CountStar)
                        .then(|| col("v", &schema).expect("column v")),
                    argument_type: DataType::Int64,
                }
            })
            .collect();
        GroupAggregateOperator::new(
            vec![col("k", &schema).expect("column k")],
            vec![DataType::Utf8],
            calls,
            Arc::new(Schema::new(fields)),
        )
        .expect("operator")
    }

    fn step(op: &mut GroupAggregateOperator, table: &str) -> String {
        op.process(changes(&input(), table))
            .expect("process")
            .map(|b| render(&b))
            .unwrap_or_default()
    }

    #[test]
    fn count_sum_update_with_retract_and_insert() {
        use AggregateKind::*;
        let mut op = operator(&[CountStar, Sum, Count]);
        assert_eq!(
            step(&mut op, "+ a 1\n+ a 2\n+ b NULL"),
            "+ a 2 3 2\n+ b 1 NULL 0"
        );
        assert_eq!(
            step(&mut op, "- a 1\n+ b 5"),
            "- a 2 3 2\n- b 1 NULL 0\n+ a 1 2 1\n+ b 2 5 1"
        );
        // the last row of a group leaves: the group disappears
        assert_eq!(step(&mut op, "- a 2"), "- a 1 2 1");
    }

    #[test]
    fn state_size_follows_groups_values_and_emitted_rows() {
        use AggregateKind::*;
        // Pseudo-random keys of varied lengths, values inserted and retracted.
        let mut x: u64 = 7;
        let mut next = move |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let mut op = operator(&[CountStar, Min, CountDistinct, Max]);
        let mut live: Vec<(String, u64)> = Vec::new();
        for _ in 0..40 {
            let mut table = String::new();
            for _ in 0..next(30) {
                if !live.is_empty() && next(3) == 0 {
                    let (k, v) = live.swap_remove(next(live.len() as u64) as usize);
                    table.push_str(&format!("- {k} {v}\n"));
                } else {
                    let k = "k".repeat(1 + next(40) as usize) + &next(20).to_string();
                    let v = next(1000);
                    table.push_str(&format!("+ {k} {v}\n"));
                    live.push((k, v));
                }
            }
            step(&mut op, &table);
            assert_eq!(op.heap, op.count_heap());
            let groups: std::collections::HashSet<&String> = live.iter().map(|(k, _)| k).collect();
            assert_eq!(op.state_size().rows, groups.len() as u64);
        }
        let full = op.state_size().bytes;
        let gone: String = live.iter().map(|(k, v)| format!("- {k} {v}\n")).collect();
        step(&mut op, &gone);
        assert_eq!((op.heap, op.state_size().rows), (0, 0));
        assert!(op.state_size().bytes < full);
        // Append-only input: MIN/MAX keep one value each.
        let mut op = operator(&[Min, Max]).with_append_only_input();
        for round in 0..10 {
            let rows: String = (0..20)
                .map(|k| format!("+ k{k} {}\n", 1000 - round * k))
                .collect();
            step(&mut op, &rows);
            assert_eq!(op.heap, op.count_heap());
        }
        // A restored operator counts what it restored.
        let mut restored = operator(&[Min, Max]).with_append_only_input();
        restored
            .restore(&op.checkpoint().expect("checkpoint"))
            .expect("restore");
        assert_eq!(restored.heap, op.heap);
    }

    #[test]
    fn groups_whose_rows_all_leave_are_freed_and_their_slots_reused() {
        use AggregateKind::*;
        let mut op = operator(&[CountStar, Sum, Min]);
        for round in 0..20 {
            let rows: String = (0..50).map(|k| format!("+ r{round}k{k} {k}\n")).collect();
            step(&mut op, &rows);
            assert_eq!(op.groups().0, 50);
            let gone: String = (0..50).map(|k| format!("- r{round}k{k} {k}\n")).collect();
            step(&mut op, &gone);
            assert_eq!(op.groups(), (0, 50), "round {round}");
        }
        // A freed group that comes back starts from nothing.
        assert_eq!(step(&mut op, "+ r0k1 7"), "+ r0k1 1 7 7");
    }

    #[test]
    fn windows_the_watermark_passed_are_freed_without_output() {
        use super::super::KeyedOperator;
        use datafusion::arrow::array::TimestampNanosecondArray;
        use datafusion::arrow::datatypes::TimeUnit;
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let input = Arc::new(Schema::new(vec![Field::new("w", ts.clone(), true)]));
        let output = Arc::new(Schema::new(vec![
            Field::new("w", ts.clone(), true),
            Field::new("n", DataType::Int64, true),
        ]));
        let mut op = GroupAggregateOperator::new(
            vec![col("w", &input).expect("column w")],
            vec![ts],
            vec![AggregateCall {
                kind: AggregateKind::CountStar,
                argument: None,
                argument_type: DataType::Int64,
            }],
            output,
        )
        .expect("operator")
        .with_append_only_input()
        .with_window_expiry(WindowKey {
            key: 0,
            end_offset: 10,
        });
        let rows = |w: Vec<i64>| {
            ChangeBatch::inserts(
                RecordBatch::try_new(
                    Arc::clone(&input),
                    vec![Arc::new(TimestampNanosecondArray::from(w))],
                )
                .expect("batch"),
            )
        };
        op.process(rows(vec![0, 0, 10, 20])).expect("process");
        assert_eq!(op.groups().0, 3);
        // Windows [0, 10) closed: freed, and nothing more is emitted for them.
        assert!(op.finish(Some(15)).expect("finish").is_empty());
        assert_eq!(op.groups().0, 2);
        op.process(rows(vec![30])).expect("process");
        assert!(op.finish(Some(1_000)).expect("finish").is_empty());
        assert_eq!(op.groups(), (0, 3), "every window freed, slots reused");
    }

    #[test]
    fn min_max_survive_deleting_the_current_extreme() {
        use AggregateKind::*;
        let mut op = operator(&[Min, Max, CountDistinct]);
        assert_eq!(step(&mut op, "+ a 5\n+ a 1\n+ a 9\n+ a 1"), "+ a 1 9 3");
        // one of two 1s leaves: min stays 1
        assert_eq!(step(&mut op, "- a 1"), "");
        assert_eq!(step(&mut op, "- a 1\n- a 9"), "- a 1 9 3\n+ a 5 5 1");
    }

    #[test]
    fn avg_is_null_without_values() {
        use AggregateKind::*;
        let mut op = operator(&[Avg]);
        assert_eq!(step(&mut op, "+ a 1\n+ a 2\n+ a NULL"), "+ a 1.5");
        assert_eq!(step(&mut op, "- a 1\n- a 2"), "- a 1.5\n+ a NULL");
    }

    /// The operator's consolidated output equals DataFusion's batch answer over the rows alive
    /// now, for random inserts and deletes in random batch sizes.
    #[tokio::test]
    async fn equals_the_batch_oracle_on_random_changes() {
        use AggregateKind::*;
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::util::display::array_value_to_string;
        use datafusion::prelude::SessionContext;
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let seed: u64 = rand::random();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut op = operator(&[CountStar, Count, Sum, Min, Max, CountDistinct]);
        let mut alive: Vec<(String, Option<i64>)> = Vec::new();
        let mut view: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for _ in 0..30 {
            let mut lines = Vec::new();
            for _ in 0..rng.random_range(1..40) {
                if !alive.is_empty() && rng.random_bool(0.35) {
                    let (k, v) = alive.swap_remove(rng.random_range(0..alive.len()));
                    lines.push(format!(
                        "- {k} {}",
                        v.map_or("NULL".into(), |v| v.to_string())
                    ));
                } else {
                    let k = format!("k{}", rng.random_range(0..6));
                    let v = rng.random_bool(0.9).then(|| rng.random_range(-20..20i64));
                    lines.push(format!(
                        "+ {k} {}",
                        v.map_or("NULL".into(), |v| v.to_string())
                    ));
                    alive.push((k, v));
                }
            }
            if let Some(out) = op.process(changes(&input(), &lines.join("\n"))).unwrap() {
                for line in render(&out).lines() {
                    let (sign, row) = line.split_at(2);
                    *view.entry(row.to_string()).or_default() += if sign == "+ " { 1 } else { -1 };
                }
            }
            view.retain(|_, n| *n != 0);
            let mut got: Vec<String> = view.keys().cloned().collect();
            got.sort();

            let batch = RecordBatch::try_new(
                input(),
                vec![
                    Arc::new(StringArray::from_iter_values(
                        alive.iter().map(|(k, _)| k.as_str()),
                    )),
                    Arc::new(Int64Array::from_iter(alive.iter().map(|(_, v)| *v))),
                ],
            )
            .unwrap();
            let ctx = SessionContext::new();
            ctx.register_batch("t", batch).unwrap();
            let expected = ctx
                .sql("SELECT k, count(*), count(v), sum(v), min(v), max(v), count(DISTINCT v) FROM t GROUP BY k")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let mut want: Vec<String> = expected
                .iter()
                .flat_map(|b| {
                    (0..b.num_rows()).map(move |r| {
                        b.columns()
                            .iter()
                            .map(|c| {
                                if c.is_null(r) {
                                    "NULL".to_string()
                                } else {
                                    array_value_to_string(c, r).unwrap()
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                })
                .collect();
            want.sort();
            assert_eq!(got, want, "seed {seed}");
        }
    }
}
