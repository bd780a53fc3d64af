//! What a sender is given ([`ReminderNotification`]) and what it answers
//! ([`Delivered`] or a classified [`DeliveryError`]).
//!
//! The classification is made once, here, from the sender's point of view, and
//! the scheduler acts on the class alone:
//! - *transient* (an SMTP 4xx reply, a refused, reset or timed-out connection,
//!   an HTTP 5xx): keep the reminder, retry with backoff, report the relay
//!   not-ready; it maps to [`WorkerError::Unavailable`], never to a dead letter;
//! - *permanent* (an SMTP 5xx reply, an invalid or missing address, an HTTP
//!   4xx): record the reminder as failed (`notification.failed`) and never retry.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use pipelines::WorkerError;
use serde::{Deserialize, Serialize};

/// One reminder, ready to deliver: the task as it is now, the user's address
/// and time zone, and when it was scheduled to fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReminderNotification {
    /// Stable id of this reminder (task, fire time and channel): the
    /// `Message-ID` and the webhook's idempotency key derive from it, so a
    /// resend after a crash is recognisable downstream.
    pub reminder_id: String,
    pub task_id: String,
    pub title: String,
    pub description: Option<String>,
    /// The task's due time, if it has one.
    pub due_at: Option<DateTime<Utc>>,
    /// The user's IANA time zone: times in the message are shown in it.
    pub time_zone: Tz,
    /// When the reminder was scheduled to fire. Also the message's `Date`, so
    /// the message is a pure function of the reminder (no clock is read).
    pub fire_at: DateTime<Utc>,
    pub channel: Channel,
    /// The user's address; `None` when the user directory has none (a
    /// permanent failure for the email channel).
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub user_id: String,
    /// Link to the task; `None` = `<link_base_url>/tasks/<task_id>`.
    pub link: Option<String>,
}

impl ReminderNotification {
    /// `reminder-<first 128 bits of SHA-256(reminder_id), hex>`: the local part
    /// of the email's `Message-ID` and the webhook's `Idempotency-Key`. It
    /// depends on the reminder id only, so every resend carries the same one.
    pub fn delivery_key(&self) -> String {
        delivery_key(&self.reminder_id)
    }
}

/// See [`ReminderNotification::delivery_key`].
pub fn delivery_key(reminder_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(reminder_id.as_bytes());
    format!("reminder-{}", hex::encode(&digest[..16]))
}

/// How a reminder reaches its user (`notification_method` of the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Webhook,
    Push,
    Sms,
}

impl Channel {
    /// A bounded label: metrics, events, unsubscribe links.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
            Channel::Push => "push",
            Channel::Sms => "sms",
        }
    }

    /// Parses a `notification_method`; `None` for an unknown one.
    pub fn parse(text: &str) -> Option<Channel> {
        match text.trim().to_ascii_lowercase().as_str() {
            "email" | "e-mail" | "mail" => Some(Channel::Email),
            "webhook" => Some(Channel::Webhook),
            "push" => Some(Channel::Push),
            "sms" => Some(Channel::Sms),
            _ => None,
        }
    }

    /// The dependency a transient failure of this channel waits for.
    fn dependency(self) -> &'static str {
        match self {
            Channel::Email => "smtp",
            Channel::Webhook | Channel::Push | Channel::Sms => "webhook",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The receiving side accepted the reminder. The caller reads its own clock
/// when `send` returns: that instant is the acceptance time lateness is
/// measured with (no clock is read in the senders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The `Message-ID` (email) or idempotency key (webhook) sent.
    pub message_id: String,
    /// What the receiver answered: the SMTP reply to the message (`250 ...`),
    /// the file written, or the HTTP status.
    pub receipt: String,
}

/// Why a transient failure happened (a bounded label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientCause {
    /// SMTP 4xx reply.
    Reply,
    /// Refused, reset or dropped connection; TLS failure; DNS.
    Connection,
    /// No answer within `send_timeout`.
    Timeout,
    /// HTTP 5xx, 408 or 429.
    HttpStatus,
    /// The local mail directory could not be written.
    Io,
}

/// Why a permanent failure happened (a bounded label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermanentCause {
    /// SMTP 5xx reply.
    Reply,
    /// The recipient address cannot be used.
    InvalidAddress,
    /// The user has no address for this channel.
    NoAddress,
    /// The message could not be built (template, headers).
    Message,
    /// HTTP 4xx (other than 408/429) or an unexpected status.
    HttpStatus,
    /// The user turned this channel off.
    OptedOut,
    /// The user unsubscribed with the one-click link in a reminder email.
    Unsubscribed,
    /// No sender for this channel is configured (`push`/`sms` without a webhook).
    Unsupported,
}

impl TransientCause {
    pub fn as_str(self) -> &'static str {
        match self {
            TransientCause::Reply => "smtp_4xx",
            TransientCause::Connection => "connection",
            TransientCause::Timeout => "timeout",
            TransientCause::HttpStatus => "http_status",
            TransientCause::Io => "io",
        }
    }
}

