//! Sinks: a view's changes, one epoch at a time, encoded as Kafka records.
//!
//! - `FORMAT PLAIN`: each inserted row as a JSON object (retractions refused at `CREATE SINK`,
//!   or dropped with `force_append_only = 'true'`).
//! - `FORMAT UPSERT`: per key changed in the epoch, its new row, or a tombstone (no value)
//!   when the key is gone; the key is a JSON object of the `primary_key` columns.
//! - `FORMAT DEBEZIUM`: per key changed, `{"before", "after", "op": "c" | "u" | "d"}`.
//!
//! Rows are encoded to JSON by arrow-json, a batch at a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::WriterBuilder;
use datafusion::arrow::json::writer::LineDelimited;

use super::spec::{Format, SinkSpec};
use crate::error::{Error, Result};
use crate::runtime::executor::SinkEpoch;
use crate::stream::ChangeBatch;

/// One record to produce: key and value (`None` value: a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// The record value.
    pub value: Option<Vec<u8>>,
}

/// Encodes a view's changes for one sink.
#[derive(Debug)]
pub struct SinkEncoder {
    format: Format,
    key_columns: Vec<usize>,
    force_append_only: bool,
}

impl SinkEncoder {
    /// An encoder for a view of `schema`; checks that the key columns exist.
    pub fn new(spec: &SinkSpec, schema: &SchemaRef, append_only: bool) -> Result<Self> {
        let key_columns = spec
            .primary_key
            .iter()
            .map(|name| {
                schema.index_of(name).map_err(|_| {
                    Error::user(
                        crate::error::sqlstate::UNDEFINED_COLUMN,
                        format!("primary_key column \"{name}\" is not a column of the sink's view"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if spec.format == Format::Plain && !append_only && !spec.force_append_only {
            return Err(Error::user(
                crate::error::sqlstate::INVALID_PARAMETER_VALUE,
                "the view is not append-only, so a FORMAT PLAIN sink would lose its updates and deletes: \
                 use FORMAT UPSERT or DEBEZIUM with primary_key = '…', or force_append_only = 'true'",
            ));
        }
        Ok(Self {
            format: spec.format,
            key_columns,
            force_append_only: spec.force_append_only,
        })
    }

    /// The records for one epoch's changes.
    pub fn encode(&self, changes: &[ChangeBatch]) -> Result<Vec<SinkRecord>> {
        match self.format {
            Format::Plain => {
                let mut out = Vec::new();
                for change in changes {
                    let values = json_lines(change.data())?;
                    for (i, value) in values.into_iter().enumerate() {
                        let weight = change.weights().map_or(1, |w| w.value(i));
                        if weight < 0 && !self.force_append_only {
                            return Err(Error::internal("a FORMAT PLAIN sink got a retraction"));
                        }
                        for _ in 0..weight.max(0) {
                            out.push(SinkRecord {
                                key: None,
                                value: Some(value.clone()),
                            });
                        }
                    }
                }
                Ok(out)
            }
            Format::Upsert | Format::Debezium => self.encode_keyed(changes),
        }
    }

    /// Per key: the rows it lost and gained over the epoch, netted.
    fn encode_keyed(&self, changes: &[ChangeBatch]) -> Result<Vec<SinkRecord>> {
        // key → (value → net weight), keys in first-seen order.
        let mut order: Vec<Vec<u8>> = Vec::new();
        let mut by_key: HashMap<Vec<u8>, Vec<(Vec<u8>, i64)>> = HashMap::new();
        for change in changes {
            let data = change.data();
            let keys = json_lines(&data.project(&self.key_columns)?)?;
            let values = json_lines(data)?;
            for (i, (key, value)) in keys.into_iter().zip(values).enumerate() {
                let weight = change.weights().map_or(1, |w| w.value(i));
                let entry = by_key.entry(key.clone()).or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                });
                match entry.iter_mut().find(|(v, _)| *v == value) {
                    Some((_, w)) => *w += weight,
                    None => entry.push((value, weight)),
                }
            }
        }
        let mut out = Vec::with_capacity(order.len());
        for key in order {
            let values = &by_key[&key];
            let after = values.iter().rev().find(|(_, w)| *w > 0).map(|(v, _)| v);
            let before = values.iter().find(|(_, w)| *w < 0).map(|(v, _)| v);
            let record = match self.format {
                Format::Upsert => match (after, before) {
                    (Some(after), _) => Some(after.clone()),
                    (None, Some(_)) => None,
                    (None, None) => continue,
                },
                _ => {
                    let op = match (before, after) {
                        (None, Some(_)) => "c",
                        (Some(_), Some(_)) => "u",
                        (Some(_), None) => "d",
                        (None, None) => continue,
                    };
                    let mut envelope = Vec::with_capacity(64);
                    envelope.extend_from_slice(b"{\"before\":");
                    envelope.extend_from_slice(before.map_or(&b"null"[..], |v| v));
                    envelope.extend_from_slice(b",\"after\":");
                    envelope.extend_from_slice(after.map_or(&b"null"[..], |v| v));
                    envelope.extend_from_slice(format!(",\"op\":\"{op}\"}}").as_bytes());
                    Some(envelope)
                }
            };
            out.push(SinkRecord {
                key: Some(key),
                value: record,
            });
        }
        Ok(out)
    }
}

/// Each row of `batch` as a JSON object (nulls written out).
pub fn json_lines(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let mut buffer = Vec::with_capacity(batch.num_rows() * 64);
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .with_encoder_factory(Arc::new(JsonbAsJson))
            .build::<_, LineDelimited>(&mut buffer);
        writer.write(batch)?;
        writer.finish()?;
    }
    let mut lines: Vec<Vec<u8>> = buffer
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if lines.len() != batch.num_rows() {
        return Err(Error::internal("JSON rows did not split one per line"));
    }
    lines.shrink_to_fit();
    Ok(lines)
}

/// A `jsonb` column is written as the JSON it holds (`{"doc": {"a": 1}}`), not as a string
/// of it, as RisingWave's and Debezium's JSON carry `jsonb`; a `uuid` as its text.
#[derive(Debug)]
struct JsonbAsJson;

struct RawJson<'a>(&'a datafusion::arrow::array::LargeStringArray);

impl datafusion::arrow::json::writer::Encoder for RawJson<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.value(idx).as_bytes());
    }
}

