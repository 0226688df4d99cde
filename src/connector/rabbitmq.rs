//! The RabbitMQ source, through `lapin`: consumes one queue, decodes deliveries in batches
//! (JSON, CSV or Avro, as for Kafka) and writes them to the source's table.
//!
//! - **Stream queues** (`x-queue-type = stream`): every delivery carries its offset
//!   (`x-stream-offset`); the next offset is kept in the table's log with the rows, and the
//!   source resumes from it after a restart (consuming with `x-stream-offset = <next>`, and
//!   dropping the deliveries before it that a stream sends from the start of its chunk).
//!   Exactly once.
//! - **Classic and quorum queues**: a delivery is acknowledged (with `multiple`) only once the
//!   batch holding it is durable in the table's log; what was not acknowledged when Sluice
//!   stopped is delivered again. At least once: after a crash between the fsync and the
//!   acknowledgement, a message is ingested twice.
//!
//! Which kind a queue is, is found by asking for a stream offset first: a classic or quorum
//! queue refuses the argument (`406 PRECONDITION_FAILED`), and is then consumed plainly on a
//! new channel. A lost connection is made again with back-off; a queue that does not exist
//! yet is waited for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};

use crate::connector::decode::RecordDecoder;
use crate::connector::queue::table::ConnectorBatch;
use crate::connector::source::{
    Failure, SourceContext, SourceStatus, SplitWatermarks, position_text, watermark_candidates,
};
use crate::connector::spec::{Format, RabbitMqSource, SourceSpec, StartupMode};
use crate::error::{Error, Result};

/// Deliveries gathered before a batch is decoded.
const MAX_BATCH_RECORDS: usize = 16 * 1024;
/// Bytes gathered before a batch is decoded.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// How long the source waits for the first delivery of a batch.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// How long gathering a batch may take once its first delivery came.
const GATHER_WAIT: Duration = Duration::from_millis(20);
/// The header of a stream queue's delivery that gives its offset.
const STREAM_OFFSET: &str = "x-stream-offset";

/// Where the source stands (stream queues: the next offset).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watermark: Option<i64>,
    /// The queue was found to be a classic or quorum queue (it is not probed again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    plain: bool,
}

/// Reads the queue until the source is stopped.
pub fn run(context: &SourceContext, spec: &SourceSpec, rabbit: &RabbitMqSource) -> Result<()> {
    if spec.format != Format::Plain {
        return Err(Error::unsupported("a rabbitmq source is FORMAT PLAIN"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("rabbitmq source runtime: {e}")))?;
    runtime.block_on(run_async(context, spec, rabbit))
}

async fn run_async(
    context: &SourceContext,
    spec: &SourceSpec,
    rabbit: &RabbitMqSource,
) -> Result<()> {
    let def = context.table.def();
    let mut position: Position = context.resume()?.unwrap_or_default();
    let mut splits = SplitWatermarks::new(rabbit.idle_timeout);
    splits.restore(0, position.watermark);
    let mut decoder = RecordDecoder::new(def.payload_schema(), spec.encode.clone())?;
    let mut backoff = Duration::from_millis(200);
    while !context.stopped() {
        match consume(
            context,
            spec,
            rabbit,
            &mut position,
            &mut splits,
            &mut decoder,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(reason)) => {
                context.back_off("rabbitmq", &reason, &mut backoff).await;
            }
        }
    }
    Ok(())
}

fn retry(what: &str) -> impl Fn(lapin::Error) -> Failure + '_ {
    move |e| Failure::Retry(format!("{what}: {e}"))
}

