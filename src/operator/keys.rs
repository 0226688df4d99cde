//! [`GroupKeys`]: the group keys of a keyed operator in Arrow's row format.
//!
//! Without key expressions every row belongs to the one group whose key is empty. Arrow's row
//! format has no rows at all for zero columns, so that case is handled here, once, for every
//! keyed operator.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::error::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;

use super::OperatorError;

/// A map keyed by row-format bytes. Hashed with aHash rather than SipHash: the keys are the
/// engine's own bytes, and these maps are on every row's path and rebuilt at recovery.
pub type RowMap<V> =
    std::collections::HashMap<Box<[u8]>, V, datafusion::common::hash_utils::RandomState>;

/// A [`RowMap`] with room for `capacity` keys.
pub fn row_map<V>(capacity: usize) -> RowMap<V> {
    RowMap::with_capacity_and_hasher(capacity, Default::default())
}

/// Key expressions and their row encoding.
#[derive(Debug)]
pub struct GroupKeys {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
}

/// The keys of one batch.
#[derive(Debug)]
pub struct EncodedKeys {
    /// The key columns, as evaluated.
    pub columns: Vec<ArrayRef>,
    /// Their row encoding; `None` when there are no key expressions.
    rows: Option<Rows>,
}

impl EncodedKeys {
    /// The key of row `i` in row format (empty without key expressions).
    pub fn key(&self, i: usize) -> &[u8] {
        match &self.rows {
            Some(rows) => rows.row(i).data(),
            None => &[],
        }
    }
}

impl GroupKeys {
    /// Keys computed by `exprs`, of types `types`.
    pub fn new(
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        types: Vec<DataType>,
    ) -> Result<Self, ArrowError> {
        Ok(Self {
            exprs,
            converter: RowConverter::new(types.into_iter().map(SortField::new).collect())?,
        })
    }

    /// The key expressions.
    pub fn exprs(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.exprs
    }

    /// True when there are no key expressions: one group.
    pub fn is_empty(&self) -> bool {
        self.exprs.is_empty()
    }

    /// Evaluates and encodes the keys of `batch`.
    pub fn encode(
        &self,
        batch: &RecordBatch,
        operator: &'static str,
    ) -> Result<EncodedKeys, OperatorError> {
        let columns = super::evaluate_all(&self.exprs, batch)
            .map_err(|e: DataFusionError| OperatorError::datafusion(operator, e))?;
        let rows = if self.exprs.is_empty() {
            None
        } else {
            Some(
                self.converter
                    .convert_columns(&columns)
                    .map_err(|e| OperatorError::arrow(operator, e))?,
            )
        };
        Ok(EncodedKeys { columns, rows })
    }

    /// Key columns back from row-format keys, one row per key.
    pub fn decode<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Vec<ArrayRef>, ArrowError> {
        if self.exprs.is_empty() {
            return Ok(Vec::new());
        }
        let parser = self.converter.parser();
        self.converter.convert_rows(keys.map(|k| parser.parse(k)))
    }
}
