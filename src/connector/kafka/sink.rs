//! The Kafka sink's thread: produces each epoch's records, then flushes, so that an epoch is
//! delivered before the next one starts (at-least-once: after a restart the view's contents
//! are sent again, which an upsert or Debezium consumer absorbs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::connector::sink::{SinkEncoder, SinkStats};
use crate::connector::spec::SinkSpec;
use crate::error::{Error, Result};
use crate::runtime::executor::SinkEpoch;

/// Starts the sink's thread.
pub fn spawn(
    name: &str,
    spec: SinkSpec,
    encoder: SinkEncoder,
    receiver: Receiver<SinkEpoch>,
    stats: Arc<SinkStats>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let producer: ThreadedProducer<DefaultProducerContext> = super::client_config(
        &spec.bootstrap,
        &[],
        &spec.properties,
        &[("enable.idempotence", "true")],
    )
    .create()
    .map_err(|e| Error::unsupported(format!("kafka producer: {e}")))?;
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || {
            let span = tracing::info_span!("sink", sink = %name, topic = %spec.topic);
            let _entered = span.enter();
            while !stop.load(Ordering::Relaxed) {
                let epoch = match receiver.recv_timeout(Duration::from_millis(100)) {
                    Ok(epoch) => epoch,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                if let Err(e) = deliver(&producer, &spec, &encoder, &epoch, &stats, &stop) {
                    tracing::error!(error = %e, epoch = epoch.epoch, "sink failed");
                    break;
                }
            }
            let _ = producer.flush(Duration::from_secs(5));
        })
        .map_err(|e| Error::unsupported(format!("cannot start sink thread: {e}")))
}

fn deliver(
    producer: &ThreadedProducer<DefaultProducerContext>,
    spec: &SinkSpec,
    encoder: &SinkEncoder,
    epoch: &SinkEpoch,
    stats: &SinkStats,
    stop: &AtomicBool,
) -> Result<()> {
    let records = encoder.encode(&epoch.changes)?;
    for record in &records {
        loop {
            let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&spec.topic);
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
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(Error::unsupported(format!("kafka produce: {e}"))),
            }
        }
    }
    // The epoch is delivered before the next one is taken.
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| Error::unsupported(format!("kafka flush: {e}")))?;
    stats
        .records
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    stats.epoch.store(epoch.epoch, Ordering::Relaxed);
    Ok(())
}
