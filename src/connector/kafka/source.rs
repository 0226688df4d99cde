//! The Kafka source: polls records in batches, decodes each batch columnar, and writes it to
//! the source's table together with the offsets and per-partition watermarks after it.
//!
//! Offsets live in the table's log (the last record's source position), so a restart resumes
//! exactly after the last record kept: nothing is read twice into the log, nothing skipped.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, TimestampNanosecondArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::progress::{Progress, STALL_AFTER};
use serde::{Deserialize, Serialize};

use crate::connector::decode::RecordDecoder;
use crate::connector::queue::table::ConnectorBatch;
use crate::connector::source::{
    SourceContext, SourceStatus, SplitWatermarks, position_text, watermark_candidates,
};
use crate::connector::spec::{Format, IncludeKind, KafkaSource, SourceSpec, StartupMode};
use crate::error::{Error, Result};

/// Records gathered before a batch is decoded.
const MAX_BATCH_RECORDS: usize = 32 * 1024;
/// Bytes gathered before a batch is decoded.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// How long a poll waits for the first record of a batch.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// How long gathering a batch may take once its first record came.
const GATHER_WAIT: Duration = Duration::from_millis(20);

/// Where the source stands: next offset and watermark per partition.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    offsets: BTreeMap<i32, i64>,
    #[serde(default)]
    watermarks: BTreeMap<i32, i64>,
}

/// One polled record, its bytes in the batch's buffer.
#[derive(Debug)]
struct Polled {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
}

