//! Incremental operators: each turns the change batches of its input into the change batches of
//! its output, keeping whatever state it needs. One operator per file:
//!
//! - [`FilterProjectOperator`] (`filter_project.rs`): `WHERE` and the select list, stateless.
//! - [`GroupAggregateOperator`] (`aggregate.rs`): `GROUP BY` with retractable aggregates.
//! - `SlicedWindowAggregate` (`sliced_window.rs`): `HOP` windows computed from slices.
//! - `SessionWindowAggregate` (`session.rs`): `SESSION` windows.
//! - [`JoinOperator`] (`join.rs`): equi-joins of two inputs (inner, outer, semi, anti).
//! - [`over::OverOperator`] (`over.rs`): `OVER` window functions and top-N.
//!
//! Stateless operators implement [`Operator`] (`process`: changes in, changes out). Keyed
//! operators implement [`KeyedOperator`]: they fold changes into state per key (`keys.rs`
//! encodes the keys) and say what changed when the runtime ends an epoch, with the watermark
//! that closes windows.

pub mod aggregate;
pub mod filter_project;
pub mod join;
pub mod keys;
pub mod not_in;
pub mod over;
pub mod session;
pub mod sliced_window;
pub mod temporal_filter;
#[cfg(test)]
pub mod test_util;

pub use aggregate::{
    AggregateCall, AggregateKind, DataFusionAggregate, GroupAggregateOperator, WindowKey,
};
pub use filter_project::FilterProjectOperator;
pub use join::{JoinKind, JoinOperator};

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::stream::{ChangeBatch, Timestamp};

/// An operator failed on its input: a fault of the data (a cast that cannot be done, a division
/// by zero in the select list) or of the engine.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// An Arrow kernel failed.
    #[error("{operator}: {source}")]
    Arrow {
        /// The operator's name.
        operator: &'static str,
        /// Why.
        source: ArrowError,
    },
    /// A DataFusion expression failed.
    #[error("{operator}: {source}")]
    DataFusion {
        /// The operator's name.
        operator: &'static str,
        /// Why.
        source: DataFusionError,
    },
}

impl OperatorError {
    /// Wraps an Arrow failure of `operator`.
    pub fn arrow(operator: &'static str, source: ArrowError) -> Self {
        Self::Arrow { operator, source }
    }

    /// Wraps a DataFusion failure of `operator`.
    pub fn datafusion(operator: &'static str, source: DataFusionError) -> Self {
        Self::DataFusion { operator, source }
    }
}

/// Evaluates `exprs` over `batch`, each into an array of the batch's length.
pub fn evaluate_all(
    exprs: &[std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>],
    batch: &datafusion::arrow::array::RecordBatch,
) -> Result<Vec<datafusion::arrow::array::ArrayRef>, DataFusionError> {
    exprs
        .iter()
        .map(|e| {
            e.evaluate(batch)
                .and_then(|v| v.into_array(batch.num_rows()))
        })
        .collect()
}

/// The event times `expr` gives over `batch`, as nanoseconds.
pub fn event_times(
    expr: &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    batch: &datafusion::arrow::array::RecordBatch,
) -> Result<datafusion::arrow::array::TimestampNanosecondArray, DataFusionError> {
    use datafusion::arrow::array::AsArray;
    let times = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    Ok(crate::stream::watermark::nanos(&times)?
        .as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>()
        .clone())
}

/// A batch of `schema` from `columns`, cast where a column's type differs from the schema's.
pub fn cast_to_schema(
    columns: Vec<datafusion::arrow::array::ArrayRef>,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<datafusion::arrow::array::RecordBatch, ArrowError> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                datafusion::arrow::compute::cast(&c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    datafusion::arrow::array::RecordBatch::try_new(std::sync::Arc::clone(schema), columns)
}

/// How much state an operator keeps, as `sluice_state` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Entries kept: groups of an aggregate, slices of a sliced window, buffered rows and
    /// groups of a session window.
    pub rows: u64,
    /// Bytes held: the allocated capacity of the operator's tables and vectors, plus the bytes
    /// of the keys and values they own. An estimate (allocator overhead is not counted),
    /// maintained as state changes, so reading it costs nothing.
    pub bytes: u64,
}

