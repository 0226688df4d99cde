//! Incremental operators: each turns the change batches of its input into the change batches of
//! its output, keeping whatever state it needs. One operator per file:
//!
//! - [`FilterProjectOperator`] (`filter_project.rs`): `WHERE` and the select list, stateless.
//! - [`GroupAggregateOperator`] (`aggregate.rs`): `GROUP BY` with retractable aggregates.
//!
//! The [`Operator`] trait has one required method, `process`; watermarks are forwarded and
//! barriers pass through unless an operator says otherwise.

pub mod aggregate;
pub mod filter_project;
pub mod session;
pub mod sliced_window;
#[cfg(test)]
pub mod test_util;

pub use aggregate::{AggregateCall, AggregateKind, GroupAggregateOperator, WindowKey};
pub use filter_project::FilterProjectOperator;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::stream::{Barrier, ChangeBatch, Timestamp};

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

/// An incremental operator.
pub trait Operator: Send {
    /// Name for logs, errors and `EXPLAIN`.
    fn name(&self) -> &'static str;

    /// The changes to the output caused by a batch of changes to the input (`None`: no change).
    fn process(&mut self, input: ChangeBatch) -> Result<Option<ChangeBatch>, OperatorError>;

    /// A watermark arrived: the changes it releases (closed windows) and the watermark to pass
    /// on. By default nothing is released and the watermark is forwarded.
    fn on_watermark(
        &mut self,
        watermark: Timestamp,
    ) -> Result<(Vec<ChangeBatch>, Option<Timestamp>), OperatorError> {
        Ok((Vec::new(), Some(watermark)))
    }

    /// An epoch ended. Stateful operators snapshot or flush here; by default nothing happens.
    fn on_barrier(&mut self, _barrier: &Barrier) -> Result<Vec<ChangeBatch>, OperatorError> {
        Ok(Vec::new())
    }
}
