//! [`Cursor`]: `DECLARE … CURSOR FOR` a query or a subscription, read by `FETCH`.
//!
//! Over a query, `FETCH n` returns the next n rows (fewer only at the end), as in PostgreSQL.
//! Over a subscription, which never ends, `FETCH n` waits until at least one row is there (at
//! most `timeout`, when given) and returns what is there, up to n: a driver that cannot read an
//! endless result set polls with `FETCH … WITH (timeout = '1s')`.

use std::collections::VecDeque;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use super::feed::LiveFeed;
use crate::error::{Error, Result};

/// Where a cursor's rows come from.
pub enum CursorSource {
    /// A query's result, read as it is computed (in a mutex only so that the session stays
    /// `Sync`; it is reached through `&mut`, never locked).
    Query(std::sync::Mutex<SendableRecordBatchStream>),
    /// A subscription.
    Feed(LiveFeed),
}

/// An open cursor.
pub struct Cursor {
    schema: SchemaRef,
    source: CursorSource,
    /// Rows read from the source and not fetched yet.
    pending: VecDeque<RecordBatch>,
    /// The query has no more rows.
    exhausted: bool,
    /// Why the subscription ended, kept until the rows before it have been fetched.
    ended: Option<crate::error::Error>,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("schema", &self.schema)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Cursor {
    /// A cursor over a query's rows.
    pub fn query(schema: SchemaRef, stream: SendableRecordBatchStream) -> Self {
        Self::new(schema, CursorSource::Query(std::sync::Mutex::new(stream)))
    }

    /// A cursor over a subscription.
    pub fn feed(feed: LiveFeed) -> Self {
        Self::new(
            std::sync::Arc::clone(feed.schema()),
            CursorSource::Feed(feed),
        )
    }

    fn new(schema: SchemaRef, source: CursorSource) -> Self {
        Self {
            schema,
            source,
            pending: VecDeque::new(),
            exhausted: false,
            ended: None,
        }
    }

    /// The rows' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The next rows: at most `count` (`None`: no limit). Gathering more than `max_rows` of
    /// a query's rows is refused (`54000`); the rows read stay for the next, smaller FETCH.
    pub async fn fetch(
        &mut self,
        count: Option<u64>,
        timeout: Option<Duration>,
        max_rows: usize,
    ) -> Result<Vec<RecordBatch>> {
        let limit = count.map_or(usize::MAX, |c| c as usize);
        if limit == 0 {
            return Ok(Vec::new());
        }
        match &mut self.source {
            CursorSource::Query(stream) => {
                let stream = stream.get_mut().map_err(|_| {
                    Error::internal("the cursor's query panicked earlier; close the cursor")
                })?;
                while !self.exhausted && pending_rows(&self.pending) < limit {
                    if pending_rows(&self.pending) > max_rows {
                        return Err(Error::user(
                            crate::error::sqlstate::PROGRAM_LIMIT_EXCEEDED,
                            format!(
                                "FETCH would return more than {max_rows} rows \
                                 (--max-result-rows); fetch them a count at a time"
                            ),
                        ));
                    }
                    match stream.next().await {
                        Some(batch) => self.pending.push_back(batch?),
                        None => self.exhausted = true,
                    }
                }
            }
            CursorSource::Feed(feed) => {
                if pending_rows(&self.pending) == 0
                    && let Some(e) = self.ended.take()
                {
                    return Err(e);
                }
                if pending_rows(&self.pending) == 0 {
                    let first = match timeout {
                        None => Some(feed.next().await?),
                        Some(t) => match tokio::time::timeout(t, feed.next()).await {
                            Ok(rows) => Some(rows?),
                            Err(_) => None,
                        },
                    };
                    self.pending.extend(first.into_iter().flatten());
                }
                // Then whatever else has arrived, without waiting.
                while pending_rows(&self.pending) < limit && self.ended.is_none() {
                    match feed.try_next() {
                        Ok(Some(rows)) => self.pending.extend(rows),
                        Ok(None) => break,
                        // The rows before the end go out first; the error with the next FETCH.
                        Err(e) => self.ended = Some(e),
                    }
                }
            }
        }
        Ok(take_rows(&mut self.pending, limit))
    }
}

fn pending_rows(pending: &VecDeque<RecordBatch>) -> usize {
    pending.iter().map(RecordBatch::num_rows).sum()
}

/// Takes up to `limit` rows off the front, splitting a batch if needed.
fn take_rows(pending: &mut VecDeque<RecordBatch>, limit: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut taken = 0;
    while taken < limit {
        let Some(batch) = pending.pop_front() else {
            break;
        };
        let room = limit - taken;
        if batch.num_rows() > room {
            pending.push_front(batch.slice(room, batch.num_rows() - room));
            out.push(batch.slice(0, room));
            taken += room;
        } else {
            taken += batch.num_rows();
            out.push(batch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::memory::MemoryStream;

    use super::*;

    fn batch(values: Vec<i32>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values))]).unwrap()
    }

    #[tokio::test]
    async fn fetch_over_a_query_returns_exactly_n_until_the_end() {
        let batches = vec![batch(vec![1, 2, 3]), batch(vec![4, 5])];
        let schema = batches[0].schema();
        let stream = MemoryStream::try_new(batches, Arc::clone(&schema), None).unwrap();
        let mut cursor = Cursor::query(schema, Box::pin(stream));
        let count = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(count(&cursor.fetch(Some(2), None, 100).await.unwrap()), 2);
        assert_eq!(count(&cursor.fetch(Some(2), None, 100).await.unwrap()), 2);
        assert_eq!(count(&cursor.fetch(None, None, 100).await.unwrap()), 1);
        assert_eq!(count(&cursor.fetch(Some(5), None, 100).await.unwrap()), 0);
    }
}