/// One connection's life: consume until stopped or until the connection fails.
async fn consume(
    context: &SourceContext,
    spec: &SourceSpec,
    rabbit: &RabbitMqSource,
    position: &mut Position,
    splits: &mut SplitWatermarks,
    decoder: &mut RecordDecoder,
) -> std::result::Result<(), Failure> {
    let connection = Connection::connect(&rabbit.url, ConnectionProperties::default())
        .await
        .map_err(retry("connect"))?;
    let tag = format!(
        "sluice-{}-{}",
        context.table.def().name,
        context.table.def().id
    );
    let open = |offset: Option<AMQPValue>| {
        let connection = &connection;
        let tag = tag.clone();
        async move {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(rabbit.prefetch, BasicQosOptions::default())
                .await?;
            let mut arguments = FieldTable::default();
            if let Some(offset) = offset {
                arguments.insert(STREAM_OFFSET.into(), offset);
            }
            let consumer = channel
                .basic_consume(
                    rabbit.queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    arguments,
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer))
        }
    };
    let start = match position.next_offset {
        Some(next) => AMQPValue::LongLongInt(next),
        None => match rabbit.startup {
            StartupMode::Earliest => AMQPValue::LongString("first".into()),
            StartupMode::Latest => AMQPValue::LongString("next".into()),
            StartupMode::Timestamp(ms) => AMQPValue::Timestamp((ms / 1000).max(0) as u64),
        },
    };
    let plain = |(channel, consumer)| (channel, consumer, false);
    let (channel, mut consumer, mut stream) = if position.plain {
        open(None).await.map(plain).map_err(retry("consume"))?
    } else {
        match open(Some(start)).await {
            Ok((channel, consumer)) => (channel, consumer, true),
            // (lapin logs the refusal as an error of the channel it closes.)
            Err(e) if refuses_stream_offset(&e) => {
                position.plain = true;
                open(None).await.map(plain).map_err(retry("consume"))?
            }
            Err(e) => return Err(retry("consume")(e)),
        }
    };
    tracing::info!(queue = %rabbit.queue, stream, "rabbitmq source consuming");
    context.stats.set_status(SourceStatus::Running);

    let mut written_watermark = splits.current();
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut records: Vec<(std::ops::Range<usize>, Option<i64>)> = Vec::new();
    while !context.stopped() {
        buffer.clear();
        records.clear();
        let mut last_tag = None;
        let mut deadline: Option<Instant> = None;
        let mut received = 0usize;
        // No more than the prefetch count arrives before an acknowledgement.
        while records.len() < MAX_BATCH_RECORDS
            && buffer.len() < MAX_BATCH_BYTES
            && received < usize::from(rabbit.prefetch)
        {
            let wait = deadline.map_or(POLL_WAIT, |d| d.saturating_duration_since(Instant::now()));
            let delivery = match tokio::time::timeout(wait, consumer.next()).await {
                Err(_) => break,
                Ok(None) => return Err(Failure::Retry("the consumer was cancelled".into())),
                Ok(Some(Err(e))) => return Err(retry("delivery")(e)),
                Ok(Some(Ok(delivery))) => delivery,
            };
            deadline.get_or_insert_with(|| Instant::now() + GATHER_WAIT);
            received += 1;
            last_tag = Some(delivery.delivery_tag);
            let offset = stream
                .then(|| stream_offset(&delivery.properties))
                .flatten();
            if let (Some(offset), Some(next)) = (offset, position.next_offset)
                && offset < next
            {
                // A stream starts at the beginning of the chunk holding the asked offset.
                continue;
            }
            let begin = buffer.len();
            buffer.extend_from_slice(&delivery.data);
            records.push((begin..buffer.len(), offset));
        }
        if last_tag.is_none() {
            // Quiet: the queue is caught up; it may go idle and let the watermark move on.
            splits.caught_up(0);
            let now = splits.current();
            if now > written_watermark && context.table.def().watermark.is_some() {
                position.watermark = splits.split(0);
                context.write_mark(now, &*position, false)?;
                written_watermark = now;
            }
            continue;
        }
        splits.lagging(0);
        context.received(buffer.len());
        if stream && records.iter().any(|(_, offset)| offset.is_none()) {
            // A queue that took the stream offset argument but sends no offsets is not a
            // stream: acknowledged only once durable from now on.
            tracing::warn!(queue = %rabbit.queue, "deliveries without x-stream-offset: treated as a classic queue");
            stream = false;
            position.plain = true;
        }
        if stream && let Some(tag) = last_tag.take() {
            // A stream keeps its messages: the acknowledgement only asks for more, and the
            // offset in the log says where to resume. The next deliveries arrive while these
            // are decoded.
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(retry("ack"))?;
        }
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(records.len());
        let mut from: Vec<usize> = Vec::with_capacity(records.len());
        for (i, (range, offset)) in records.iter().enumerate() {
            if range.len() > spec.max_record_bytes {
                bad(
                    context,
                    *offset,
                    &format!("message of {} bytes is over max.record.bytes", range.len()),
                )?;
            } else if range.is_empty() {
                bad(context, *offset, "empty message")?;
            } else {
                payloads.push(&buffer[range.clone()]);
                from.push(i);
            }
        }
        let decoded = decoder.decode(&payloads).map_err(Error::from)?;
        for (index, reason) in &decoded.bad {
            bad(context, records[from[*index]].1, reason)?;
        }
        let rows: RecordBatch = decoded.batch;
        if rows.num_rows() > 0 {
            let candidates = watermark_candidates(&context.table, &rows)?;
            splits.observe(candidates.as_ref(), std::iter::repeat_n(0, rows.num_rows()));
        }
        if let Some(last) = records.iter().rev().find_map(|(_, offset)| *offset) {
            position.next_offset = Some(last + 1);
        }
        position.watermark = splits.split(0);
        let watermark = splits.current();
        let rows = if rows.schema() == context.table.def().schema {
            rows
        } else {
            RecordBatch::try_new(
                Arc::clone(&context.table.def().schema),
                rows.columns().to_vec(),
            )
            .map_err(Error::from)?
        };
        context.write(ConnectorBatch {
            rows,
            deleted_keys: None,
            watermark,
            position: position_text(&*position),
            end_of_input: false,
        })?;
        written_watermark = written_watermark.max(watermark);
        if !stream {
            // At least once: acknowledged only once the rows are durable.
            context.durable().await?;
        }
        if let Some(tag) = last_tag {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(retry("ack"))?;
        }
    }
    // Stopping: unacknowledged deliveries go back to a classic queue for the next start.
    if let Err(e) = connection.close(200, "sluice source stopped".into()).await {
        tracing::debug!(error = %e, "rabbitmq close");
    }
    Ok(())
}

/// Whether the broker refused `x-stream-offset`: the queue is not a stream.
fn refuses_stream_offset(e: &lapin::Error) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            amqp.get_id() == 406 && amqp.get_message().as_str().contains(STREAM_OFFSET)
        }
        _ => false,
    }
}

/// A stream delivery's offset.
fn stream_offset(properties: &lapin::BasicProperties) -> Option<i64> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(STREAM_OFFSET)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

fn bad(context: &SourceContext, offset: Option<i64>, reason: &str) -> Result<()> {
    let location = match offset {
        Some(offset) => format!("stream offset {offset}"),
        None => "a queue message".to_string(),
    };
    context.bad_record(&location, reason)
}
