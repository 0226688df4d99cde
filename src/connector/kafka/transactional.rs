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
    let producer: ThreadedProducer<DefaultProducerContext> = super::client_config(
        &sink.spec.bootstrap,
        &[("transaction.timeout.ms", "60000")],
        &sink.spec.properties,
        &[
            ("enable.idempotence", "true"),
            ("transactional.id", &format!("sluice-sink-{}", sink.name)),
        ],
    )
    .create()
    .map_err(|e| Error::unsupported(format!("kafka producer: {e}")))?;
    std::thread::Builder::new()
        .name(format!("sink-{}", sink.name))
        .spawn(move || {
            let span =
                tracing::info_span!("sink", sink = %sink.name, topic = %sink.spec.topic, exactly_once = true);
            let _entered = span.enter();
            if let Err(e) = run(&producer, sink) {
                tracing::error!(error = %e, "sink failed");
            }
        })
        .map_err(|e| Error::unsupported(format!("cannot start sink thread: {e}")))
}

fn kafka(what: &str) -> impl Fn(KafkaError) -> Error + '_ {
    move |e| Error::unsupported(format!("kafka {what}: {e}"))
}

fn run(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut sink: TransactionalSink,
) -> Result<()> {
    // Fences an earlier incarnation and ends its open transaction.
    producer
        .init_transactions(TIMEOUT)
        .map_err(kafka("init transactions"))?;
    let started = read_started(&sink.state_file);
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
                offsets: partition_ends(producer, &sink.spec.topic)?,
            },
        )?;
        producer
            .begin_transaction()
            .map_err(kafka("begin transaction"))?;
        let batch_text = batch.to_string();
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
            let mut base: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(&sink.spec.topic).headers(headers);
            if let Some(key) = &record.key {
                base = base.key(key.as_slice());
            }
            if let Some(value) = &record.value {
                base = base.payload(value.as_slice());
            }
            let mut base = base;
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
    let consumer: BaseConsumer<QuietEof> = super::client_config(
        &sink.spec.bootstrap,
        &[],
        &sink.spec.properties,
        &[
            ("group.id", &format!("sluice-sink-{}-recovery", sink.name)),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ],
    )
    .create_with_context(QuietEof)
    .map_err(kafka("consumer"))?;
    let mut assignment = TopicPartitionList::new();
    for &(partition, offset) in &started.offsets {
        assignment
            .add_partition_offset(&sink.spec.topic, partition, Offset::Offset(offset))
            .map_err(kafka("assign"))?;
    }
    consumer.assign(&assignment).map_err(kafka("assign"))?;
    let mut open: HashSet<i32> = started.offsets.iter().map(|&(p, _)| p).collect();
    let mut found = HashSet::new();
    let deadline = Instant::now() + TIMEOUT;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::unsupported(
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

/// A consumer context that does not report reaching a partition's end (asked for, to know
/// when the read-back is complete) as an error.
struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(error = %error, reason, "kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

fn read_started(path: &Path) -> Option<Started> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text)
        .inspect_err(
            |e| tracing::warn!(path = %path.display(), error = %e, "unreadable sink state"),
        )
        .ok()
}

/// Writes the file atomically and durably: a batch must not start before it is on disk.
fn write_started(path: &Path, started: &Started) -> Result<()> {
    let io = |e: std::io::Error| Error::unsupported(format!("sink state {}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let temporary = path.with_extension("tmp");
    let text = serde_json::to_vec(started).expect("sink state serializes");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&temporary, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}
