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
