//! The exactly-once Kafka sink: one Kafka transaction per checkpoint.
//!
//! The executor keeps a sink's changes until a checkpoint, puts them in that checkpoint (so a
//! crash cannot lose them) and hands them here as one batch, named by the checkpoint's epoch.
//! The batch is produced only once its checkpoint (or a later one) is durable, in one
//! transaction, and then confirmed to the executor, which forgets it from the next checkpoint
//! on. Every record carries its batch and its sequence number in the batch as headers.
//!
//! Before a batch starts, the end offsets of the topic's partitions are written to a small
//! file. After a crash, the batches of the recovered checkpoint that were not confirmed are
//! produced again, except: a batch older than the one the file names was committed (batches
//! go one at a time), and of the batch the file names, the records already in the topic
//! (read back `read_committed` from those offsets) are not sent twice. A real broker aborts
//! the open transaction of the crashed producer when the new one starts (same
//! `transactional.id`), so then none of that batch is there; a broker that showed records of
//! an unfinished transaction still gets each record once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::connector::sink::{SinkEncoder, SinkStats};
use crate::connector::spec::SinkSpec;
use crate::error::{Error, Result};
use crate::runtime::executor::SinkEpoch;
use crate::stream::ChangeBatch;

/// Header naming a record's batch (the epoch of its checkpoint).
pub const BATCH_HEADER: &str = "sluice-batch";
/// Header giving a record's position in its batch.
pub const SEQUENCE_HEADER: &str = "sluice-seq";

const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the sink's batch started: written before a batch's first record is sent.
#[derive(Debug, Serialize, Deserialize)]
struct Started {
    batch: u64,
    /// (partition, end offset before the batch).
    offsets: Vec<(i32, i64)>,
}

/// What the sink thread needs.
#[derive(Debug)]
pub struct TransactionalSink {
    /// The sink's name (its `transactional.id` is `sluice-sink-<name>`).
    pub name: String,
    /// Where it is going.
    pub spec: SinkSpec,
    /// How changes become records.
    pub encoder: SinkEncoder,
    /// Batches from the executor.
    pub receiver: Receiver<SinkEpoch>,
    /// Counters.
    pub stats: Arc<SinkStats>,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// The newest batch committed, for the executor.
    pub confirmed: Arc<AtomicU64>,
    /// The epoch of the newest durable checkpoint.
    pub checkpoints: watch::Receiver<u64>,
    /// The file of [`Started`].
    pub state_file: PathBuf,
    /// Batches of the recovered checkpoint not confirmed before the restart.
    pub resume: Vec<(u64, Vec<ChangeBatch>)>,
}

/// Starts the sink's thread.
pub fn spawn(sink: TransactionalSink) -> Result<JoinHandle<()>> {
    let target = sink.spec.kafka()?;
    let producer: ThreadedProducer<DefaultProducerContext> = super::client_config(
        &target.bootstrap,
        &[("transaction.timeout.ms", "60000")],
        &target.properties,
        &[
            ("enable.idempotence", "true"),
            ("transactional.id", &format!("sluice-sink-{}", sink.name)),
        ],
    )
    .create()
    .map_err(|e| {
        Error::user(
            crate::error::sqlstate::INVALID_PARAMETER_VALUE,
            format!("kafka producer: {e}"),
        )
    })?;
    std::thread::Builder::new()
        .name(format!("sink-{}", sink.name))
        .spawn(move || {
            let topic = sink
                .spec
                .kafka()
                .map(|k| k.topic.clone())
                .unwrap_or_default();
            let span =
                tracing::info_span!("sink", sink = %sink.name, topic = %topic, exactly_once = true);
            let _entered = span.enter();
            let stats = Arc::clone(&sink.stats);
            if let Err(e) = run(&producer, sink) {
                stats.fail(&e);
            }
        })
        .map_err(|e| Error::internal(format!("cannot start sink thread: {e}")))
}

fn kafka(what: &str) -> impl Fn(KafkaError) -> Error + '_ {
    move |e| Error::connector(format!("kafka {what}: {e}"))
}

