//! Output events with deterministic ids.
//!
//! A worker's output must be recognisable as the same output when it is
//! produced twice: by a redelivered input, by a second replica during a
//! rebalance, by a timer that crashed after publishing. So an output's
//! `event_id` is derived from what caused it, never random:
//! - a reaction to an input: the input's `event_id` plus a purpose
//!   (`[source_id, "reminder-scheduled"]`);
//! - an occurrence of a series: series id plus occurrence number;
//! - a threshold crossing: task id, threshold and due time.
//!
//! Every consumer of our topics (ourselves included, through the idempotency
//! guard) dedupes on `event_id`, so the same cause yields one effect downstream.

use sha2::{Digest, Sha256};

use crate::event::TaskEvent;

/// A UUID-shaped id (version 8, RFC 9562's "custom" layout) from the SHA-256
/// of `parts`: the same parts always give the same id, different parts
/// (even `["ab", "c"]` against `["a", "bc"]`) different ones.
pub fn derive_event_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// An [`OutputEvent`] serialised ahead of publishing, with its headers
/// ([`crate::Ctx::encode_event`]): publishing it later is only the send.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One event to publish: a canonical event, the partitioning key (a task id,
/// so one task's events stay ordered), and extra headers.
#[derive(Debug, Clone)]
pub struct OutputEvent {
    pub topic: String,
    pub key: String,
    pub event: TaskEvent,
    /// Added after the standard ones (`event-id`, `event-type`,
    /// `content-type`, `producer`).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OutputEvent {
    pub fn new(topic: impl Into<String>, key: impl Into<String>, event: TaskEvent) -> Self {
        OutputEvent {
            topic: topic.into(),
            key: key.into(),
            event,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_cause_same_id_different_cause_different_id() {
        let a = derive_event_id(&["task-1", "3d", "2026-03-01T09:00:00Z"]);
        assert_eq!(
            a,
            derive_event_id(&["task-1", "3d", "2026-03-01T09:00:00Z"])
        );
        assert_ne!(
            a,
            derive_event_id(&["task-1", "1h", "2026-03-01T09:00:00Z"])
        );
        assert_ne!(derive_event_id(&["ab", "c"]), derive_event_id(&["a", "bc"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version nibble");
    }
}
