//! The aggregates worker's own metrics (the pipeline's are in
//! `pipelines::metrics`). Labels are bounded: `window` is a configured size,
//! `type` a known event type, `priority` one of a fixed few.

use metrics::{counter, gauge, histogram};

use super::result::WindowResult;

pub const WINDOWS_CLOSED: &str = "taskstream_aggregates_windows_closed_total";
pub const LATE_EVENTS: &str = "taskstream_aggregates_late_events_total";
pub const EVENTS: &str = "taskstream_aggregates_events_total";
pub const TASKS_COMPLETED: &str = "taskstream_aggregates_tasks_completed_total";
pub const COMPLETION_DURATION: &str = "taskstream_aggregates_completion_duration_seconds";
pub const ACTIVE_USERS: &str = "taskstream_aggregates_active_users";
pub const WINDOW_EVENTS: &str = "taskstream_aggregates_window_events";
pub const WATERMARK: &str = "taskstream_aggregates_watermark_seconds";

/// A priority as a label: one of a fixed set, so producers cannot grow it.
pub fn priority_label(p: Option<&str>) -> &'static str {
    match p {
        None => "none",
        Some("low") => "low",
        Some("medium") | Some("normal") => "medium",
        Some("high") => "high",
        Some("urgent") | Some("critical") => "urgent",
        Some(_) => "other",
    }
}

/// One event counted (in at least its smallest window, or as late).
pub fn event(kind: &str, priority: Option<&str>, completion_seconds: Option<f64>) {
    counter!(EVENTS, "type" => kind.to_string()).increment(1);
    if kind == "task.completed" {
        counter!(TASKS_COMPLETED, "priority" => priority_label(priority)).increment(1);
    }
    if let Some(s) = completion_seconds {
        histogram!(COMPLETION_DURATION).record(s);
    }
}

pub fn late(window: &str, n: u64) {
    counter!(LATE_EVENTS, "window" => window.to_string()).increment(n);
}

/// A window's result was published: the last closed window's figures.
pub fn window_closed(window: &str, r: &WindowResult) {
    counter!(WINDOWS_CLOSED, "window" => window.to_string()).increment(1);
    gauge!(ACTIVE_USERS, "window" => window.to_string()).set(r.distinct_users as f64);
    gauge!(WINDOW_EVENTS, "window" => window.to_string()).set(r.events as f64);
}

/// The worker's watermark as this replica last computed it.
pub fn watermark(ms: i64) {
    gauge!(WATERMARK).set(ms as f64 / 1000.0);
}
