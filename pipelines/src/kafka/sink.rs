//! The pipeline's producer: output events and dead letters.
//!
//! Durable by default: `acks=all` and the idempotent producer, so a retried send
//! never duplicates or reorders within a partition. [`Publisher::publish`] waits
//! for the broker's acknowledgement, so a caller that stores an offset after it
//! has returned never loses the output.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
use rdkafka::util::Timeout;

use super::base_client_config;
use crate::config::KafkaConfig;

/// Publishing failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("publishing to topic {topic} failed ({kind:?}): {message}")]
pub struct PublishError {
    pub topic: String,
    pub message: String,
    pub kind: PublishFailure,
}

/// Whether waiting can make a failed publish succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishFailure {
    /// Broker down, timeout, leader moving, queue full: wait and try again.
    Transient,
    /// The message is larger than the broker or topic accepts: it never will be.
    TooLarge,
    /// Unknown topic, not authorised, invalid record: needs an operator, not a retry.
    Permanent,
}

impl PublishFailure {
    /// Classifies librdkafka's answer to a produce request.
    pub fn of(e: &KafkaError) -> Self {
        use RDKafkaErrorCode as C;
        let code = match e {
            KafkaError::MessageProduction(c) => Some(*c),
            other => other.rdkafka_error_code(),
        };
        match code {
            Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge) => {
                PublishFailure::TooLarge
            }
            Some(
                C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::UnknownPartition
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidTopic
                | C::InvalidRecord
                | C::InvalidMessage
                | C::UnsupportedForMessageFormat,
            ) => PublishFailure::Permanent,
            _ => PublishFailure::Transient,
        }
    }
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
            kind: PublishFailure::Permanent,
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
                kind: PublishFailure::of(&e),
            }),
        }
    }

    /// How many partitions `topic` has, from the cluster's metadata
    /// (blocking in librdkafka, so on the blocking pool); 0 when the topic
    /// does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<usize, PublishError> {
        let producer = self.producer.clone();
        // Every topic's metadata: asking for one by name would create it on
        // a broker that creates topics on demand.
        let fetched = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Timeout::After(Duration::from_secs(5)))
        })
        .await;
        let failed = |message: String| PublishError {
            topic: topic.to_string(),
            message: super::scrub(&self.cfg, &message),
            kind: PublishFailure::Transient,
        };
        let metadata = fetched
            .map_err(|e| failed(format!("metadata fetch did not finish: {e}")))?
            .map_err(|e| failed(format!("cannot fetch the topic's metadata: {e}")))?;
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() => Ok(t.partitions().len()),
            // A topic that does not exist has no partitions to wait for.
            Some(t) if t.error() == Some(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(0),
            None => Ok(0),
            Some(t) => Err(failed(format!("the topic's metadata says {:?}", t.error()))),
        }
    }

    /// Waits for queued messages to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_errors_are_classified_by_what_waiting_can_fix() {
        let of = |c| PublishFailure::of(&KafkaError::MessageProduction(c));
        assert_eq!(
            of(RDKafkaErrorCode::MessageSizeTooLarge),
            PublishFailure::TooLarge
        );
        assert_eq!(
            of(RDKafkaErrorCode::UnknownTopicOrPartition),
            PublishFailure::Permanent
        );
        assert_eq!(
            of(RDKafkaErrorCode::TopicAuthorizationFailed),
            PublishFailure::Permanent
        );
        assert_eq!(
            of(RDKafkaErrorCode::MessageTimedOut),
            PublishFailure::Transient
        );
        assert_eq!(
            of(RDKafkaErrorCode::NotLeaderForPartition),
            PublishFailure::Transient
        );
        assert_eq!(
            of(RDKafkaErrorCode::AllBrokersDown),
            PublishFailure::Transient
        );
        assert_eq!(of(RDKafkaErrorCode::QueueFull), PublishFailure::Transient);
    }
}