/// Reads the topic until the source is stopped.
pub fn run(context: &SourceContext, spec: &SourceSpec, kafka: &KafkaSource) -> Result<()> {
    let def = context.table.def();
    let group = format!("sluice-source-{}-{}", def.name, def.id);
    let consumer: BaseConsumer<super::ConsumerLog> = super::client_config(
        &kafka.bootstrap,
        // The source polls in bursts (gather a batch, then decode it); with librdkafka's
        // default of 1 s, a prefetch queue that filled up meanwhile pauses fetching for a
        // second each time, which cut throughput by four.
        &[("fetch.queue.backoff.ms", "10")],
        &kafka.properties,
        // What spec::SOURCE_OWN_PROPERTIES names: refused as `properties.` options.
        &[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            // An offset the broker no longer holds is an error the source handles (counts
            // and logs what is lost), never a silent jump to the partition's end.
            ("auto.offset.reset", "error"),
        ],
    )
    .create_with_context(super::ConsumerLog)
    .map_err(|e| {
        Error::user(
            crate::error::sqlstate::INVALID_PARAMETER_VALUE,
            format!("kafka consumer: {e}"),
        )
    })?;

    // A Kafka source never ends, so there is always a position to resume from.
    let mut position: Position = context.resume()?.unwrap_or_default();
    let mut splits = SplitWatermarks::new(kafka.idle_timeout);
    for (&partition, &watermark) in &position.watermarks {
        splits.restore(i64::from(partition), Some(watermark));
    }
    let partitions = loop {
        if context.stopped() {
            return Ok(());
        }
        match consumer.fetch_metadata(Some(&kafka.topic), Duration::from_secs(5)) {
            Ok(metadata) => {
                let found: Vec<i32> = metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == kafka.topic && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if !found.is_empty() {
                    break found;
                }
                tracing::info!(topic = %kafka.topic, "topic has no partitions yet; waiting");
            }
            Err(e) => tracing::warn!(topic = %kafka.topic, error = %e, "kafka metadata"),
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for &p in &partitions {
        if !position.watermarks.contains_key(&p) {
            // Holds the watermark back until it has data or goes idle.
            splits.restore(i64::from(p), None);
        }
    }
    // Every partition starts at a concrete offset, so its lag is known from the start.
    let unresolved: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| !position.offsets.contains_key(p))
        .collect();
    if !unresolved.is_empty() {
        let starts = match kafka.startup {
            StartupMode::Earliest => {
                list_offsets(&consumer, &kafka.topic, &unresolved, Offset::Beginning)?
            }
            StartupMode::Latest => list_offsets(&consumer, &kafka.topic, &unresolved, Offset::End)?,
            StartupMode::Timestamp(ms) => unresolved
                .iter()
                .map(|&p| Ok((p, offset_for_time(&consumer, &kafka.topic, p, ms)?)))
                .collect::<Result<_>>()?,
        };
        position.offsets.extend(starts);
    }
    assign(&consumer, &kafka.topic, &position.offsets)?;
    tracing::info!(topic = %kafka.topic, partitions = partitions.len(), "kafka source assigned");
    let mut lag = Lag {
        consumer: &consumer,
        kafka,
        progress: Progress::new(&position.offsets, STALL_AFTER, Instant::now())
            .with_quiet(kafka.idle_timeout),
        stalled_shown: Vec::new(),
    };

    let mut reader = BatchReader::new(context, spec)?;
    let mut buffer: Vec<u8> = Vec::with_capacity(MAX_BATCH_BYTES);
    let mut polled: Vec<Polled> = Vec::with_capacity(1024);
    let mut written_watermark = splits.current();
    while !context.stopped() {
        buffer.clear();
        polled.clear();
        let mut out_of_range = false;
        let mut deadline: Option<Instant> = None;
        let gather_started = Instant::now();
        while polled.len() < MAX_BATCH_RECORDS && buffer.len() < MAX_BATCH_BYTES {
            let wait = match deadline {
                None => POLL_WAIT,
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            let Some(message) = consumer.poll(wait) else {
                break;
            };
            let message = match message {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(_)) => {
                    // A hint only: the end is confirmed by asking the broker.
                    lag.progress.end_reported();
                    continue;
                }
                Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                )) => {
                    out_of_range = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka poll");
                    break;
                }
            };
            deadline.get_or_insert_with(|| Instant::now() + GATHER_WAIT);
            let mut copy = |bytes: Option<&[u8]>| {
                bytes.map(|b| {
                    let start = buffer.len();
                    buffer.extend_from_slice(b);
                    start..buffer.len()
                })
            };
            let key = if reader.wants_key {
                copy(message.key())
            } else {
                None
            };
            let payload = copy(message.payload());
            polled.push(Polled {
                partition: message.partition(),
                offset: message.offset(),
                timestamp_ms: message.timestamp().to_millis(),
                key,
                payload,
            });
        }
        if polled.is_empty() {
            lag.track(context, &mut position, &mut splits, out_of_range)?;
            // Idle partitions may let the watermark move on.
            let now = splits.current();
            if now > written_watermark && context.table.def().watermark.is_some() {
                position.watermarks = watermarks_of(&splits, &partitions);
                context.write_mark(now, &position, false)?;
                written_watermark = now;
            }
            continue;
        }
        let gathered = gather_started.elapsed();
        context.received(buffer.len());
        let work_started = Instant::now();
        // Runs of puts and of tombstones, in order, so that a delete and a later put of a key
        // apply in the order they were produced.
        let upsert = spec.format == Format::Upsert;
        let mut start = 0;
        while start < polled.len() {
            let tombstone = |m: &Polled| upsert && m.payload.is_none();
            let kind = tombstone(&polled[start]);
            let end = (start..polled.len())
                .find(|&i| tombstone(&polled[i]) != kind)
                .unwrap_or(polled.len());
            let run = &polled[start..end];
            let (rows, deleted_keys) = if kind {
                (None, Some(reader.decode_keys(context, &buffer, run)?))
            } else {
                (Some(reader.decode_rows(context, &buffer, run)?), None)
            };
            if let Some(rows) = &rows {
                let candidates = watermark_candidates(&context.table, &rows.batch)?;
                splits.observe(
                    candidates.as_ref(),
                    rows.partitions.iter().map(|&p| i64::from(p)),
                );
            }
            for m in run {
                position.offsets.insert(m.partition, m.offset + 1);
            }
            position.watermarks = watermarks_of(&splits, &partitions);
            let watermark = splits.current();
            context.write(ConnectorBatch {
                rows: rows.map(|r| r.batch).unwrap_or_else(|| {
                    RecordBatch::new_empty(Arc::clone(&context.table.def().schema))
                }),
                deleted_keys,
                watermark,
                position: position_text(&position),
                end_of_input: false,
            })?;
            written_watermark = written_watermark.max(watermark);
            start = end;
        }
        tracing::trace!(
            records = polled.len(),
            gather_us = gathered.as_micros() as u64,
            work_us = work_started.elapsed().as_micros() as u64,
            "kafka batch"
        );
        // Only after the batch's rows are observed: a partition's end follows its last row.
        lag.track(context, &mut position, &mut splits, out_of_range)?;
    }
    Ok(())
}

