//! [`Node`]: a view's operator graph as the stream planner built it, run one epoch at a time.
//!
//! Within an epoch the runtime pushes its inputs through in chunks ([`Node::push`]): stateless
//! operators pass changes on at once, keyed operators fold them into their state. At the
//! barrier ([`Node::finish`]) keyed operators emit what changed and watermarks move on, so a
//! view's output per epoch is consolidated: one retraction and one insertion per changed group,
//! whatever the number of input rows.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_expr::PhysicalExpr;
use rayon::prelude::*;

use crate::operator::{FilterProjectOperator, KeyedOperator, Operator, OperatorError, StateSize};
use crate::state::StateError;
use crate::stream::{ChangeBatch, Timestamp};

/// A node of a view's operator graph.
#[derive(Debug)]
pub enum Node {
    /// Changes of a table or view (`source` indexes the view's sources).
    Source {
        /// Rows in and out, for `EXPLAIN ANALYZE`.
        stats: NodeStats,
        /// Index into the view's source list.
        source: usize,
        /// Columns kept, in order (`None`: all).
        projection: Option<Vec<usize>>,
        /// Output schema.
        schema: SchemaRef,
    },
    /// `WHERE` and the select list.
    FilterProject {
        /// Rows in and out, for `EXPLAIN ANALYZE`.
        stats: NodeStats,
        /// Input.
        input: Box<Node>,
        /// The operator.
        operator: FilterProjectOperator,
        /// For `EXPLAIN`.
        label: String,
    },
    /// One output row per element of a list column (`unnest`, and so `HOP`'s windows).
    Unnest {
        /// Rows in and out, for `EXPLAIN ANALYZE`.
        stats: NodeStats,
        /// Input.
        input: Box<Node>,
        /// The list column of the input.
        list_column: usize,
        /// Per output column, the input column it comes from.
        sources: Vec<usize>,
        /// Whether a NULL list gives one row with a NULL element.
        preserve_nulls: bool,
        /// Output schema.
        schema: SchemaRef,
    },
    /// A keyed operator (`GROUP BY`, windows, sessions over one input; a join over two),
    /// hash-partitioned over workers.
    Keyed {
        /// Rows in and out, for `EXPLAIN ANALYZE`.
        stats: NodeStats,
        /// Inputs, in the order the operator numbers them.
        inputs: Vec<Node>,
        /// Key expressions per input, for partitioning (equal keys of different inputs hash
        /// alike: they have the same types).
        keys: Vec<Vec<Arc<dyn PhysicalExpr>>>,
        /// One operator per partition.
        partitions: Vec<Box<dyn KeyedOperator>>,
        /// Hashes keys to partitions.
        hasher: RandomState,
        /// For `EXPLAIN`.
        label: String,
    },
    /// `UNION ALL`.
    Union {
        /// Rows in and out, for `EXPLAIN ANALYZE`.
        stats: NodeStats,
        /// Inputs.
        inputs: Vec<Node>,
        /// Output schema (inputs are cast to it).
        schema: SchemaRef,
    },
}

/// What a node has seen since its view started (or was restored): the rows of the changes it
/// took in and gave out (inserts and deletes alike).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    /// Rows of the changes that reached it.
    pub rows_in: u64,
    /// Rows of the changes it emitted.
    pub rows_out: u64,
}

/// One node of a running view, as `EXPLAIN ANALYZE` shows it.
#[derive(Debug, Clone)]
pub struct OperatorStats {
    /// Depth in the graph (0: the view's root).
    pub depth: usize,
    /// Its `EXPLAIN` line.
    pub operator: String,
    /// Rows in and out.
    pub stats: NodeStats,
    /// The state it keeps (keyed operators, over all partitions).
    pub state: Option<StateSize>,
}

/// A batch of a keyed operator partition's checkpointed state, by name.
pub type NamedState = (String, RecordBatch);

/// What one push or finish produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Changes to the node's output.
    pub changes: Vec<ChangeBatch>,
    /// The node's watermark after a finish.
    pub watermark: Option<Timestamp>,
}