fn run(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut sink: TransactionalSink,
) -> Result<()> {
    // Fences an earlier incarnation and ends its open transaction.
    producer
        .init_transactions(TIMEOUT)
        .map_err(kafka("init transactions"))?;
    let started = read_started(&sink.state_file)?;
    for (batch, changes) in std::mem::take(&mut sink.resume) {
        let sent = match &started {
            Some(s) if batch < s.batch => None,
            Some(s) if batch == s.batch => Some(sequences_in_topic(&sink, s)?),
            _ => Some(HashSet::new()),
        };
        match sent {
            None => sink.confirmed.fetch_max(batch, Ordering::SeqCst),
            Some(sent) => {
                deliver(producer, &sink, batch, &changes, &sent)?;
                batch
            }
        };
    }
    while !sink.stop.load(Ordering::Relaxed) {
        let epoch = match sink.receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(epoch) => epoch,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // The batch's changes are durable in a checkpoint before any of them is sent.
        while *sink.checkpoints.borrow_and_update() < epoch.epoch {
            if sink.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        deliver(
            producer,
            &sink,
            epoch.epoch,
            &epoch.changes,
            &HashSet::new(),
        )?;
    }
    Ok(())
}

/// Produces a batch in one transaction, leaving out the records `sent` numbers.
fn deliver(
    producer: &ThreadedProducer<DefaultProducerContext>,
    sink: &TransactionalSink,
    batch: u64,
    changes: &[ChangeBatch],
    sent: &HashSet<u64>,
) -> Result<()> {
    let records = sink.encoder.encode(changes)?;
    if !sent.is_empty() && records.len() > sent.len() {
        tracing::info!(
            batch,
            records = records.len(),
            already_in_topic = sent.len(),
            "completing a batch a crash interrupted"
        );
    }
    if records.len() > sent.len() {
        write_started(
            &sink.state_file,
            &Started {
                batch,
                offsets: partition_ends(producer, &sink.spec.kafka()?.topic)?,
            },
        )?;
        producer
            .begin_transaction()
            .map_err(kafka("begin transaction"))?;
        let batch_text = batch.to_string();
        let topic = &sink.spec.kafka()?.topic;
        for (seq, record) in records.iter().enumerate() {
            if sent.contains(&(seq as u64)) {
                continue;
            }
            let seq_text = seq.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: BATCH_HEADER,
                    value: Some(&batch_text),
                })
                .insert(Header {
                    key: SEQUENCE_HEADER,
                    value: Some(&seq_text),
                });
            let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
            if let Some(key) = &record.key {
                base = base.key(key.as_slice());
            }
            if let Some(value) = &record.value {
                base = base.payload(value.as_slice());
            }
            loop {
                match producer.send(base) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        base = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => return Err(kafka("produce")(e)),
                }
            }
        }
        producer
            .commit_transaction(TIMEOUT)
            .map_err(kafka("commit transaction"))?;
        sink.stats
            .records
            .fetch_add((records.len() - sent.len()) as u64, Ordering::Relaxed);
    }
    sink.stats.epoch.store(batch, Ordering::Relaxed);
    sink.confirmed.fetch_max(batch, Ordering::SeqCst);
    Ok(())
}

/// The end offset of every partition of `topic`.
fn partition_ends(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
) -> Result<Vec<(i32, i64)>> {
    let client = producer.client();
    let metadata = client
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(kafka("metadata"))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
        .unwrap_or_default();
    partitions
        .into_iter()
        .map(|p| {
            let (_, high) = client
                .fetch_watermarks(topic, p, TIMEOUT)
                .map_err(kafka("watermarks"))?;
            Ok((p, high))
        })
        .collect()
}

/// The sequence numbers of batch `started.batch` that the topic holds (committed).
fn sequences_in_topic(sink: &TransactionalSink, started: &Started) -> Result<HashSet<u64>> {
    let target = sink.spec.kafka()?;
    let consumer: BaseConsumer<super::ConsumerLog> = super::client_config(
        &target.bootstrap,
        &[],
        &target.properties,
        &[
            ("group.id", &format!("sluice-sink-{}-recovery", sink.name)),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ],
    )
    .create_with_context(super::ConsumerLog)
    .map_err(kafka("consumer"))?;
    let mut assignment = TopicPartitionList::new();
    for &(partition, offset) in &started.offsets {
        assignment
            .add_partition_offset(&target.topic, partition, Offset::Offset(offset))
            .map_err(kafka("assign"))?;
    }
    consumer.assign(&assignment).map_err(kafka("assign"))?;
    let mut open: HashSet<i32> = started.offsets.iter().map(|&(p, _)| p).collect();
    let mut found = HashSet::new();
    let deadline = Instant::now() + TIMEOUT;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::connector(
                "kafka: reading back the sink topic after a restart timed out",
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(kafka("read back")(e)),
            Some(Ok(message)) => {
                let Some(headers) = message.headers() else {
                    continue;
                };
                let header = |key: &str| {
                    headers
                        .iter()
                        .find(|h| h.key == key)
                        .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<u64>().ok())
                };
                if header(BATCH_HEADER) == Some(started.batch)
                    && let Some(seq) = header(SEQUENCE_HEADER)
                {
                    found.insert(seq);
                }
            }
        }
    }
    Ok(found)
}

/// The batch noted as started, if any. A note that exists but cannot be read is an error:
/// guessing "no note" would send the batch's records that are already in the topic again.
fn read_started(path: &Path) -> Result<Option<Started>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::io(format!(
                "sink state {}: cannot read it ({e}); the sink stops rather than send records twice",
                path.display()
            )));
        }
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        Error::io(format!(
            "sink state {}: damaged ({e}); the sink stops rather than send records twice",
            path.display()
        ))
    })
}

