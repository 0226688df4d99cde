//! Streaming a subscription to the client: as DataRows of an endless result set (`SUBSCRIBE`)
//! or as COPY data (`COPY (SUBSCRIBE …) TO STDOUT`, which psql prints as rows arrive).
//!
//! Each epoch's rows are flushed at once: pgwire's own response path buffers until it has
//! several kilobytes, which would hold a quiet feed back indefinitely. When nothing has
//! happened for a while a keepalive goes out (an empty CopyData, which libpq skips, or a
//! ParameterStatus), so a client that has gone away is noticed by the failed write and its
//! subscription torn down. The stream ends only with an error (the subscriber fell behind,
//! the view was dropped) or a cancel request, which pgwire turns into 57014.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use futures::{Sink, SinkExt};
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyOutResponse};
use pgwire::messages::data::RowDescription;
use pgwire::messages::startup::ParameterStatus;

use crate::error::Error;
use crate::sql::feed::LiveFeed;

use super::encode::{copy_lines, encode_batch};
use super::error::pg_error;

/// Quiet time after which a keepalive is written.
const KEEPALIVE: Duration = Duration::from_millis(250);

/// How the rows go out.
pub enum FeedFormat {
    /// DataRows; with the RowDescription first (simple protocol) or without (extended
    /// protocol, where Describe sent it), in these formats.
    Rows {
        /// Send the RowDescription first.
        describe: bool,
        /// Text or binary per column.
        fields: Vec<FieldInfo>,
    },
    /// COPY data, text or CSV.
    Copy {
        /// CSV rather than text.
        csv: bool,
    },
}

/// Streams `feed` until it ends (with an error) or the statement is canceled.
pub async fn stream_feed<C>(
    client: &mut C,
    mut feed: LiveFeed,
    format: FeedFormat,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let columns = feed.schema().fields().len();
    match &format {
        FeedFormat::Rows {
            describe: true,
            fields,
        } => {
            let description = RowDescription::new(fields.iter().map(Into::into).collect());
            client
                .send(PgWireBackendMessage::RowDescription(description))
                .await?;
        }
        FeedFormat::Rows { .. } => {}
        FeedFormat::Copy { .. } => {
            let header = CopyOutResponse::new(0, columns as i16, vec![0; columns]);
            client
                .send(PgWireBackendMessage::CopyOutResponse(header))
                .await?;
        }
    }
    // Text or binary per column, worked out once for the whole feed.
    let formats: Vec<FieldFormat> = match &format {
        FeedFormat::Rows { fields, .. } => fields.iter().map(FieldInfo::format).collect(),
        FeedFormat::Copy { .. } => Vec::new(),
    };
    loop {
        let batches = match tokio::time::timeout(KEEPALIVE, feed.next()).await {
            Err(_) => {
                client.send(keepalive(&format)).await?;
                continue;
            }
            Ok(next) => next.map_err(pg_error)?,
        };
        write_rows(client, &batches, &format, &formats).await?;
        // Whatever else is already there goes in the same flush.
        while let Some(more) = feed.try_next().map_err(pg_error)? {
            write_rows(client, &more, &format, &formats).await?;
        }
        client.flush().await?;
    }
}

fn keepalive(format: &FeedFormat) -> PgWireBackendMessage {
    match format {
        FeedFormat::Copy { .. } => PgWireBackendMessage::CopyData(CopyData::new(Bytes::new())),
        FeedFormat::Rows { .. } => PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
            "sluice_keepalive".into(),
            "on".into(),
        )),
    }
}

async fn write_rows<C>(
    client: &mut C,
    batches: &[RecordBatch],
    format: &FeedFormat,
    formats: &[FieldFormat],
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for batch in batches {
        match format {
            FeedFormat::Rows { .. } => {
                let rows = encode_batch(batch, formats)
                    .map_err(|e| pg_error(Error::unsupported(e.to_string())))?;
                for row in rows {
                    client.feed(PgWireBackendMessage::DataRow(row)).await?;
                }
            }
            FeedFormat::Copy { csv } => {
                for line in copy_lines(batch, *csv) {
                    client
                        .feed(PgWireBackendMessage::CopyData(CopyData::new(line)))
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// A subscription as the rows of a portal, for a driver that reads it through the extended
/// protocol with a row limit (asyncpg's and pgJDBC's cursors): pgwire sends that many rows per
/// `Execute` and suspends the portal, and the feed is read only as far as the client asks.
pub fn feed_rows(
    feed: LiveFeed,
    fields: &[FieldInfo],
) -> impl futures::Stream<Item = PgWireResult<pgwire::messages::data::DataRow>> + Send + 'static {
    use futures::StreamExt;
    let formats: Arc<[FieldFormat]> = fields.iter().map(FieldInfo::format).collect();
    futures::stream::unfold(Some(feed), move |state| {
        let formats = Arc::clone(&formats);
        async move {
            let mut feed = state?;
            let rows: Vec<PgWireResult<pgwire::messages::data::DataRow>> = match feed.next().await {
                Ok(batches) => {
                    let mut rows = Vec::new();
                    for batch in &batches {
                        match encode_batch(batch, &formats) {
                            Ok(encoded) => rows.extend(encoded.into_iter().map(Ok)),
                            Err(e) => {
                                rows.push(Err(pg_error(Error::unsupported(e.to_string()))));
                                return Some((futures::stream::iter(rows), None));
                            }
                        }
                    }
                    rows
                }
                // The subscription ended (its view dropped, or it fell too far behind).
                Err(e) => return Some((futures::stream::iter(vec![Err(pg_error(e))]), None)),
            };
            Some((futures::stream::iter(rows), Some(feed)))
        }
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn copy_lines_escape_like_postgres() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("a\tb\\c"), Some("x,\"y\"")])),
            ],
        )
        .unwrap();
        let text = copy_lines(&batch, false);
        let csv = copy_lines(&batch, true);
        assert_eq!(&text[0][..], b"1\ta\\tb\\\\c\n");
        assert_eq!(&text[1][..], b"\\N\tx,\"y\"\n");
        assert_eq!(&csv[1][..], b",\"x,\"\"y\"\"\"\n");
    }
}
