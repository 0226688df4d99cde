//! [`LiveFeed`]: a subscription's events as the rows a client reads, Materialize-style:
//! `sluice_epoch`, then `sluice_progressed` (with `PROGRESS`), `sluice_diff`, and the view's
//! columns. A change is a row with its weight as the diff (+1 inserted, −1 deleted); a
//! progress row has the epoch, `sluice_progressed = true`, and nulls elsewhere.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result, sqlstate};
use crate::runtime::{SubscribeEvent, Subscription};
use crate::stream::ChangeBatch;

/// The epoch column.
pub const EPOCH_COLUMN: &str = "sluice_epoch";
/// The progress flag column (with `PROGRESS = true`).
pub const PROGRESSED_COLUMN: &str = "sluice_progressed";
/// The weight column.
pub const DIFF_COLUMN: &str = "sluice_diff";

/// The rows' schema for a view of `schema`.
pub fn feed_schema(schema: &SchemaRef, progress: bool) -> SchemaRef {
    let mut fields = vec![Field::new(EPOCH_COLUMN, DataType::Int64, false)];
    if progress {
        fields.push(Field::new(PROGRESSED_COLUMN, DataType::Boolean, false));
    }
    fields.push(Field::new(DIFF_COLUMN, DataType::Int64, true));
    // Progress rows carry no values: every view column may be null.
    fields.extend(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    Arc::new(Schema::new(fields))
}

/// A subscription read as record batches.
#[derive(Debug)]
pub struct LiveFeed {
    subscription: Subscription,
    schema: SchemaRef,
    progress: bool,
}

impl LiveFeed {
    /// Rows of `subscription` over a view of `view_schema`.
    pub fn new(subscription: Subscription, view_schema: &SchemaRef, progress: bool) -> Self {
        Self {
            subscription,
            schema: feed_schema(view_schema, progress),
            progress,
        }
    }

    /// The rows' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The next event's rows, waiting for it; an error when the subscription ended.
    pub async fn next(&mut self) -> Result<Vec<RecordBatch>> {
        let event = self.subscription.next().await.map_err(ended)?;
        self.rows(event)
    }

    /// The next event's rows if one is waiting.
    pub fn try_next(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        match self.subscription.try_next().map_err(ended)? {
            Some(event) => self.rows(event).map(Some),
            None => Ok(None),
        }
    }

    fn rows(&self, event: SubscribeEvent) -> Result<Vec<RecordBatch>> {
        match event {
            SubscribeEvent::Changes { epoch, changes } => changes
                .iter()
                .filter(|c| c.num_rows() > 0)
                .map(|c| self.change_rows(epoch, c))
                .collect(),
            SubscribeEvent::Progress { epoch } => {
                let mut columns: Vec<ArrayRef> =
                    vec![Arc::new(Int64Array::from(vec![epoch as i64]))];
                if self.progress {
                    columns.push(Arc::new(BooleanArray::from(vec![true])));
                }
                let first = columns.len();
                columns.extend(
                    self.schema.fields()[first..]
                        .iter()
                        .map(|f| new_null_array(f.data_type(), 1)),
                );
                Ok(vec![RecordBatch::try_new(
                    Arc::clone(&self.schema),
                    columns,
                )?])
            }
        }
    }

    fn change_rows(&self, epoch: u64, change: &ChangeBatch) -> Result<RecordBatch> {
        let n = change.num_rows();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![epoch as i64; n]))];
        if self.progress {
            columns.push(Arc::new(BooleanArray::from(vec![false; n])));
        }
        let diff: ArrayRef = match change.weights() {
            Some(w) => Arc::new(w.clone()),
            None => Arc::new(Int64Array::from(vec![1i64; n])),
        };
        columns.push(diff);
        columns.extend(change.data().columns().iter().cloned());
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

fn ended(reason: String) -> Error {
    // Materialize reports a subscription cut off the same way: the query is over, with why.
    Error::user(sqlstate::QUERY_CANCELED, reason)
}

/// The diff column's values.
#[cfg(test)]
fn weights(batch: &RecordBatch) -> Vec<i64> {
    let diff = batch.column_by_name(DIFF_COLUMN).unwrap();
    let diff = diff.as_any().downcast_ref::<Int64Array>().unwrap();
    (0..diff.len()).map(|i| diff.value(i)).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int32Array};

    use super::*;
    use crate::runtime::subscribe::EndReason;

    #[tokio::test]
    async fn changes_and_progress_become_rows() {
        let view = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let sub = Subscription::new(receiver, Arc::new(EndReason::default()), None);
        let mut feed = LiveFeed::new(sub, &view, true);
        let data = RecordBatch::try_new(
            Arc::clone(&view),
            vec![Arc::new(Int32Array::from(vec![7, 8]))],
        )
        .unwrap();
        let change = ChangeBatch::with_weights(data, Int64Array::from(vec![1, -1])).unwrap();
        sender
            .send(SubscribeEvent::Changes {
                epoch: 5,
                changes: Arc::new(vec![change]),
            })
            .await
            .unwrap();
        sender
            .send(SubscribeEvent::Progress { epoch: 6 })
            .await
            .unwrap();
        let rows = feed.next().await.unwrap();
        assert_eq!(weights(&rows[0]), vec![1, -1]);
        assert_eq!(rows[0].schema().field(3).name(), "a");
        let progress = feed.try_next().unwrap().unwrap();
        assert_eq!(progress[0].num_rows(), 1);
        assert!(progress[0].column(3).is_null(0));
        drop(sender);
        let err = feed.next().await.unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::QUERY_CANCELED);
    }
}
