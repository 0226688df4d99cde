//! Kafka through librdkafka (`rdkafka`): a source that assigns itself every partition of a
//! topic and keeps its offsets in the source's own log (not in a consumer group), and a sink
//! that writes a view's changes.

pub mod progress;
pub mod sink;
pub mod source;
pub mod transactional;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// A consumer's client events, logged; reaching a partition's end is not an error (consumers
/// ask to be told, to know when a partition may go idle or a read-back is complete).
pub(super) struct ConsumerLog;

impl rdkafka::ClientContext for ConsumerLog {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let end = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end {
            tracing::error!(%error, reason, "kafka client");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ConsumerLog {}

/// A client configuration: the bootstrap servers and `defaults`, then the user's
/// `properties.*` (which may override anything), then `fixed`, which the connector needs as
/// they are.
fn client_config(
    bootstrap: &str,
    defaults: &[(&str, &str)],
    properties: &BTreeMap<String, String>,
    fixed: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in properties {
        config.set(key, value);
    }
    for (key, value) in fixed {
        config.set(*key, *value);
    }
    config
}
