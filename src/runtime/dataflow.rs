//! [`Node`]: a view's operator graph as the stream planner built it, run one epoch at a time.
//!
//! Within an epoch the runtime pushes its inputs through in chunks ([`Node::push`]): stateless
//! operators pass changes on at once, keyed operators fold them into their state. At the
//! barrier ([`Node::finish`]) keyed operators emit what changed and watermarks move on, so a
//! view's output per epoch is consolidated: one retraction and one insertion per changed group,
//! whatever the number of input rows.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::operator::session::SessionWindowAggregate;
use crate::operator::sliced_window::SlicedWindowAggregate;
use crate::operator::{FilterProjectOperator, GroupAggregateOperator, Operator, OperatorError};
use crate::stream::{ChangeBatch, Timestamp};

/// A node of a view's operator graph.
#[derive(Debug)]
pub enum Node {
    /// Changes of a table or view (`source` indexes the view's sources).
    Source {
        /// Index into the view's source list.
        source: usize,
        /// Columns kept, in order (`None`: all).
        projection: Option<Vec<usize>>,
        /// Output schema.
        schema: SchemaRef,
    },
    /// `WHERE` and the select list.
    FilterProject {
        /// Input.
        input: Box<Node>,
        /// The operator.
        operator: FilterProjectOperator,
        /// For `EXPLAIN`.
        label: String,
    },
    /// One output row per element of a list column (`unnest`, and so `HOP`'s windows).
    Unnest {
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
    /// `GROUP BY`, hash-partitioned over workers.
    Aggregate {
        /// Input.
        input: Box<Node>,
        /// Key expressions, for partitioning.
        keys: Vec<Arc<dyn PhysicalExpr>>,
        /// One operator per partition.
        partitions: Vec<GroupAggregateOperator>,
        /// Hashes keys to partitions.
        hasher: RandomState,
        /// For `EXPLAIN`.
        label: String,
    },
    /// `GROUP BY keys, HOP(…)` emitted on window close, by slicing.
    SlicedAggregate {
        /// Input: one row per event, its window column holding its slice.
        input: Box<Node>,
        /// Key expressions, for partitioning.
        keys: Vec<Arc<dyn PhysicalExpr>>,
        /// One operator per partition.
        partitions: Vec<SlicedWindowAggregate>,
        /// Hashes keys to partitions.
        hasher: RandomState,
        /// For `EXPLAIN`.
        label: String,
    },
    /// `GROUP BY keys, SESSION(ts, gap)`.
    SessionAggregate {
        /// Input.
        input: Box<Node>,
        /// The operator (boxed: it is large).
        operator: Box<SessionWindowAggregate>,
        /// For `EXPLAIN`.
        label: String,
    },
    /// `UNION ALL`.
    Union {
        /// Inputs.
        inputs: Vec<Node>,
        /// Output schema (inputs are cast to it).
        schema: SchemaRef,
    },
}

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
            Node::Aggregate { partitions, .. } => partitions[0].schema(),
            Node::SlicedAggregate { partitions, .. } => partitions[0].schema(),
            Node::SessionAggregate { operator, .. } => operator.schema(),
        }
    }

    /// Pushes changes of source `source` through the graph; returns the output changes.
    pub fn push(
        &mut self,
        source: usize,
        batch: &ChangeBatch,
    ) -> Result<Vec<ChangeBatch>, OperatorError> {
        match self {
            Node::Source {
                source: mine,
                projection,
                schema,
            } => {
                if *mine != source {
                    return Ok(Vec::new());
                }
                let data = match projection {
                    None => batch.data().clone(),
                    Some(p) => batch.data().project(p).map_err(arrow)?,
                };
                let data = RecordBatch::try_new(Arc::clone(schema), data.columns().to_vec())
                    .map_err(arrow)?;
                Ok(vec![with_weights(data, batch.weights())?])
            }
            Node::FilterProject {
                input, operator, ..
            } => {
                let mut out = Vec::new();
                for change in input.push(source, batch)? {
                    out.extend(operator.process(change)?);
                }
                Ok(out)
            }
            Node::Unnest {
                input,
                list_column,
                sources,
                preserve_nulls,
                schema,
            } => {
                let mut out = Vec::new();
                for change in input.push(source, batch)? {
                    out.extend(unnest(
                        &change,
                        *list_column,
                        sources,
                        *preserve_nulls,
                        schema,
                    )?);
                }
                Ok(out)
            }
            Node::Aggregate {
                input,
                keys,
                partitions,
                hasher,
                ..
            } => {
                for change in input.push(source, batch)? {
                    update_partitioned(partitions, keys, hasher, &change)?;
                }
                Ok(Vec::new())
            }
            Node::SlicedAggregate {
                input,
                keys,
                partitions,
                hasher,
                ..
            } => {
                for change in input.push(source, batch)? {
                    update_partitioned(partitions, keys, hasher, &change)?;
                }
                Ok(Vec::new())
            }
            Node::SessionAggregate {
                input, operator, ..
            } => {
                for change in input.push(source, batch)? {
                    operator.update(&change)?;
                }
                Ok(Vec::new())
            }
            Node::Union { inputs, schema } => {
                let mut out = Vec::new();
                for input in inputs {
                    for change in input.push(source, batch)? {
                        out.push(cast_change(&change, schema)?);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Ends the epoch: keyed operators emit their changes, and watermarks (one per source,
    /// `None` where a source has none) move through the graph.
    pub fn finish(&mut self, watermarks: &[Option<Timestamp>]) -> Result<Output, OperatorError> {
        match self {
            Node::Source { source, .. } => Ok(Output {
                changes: Vec::new(),
                watermark: watermarks.get(*source).copied().flatten(),
            }),
            Node::FilterProject {
                input, operator, ..
            } => {
                let upstream = input.finish(watermarks)?;
                let mut changes = Vec::new();
                for change in upstream.changes {
                    changes.extend(operator.process(change)?);
                }
                Ok(Output {
                    changes,
                    watermark: upstream.watermark,
                })
            }
            Node::Unnest {
                input,
                list_column,
                sources,
                preserve_nulls,
                schema,
            } => {
                let upstream = input.finish(watermarks)?;
                let mut changes = Vec::new();
                for change in upstream.changes {
                    changes.extend(unnest(
                        &change,
                        *list_column,
                        sources,
                        *preserve_nulls,
                        schema,
                    )?);
                }
                Ok(Output {
                    changes,
                    watermark: upstream.watermark,
                })
            }
            Node::Aggregate {
                input,
                keys,
                partitions,
                hasher,
                ..
            } => {
                let upstream = input.finish(watermarks)?;
                for change in &upstream.changes {
                    update_partitioned(partitions, keys, hasher, change)?;
                }
                let mut changes = Vec::new();
                for partition in partitions.iter_mut() {
                    changes.extend(partition.emit()?);
                    if let Some(wm) = upstream.watermark {
                        changes.extend(partition.close_windows(wm)?);
                    }
                }
                Ok(Output {
                    changes,
                    watermark: upstream.watermark,
                })
            }
            Node::SlicedAggregate {
                input,
                keys,
                partitions,
                hasher,
                ..
            } => {
                let upstream = input.finish(watermarks)?;
                for change in &upstream.changes {
                    update_partitioned(partitions, keys, hasher, change)?;
                }
                let mut changes = Vec::new();
                for partition in partitions.iter_mut() {
                    changes.extend(partition.emit_updates()?);
                }
                if let Some(wm) = upstream.watermark {
                    changes.extend(close_partitioned(partitions, wm)?);
                }
                Ok(Output {
                    changes,
                    watermark: upstream.watermark,
                })
            }
            Node::SessionAggregate {
                input, operator, ..
            } => {
                let upstream = input.finish(watermarks)?;
                for change in &upstream.changes {
                    operator.update(change)?;
                }
                Ok(Output {
                    changes: operator.emit()?.into_iter().collect(),
                    watermark: upstream.watermark,
                })
            }
            Node::Union { inputs, schema } => {
                let mut changes = Vec::new();
                let mut watermark: Option<Option<Timestamp>> = None;
                for input in inputs {
                    let upstream = input.finish(watermarks)?;
                    for change in upstream.changes {
                        changes.push(cast_change(&change, schema)?);
                    }
                    // The minimum of the inputs; an input without a watermark holds it back.
                    watermark = Some(match (watermark, upstream.watermark) {
                        (None, w) => w,
                        (Some(Some(a)), Some(b)) => Some(a.min(b)),
                        _ => None,
                    });
                }
                Ok(Output {
                    changes,
                    watermark: watermark.flatten(),
                })
            }
        }
    }

    /// The graph as `EXPLAIN` prints it, one node per line, inputs indented below.
    pub fn explain(&self, source_names: &[String]) -> String {
        let mut out = String::new();
        self.explain_into(source_names, 0, &mut out);
        out
    }

    fn explain_into(&self, names: &[String], depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        let line = match self {
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
            Node::FilterProject { label, .. } => label.clone(),
            Node::Unnest {
                schema,
                list_column,
                ..
            } => format!(
                "Unnest: column {} -> {}",
                list_column,
                schema.fields().len()
            ),
            Node::Aggregate { label, .. }
            | Node::SlicedAggregate { label, .. }
            | Node::SessionAggregate { label, .. } => label.clone(),
            Node::Union { inputs, .. } => format!("UnionAll: inputs={}", inputs.len()),
        };
        out.push_str(&pad);
        out.push_str(&line);
        out.push('\n');
        match self {
            Node::Source { .. } => {}
            Node::FilterProject { input, .. }
            | Node::Unnest { input, .. }
            | Node::Aggregate { input, .. }
            | Node::SlicedAggregate { input, .. }
            | Node::SessionAggregate { input, .. } => input.explain_into(names, depth + 1, out),
            Node::Union { inputs, .. } => {
                for input in inputs {
                    input.explain_into(names, depth + 1, out);
                }
            }
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

/// A keyed operator that can run as hash partitions.
trait KeyedState: Send {
    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError>;
}

impl KeyedState for GroupAggregateOperator {
    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        GroupAggregateOperator::update(self, change)
    }
}

impl KeyedState for SlicedWindowAggregate {
    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        SlicedWindowAggregate::update(self, change)
    }
}

/// Closes the windows of every partition, in parallel when there are several.
fn close_partitioned(
    partitions: &mut [SlicedWindowAggregate],
    watermark: Timestamp,
) -> Result<Vec<ChangeBatch>, OperatorError> {
    if partitions.len() == 1 {
        return Ok(partitions[0]
            .close_windows(watermark)?
            .into_iter()
            .collect());
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = partitions
            .iter_mut()
            .map(|p| scope.spawn(move || p.close_windows(watermark)))
            .collect();
        let mut out = Vec::new();
        for handle in handles {
            match handle.join() {
                Ok(result) => out.extend(result?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    })
}

/// Splits `change` by key hash over the partitions and folds each part into its partition,
/// in parallel when there are several.
fn update_partitioned<P: KeyedState>(
    partitions: &mut [P],
    keys: &[Arc<dyn PhysicalExpr>],
    hasher: &RandomState,
    change: &ChangeBatch,
) -> Result<(), OperatorError> {
    if partitions.len() == 1 || keys.is_empty() {
        return KeyedState::update(&mut partitions[0], change);
    }
    let data = change.data();
    let rows = data.num_rows();
    let key_columns = keys
        .iter()
        .map(|e| e.evaluate(data).and_then(|v| v.into_array(rows)))
        .collect::<Result<Vec<ArrayRef>, _>>()
        .map_err(|source| OperatorError::DataFusion {
            operator: "Exchange",
            source,
        })?;
    let converter = RowConverter::new(
        key_columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .map_err(arrow)?;
    let encoded = converter.convert_columns(&key_columns).map_err(arrow)?;
    let n = partitions.len();
    let mut indexes: Vec<Vec<u32>> = vec![Vec::with_capacity(rows / n + 1); n];
    for (i, row) in encoded.iter().enumerate() {
        let p = (hasher.hash_one(row.data()) % n as u64) as usize;
        indexes[p].push(i as u32);
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
    std::thread::scope(|scope| {
        let handles: Vec<_> = partitions
            .iter_mut()
            .zip(parts)
            .filter(|(_, (data, _))| data.num_rows() > 0)
            .map(|(partition, (data, weights))| {
                scope.spawn(move || {
                    let change = with_weights(data, weights.as_ref())?;
                    KeyedState::update(partition, &change)
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(result) => result?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(())
    })
}