/// A `uuid` column is written as its text (`"a0eebc99-9c0b-…"`), not as Arrow's hex.
struct UuidText<'a>(&'a datafusion::arrow::array::FixedSizeBinaryArray);

impl datafusion::arrow::json::writer::Encoder for UuidText<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let mut text = String::with_capacity(36);
        crate::sql::uuid::format_uuid(self.0.value(idx), &mut text);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

impl datafusion::arrow::json::writer::EncoderFactory for JsonbAsJson {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a datafusion::arrow::datatypes::FieldRef,
        array: &'a dyn datafusion::arrow::array::Array,
        _options: &'a datafusion::arrow::json::writer::EncoderOptions,
    ) -> std::result::Result<
        Option<datafusion::arrow::json::writer::NullableEncoder<'a>>,
        datafusion::arrow::error::ArrowError,
    > {
        use datafusion::arrow::array::{Array, AsArray};
        if crate::sql::uuid::is_uuid(array.data_type()) {
            let values = array.as_fixed_size_binary();
            return Ok(Some(datafusion::arrow::json::writer::NullableEncoder::new(
                Box::new(UuidText(values)),
                values.nulls().cloned(),
            )));
        }
        if !crate::sql::jsonb::is_jsonb(array.data_type()) {
            return Ok(None);
        }
        let values = array.as_string::<i64>();
        Ok(Some(datafusion::arrow::json::writer::NullableEncoder::new(
            Box::new(RawJson(values)),
            values.nulls().cloned(),
        )))
    }
}

/// What a running sink has done, as `sluice_sinks` shows it.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records produced.
    pub records: AtomicU64,
    /// Records whose delivery failed (each try counts).
    pub failed_records: AtomicU64,
    /// The last epoch fully delivered.
    pub epoch: AtomicU64,
    /// The newest epoch handed to the sink (delivered or not).
    handed: AtomicU64,
    /// The first epoch handed to it (0: none yet).
    first_handed: AtomicU64,
    /// Why the sink stopped, once it did.
    error: std::sync::Mutex<Option<String>>,
    /// Since when (ms since 1970) the sink has had no room for its view's changes, which
    /// holds the view back; 0 while it takes them.
    blocked_since_ms: AtomicU64,
}

