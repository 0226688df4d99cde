//! Kafka through librdkafka (`rdkafka`): a source that assigns itself every partition of a
//! topic and keeps its offsets in the source's own log (not in a consumer group), and a sink
//! that writes a view's changes.

pub mod sink;
pub mod source;
pub mod transactional;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

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
