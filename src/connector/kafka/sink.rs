//! The Kafka sink's thread: produces each epoch's records, then flushes, so that an epoch is
//! delivered before the next one starts (at-least-once: after a restart the view's contents
//! are sent again, which an upsert or Debezium consumer absorbs).
//!
//! Every delivery report is read: an epoch some of whose records the broker did not take is
//! sent again whole (at-least-once allows the duplicates), up to [`EPOCH_TRIES`] times; then
//! the sink stops, with the error in `sluice_sinks` and the log. No record is lost quietly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::connector::sink::{SinkEncoder, SinkStats};
use crate::connector::spec::{KafkaSinkTarget, SinkSpec};
use crate::error::{Error, Result};
use crate::runtime::executor::SinkEpoch;

/// How many times an epoch is sent before the sink gives up.
pub const EPOCH_TRIES: u32 = 3;

/// Reads every delivery report: counts the records the broker did not take.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            *crate::sync::lock_value(&self.last_error) = Some(error.to_string());
        }
    }
}

type Sender = ThreadedProducer<Deliveries>;

/// Starts the sink's thread.
pub fn spawn(
    name: &str,
    spec: SinkSpec,
    encoder: SinkEncoder,
    receiver: Receiver<SinkEpoch>,
    stats: Arc<SinkStats>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let target = spec.kafka()?.clone();
    let producer: Sender = super::client_config(
        &target.bootstrap,
        &[],
        &target.properties,
        &[("enable.idempotence", "true")],
    )
    .create_with_context(Deliveries::default())
    .map_err(|e| {
        Error::user(
            crate::error::sqlstate::INVALID_PARAMETER_VALUE,
            format!("kafka producer: {e}"),
        )
    })?;
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || {
            let span = tracing::info_span!("sink", sink = %name, topic = %target.topic);
            let _entered = span.enter();
            while !stop.load(Ordering::Relaxed) {
                let epoch = match receiver.recv_timeout(Duration::from_millis(100)) {
                    Ok(epoch) => epoch,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                if let Err(e) =
                    deliver_with_retries(&producer, &target, &encoder, &epoch, &stats, &stop)
                {
                    stats.fail(&e);
                    return;
                }
            }
            // Stopping (the sink or the server): what is still queued gets a last chance.
            if let Err(e) = producer.flush(Duration::from_secs(5)) {
                tracing::warn!(error = %e, "sink stopped with records not confirmed delivered");
            }
        })
        .map_err(|e| Error::internal(format!("cannot start sink thread: {e}")))
}

/// Sends the epoch, again whole while the broker refuses some of its records, up to
/// [`EPOCH_TRIES`] times.
fn deliver_with_retries(
    producer: &Sender,
    target: &KafkaSinkTarget,
    encoder: &SinkEncoder,
    epoch: &SinkEpoch,
    stats: &SinkStats,
    stop: &AtomicBool,
) -> Result<()> {
    for attempt in 1..=EPOCH_TRIES {
        let failed_before = producer.context().failed.load(Ordering::Relaxed);
        let sent = deliver(producer, target, encoder, epoch, stop)?;
        let failed = producer.context().failed.load(Ordering::Relaxed) - failed_before;
        stats
            .records
            .fetch_add(sent.saturating_sub(failed), Ordering::Relaxed);
        if failed == 0 {
            stats.epoch.store(epoch.epoch, Ordering::Relaxed);
            return Ok(());
        }
        stats.failed_records.fetch_add(failed, Ordering::Relaxed);
        let last = crate::sync::lock_value(&producer.context().last_error)
            .clone()
            .unwrap_or_default();
        tracing::warn!(epoch = epoch.epoch, attempt, failed, error = %last, "records not delivered");
        if attempt == EPOCH_TRIES {
            return Err(Error::connector(format!(
                "kafka sink to topic {}: {failed} records of epoch {} not delivered after {EPOCH_TRIES} tries: {last}",
                target.topic, epoch.epoch
            )));
        }
    }
    Ok(())
}

/// Produces the epoch's records and waits for their delivery reports; returns how many.
fn deliver(
    producer: &Sender,
    target: &KafkaSinkTarget,
    encoder: &SinkEncoder,
    epoch: &SinkEpoch,
    stop: &AtomicBool,
) -> Result<u64> {
    let records = encoder.encode(&epoch.changes)?;
    for record in &records {
        loop {
            let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&target.topic);
            if let Some(key) = &record.key {
                base = base.key(key.as_slice());
            }
            if let Some(value) = &record.value {
                base = base.payload(value.as_slice());
            }
            match producer.send(base) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(0);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(Error::connector(format!("kafka produce: {e}"))),
            }
        }
    }
    // The epoch is delivered (or its failures reported) before the next one is taken.
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| Error::connector(format!("kafka flush: {e}")))?;
    Ok(records.len() as u64)
}
