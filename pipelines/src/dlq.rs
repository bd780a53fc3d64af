//! Dead letters: messages that cannot be handled go, unchanged, to
//! `<topic><dlq_suffix>` with headers saying why, so an operator can inspect,
//! fix and replay them. Nothing is dropped silently.
//!
//! Headers added (the original message's own headers are kept before them):
//! `error` (the reason, human-readable), `error-class` (`decode:<reason>`,
//! `permanent`, `retries_exhausted`), `worker`, `original-topic`,
//! `original-partition`, `original-offset`, `attempts`, `first-failure-at`
//! (RFC 3339 UTC).
//!
//! A message too large for the dead-letter topic is dead-lettered truncated to
//! [`TRUNCATED_PAYLOAD`] bytes, with `truncated: <original size>`, so no
//! partition blocks forever on one message; the original stays readable at
//! its source offset until retention removes it.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::kafka::sink::{PublishError, PublishFailure, Publisher};
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

/// How much of an oversized message's payload a dead letter keeps.
pub const TRUNCATED_PAYLOAD: usize = 64 * 1024;

/// Publishes a dead letter and waits for the broker's acknowledgement; one
/// the broker refuses as too large is sent again truncated.
pub async fn send(
    publisher: &Publisher,
    suffix: &str,
    dl: &DeadLetter<'_>,
) -> Result<(), PublishError> {
    match send_as(publisher, suffix, dl, None).await {
        Err(e) if e.kind == PublishFailure::TooLarge => {
            let payload = dl.record.payload.as_deref().unwrap_or_default();
            let keep = payload.len().min(TRUNCATED_PAYLOAD);
            tracing::warn!(
                worker = dl.worker,
                topic = dl.topic,
                offset = dl.record.offset,
                size = payload.len(),
                "dead letter too large for its topic: sending it truncated"
            );
            send_as(publisher, suffix, dl, Some(keep)).await
        }
        other => other,
    }
}

async fn send_as(
    publisher: &Publisher,
    suffix: &str,
    dl: &DeadLetter<'_>,
    truncate_to: Option<usize>,
) -> Result<(), PublishError> {
    let partition = dl.partition.to_string();
    let offset = dl.record.offset.to_string();
    let attempts = dl.attempts.to_string();
    let first = dl
        .first_failure_at
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    // A truncated dead letter keeps only our headers: the original ones may
    // be what made it too large.
    let mut headers: Vec<(&str, &[u8])> = dl
        .record
        .headers
        .iter()
        .filter(|_| truncate_to.is_none())
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
    let mut payload = dl.record.payload.as_deref().unwrap_or_default();
    let original_size = payload.len().to_string();
    if let Some(keep) = truncate_to {
        payload = &payload[..keep];
        headers.push(("truncated", original_size.as_bytes()));
    }
    publisher
        .publish(
            &topic_for(dl.topic, suffix),
            dl.record.key.as_deref(),
            payload,
            &headers,
        )
        .await
}
