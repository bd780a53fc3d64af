//! The aggregates worker's own metrics (the pipeline's are in
//! `pipelines::metrics`). Labels are bounded: `window` is a configured size,
//! `type` a known event type, `priority` one of a fixed few
//! ([`super::dimension::priority_label`]), `project` a name from the
//! configured allow-list, `none` or `other`.

use std::collections::{HashMap, HashSet};

use metrics::{counter, gauge, histogram};

use super::plan::EventFacts;
use super::result::WindowResult;

pub const WINDOWS_CLOSED: &str = "taskstream_aggregates_windows_closed_total";
pub const LATE_EVENTS: &str = "taskstream_aggregates_late_events_total";
pub const EVENTS: &str = "taskstream_aggregates_events_total";
pub const TASKS_COMPLETED: &str = "taskstream_aggregates_tasks_completed_total";
pub const COMPLETION_DURATION: &str = "taskstream_aggregates_completion_duration_seconds";
pub const ACTIVE_USERS: &str = "taskstream_aggregates_active_users";
pub const WINDOW_EVENTS: &str = "taskstream_aggregates_window_events";
pub const WATERMARK: &str = "taskstream_aggregates_watermark_seconds";

/// A project as a label: its name when the allow-list
/// (`aggregates.projects`) names it, `none` without a project, else `other`.
pub fn project_label<'a>(allow: &HashSet<String>, project: Option<&'a str>) -> &'a str {
    match project {
        None => "none",
        Some(p) if allow.contains(p) => p,
        Some(_) => "other",
    }
}

/// A batch's events counted (each in at least its smallest window, or as
/// late): one increment per label set, not per event.
pub fn events(facts: &[EventFacts<'_>], allow: &HashSet<String>) {
    let mut by_type: HashMap<(&str, &str), u64> = HashMap::new();
    let mut completed: HashMap<(&str, &str), u64> = HashMap::new();
    let durations = histogram!(COMPLETION_DURATION);
    for f in facts {
        let project = project_label(allow, f.project);
        *by_type.entry((f.kind, project)).or_default() += 1;
        if f.kind == "task.completed" {
            *completed.entry((f.priority, project)).or_default() += 1;
        }
        if let Some(s) = f.completion_seconds {
            durations.record(s);
        }
    }
    for ((kind, project), n) in by_type {
        counter!(EVENTS, "type" => kind.to_string(), "project" => project.to_string()).increment(n);
    }
    for ((priority, project), n) in completed {
        counter!(TASKS_COMPLETED, "priority" => priority.to_string(), "project" => project.to_string())
            .increment(n);
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
