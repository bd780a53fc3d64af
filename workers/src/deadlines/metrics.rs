//! The deadlines worker's own metrics (the pipeline's are in
//! `pipelines::metrics`). Labels are bounded: `kind` is `approaching` or
//! `overdue`, `threshold` one of the configured thresholds or `overdue`,
//! `reason` a fixed word.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Open tasks with a deadline in the index.
pub const TASKS_INDEXED: &str = "taskstream_deadlines_tasks_indexed";
/// Announcements published, by kind and threshold (the dashboards query it by `kind`).
pub const EVENTS: &str = "taskstream_deadlines_events_total";
/// Time of one scan of a partition's due crossings.
pub const SCAN_DURATION: &str = "taskstream_deadlines_scan_duration_seconds";
/// How long after its crossing (or after the task was indexed, for one
/// already passed) an announcement was acknowledged by the broker.
pub const EMIT_LATENESS: &str = "taskstream_deadlines_emit_lateness_seconds";
/// Partitions (with their pending crossings) taken over by this replica: the
/// ownership changes of the partition-scoped scanners.
pub const TAKEOVERS: &str = "taskstream_deadlines_partition_takeovers_total";
/// Claimed crossings dropped without an announcement, by reason
/// (`closed`, `moved`, `already_sent`, `unreadable`).
pub const DROPPED: &str = "taskstream_deadlines_crossings_dropped_total";

pub fn tasks_indexed(n: u64) {
    gauge!(TASKS_INDEXED).set(n as f64);
}

pub fn emitted(kind: &'static str, threshold: &str, lateness: Duration) {
    counter!(EVENTS, "kind" => kind, "threshold" => threshold.to_string()).increment(1);
    histogram!(EMIT_LATENESS, "kind" => kind).record(lateness.as_secs_f64());
}

pub fn scanned(took: Duration) {
    histogram!(SCAN_DURATION).record(took.as_secs_f64());
}

pub fn took_over() {
    counter!(TAKEOVERS).increment(1);
}

pub fn dropped(reason: &'static str) {
    counter!(DROPPED, "reason" => reason).increment(1);
}
