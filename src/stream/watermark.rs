//! [`WatermarkDef`]: `WATERMARK FOR ts AS <expr>` of a table, and the arithmetic shared by the
//! table (which drops late rows at insert) and the views reading it (which derive the same
//! watermark from the same log, so both agree on every row).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::PhysicalExpr;

/// Event time, as nanoseconds since the Unix epoch (Arrow's `Timestamp(Nanosecond)`).
pub type Timestamp = i64;

/// A table's watermark: the largest value of `expression` seen so far. A row whose event time
/// is below the watermark when it arrives is late.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    /// Index of the event-time column.
    pub column: usize,
    /// The watermark expression over a row (`ts - INTERVAL '5' SECOND`).
    pub expression: Arc<dyn PhysicalExpr>,
    /// The expression as the user wrote it.
    pub text: String,
}

impl WatermarkDef {
    /// The watermark after `batch`, starting from `current`.
    pub fn advance(
        &self,
        current: Option<Timestamp>,
        batch: &RecordBatch,
    ) -> DfResult<Option<Timestamp>> {
        if batch.num_rows() == 0 {
            return Ok(current);
        }
        let values = self
            .expression
            .evaluate(batch)?
            .into_array(batch.num_rows())?;
        let candidate = max(nanos(&values)?.as_primitive::<TimestampNanosecondType>());
        Ok(match (current, candidate) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        })
    }

    /// Each row's watermark candidate, as nanosecond timestamps.
    pub fn candidates(&self, batch: &RecordBatch) -> DfResult<datafusion::arrow::array::ArrayRef> {
        let values = self
            .expression
            .evaluate(batch)?
            .into_array(batch.num_rows())?;
        nanos(&values)
    }

    /// Which rows of `batch` are on time under watermark `current` (NULL event times are).
    pub fn on_time(
        &self,
        current: Option<Timestamp>,
        batch: &RecordBatch,
    ) -> DfResult<Option<BooleanArray>> {
        let Some(current) = current else {
            return Ok(None);
        };
        let times = nanos(batch.column(self.column))?;
        let times = times.as_primitive::<TimestampNanosecondType>();
        if times.null_count() == 0 && times.values().iter().all(|&t| t >= current) {
            return Ok(None);
        }
        Ok(Some(
            times
                .iter()
                .map(|t| Some(t.is_none_or(|t| t >= current)))
                .collect(),
        ))
    }
}

/// A timestamp column as nanoseconds since the epoch.
pub fn nanos(values: &ArrayRef) -> DfResult<ArrayRef> {
    let target = match values.data_type() {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
        _ => DataType::Timestamp(TimeUnit::Nanosecond, None),
    };
    Ok(cast(values, &target)?)
}