impl Node {
    /// The node's output schema.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Node::Source { schema, .. }
            | Node::Unnest { schema, .. }
            | Node::Union { schema, .. } => Arc::clone(schema),
            Node::FilterProject { operator, .. } => operator.schema(),
            Node::Keyed { partitions, .. } => partitions[0].schema(),
        }
    }

    /// The node's inputs.
    fn inputs_mut(&mut self) -> &mut [Node] {
        match self {
            Node::Source { .. } => &mut [],
            Node::FilterProject { input, .. } | Node::Unnest { input, .. } => {
                std::slice::from_mut(input.as_mut())
            }
            Node::Union { inputs, .. } | Node::Keyed { inputs, .. } => inputs,
        }
    }

    fn inputs(&self) -> &[Node] {
        match self {
            Node::Source { .. } => &[],
            Node::FilterProject { input, .. } | Node::Unnest { input, .. } => {
                std::slice::from_ref(input.as_ref())
            }
            Node::Union { inputs, .. } | Node::Keyed { inputs, .. } => inputs,
        }
    }

    /// Partitions of the keyed operators (the first one met; all have the same).
    pub fn parallelism(&self) -> usize {
        match self {
            Node::Keyed { partitions, .. } => partitions.len(),
            _ => self
                .inputs()
                .iter()
                .map(Node::parallelism)
                .max()
                .unwrap_or(1),
        }
    }

    /// Each keyed operator's state size per partition, depth-first (the order of
    /// [`Self::checkpoint`]): its `EXPLAIN` label, the partition, the size.
    pub fn state_sizes<'a>(&'a self, out: &mut Vec<(&'a str, usize, StateSize)>) {
        if let Node::Keyed {
            partitions, label, ..
        } = self
        {
            for (p, operator) in partitions.iter().enumerate() {
                out.push((label.as_str(), p, operator.state_size()));
            }
        }
        for input in self.inputs() {
            input.state_sizes(out);
        }
    }

    /// The keyed operators' state, named `n{k}p{p}s{i}` for batch `i` of partition `p` of the
    /// `k`-th keyed node in depth-first order.
    pub fn checkpoint(&mut self) -> Result<Vec<NamedState>, StateError> {
        let mut out = Vec::new();
        let mut next = 0;
        self.checkpoint_into(&mut next, &mut out)?;
        Ok(out)
    }

    fn checkpoint_into(
        &mut self,
        next: &mut usize,
        out: &mut Vec<NamedState>,
    ) -> Result<(), StateError> {
        if let Node::Keyed { partitions, .. } = self {
            let k = *next;
            *next += 1;
            // Partitions are copied in parallel (on the executor's workers when called there).
            let copies: Vec<_> = partitions
                .par_iter_mut()
                .map(|operator| operator.checkpoint())
                .collect();
            for (p, copy) in copies.into_iter().enumerate() {
                // Batches of an operator's state may differ in schema: a file each.
                for (i, batch) in copy?.into_iter().enumerate() {
                    out.push((format!("n{k}p{p}s{i}"), batch));
                }
            }
        }
        self.inputs_mut()
            .iter_mut()
            .try_for_each(|input| input.checkpoint_into(next, out))
    }

    /// Restores what [`Self::checkpoint`] gave.
    pub fn restore(
        &mut self,
        state: &std::collections::HashMap<String, Vec<RecordBatch>>,
    ) -> Result<(), StateError> {
        let mut next = 0;
        self.restore_from(&mut next, state)
    }

    fn restore_from(
        &mut self,
        next: &mut usize,
        state: &std::collections::HashMap<String, Vec<RecordBatch>>,
    ) -> Result<(), StateError> {
        if let Node::Keyed {
            partitions,
            keys,
            hasher,
            ..
        } = self
        {
            let k = *next;
            *next += 1;
            let piece = |p: usize| -> Vec<RecordBatch> {
                (0..)
                    .map_while(|i| state.get(&format!("n{k}p{p}s{i}")))
                    .flatten()
                    .cloned()
                    .collect()
            };
            // Every partition's state has a first batch: that tells how many there were.
            let written = (0..)
                .take_while(|p| state.contains_key(&format!("n{k}p{p}s0")))
                .count();
            let n = partitions.len();
            let mut pieces: Vec<Vec<RecordBatch>> = if written == n {
                (0..n).map(piece).collect()
            } else if written == 0 {
                return Err(StateError::mismatch(format!("no state for operator {k}")));
            } else {
                // Written with another parallelism: each group goes to the partition its key
                // hashes to now, as `update_partitioned` sends its rows.
                let old: Vec<Vec<RecordBatch>> = (0..written).map(piece).collect();
                let keyless = keys.first().is_none_or(Vec::is_empty);
                let assign = |columns: &[ArrayRef], rows: usize| {
                    if n == 1 || keyless || columns.is_empty() {
                        return Ok(vec![0; rows]);
                    }
                    let mut hashes = vec![0u64; rows];
                    create_hashes(columns, hasher, &mut hashes)
                        .map_err(|e| StateError::mismatch(e.to_string()))?;
                    Ok(hashes.iter().map(|h| (h % n as u64) as usize).collect())
                };
                let operator = &partitions[0];
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    operator.repartition(&old, n, &assign)
                }))
                .unwrap_or_else(|_| {
                    Err(StateError::mismatch("re-partitioning the state panicked"))
                })?
            };
            if pieces.len() != n {
                return Err(StateError::mismatch(
                    "state for another number of partitions",
                ));
            }
            // Partitions are independent: restored on a thread each.
            std::thread::scope(|scope| {
                let restoring: Vec<_> = partitions
                    .iter_mut()
                    .zip(pieces.iter_mut())
                    .map(|(operator, batches)| {
                        let batches = std::mem::take(batches);
                        scope.spawn(move || operator.restore(&batches))
                    })
                    .collect();
                restoring.into_iter().try_for_each(|r| {
                    r.join().unwrap_or_else(|_| {
                        Err(StateError::mismatch("restoring a partition panicked"))
                    })
                })
            })?;
        }
        for input in self.inputs_mut() {
            input.restore_from(next, state)?;
        }
        Ok(())
    }

    /// Pushes changes of source `source` through the graph; returns the output changes.
    pub fn push(
        &mut self,
        source: usize,
        batch: &ChangeBatch,
    ) -> Result<Vec<ChangeBatch>, OperatorError> {
        if let Node::Source {
            source: mine,
            projection,
            schema,
            stats,
        } = self
        {
            if *mine != source {
                return Ok(Vec::new());
            }
            let data = match projection {
                None => batch.data().clone(),
                Some(p) => batch.data().project(p).map_err(arrow)?,
            };
            // `SELECT count(*) FROM t` reads no column at all: the row count says how many.
            let rows = RecordBatchOptions::new().with_row_count(Some(data.num_rows()));
            let data = RecordBatch::try_new_with_options(
                Arc::clone(schema),
                data.columns().to_vec(),
                &rows,
            )
            .map_err(arrow)?;
            stats.rows_in += batch.num_rows() as u64;
            stats.rows_out += data.num_rows() as u64;
            return Ok(vec![with_weights(data, batch.weights())?]);
        }
        let mut upstream = Vec::new();
        for (i, input) in self.inputs_mut().iter_mut().enumerate() {
            upstream.extend(input.push(source, batch)?.into_iter().map(|c| (i, c)));
        }
        self.transform(upstream)
    }

    /// Ends the (sub-)epoch: keyed operators emit their changes, and watermarks (one per
    /// source, `None` where a source has none) move through the graph.
    pub fn finish(&mut self, watermarks: &[Option<Timestamp>]) -> Result<Output, OperatorError> {
        if let Node::Source { source, .. } = self {
            return Ok(Output {
                changes: Vec::new(),
                watermark: watermarks.get(*source).copied().flatten(),
            });
        }
        let mut upstream = Vec::new();
        // The minimum over the inputs; an input without a watermark holds it back.
        let mut watermark: Option<Option<Timestamp>> = None;
        let mut each = Vec::new();
        for (i, input) in self.inputs_mut().iter_mut().enumerate() {
            let out = input.finish(watermarks)?;
            upstream.extend(out.changes.into_iter().map(|c| (i, c)));
            each.push(out.watermark);
            watermark = Some(match (watermark, out.watermark) {
                (None, w) => w,
                (Some(Some(a)), Some(b)) => Some(a.min(b)),
                _ => None,
            });
        }
        let watermark = watermark.flatten();
        let mut changes = self.transform(upstream)?;
        if let Node::Keyed {
            partitions, stats, ..
        } = self
        {
            let emitted = finish_partitioned(partitions, &each)?;
            stats.rows_out += emitted.iter().map(|c| c.num_rows() as u64).sum::<u64>();
            changes.extend(emitted);
            let watermark = partitions[0].output_watermark(watermark);
            return Ok(Output { changes, watermark });
        }
        Ok(Output { changes, watermark })
    }

    /// This node's work on changes of its inputs: the changes to its output, or none yet for
    /// a keyed operator, which folds them into its state.
    /// `upstream` holds each change with the index of the input it came from.
    fn transform(
        &mut self,
        upstream: Vec<(usize, ChangeBatch)>,
    ) -> Result<Vec<ChangeBatch>, OperatorError> {
        let mut out = Vec::with_capacity(upstream.len());
        let rows_in: u64 = upstream.iter().map(|(_, c)| c.num_rows() as u64).sum();
        for (input, change) in upstream {
            match self {
                Node::Source { .. } => out.push(change),
                Node::FilterProject { operator, .. } => out.extend(operator.process(change)?),
                Node::Unnest {
                    list_column,
                    sources,
                    preserve_nulls,
                    schema,
                    ..
                } => out.extend(unnest(
                    &change,
                    *list_column,
                    sources,
                    *preserve_nulls,
                    schema,
                )?),
                Node::Keyed {
                    keys,
                    partitions,
                    hasher,
                    ..
                } => update_partitioned(partitions, &keys[input], hasher, input, &change)?,
                Node::Union { schema, .. } => out.push(cast_change(&change, schema)?),
            }
        }
        let rows_out: u64 = out.iter().map(|c| c.num_rows() as u64).sum();
        let stats = self.stats_mut();
        stats.rows_in += rows_in;
        stats.rows_out += rows_out;
        Ok(out)
    }

    fn stats_mut(&mut self) -> &mut NodeStats {
        match self {
            Node::Source { stats, .. }
            | Node::FilterProject { stats, .. }
            | Node::Unnest { stats, .. }
            | Node::Keyed { stats, .. }
            | Node::Union { stats, .. } => stats,
        }
    }

    fn stats(&self) -> NodeStats {
        match self {
            Node::Source { stats, .. }
            | Node::FilterProject { stats, .. }
            | Node::Unnest { stats, .. }
            | Node::Keyed { stats, .. }
            | Node::Union { stats, .. } => *stats,
        }
    }

    /// Every node, depth first as `EXPLAIN` prints them, with its rows in and out and state.
    pub fn operator_stats(&self, source_names: &[String]) -> Vec<OperatorStats> {
        let mut out = Vec::new();
        self.operator_stats_into(source_names, 0, &mut out);
        out
    }

    fn operator_stats_into(&self, names: &[String], depth: usize, out: &mut Vec<OperatorStats>) {
        let state = match self {
            Node::Keyed { partitions, .. } => {
                let mut total = StateSize::default();
                for p in partitions {
                    let size = p.state_size();
                    total.rows += size.rows;
                    total.bytes += size.bytes;
                }
                Some(total)
            }
            _ => None,
        };
        out.push(OperatorStats {
            depth,
            operator: self.line(names),
            stats: self.stats(),
            state,
        });
        for input in self.inputs() {
            input.operator_stats_into(names, depth + 1, out);
        }
    }

    /// The graph as `EXPLAIN` prints it, one node per line, inputs indented below.
    pub fn explain(&self, source_names: &[String]) -> String {
        let mut out = String::new();
        self.explain_into(source_names, 0, &mut out);
        out
    }

    fn explain_into(&self, names: &[String], depth: usize, out: &mut String) {
        let line = self.line(names);
        out.push_str(&"  ".repeat(depth));
        out.push_str(&line);
        out.push('\n');
        for input in self.inputs() {
            input.explain_into(names, depth + 1, out);
        }
    }

    /// This node's line of `EXPLAIN`.
    fn line(&self, names: &[String]) -> String {
        match self {
            Node::Source { source, schema, .. } => format!(
                "Source: {} columns=[{}]",
                names.get(*source).map_or("?", String::as_str),
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Node::FilterProject { label, .. } | Node::Keyed { label, .. } => label.clone(),
            Node::Unnest {
                schema,
                list_column,
                ..
            } => format!(
                "Unnest: column {} -> {}",
                list_column,
                schema.fields().len()
            ),
            Node::Union { inputs, .. } => format!("UnionAll: inputs={}", inputs.len()),
        }
    }
}