/// Writes the file atomically and durably: a batch must not start before it is on disk.
fn write_started(path: &Path, started: &Started) -> Result<()> {
    let io = |e: std::io::Error| Error::io(format!("sink state {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_vec(started).expect("sink state serializes");
    crate::storage::durable::write_atomically(path, &text).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::spec::Format;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::BaseProducer;

    #[test]
    fn an_unreadable_note_is_an_error_not_no_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        assert!(read_started(&path).unwrap().is_none(), "no note yet");
        std::fs::write(&path, b"{\"batch\": 7, \"of").unwrap();
        let e = read_started(&path).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = read_started(&path).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    fn spec(bootstrap: &str) -> SinkSpec {
        SinkSpec {
            target: crate::connector::spec::SinkTarget::Kafka(
                crate::connector::spec::KafkaSinkTarget {
                    topic: "out".into(),
                    bootstrap: bootstrap.into(),
                    properties: Default::default(),
                },
            ),
            format: Format::Plain,
            primary_key: Vec::new(),
            force_append_only: false,
            exactly_once: true,
        }
    }

    /// Every record of `out` as (value, batch, seq).
    fn topic(bootstrap: &str) -> Vec<(String, u64, u64)> {
        let consumer: BaseConsumer<crate::connector::kafka::ConsumerLog> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "test")
            .set("enable.partition.eof", "true")
            .create_with_context(crate::connector::kafka::ConsumerLog)
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("out", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        loop {
            match consumer.poll(Duration::from_secs(10)) {
                Some(Ok(m)) => {
                    let h = m.headers().unwrap();
                    let get = |k: &str| {
                        let v = h.iter().find(|x| x.key == k).unwrap().value.unwrap();
                        std::str::from_utf8(v).unwrap().parse::<u64>().unwrap()
                    };
                    let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                    out.push((value, get(BATCH_HEADER), get(SEQUENCE_HEADER)));
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => return out,
                Some(Err(e)) => panic!("{e}"),
            }
        }
    }

    /// A crash interrupted batch 7 after 3 of its 10 records reached the topic (a broker that
    /// shows an unfinished transaction's records); batch 5 was committed before. The restarted
    /// sink skips batch 5, sends the 7 missing records of batch 7, then goes on with batch 9.
    #[test]
    fn an_interrupted_batch_is_completed_and_nothing_is_sent_twice() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        cluster.create_topic("out", 1, 1).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let changes = |from: i64| {
            vec![ChangeBatch::inserts(
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from_iter_values(from..from + 10))],
                )
                .unwrap(),
            )]
        };
        let encoder = SinkEncoder::new(&spec(&bootstrap), &schema, true).unwrap();
        // What the crashed sink had sent of batch 7: its first three records.
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        for (seq, record) in encoder
            .encode(&changes(70))
            .unwrap()
            .iter()
            .take(3)
            .enumerate()
        {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: BATCH_HEADER,
                    value: Some("7"),
                })
                .insert(Header {
                    key: SEQUENCE_HEADER,
                    value: Some(&seq.to_string()),
                });
            producer
                .send(
                    BaseRecord::<(), [u8]>::to("out")
                        .payload(record.value.as_deref().unwrap())
                        .headers(headers),
                )
                .unwrap();
        }
        producer.flush(TIMEOUT).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("out.json");
        write_started(
            &state_file,
            &Started {
                batch: 7,
                offsets: vec![(0, 0)],
            },
        )
        .unwrap();

        let (sender, receiver) = std::sync::mpsc::sync_channel(4);
        let (checkpoints, checkpoints_rx) = watch::channel(7u64);
        let confirmed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn(TransactionalSink {
            name: "out".into(),
            spec: spec(&bootstrap),
            encoder,
            receiver,
            stats: Default::default(),
            stop: Arc::clone(&stop),
            confirmed: Arc::clone(&confirmed),
            checkpoints: checkpoints_rx,
            state_file,
            resume: vec![(5, changes(50)), (7, changes(70))],
        })
        .unwrap();
        sender
            .send(SinkEpoch {
                epoch: 9,
                changes: changes(90),
            })
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while confirmed.load(Ordering::SeqCst) < 7 {
            assert!(
                Instant::now() < deadline,
                "the resumed batches never confirmed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            confirmed.load(Ordering::SeqCst),
            7,
            "batch 9 waits for its checkpoint"
        );
        checkpoints.send_replace(9);
        while confirmed.load(Ordering::SeqCst) < 9 {
            assert!(Instant::now() < deadline, "batch 9 never confirmed");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::SeqCst);
        thread.join().unwrap();

        let records = topic(&bootstrap);
        let mut ids: Vec<(u64, u64)> = records.iter().map(|(_, b, s)| (*b, *s)).collect();
        ids.sort();
        let want: Vec<(u64, u64)> = [7u64, 9]
            .iter()
            .flat_map(|&b| (0..10).map(move |s| (b, s)))
            .collect();
        assert_eq!(
            ids, want,
            "each record of batches 7 and 9 once, none of batch 5"
        );
        let mut values: Vec<String> = records.into_iter().map(|(v, _, _)| v).collect();
        values.sort();
        let mut expected: Vec<String> = (70..80)
            .chain(90..100)
            .map(|n| format!("{{\"n\":{n}}}"))
            .collect();
        expected.sort();
        assert_eq!(values, expected);
    }
}