impl SinkStats {
    /// The sink stopped: it delivers nothing more until the server restarts.
    pub fn fail(&self, error: &Error) {
        tracing::error!(%error, "sink failed");
        *crate::sync::lock_value(&self.error) = Some(error.to_string());
    }

    /// Why the sink stopped, if it did.
    pub fn error(&self) -> Option<String> {
        crate::sync::lock_value(&self.error).clone()
    }

    /// The runtime handed the sink epoch `epoch`'s changes.
    pub fn handed_over(&self, epoch: u64) {
        self.handed.fetch_max(epoch, Ordering::Relaxed);
        // Only the runtime's thread writes it.
        if self.first_handed.load(Ordering::Relaxed) == 0 {
            self.first_handed.store(epoch, Ordering::Relaxed);
        }
    }

    /// The runtime found the sink's channel full (`true`: its view waits) or not.
    pub fn set_blocked(&self, blocked: bool) {
        if blocked {
            // Only the runtime's thread writes it.
            if self.blocked_since_ms.load(Ordering::Relaxed) == 0 {
                let now = crate::state::now_ms().max(1);
                self.blocked_since_ms.store(now, Ordering::Relaxed);
            }
        } else {
            self.blocked_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Since when (ms since 1970) the sink has held its view back, if it does.
    pub fn blocked_since_ms(&self) -> Option<u64> {
        match self.blocked_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(since),
        }
    }

    /// How far behind the sink is, in ms: from the newest epoch handed to it (or, while it
    /// holds its view back, from `now_epoch`, the runtime's newest) to the last it delivered
    /// (or, before it delivered any, to the first handed to it, or to when it got stuck).
    /// Epochs are milliseconds since 1970.
    pub fn lag_ms(&self, now_epoch: u64) -> u64 {
        let delivered = self.epoch.load(Ordering::Relaxed);
        let handed = self.handed.load(Ordering::Relaxed);
        let blocked = self.blocked_since_ms();
        let newest = if blocked.is_some() {
            now_epoch.max(handed)
        } else {
            handed
        };
        let behind = match (delivered, self.first_handed.load(Ordering::Relaxed)) {
            (0, 0) => blocked.unwrap_or(newest),
            (0, first) => first,
            (delivered, _) => delivered,
        };
        newest.saturating_sub(behind)
    }
}

/// A sink as `sluice_sinks` shows it.
#[derive(Debug, Clone)]
pub struct SinkShown {
    /// The view it reads.
    pub view: String,
    /// `kafka` or `postgres`.
    pub connector: &'static str,
    /// Its topic, or PostgreSQL table.
    pub target: String,
    /// Exactly-once (transactions at checkpoints) or at-least-once.
    pub exactly_once: bool,
    /// Its counters.
    pub stats: Arc<SinkStats>,
}

/// A sink's thread; dropping it stops the thread.
#[derive(Debug)]
pub struct RunningSink {
    /// The view it reads.
    pub view: String,
    /// Its counters.
    pub stats: Arc<SinkStats>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

impl Drop for RunningSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts a Kafka sink fed from `receiver`.
pub fn start(
    name: &str,
    view: &str,
    spec: SinkSpec,
    encoder: SinkEncoder,
    receiver: std::sync::mpsc::Receiver<SinkEpoch>,
) -> Result<RunningSink> {
    let stats = Arc::new(SinkStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let thread = super::kafka::sink::spawn(
        name,
        spec,
        encoder,
        receiver,
        Arc::clone(&stats),
        Arc::clone(&stop),
    )?;
    Ok(RunningSink {
        view: view.to_string(),
        stats,
        stop,
        thread: Some(thread),
    })
}

/// Starts an exactly-once Kafka sink reading view `view`.
pub fn start_transactional(
    view: &str,
    sink: super::kafka::transactional::TransactionalSink,
) -> Result<RunningSink> {
    let stats = Arc::clone(&sink.stats);
    let stop = Arc::clone(&sink.stop);
    let thread = super::kafka::transactional::spawn(sink)?;
    Ok(RunningSink {
        view: view.to_string(),
        stats,
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn jsonb_columns_are_written_as_json_and_uuids_as_text() {
        let mut ids = datafusion::arrow::array::FixedSizeBinaryBuilder::new(16);
        ids.append_value([0xa0; 16]).expect("16 bytes");
        ids.append_null();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("doc", crate::sql::jsonb::JSONB, true),
                Field::new("id", crate::sql::uuid::UUID, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(datafusion::arrow::array::LargeStringArray::from(vec![
                    Some(r#"{"a": [1, "x\"y"]}"#),
                    None,
                ])),
                Arc::new(ids.finish()),
            ],
        )
        .expect("batch");
        let lines: Vec<String> = json_lines(&batch)
            .expect("lines")
            .into_iter()
            .map(|l| String::from_utf8(l).expect("utf8"))
            .collect();
        assert_eq!(
            lines,
            [
                r#"{"k":1,"doc":{"a": [1, "x\"y"]},"id":"a0a0a0a0-a0a0-a0a0-a0a0-a0a0a0a0a0a0"}"#,
                r#"{"k":2,"doc":null,"id":null}"#
            ]
        );
        for line in &lines {
            serde_json::from_str::<serde_json::Value>(line).expect("valid JSON");
        }
    }

    fn rows(k: &[i64], v: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("v", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(k.to_vec())),
                Arc::new(StringArray::from(v.to_vec())),
            ],
        )
        .unwrap()
    }

    fn spec(format: Format) -> SinkSpec {
        SinkSpec {
            target: crate::connector::spec::SinkTarget::Kafka(
                crate::connector::spec::KafkaSinkTarget {
                    topic: "t".into(),
                    bootstrap: "x".into(),
                    properties: Default::default(),
                },
            ),
            format,
            primary_key: vec!["k".into()],
            force_append_only: false,
            exactly_once: false,
        }
    }

    fn text(r: &SinkRecord) -> (String, Option<String>) {
        (
            String::from_utf8(r.key.clone().unwrap()).unwrap(),
            r.value.clone().map(|v| String::from_utf8(v).unwrap()),
        )
    }

    #[test]
    fn upsert_nets_each_key_over_the_epoch() {
        let schema = rows(&[], &[]).schema();
        let e = SinkEncoder::new(&spec(Format::Upsert), &schema, false).unwrap();
        let changes = vec![
            ChangeBatch::inserts(rows(&[1, 2, 3], &["a", "b", "c"])),
            ChangeBatch::retractions(rows(&[1, 2], &["a", "b"])),
            ChangeBatch::inserts(rows(&[1, 2], &["a2", "b"])),
        ];
        let out: Vec<_> = e.encode(&changes).unwrap().iter().map(text).collect();
        assert_eq!(
            out,
            vec![
                (r#"{"k":1}"#.into(), Some(r#"{"k":1,"v":"a2"}"#.into())),
                (r#"{"k":2}"#.into(), Some(r#"{"k":2,"v":"b"}"#.into())),
                (r#"{"k":3}"#.into(), Some(r#"{"k":3,"v":"c"}"#.into())),
            ]
        );
        let gone = e
            .encode(&[ChangeBatch::retractions(rows(&[3], &["c"]))])
            .unwrap();
        assert_eq!(text(&gone[0]), (r#"{"k":3}"#.into(), None));
        // A row retracted and inserted again in one epoch changed nothing.
        let same = e
            .encode(&[
                ChangeBatch::retractions(rows(&[2], &["b"])),
                ChangeBatch::inserts(rows(&[2], &["b"])),
            ])
            .unwrap();
        assert!(same.is_empty());
    }

    #[test]
    fn debezium_and_plain() {
        let schema = rows(&[], &[]).schema();
        let e = SinkEncoder::new(&spec(Format::Debezium), &schema, false).unwrap();
        let out = e
            .encode(&[
                ChangeBatch::retractions(rows(&[1], &["a"])),
                ChangeBatch::inserts(rows(&[1], &["b"])),
            ])
            .unwrap();
        assert_eq!(
            text(&out[0]).1.unwrap(),
            r#"{"before":{"k":1,"v":"a"},"after":{"k":1,"v":"b"},"op":"u"}"#
        );
        assert!(SinkEncoder::new(&spec(Format::Plain), &schema, false).is_err());
        let plain = SinkEncoder::new(&spec(Format::Plain), &schema, true).unwrap();
        let out = plain
            .encode(&[ChangeBatch::inserts(rows(&[1], &["x"]))])
            .unwrap();
        assert_eq!(out[0].value.as_deref(), Some(&br#"{"k":1,"v":"x"}"#[..]));
    }
}
