//! Everything that talks to Kafka. Workers never import `rdkafka`: they get
//! decoded events from [`source`] and publish through [`sink::Publisher`].

use std::sync::Arc;

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

#[cfg(feature = "testkit")]
pub mod mock;
pub mod offsets;
pub mod sink;
pub mod source;

/// A message as read from Kafka, owned, detached from librdkafka's buffers.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The message timestamp (create or log-append time), milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Consecutive records of one partition, in offset order.
#[derive(Debug, Clone)]
pub struct RecordBatch {
    pub topic: Arc<str>,
    pub partition: i32,
    pub records: Vec<Record>,
}

/// The librdkafka settings shared by consumers and producers: bootstrap
/// servers, client id, then every pass-through property (SASL, TLS, ...), which
/// win over anything taskstream sets.
pub fn base_client_config(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", client_id)
        // Our own `log` callback routes librdkafka logs into `tracing`.
        .set("log_level", "6");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// librdkafka's own config dump never reaches our logs, but an error message
/// might quote a property: strip any configured secret from text before logging.
pub fn scrub(cfg: &KafkaConfig, text: &str) -> String {
    let mut out = text.to_string();
    for (k, v) in &cfg.properties {
        if crate::config::is_secret_key(k) && !v.is_empty() {
            out = out.replace(v.as_str(), crate::config::MASK);
        }
    }
    out
}