/// The partitions against their ends, and the stalled ones last shown.
struct Lag<'a> {
    consumer: &'a BaseConsumer<super::ConsumerLog>,
    kafka: &'a KafkaSource,
    progress: Progress,
    stalled_shown: Vec<i32>,
}

impl Lag<'_> {
    /// After each batch (or empty poll): notes the source's progress, asks the broker for the
    /// partitions' ends when due, handles offsets the broker no longer holds, tells the
    /// watermarks which partitions may go idle, and shows where each partition stands.
    fn track(
        &mut self,
        context: &SourceContext,
        position: &mut Position,
        splits: &mut SplitWatermarks,
        out_of_range: bool,
    ) -> Result<()> {
        let Lag {
            consumer,
            kafka,
            progress,
            stalled_shown,
        } = self;
        let (consumer, kafka) = (*consumer, *kafka);
        let now = Instant::now();
        for (&p, &next) in &position.offsets {
            progress.moved(p, next, now);
        }
        // The consumer's own position also moves past records that are not handed out
        // (transaction markers, aborted records).
        if let Ok(fetched) = consumer.position() {
            for e in fetched.elements_for_topic(&kafka.topic) {
                if let Offset::Offset(next) = e.offset() {
                    progress.moved(e.partition(), next, now);
                }
            }
        }
        if out_of_range {
            skip_lost_offsets(context, consumer, kafka, position, progress)?;
        }
        if progress.query_due(now) {
            let ids: Vec<i32> = position.offsets.keys().copied().collect();
            match list_offsets(consumer, &kafka.topic, &ids, Offset::End) {
                Ok(ends) => progress.ends(&ends, Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "kafka end offsets");
                    progress.ends_unknown(Instant::now());
                }
            }
        }
        let now = Instant::now();
        progress.apply(splits);
        let stalled = progress.stalled(now);
        if stalled != *stalled_shown {
            if stalled.is_empty() {
                tracing::info!(topic = %kafka.topic, "kafka partitions read again");
                context.stats.set_status(SourceStatus::Running);
            } else {
                let why = format!(
                    "partitions {stalled:?} of topic {} are behind their end and made no progress for {} s",
                    kafka.topic,
                    STALL_AFTER.as_secs()
                );
                tracing::warn!(topic = %kafka.topic, partitions = ?stalled, "kafka source stalled");
                context.stats.set_status(SourceStatus::Stalled(why));
            }
            *stalled_shown = stalled;
        }
        context.stats.set_splits(progress.snapshot(splits, now));
        Ok(())
    }
}

/// The consumer was told an offset it asked for is not on the broker. A partition whose
/// position is below the oldest offset the broker still holds (retention deleted records
/// before the source read them) goes on from that oldest offset, and the offsets skipped are
/// logged and counted in `sluice_source_partitions`; a position beyond the partition's end
/// (the topic was recreated) is an error: the source cannot tell what it would read twice or
/// miss.
fn skip_lost_offsets(
    context: &SourceContext,
    consumer: &BaseConsumer<super::ConsumerLog>,
    kafka: &KafkaSource,
    position: &mut Position,
    progress: &mut Progress,
) -> Result<()> {
    let ids: Vec<i32> = position.offsets.keys().copied().collect();
    let oldest = list_offsets(consumer, &kafka.topic, &ids, Offset::Beginning)?;
    let ends = list_offsets(consumer, &kafka.topic, &ids, Offset::End)?;
    for (&p, next) in &mut position.offsets {
        let (Some(&low), Some(&end)) = (oldest.get(&p), ends.get(&p)) else {
            continue;
        };
        if *next > end {
            return Err(Error::connector(format!(
                "source \"{}\": partition {p} of topic {} ends at offset {end}, before the \
                 source's position {next}: was the topic deleted and created again?",
                context.table.def().name,
                kafka.topic
            )));
        }
        if *next < low {
            let skipped = progress.skip(p, low, Instant::now());
            tracing::error!(
                topic = %kafka.topic,
                partition = p,
                from = *next,
                to = low,
                skipped,
                "records lost: the broker no longer holds them (retention deleted them before \
                 the source read them); going on from the oldest offset it holds"
            );
            *next = low;
        }
    }
    assign(consumer, &kafka.topic, &position.offsets)
}