impl PermanentCause {
    pub fn as_str(self) -> &'static str {
        match self {
            PermanentCause::Reply => "smtp_5xx",
            PermanentCause::InvalidAddress => "invalid_address",
            PermanentCause::NoAddress => "no_address",
            PermanentCause::Message => "bad_message",
            PermanentCause::HttpStatus => "http_status",
            PermanentCause::OptedOut => "opted_out",
            PermanentCause::Unsubscribed => "unsubscribed",
            PermanentCause::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for TransientCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for PermanentCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery that did not happen, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Try again later; nothing is wrong with the reminder.
    #[error("{channel} delivery failed for now ({cause}): {detail}")]
    Transient {
        channel: Channel,
        cause: TransientCause,
        detail: String,
    },
    /// Retrying cannot help: record the reminder as failed.
    #[error("{channel} delivery failed for good ({cause}): {detail}")]
    Permanent {
        channel: Channel,
        cause: PermanentCause,
        detail: String,
    },
}

impl DeliveryError {
    pub fn transient(channel: Channel, cause: TransientCause, detail: impl Into<String>) -> Self {
        DeliveryError::Transient {
            channel,
            cause,
            detail: detail.into(),
        }
    }

    pub fn permanent(channel: Channel, cause: PermanentCause, detail: impl Into<String>) -> Self {
        DeliveryError::Permanent {
            channel,
            cause,
            detail: detail.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, DeliveryError::Transient { .. })
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Permanent { .. })
    }

    pub fn channel(&self) -> Channel {
        match self {
            DeliveryError::Transient { channel, .. } | DeliveryError::Permanent { channel, .. } => {
                *channel
            }
        }
    }

    /// The bounded reason label (`smtp_5xx`, `no_address`, `connection`, ...):
    /// the `reason` of `notification.failed` and of metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DeliveryError::Transient { cause, .. } => cause.as_str(),
            DeliveryError::Permanent { cause, .. } => cause.as_str(),
        }
    }
}

/// The three ways a delivery attempt ends, for callers that want one value
/// (metrics, outcome events) rather than a `Result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered(Delivered),
    /// Retry with backoff; the relay is not ready.
    Transient(DeliveryError),
    /// Recorded as failed, never retried.
    Permanent(DeliveryError),
}

impl DeliveryOutcome {
    /// A bounded label: `sent`, `transient`, `permanent`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered(_) => "sent",
            DeliveryOutcome::Transient(_) => "transient",
            DeliveryOutcome::Permanent(_) => "permanent",
        }
    }
}

impl From<Result<Delivered, DeliveryError>> for DeliveryOutcome {
    fn from(r: Result<Delivered, DeliveryError>) -> Self {
        match r {
            Ok(d) => DeliveryOutcome::Delivered(d),
            Err(e) if e.is_transient() => DeliveryOutcome::Transient(e),
            Err(e) => DeliveryOutcome::Permanent(e),
        }
    }
}

impl From<DeliveryError> for WorkerError {
    /// Transient: the channel's dependency (`smtp`, `webhook`) is unavailable:
    /// wait, report not-ready, never dead-letter. Permanent: the reminder
    /// cannot be delivered; the scheduler records it as failed before this
    /// would ever reach the pipeline.
    fn from(e: DeliveryError) -> Self {
        match &e {
            DeliveryError::Transient { channel, .. } => {
                WorkerError::unavailable(channel.dependency(), &e)
            }
            DeliveryError::Permanent { .. } => WorkerError::permanent(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_wait_for_their_dependency() {
        let e = DeliveryError::transient(Channel::Email, TransientCause::Reply, "451 try later");
        match WorkerError::from(e) {
            WorkerError::Unavailable { dependency, reason } => {
                assert_eq!(dependency, "smtp");
                assert!(reason.contains("451 try later"), "{reason}");
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
        let e = DeliveryError::transient(Channel::Webhook, TransientCause::HttpStatus, "503");
        assert!(matches!(
            WorkerError::from(e),
            WorkerError::Unavailable {
                dependency: "webhook",
                ..
            }
        ));
    }

    #[test]
    fn permanent_failures_are_permanent_worker_errors() {
        let e = DeliveryError::permanent(Channel::Email, PermanentCause::NoAddress, "user u1");
        assert_eq!(e.reason(), "no_address");
        assert!(matches!(WorkerError::from(e), WorkerError::Permanent(_)));
    }

    #[test]
    fn outcome_follows_the_class() {
        let t = DeliveryError::transient(Channel::Email, TransientCause::Timeout, "");
        let p = DeliveryError::permanent(Channel::Email, PermanentCause::Reply, "550");
        assert_eq!(DeliveryOutcome::from(Err(t)).as_str(), "transient");
        assert_eq!(DeliveryOutcome::from(Err(p)).as_str(), "permanent");
        let d = Delivered {
            message_id: "<m@x>".into(),
            receipt: "250 OK".into(),
        };
        assert_eq!(DeliveryOutcome::from(Ok(d)).as_str(), "sent");
    }

    #[test]
    fn channels_parse_from_notification_method() {
        assert_eq!(Channel::parse("EMAIL"), Some(Channel::Email));
        assert_eq!(Channel::parse("push"), Some(Channel::Push));
        assert_eq!(Channel::parse("pigeon"), None);
        let json = serde_json::to_string(&Channel::Webhook).unwrap();
        assert_eq!(json, "\"webhook\"");
    }
}
