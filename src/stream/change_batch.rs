//! [`ChangeBatch`]: a columnar batch of changes to a relation (a Z-set).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

use super::columns::WEIGHT_COLUMN;

/// A batch of changes to a relation: an Arrow [`RecordBatch`] of rows, each with a weight.
///
/// Invariants:
/// - A weight of `+1` inserts the row, `-1` retracts one earlier insertion of an equal row
///   (equal in every column; for a relation with a primary key, the row holding that key).
///   Weights other than `±1` are allowed and mean that many copies.
/// - `weights == None` means every row has weight `+1`: the append-only common case carries no
///   weight column and pays nothing for it.
/// - An update is a retraction of the old row followed by an insertion of the new row; within
///   one batch, retractions of a key come before its insertion.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    /// The rows, in the relation's schema (no reserved columns).
    data: RecordBatch,
    /// One weight per row, or `None` when all weights are `+1`.
    weights: Option<Int64Array>,
}

impl ChangeBatch {
    /// Insertions only.
    pub fn inserts(data: RecordBatch) -> Self {
        Self {
            data,
            weights: None,
        }
    }

    /// Retractions only: every row has weight `-1`.
    pub fn retractions(data: RecordBatch) -> Self {
        let weights = Int64Array::from(vec![-1; data.num_rows()]);
        Self {
            data,
            weights: Some(weights),
        }
    }

    /// Rows with explicit weights; `weights` must have one value per row and no nulls.
    pub fn with_weights(data: RecordBatch, weights: Int64Array) -> Result<Self, ArrowError> {
        if weights.len() != data.num_rows() || weights.null_count() > 0 {
            return Err(ArrowError::InvalidArgumentError(format!(
                "a change batch of {} rows needs as many non-null weights, got {} ({} null)",
                data.num_rows(),
                weights.len(),
                weights.null_count()
            )));
        }
        Ok(Self {
            data,
            weights: Some(weights),
        })
    }

    /// The rows, without weights.
    pub fn data(&self) -> &RecordBatch {
        &self.data
    }

    /// The weights, or `None` when every row is an insertion of weight `+1`.
    pub fn weights(&self) -> Option<&Int64Array> {
        self.weights.as_ref()
    }

    /// Number of rows (not the sum of weights).
    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    /// True when every row is an insertion.
    pub fn is_insert_only(&self) -> bool {
        match &self.weights {
            None => true,
            Some(w) => w.values().iter().all(|&w| w > 0),
        }
    }

    /// Rows inserted and rows retracted, counting each row as often as its weight says.
    pub fn count_by_sign(&self) -> (usize, usize) {
        match &self.weights {
            None => (self.data.num_rows(), 0),
            Some(w) => w.values().iter().fold((0, 0), |(ins, ret), &v| {
                let n = usize::try_from(v.unsigned_abs()).unwrap_or(usize::MAX);
                if v > 0 {
                    (ins.saturating_add(n), ret)
                } else {
                    (ins, ret.saturating_add(n))
                }
            }),
        }
    }

    /// The rows with weight > 0 and the rows with weight < 0, as two record batches.
    ///
    /// Weights other than ±1 are not expanded; callers that allow them must use `weights()`.
    pub fn split_by_sign(&self) -> Result<(RecordBatch, RecordBatch), ArrowError> {
        match &self.weights {
            None => Ok((self.data.clone(), self.data.slice(0, 0))),
            Some(w) => {
                let positive = datafusion::arrow::array::BooleanArray::from_iter(
                    w.values().iter().map(|&v| Some(v > 0)),
                );
                let negative = datafusion::arrow::array::BooleanArray::from_iter(
                    w.values().iter().map(|&v| Some(v < 0)),
                );
                Ok((
                    filter_record_batch(&self.data, &positive)?,
                    filter_record_batch(&self.data, &negative)?,
                ))
            }
        }
    }

    /// The batch as one record batch with a trailing [`WEIGHT_COLUMN`] when it has weights:
    /// the form in which it is stored.
    pub fn to_stored(&self) -> Result<RecordBatch, ArrowError> {
        match self.weights {
            None => Ok(self.data.clone()),
            Some(_) => self.with_weight_column(),
        }
    }

    /// The batch with a trailing [`WEIGHT_COLUMN`] always (1 for each insertion), so that
    /// batches of one schema keep one stored schema; [`ChangeBatch::from_stored`] reads it.
    pub fn with_weight_column(&self) -> Result<RecordBatch, ArrowError> {
        let mut fields: Vec<Arc<Field>> = self.data.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(WEIGHT_COLUMN, DataType::Int64, false)));
        let mut columns: Vec<ArrayRef> = self.data.columns().to_vec();
        columns.push(match &self.weights {
            Some(weights) => Arc::new(weights.clone()),
            None => Arc::new(Int64Array::from_value(1, self.num_rows())),
        });
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
    }

    /// The inverse of [`ChangeBatch::to_stored`].
    pub fn from_stored(stored: RecordBatch) -> Result<Self, ArrowError> {
        let schema = stored.schema();
        match schema.index_of(WEIGHT_COLUMN) {
            Ok(idx) if idx + 1 == stored.num_columns() => {
                let weights = stored.column(idx).as_primitive::<Int64Type>().clone();
                let mut data = stored;
                data.remove_column(idx);
                Self::with_weights(data, weights)
            }
            _ => Ok(Self::inserts(stored)),
        }
    }

    /// Concatenates change batches of one schema into one.
    pub fn concat(schema: &SchemaRef, batches: &[ChangeBatch]) -> Result<Self, ArrowError> {
        let data = concat_batches(schema, batches.iter().map(|b| &b.data))?;
        if batches.iter().all(|b| b.weights.is_none()) {
            return Ok(Self::inserts(data));
        }
        let mut weights = Vec::with_capacity(data.num_rows());
        for b in batches {
            match &b.weights {
                None => weights.extend(std::iter::repeat_n(1, b.num_rows())),
                Some(w) => weights.extend_from_slice(w.values()),
            }
        }
        Self::with_weights(data, Int64Array::from(weights))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};

    fn rows() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn stored_form_round_trips_with_and_without_weights() {
        let inserts = ChangeBatch::inserts(rows());
        let stored = inserts.to_stored().unwrap();
        assert_eq!(stored.num_columns(), 2);
        let back = ChangeBatch::from_stored(stored).unwrap();
        assert!(back.weights().is_none());

        let mixed = ChangeBatch::with_weights(rows(), Int64Array::from(vec![1, -1, 1])).unwrap();
        let stored = mixed.to_stored().unwrap();
        assert_eq!(stored.schema().field(2).name(), WEIGHT_COLUMN);
        let back = ChangeBatch::from_stored(stored).unwrap();
        assert_eq!(back.weights().unwrap().values(), &[1, -1, 1]);
        assert_eq!(back.data(), &rows());
    }

    #[test]
    fn split_by_sign_separates_insertions_from_retractions() {
        let mixed = ChangeBatch::with_weights(rows(), Int64Array::from(vec![1, -1, 1])).unwrap();
        let (ins, del) = mixed.split_by_sign().unwrap();
        assert_eq!(ins.num_rows(), 2);
        assert_eq!(del.num_rows(), 1);
        assert!(!mixed.is_insert_only());
    }

    #[test]
    fn weights_must_match_rows() {
        assert!(ChangeBatch::with_weights(rows(), Int64Array::from(vec![1])).is_err());
    }
}