impl std::ops::AddAssign for StateSize {
    fn add_assign(&mut self, other: Self) {
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

/// Bytes an Arrow array's rows use: the slice of its buffers it covers (a slice of a larger
/// batch is not counted as the whole of it).
pub(crate) fn array_bytes(array: &datafusion::arrow::array::ArrayRef) -> usize {
    array
        .to_data()
        .get_slice_memory_size()
        .unwrap_or_else(|_| array.get_array_memory_size())
}

/// Bytes a vector has allocated.
pub(crate) fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Bytes a hash map has allocated (entries plus one control byte each).
pub(crate) fn map_bytes<K, V, S>(m: &std::collections::HashMap<K, V, S>) -> usize {
    m.capacity() * (std::mem::size_of::<(K, V)>() + 1)
}

/// Bytes a B-tree entry costs beyond its key and value: its share of a node (a node holds up
/// to 11 entries and two pointers per entry in internal nodes; about 2/3 full).
pub(crate) const BTREE_ENTRY_OVERHEAD: usize = 16;

/// An operator that keeps state per key, so that it can run as hash partitions of its input:
/// it folds changes into its state as they come and says what changed at the end of an epoch.
pub trait KeyedOperator: Send + std::fmt::Debug {
    /// The output schema.
    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef;

    /// Folds a batch of changes (of this partition's keys) into the state.
    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError>;

    /// Folds a batch of changes of input `input` into the state: an operator of several
    /// inputs (a join) tells them apart; one of a single input has only input 0.
    fn update_input(&mut self, input: usize, change: &ChangeBatch) -> Result<(), OperatorError> {
        debug_assert_eq!(input, 0, "a one-input operator");
        self.update(change)
    }

    /// End of an epoch given each input's watermark: one-input operators see the only one
    /// (or the minimum), as [`Self::finish`].
    fn finish_inputs(
        &mut self,
        watermarks: &[Option<Timestamp>],
    ) -> Result<Vec<ChangeBatch>, OperatorError> {
        let mut min: Option<Option<Timestamp>> = None;
        for &w in watermarks {
            min = Some(match (min, w) {
                (None, w) => w,
                (Some(Some(a)), Some(b)) => Some(a.min(b)),
                _ => None,
            });
        }
        self.finish(min.flatten())
    }

    /// The watermark of the output, given the minimum of the inputs' (`None`: the output has
    /// no column the inputs' watermarks bound, as a join's without an interval).
    fn output_watermark(&self, input: Option<Timestamp>) -> Option<Timestamp> {
        input
    }

    /// End of an epoch: the changes to the output since the last call, and the windows the
    /// watermark (if any) has closed.
    fn finish(&mut self, watermark: Option<Timestamp>) -> Result<Vec<ChangeBatch>, OperatorError>;

    /// The state as Arrow batches, for a checkpoint taken right after [`Self::finish`].
    fn checkpoint(
        &self,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>, crate::state::StateError>;

    /// Replaces the state with what [`Self::checkpoint`] gave.
    fn restore(
        &mut self,
        state: &[datafusion::arrow::array::RecordBatch],
    ) -> Result<(), crate::state::StateError>;

    /// How much state the operator keeps now; constant time.
    fn state_size(&self) -> StateSize;

    /// Splits checkpointed state over `n` partitions, for a restore with another parallelism:
    /// `old` holds each old partition's batches as [`Self::checkpoint`] gave them; `assign`
    /// gives the new partition of each key (the key columns, as the operator's key expressions
    /// evaluate them, and the number of keys). Returns each new partition's batches.
    fn repartition(
        &self,
        old: &[Vec<datafusion::arrow::array::RecordBatch>],
        n: usize,
        assign: &Assign<'_>,
    ) -> Result<Vec<Vec<datafusion::arrow::array::RecordBatch>>, crate::state::StateError>;
}

/// The new partition of each key: key columns and the number of keys in, a partition per key
/// out.
pub type Assign<'a> = dyn Fn(&[datafusion::arrow::array::ArrayRef], usize) -> Result<Vec<usize>, crate::state::StateError>
    + 'a;

/// The state of an operator that runs as one partition whatever the parallelism (it has no
/// key): every old partition's batches, concatenated, go to the first new partition.
pub(crate) fn whole_state(
    old: &[Vec<datafusion::arrow::array::RecordBatch>],
    n: usize,
) -> Result<Vec<Vec<datafusion::arrow::array::RecordBatch>>, crate::state::StateError> {
    let mut parts: Vec<Vec<datafusion::arrow::array::RecordBatch>> = vec![Vec::new(); n.max(1)];
    let batches: Vec<datafusion::arrow::array::RecordBatch> =
        old.iter().flatten().cloned().collect();
    let Some(first) = batches.first() else {
        return Err(crate::state::StateError::mismatch("no partition's state"));
    };
    let schema = first.schema();
    parts[0] = vec![datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?];
    Ok(parts)
}

/// Splits `batch` by `parts` (a partition per row) into `n` batches.
pub(crate) fn split_rows(
    batch: &datafusion::arrow::array::RecordBatch,
    parts: &[usize],
    n: usize,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>, ArrowError> {
    let mut indexes: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (row, &p) in parts.iter().enumerate() {
        indexes[p].push(row as u32);
    }
    indexes
        .into_iter()
        .map(|idx| {
            datafusion::arrow::compute::take_record_batch(
                batch,
                &datafusion::arrow::array::UInt32Array::from(idx),
            )
        })
        .collect()
}

/// Splits checkpoint batches (one per old partition) over `n` partitions by the row-format
/// keys in their `key` column: `decode` turns those into the partitioning columns.
pub(crate) fn split_by_key(
    batches: &[&datafusion::arrow::array::RecordBatch],
    n: usize,
    decode: impl Fn(
        &datafusion::arrow::array::LargeBinaryArray,
    ) -> Result<Vec<datafusion::arrow::array::ArrayRef>, crate::state::StateError>,
    assign: &Assign<'_>,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>, crate::state::StateError> {
    let Some(first) = batches.first() else {
        return Err(crate::state::StateError::mismatch("no partition's state"));
    };
    let schema = first.schema();
    let mut parts: Vec<Vec<datafusion::arrow::array::RecordBatch>> = vec![Vec::new(); n];
    for batch in batches {
        let keys = crate::state::columns::blob_column(batch, "key")?;
        let targets = assign(&decode(keys)?, batch.num_rows())?;
        for (q, piece) in split_rows(batch, &targets, n)?.into_iter().enumerate() {
            parts[q].push(piece);
        }
    }
    Ok(concat_parts(&schema, parts)?)
}

/// One batch per new partition from the pieces each old partition gave it.
pub(crate) fn concat_parts(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    parts: Vec<Vec<datafusion::arrow::array::RecordBatch>>,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>, ArrowError> {
    parts
        .into_iter()
        .map(|pieces| datafusion::arrow::compute::concat_batches(schema, &pieces))
        .collect()
}

/// An incremental operator.
pub trait Operator: Send {
    /// Name for logs, errors and `EXPLAIN`.
    fn name(&self) -> &'static str;

    /// The changes to the output caused by a batch of changes to the input (`None`: no change).
    fn process(&mut self, input: ChangeBatch) -> Result<Option<ChangeBatch>, OperatorError>;
}
