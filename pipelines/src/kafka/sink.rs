//! The pipeline's producer: output events and dead letters.
//!
//! Durable by default: `acks=all` and the idempotent producer, so a retried send
//! never duplicates or reorders within a partition. [`Publisher::publish`] waits
//! for the broker's acknowledgement, so a caller that stores an offset after it
//! has returned never loses the output.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::base_client_config;
use crate::config::KafkaConfig;

/// Publishing failed: the broker did not acknowledge within the delivery
/// timeout, or rejected the message. Retryable from the caller's view.
#[derive(Debug, Clone, thiserror::Error)]
#[error("publishing to topic {topic} failed: {message}")]
pub struct PublishError {
    pub topic: String,
    pub message: String,
}

/// A shared, cloneable Kafka producer.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    cfg: KafkaConfig,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(cfg: &KafkaConfig, client_id: &str) -> Result<Self, PublishError> {
        let mut c = base_client_config(cfg, client_id);
        // Durability first; operators may still override through kafka.properties.
        for (k, v) in [
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("message.timeout.ms", "30000"),
        ] {
            if !cfg.properties.contains_key(k) {
                c.set(k, v);
            }
        }
        let producer: FutureProducer = c.create().map_err(|e| PublishError {
            topic: String::new(),
            message: super::scrub(cfg, &format!("cannot create the Kafka producer: {e}")),
        })?;
        Ok(Publisher {
            producer,
            cfg: cfg.clone(),
        })
    }

    /// Sends one message and waits for the broker's acknowledgement.
    pub async fn publish(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), PublishError> {
        let mut h = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).payload(payload).headers(h);
        if let Some(key) = key {
            record = record.key(key);
        }
        match self
            .producer
            .send(record, Timeout::After(Duration::from_secs(5)))
            .await
        {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(PublishError {
                topic: topic.to_string(),
                message: super::scrub(&self.cfg, &e.to_string()),
            }),
        }
    }

    /// Waits for queued messages to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
    }
}
