//! Dead letters: messages that cannot be handled go, unchanged, to
//! `<topic><dlq_suffix>` with headers saying why, so an operator can inspect,
//! fix and replay them. Nothing is dropped silently.
//!
//! Headers added (the original message's own headers are kept before them):
//! `error` (the reason, human-readable), `error-class` (`decode:<reason>`,
//! `permanent`, `retries_exhausted`), `worker`, `original-topic`,
//! `original-partition`, `original-offset`, `attempts`, `first-failure-at`
//! (RFC 3339 UTC).

use chrono::{DateTime, SecondsFormat, Utc};

use crate::kafka::sink::{PublishError, Publisher};
use crate::kafka::Record;

/// Why a message is dead-lettered.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub worker: &'static str,
    pub topic: &'a str,
    pub partition: i32,
    pub record: &'a Record,
    pub error: String,
    pub error_class: String,
    pub attempts: u32,
    pub first_failure_at: DateTime<Utc>,
}

/// The dead-letter topic of `topic`.
pub fn topic_for(topic: &str, suffix: &str) -> String {
    format!("{topic}{suffix}")
}

/// Publishes a dead letter and waits for the broker's acknowledgement.
pub async fn send(
    publisher: &Publisher,
    suffix: &str,
    dl: &DeadLetter<'_>,
) -> Result<(), PublishError> {
    let partition = dl.partition.to_string();
    let offset = dl.record.offset.to_string();
    let attempts = dl.attempts.to_string();
    let first = dl
        .first_failure_at
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut headers: Vec<(&str, &[u8])> = dl
        .record
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    headers.extend_from_slice(&[
        ("error", dl.error.as_bytes()),
        ("error-class", dl.error_class.as_bytes()),
        ("worker", dl.worker.as_bytes()),
        ("original-topic", dl.topic.as_bytes()),
        ("original-partition", partition.as_bytes()),
        ("original-offset", offset.as_bytes()),
        ("attempts", attempts.as_bytes()),
        ("first-failure-at", first.as_bytes()),
    ]);
    publisher
        .publish(
            &topic_for(dl.topic, suffix),
            dl.record.key.as_deref(),
            dl.record.payload.as_deref().unwrap_or_default(),
            &headers,
        )
        .await
}