/// Assigns the consumer every partition at its offset.
fn assign(
    consumer: &BaseConsumer<super::ConsumerLog>,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<()> {
    let mut assignment = TopicPartitionList::new();
    for (&p, &next) in offsets {
        assignment
            .add_partition_offset(topic, p, Offset::Offset(next))
            .map_err(|e| Error::connector(format!("kafka assign: {e}")))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| Error::connector(format!("kafka assign: {e}")))
}

/// Each partition's oldest offset (`Offset::Beginning`) or end offset (`Offset::End`), as the
/// broker answers now.
fn list_offsets(
    consumer: &BaseConsumer<super::ConsumerLog>,
    topic: &str,
    partitions: &[i32],
    which: Offset,
) -> Result<BTreeMap<i32, i64>> {
    let mut query = TopicPartitionList::new();
    for &p in partitions {
        query
            .add_partition_offset(topic, p, which)
            .map_err(|e| Error::connector(format!("kafka list offsets: {e}")))?;
    }
    let found = consumer
        .offsets_for_times(query, Duration::from_secs(2))
        .map_err(|e| Error::connector(format!("kafka list offsets: {e}")))?;
    let mut out = BTreeMap::new();
    for e in found.elements_for_topic(topic) {
        if let Err(error) = e.error() {
            return Err(Error::connector(format!(
                "kafka list offsets of partition {}: {error}",
                e.partition()
            )));
        }
        match e.offset() {
            Offset::Offset(n) => {
                out.insert(e.partition(), n);
            }
            other => {
                return Err(Error::connector(format!(
                    "kafka list offsets of partition {}: no offset ({other:?})",
                    e.partition()
                )));
            }
        }
    }
    Ok(out)
}

fn watermarks_of(splits: &SplitWatermarks, partitions: &[i32]) -> BTreeMap<i32, i64> {
    partitions
        .iter()
        .filter_map(|&p| splits.split(i64::from(p)).map(|w| (p, w)))
        .collect()
}

fn offset_for_time(
    consumer: &BaseConsumer<super::ConsumerLog>,
    topic: &str,
    partition: i32,
    ms: i64,
) -> Result<i64> {
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(topic, partition, Offset::Offset(ms))
        .map_err(|e| Error::connector(format!("kafka offsets_for_times: {e}")))?;
    let found = consumer
        .offsets_for_times(query, Duration::from_secs(10))
        .map_err(|e| Error::connector(format!("kafka offsets_for_times: {e}")))?;
    let offset = found
        .find_partition(topic, partition)
        .map(|e| e.offset())
        .unwrap_or(Offset::End);
    Ok(match offset {
        Offset::Offset(n) => n,
        // No record at or after the time: start at the end.
        _ => {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .map_err(|e| Error::connector(format!("kafka watermarks: {e}")))?;
            high
        }
    })
}

/// Decoded rows with the partition each came from.
struct Rows {
    batch: RecordBatch,
    partitions: Vec<i32>,
}

/// Decoders for a source's values (and keys, for upsert), and its `INCLUDE` columns.
struct BatchReader {
    values: RecordDecoder,
    keys: Option<RecordDecoder>,
    schema: SchemaRef,
    max_record_bytes: usize,
    wants_key: bool,
}

impl BatchReader {
    fn new(context: &SourceContext, spec: &SourceSpec) -> Result<Self> {
        let def = context.table.def();
        let values = RecordDecoder::new(def.payload_schema(), spec.encode.clone())?;
        let keys = if spec.format == Format::Upsert {
            let fields: Vec<_> = def
                .primary_key
                .iter()
                .map(|&i| def.schema.field(i).clone())
                .collect();
            Some(RecordDecoder::new(
                Arc::new(Schema::new(fields)),
                crate::connector::spec::Encode::Json,
            )?)
        } else {
            None
        };
        let wants_key = keys.is_some() || spec.includes.iter().any(|i| i.kind == IncludeKind::Key);
        Ok(Self {
            values,
            keys,
            schema: Arc::clone(&def.schema),
            max_record_bytes: spec.max_record_bytes,
            wants_key,
        })
    }

    /// Decodes the payloads of `run` into rows of the table (with `INCLUDE` columns).
    fn decode_rows(
        &mut self,
        context: &SourceContext,
        buffer: &[u8],
        run: &[Polled],
    ) -> Result<Rows> {
        let mut records: Vec<&[u8]> = Vec::with_capacity(run.len());
        let mut from: Vec<usize> = Vec::with_capacity(run.len());
        for (i, m) in run.iter().enumerate() {
            match &m.payload {
                None => bad(context, m, "empty record (no value)")?,
                Some(r) if r.len() > self.max_record_bytes => bad(
                    context,
                    m,
                    &format!("record of {} bytes is over max.record.bytes", r.len()),
                )?,
                Some(r) => {
                    records.push(&buffer[r.clone()]);
                    from.push(i);
                }
            }
        }
        let decoded = self.values.decode(&records)?;
        for (index, reason) in &decoded.bad {
            bad(context, &run[from[*index]], reason)?;
        }
        let rows: Vec<usize> = match &decoded.rows_from {
            None => from,
            Some(kept) => kept.iter().map(|&k| from[k]).collect(),
        };
        let mut columns: Vec<ArrayRef> = decoded.batch.columns().to_vec();
        let def = context.table.def();
        let includes = def.connector.as_ref().map_or(&[][..], |c| &c.includes[..]);
        for include in includes {
            let column: ArrayRef = match include.kind {
                IncludeKind::Partition => Arc::new(Int32Array::from_iter_values(
                    rows.iter().map(|&i| run[i].partition),
                )),
                IncludeKind::Offset => Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|&i| run[i].offset),
                )),
                IncludeKind::Timestamp => Arc::new(
                    TimestampNanosecondArray::from_iter(
                        rows.iter()
                            .map(|&i| run[i].timestamp_ms.map(|ms| ms * 1_000_000)),
                    )
                    .with_timezone("+00:00"),
                ),
                IncludeKind::Key => {
                    let mut b = BinaryBuilder::new();
                    for &i in &rows {
                        b.append_option(run[i].key.as_ref().map(|r| &buffer[r.clone()]));
                    }
                    Arc::new(b.finish())
                }
            };
            columns.push(column);
        }
        // Columns in table order: payload columns first, then INCLUDE columns, as declared.
        let batch = if includes.is_empty() {
            decoded.batch
        } else {
            let payload = self.values.schema();
            let ordered = self
                .schema
                .fields()
                .iter()
                .map(|f| {
                    payload
                        .index_of(f.name())
                        .ok()
                        .or_else(|| {
                            includes
                                .iter()
                                .position(|i| &i.column == f.name())
                                .map(|k| payload.fields().len() + k)
                        })
                        .map(|k| Arc::clone(&columns[k]))
                        .ok_or_else(|| Error::internal(format!("column {}", f.name())))
                })
                .collect::<Result<Vec<_>>>()?;
            RecordBatch::try_new(Arc::clone(&self.schema), ordered)?
        };
        Ok(Rows {
            partitions: rows.iter().map(|&i| run[i].partition).collect(),
            batch,
        })
    }

    /// Decodes the keys of a run of tombstones.
    fn decode_keys(
        &mut self,
        context: &SourceContext,
        buffer: &[u8],
        run: &[Polled],
    ) -> Result<RecordBatch> {
        let Some(keys) = &mut self.keys else {
            return Err(Error::internal("tombstones outside FORMAT UPSERT"));
        };
        let mut records = Vec::with_capacity(run.len());
        let mut from = Vec::with_capacity(run.len());
        for (i, m) in run.iter().enumerate() {
            match &m.key {
                Some(r) => {
                    records.push(&buffer[r.clone()]);
                    from.push(i);
                }
                None => bad(context, m, "tombstone without a key")?,
            }
        }
        let decoded = keys.decode(&records)?;
        for (index, reason) in &decoded.bad {
            bad(context, &run[from[*index]], &format!("bad key: {reason}"))?;
        }
        Ok(concat_batches(keys.schema(), [&decoded.batch])?)
    }
}

fn bad(context: &SourceContext, m: &Polled, reason: &str) -> Result<()> {
    context.bad_record(
        &format!("partition {} offset {}", m.partition, m.offset),
        reason,
    )
}