fn arrow(source: datafusion::arrow::error::ArrowError) -> OperatorError {
    OperatorError::Arrow {
        operator: "Dataflow",
        source,
    }
}

fn with_weights(
    data: RecordBatch,
    weights: Option<&Int64Array>,
) -> Result<ChangeBatch, OperatorError> {
    match weights {
        None => Ok(ChangeBatch::inserts(data)),
        Some(w) => ChangeBatch::with_weights(data, w.clone()).map_err(arrow),
    }
}

/// Casts a change batch to `schema` (same columns, possibly other types or nullability).
fn cast_change(change: &ChangeBatch, schema: &SchemaRef) -> Result<ChangeBatch, OperatorError> {
    let data =
        crate::operator::cast_to_schema(change.data().columns().to_vec(), schema).map_err(arrow)?;
    with_weights(data, change.weights())
}

/// Repeats each row once per element of its list in `list_column`.
fn unnest(
    change: &ChangeBatch,
    list_column: usize,
    sources: &[usize],
    preserve_nulls: bool,
    schema: &SchemaRef,
) -> Result<Option<ChangeBatch>, OperatorError> {
    let data = change.data();
    let list = data.column(list_column).as_list::<i32>();
    let offsets = list.value_offsets();
    let mut row_indexes: Vec<u32> = Vec::with_capacity(list.values().len());
    let mut value_indexes: Vec<Option<u32>> = Vec::with_capacity(list.values().len());
    for i in 0..data.num_rows() {
        if list.is_null(i) {
            if preserve_nulls {
                row_indexes.push(i as u32);
                value_indexes.push(None);
            }
            continue;
        }
        for v in offsets[i]..offsets[i + 1] {
            row_indexes.push(i as u32);
            value_indexes.push(Some(v as u32));
        }
    }
    if row_indexes.is_empty() {
        return Ok(None);
    }
    let rows = UInt32Array::from(row_indexes);
    let values = take(
        list.values().as_ref(),
        &UInt32Array::from(value_indexes),
        None,
    )
    .map_err(arrow)?;
    let columns = sources
        .iter()
        .zip(schema.fields())
        .map(|(&s, field)| {
            let column = if s == list_column {
                Arc::clone(&values)
            } else {
                take(data.column(s).as_ref(), &rows, None)?
            };
            if column.data_type() == field.data_type() {
                Ok(column)
            } else {
                cast(&column, field.data_type())
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()
        .map_err(arrow)?;
    let out = RecordBatch::try_new(Arc::clone(schema), columns).map_err(arrow)?;
    let weights = match change.weights() {
        None => None,
        Some(w) => Some(
            take(w, &rows, None)
                .map_err(arrow)?
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .clone(),
        ),
    };
    Ok(Some(with_weights(out, weights.as_ref())?))
}

/// Ends the epoch of every partition, in parallel when there are several.
/// `watermarks` holds each input's.
fn finish_partitioned(
    partitions: &mut [Box<dyn KeyedOperator>],
    watermarks: &[Option<Timestamp>],
) -> Result<Vec<ChangeBatch>, OperatorError> {
    if let [only] = partitions {
        return only.finish_inputs(watermarks);
    }
    // On the runtime's worker pool (the caller's, or rayon's global one); a panic in a
    // partition reaches the caller.
    let parts: Vec<Vec<ChangeBatch>> = partitions
        .par_iter_mut()
        .map(|p| p.finish_inputs(watermarks))
        .collect::<Result<_, _>>()?;
    Ok(parts.into_iter().flatten().collect())
}

/// Splits `change` of input `input` by key hash over the partitions and folds each part into
/// its partition, in parallel when there are several.
fn update_partitioned(
    partitions: &mut [Box<dyn KeyedOperator>],
    keys: &[Arc<dyn PhysicalExpr>],
    hasher: &RandomState,
    input: usize,
    change: &ChangeBatch,
) -> Result<(), OperatorError> {
    if partitions.len() == 1 || keys.is_empty() {
        return partitions[0].update_input(input, change);
    }
    let data = change.data();
    let rows = data.num_rows();
    // Keys hashed column by column, as DataFusion's own repartitioning does.
    let exchange = |source| OperatorError::datafusion("Exchange", source);
    let key_columns = crate::operator::evaluate_all(keys, data).map_err(exchange)?;
    let mut hashes = vec![0u64; rows];
    create_hashes(&key_columns, hasher, &mut hashes).map_err(exchange)?;
    let n = partitions.len();
    let mut indexes: Vec<Vec<u32>> = vec![Vec::with_capacity(rows / n + 1); n];
    for (i, hash) in hashes.iter().enumerate() {
        indexes[(hash % n as u64) as usize].push(i as u32);
    }
    let parts = indexes
        .into_iter()
        .map(|idx| {
            let idx = UInt32Array::from(idx);
            let data = datafusion::arrow::compute::take_record_batch(data, &idx)?;
            let weights = match change.weights() {
                None => None,
                Some(w) => Some(
                    take(w, &idx, None)?
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .clone(),
                ),
            };
            Ok((data, weights))
        })
        .collect::<Result<Vec<_>, datafusion::arrow::error::ArrowError>>()
        .map_err(arrow)?;
    partitions
        .par_iter_mut()
        .zip(parts)
        .filter(|(_, (data, _))| data.num_rows() > 0)
        .try_for_each(|(partition, (data, weights))| {
            let change = with_weights(data, weights.as_ref())?;
            partition.update_input(input, &change)
        })
}
