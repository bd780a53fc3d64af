//! The reminders worker's own metrics (the pipeline's are in
//! `pipelines::metrics`). Labels are bounded: channel, reason class, shard
//! topic and partition; never user or task ids.

use metrics::{counter, gauge, histogram};

pub const SCHEDULED: &str = "taskstream_reminders_scheduled_total";
pub const CANCELLED: &str = "taskstream_reminders_cancelled_total";
pub const SENT: &str = "taskstream_reminders_sent_total";
pub const FAILED: &str = "taskstream_reminders_failed_total";
pub const MISSED: &str = "taskstream_reminders_missed_total";
pub const HELD: &str = "taskstream_reminders_held_total";
pub const UNSUBSCRIBED: &str = "taskstream_reminders_unsubscribed_total";
/// One-click unsubscribe requests refused (bad or tampered signature).
pub const UNSUBSCRIBE_REFUSED: &str = "taskstream_reminders_unsubscribe_refused_total";
pub const PENDING: &str = "taskstream_reminders_pending";
/// Relay acceptance time minus the scheduled fire time.
pub const LATENESS: &str = "taskstream_reminders_fire_lateness_seconds";

pub fn scheduled(n: usize) {
    counter!(SCHEDULED).increment(n as u64);
}

pub fn cancelled(n: usize) {
    counter!(CANCELLED).increment(n as u64);
}

pub fn sent(channel: &'static str, lateness_seconds: f64) {
    counter!(SENT, "channel" => channel).increment(1);
    histogram!(LATENESS, "channel" => channel).record(lateness_seconds);
}

pub fn failed(channel: &'static str, reason: &'static str) {
    counter!(FAILED, "channel" => channel, "reason" => reason).increment(1);
}

pub fn missed(channel: &'static str) {
    counter!(MISSED, "channel" => channel).increment(1);
}

pub fn unsubscribed(channel: &'static str) {
    counter!(UNSUBSCRIBED, "channel" => channel).increment(1);
}

pub fn unsubscribe_refused() {
    counter!(UNSUBSCRIBE_REFUSED).increment(1);
}

pub fn held() {
    counter!(HELD).increment(1);
}

/// Pending reminders of one shard (set after each tick).
pub fn pending(topic: &str, partition: i32, n: u64) {
    gauge!(PENDING, "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(n as f64);
}
