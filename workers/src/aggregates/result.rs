//! A closed window's result: the JSON published to `task-metrics` (as the
//! `attributes` of a canonical `metrics.window_closed` event) with an
//! `event_id` derived from the window, so a republished result (a crashed
//! closer taken over) is recognisably the same.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pipelines::event::Dialect;
use pipelines::{derive_event_id, OutputEvent, TaskEvent};
use serde::{Deserialize, Serialize};

use super::store::WindowCounts;
use super::window::WindowId;

/// The event type of results.
pub const KIND: &str = "metrics.window_closed";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub count: u64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// One window's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    pub window: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Always null for now: one result covers every event of the window.
    pub dimension: Option<String>,
    pub key: Option<String>,
    pub events: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_priority: BTreeMap<String, u64>,
    pub tasks_created: u64,
    pub tasks_completed: u64,
    /// Completed over created in the window (`None` when none was created).
    pub completion_rate: Option<f64>,
    pub distinct_users: u64,
    pub completion_seconds: Quantiles,
}

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl WindowResult {
    pub fn new(w: &WindowId, c: &WindowCounts) -> Self {
        let n = c.durations.count();
        WindowResult {
            window: w.name.to_string(),
            window_start: instant(w.start_ms),
            window_end: instant(w.end_ms),
            dimension: None,
            key: None,
            events: c.events,
            by_type: c.by_type.clone(),
            by_priority: c.by_priority.clone(),
            tasks_created: c.created,
            tasks_completed: c.completed,
            completion_rate: (c.created > 0).then(|| c.completed as f64 / c.created as f64),
            distinct_users: c.distinct_users,
            completion_seconds: Quantiles {
                count: n,
                mean: (n > 0).then(|| c.durations.sum_seconds / n as f64),
                p50: c.durations.quantile(0.5),
                p90: c.durations.quantile(0.9),
                p99: c.durations.quantile(0.99),
            },
        }
    }

    /// The result's event id: the same for the same window, whoever closes it.
    pub fn event_id(w: &WindowId) -> String {
        derive_event_id(&["aggregates", &w.name, &w.start_ms.to_string()])
    }

    /// The canonical event to publish, keyed by window so one window's
    /// results stay on one partition.
    pub fn output(&self, w: &WindowId, topic: &str) -> OutputEvent {
        let attributes = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let event = TaskEvent {
            event_id: Self::event_id(w),
            kind: KIND.into(),
            occurred_at: self.window_end,
            task_id: None,
            user_id: None,
            project_id: None,
            task: None,
            previous: None,
            changes: BTreeMap::new(),
            reminder: None,
            user: None,
            context: None,
            dialect: Dialect::Canonical,
            cloudevents: false,
            schema_version: Some("1".into()),
            attributes,
        };
        OutputEvent::new(topic, format!("{}:{}", w.name, w.start_ms), event)
            .header("window", w.name.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregates::histogram::CompletionHistogram;

    #[test]
    fn a_result_carries_its_window_counts_and_a_window_derived_id() {
        let w = WindowId {
            name: "1m".into(),
            start_ms: 60_000,
            end_ms: 120_000,
        };
        let mut durations = CompletionHistogram::new();
        durations.record(30.0);
        let c = WindowCounts {
            events: 3,
            created: 2,
            completed: 1,
            durations,
            distinct_users: 2,
            ..WindowCounts::default()
        };
        let r = WindowResult::new(&w, &c);
        assert_eq!(r.completion_rate, Some(0.5));
        assert_eq!(r.completion_seconds.p50, Some(60.0));
        let out = r.output(&w, "task-metrics");
        assert_eq!(out.event.event_id, WindowResult::event_id(&w));
        assert_eq!(out.event.attributes["events"], 3);
        assert_eq!(out.event.attributes["window_start"], "1970-01-01T00:01:00Z");
        let other = WindowId {
            name: "1h".into(),
            ..w.clone()
        };
        assert_ne!(WindowResult::event_id(&w), WindowResult::event_id(&other));
    }
}
