//! A closed window's results: the JSON published to `task-metrics` (as the
//! `attributes` of a canonical `metrics.window_closed` event), one over every
//! event (`dimension` and `key` null) and one per dimension and key, each
//! with an `event_id` derived from window, dimension and key, so a
//! republished result (a crashed closer taken over) is recognisably the same.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pipelines::event::Dialect;
use pipelines::state::StateStore;
use pipelines::{derive_event_id, OutputEvent, TaskEvent, WorkerError};
use serde::{Deserialize, Serialize};

use super::dimension::Dimension;
use super::store::{self, WindowCounts};
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
    /// `type`, `project` or `priority`; null for the result over every event.
    pub dimension: Option<String>,
    /// The dimension's key (an event type, a project, a priority); null
    /// with the dimension.
    pub key: Option<String>,
    pub events: u64,
    pub by_type: BTreeMap<String, u64>,
    /// Absent from per-key results of the type and project dimensions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
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
    /// The result of `w` over every event (`line` None) or of one
    /// dimension's key.
    ///
    /// What is kept per key is what the line needs (see [`store`]): a
    /// type's `by_type` is itself, a priority's `by_priority` itself; other
    /// keys have no `by_priority` (left out of the JSON). Created and
    /// completed are the `task.created` and `task.completed` types.
    pub fn new(w: &WindowId, line: Option<(Dimension, &str)>, c: &WindowCounts) -> Self {
        let n = c.durations.count();
        let only = |k: &str| BTreeMap::from([(k.to_string(), c.events)]);
        let by_type = match line {
            Some((Dimension::Type, k)) => only(k),
            _ => c.by_type.clone(),
        };
        let by_priority = match line {
            None => c.by_priority.clone(),
            Some((Dimension::Priority, k)) => only(k),
            Some(_) => BTreeMap::new(),
        };
        let of_type = |t: &str| by_type.get(t).copied().unwrap_or(0);
        let (created, completed) = (of_type("task.created"), of_type("task.completed"));
        WindowResult {
            window: w.name.to_string(),
            window_start: instant(w.start_ms),
            window_end: instant(w.end_ms),
            dimension: line.map(|(d, _)| d.to_string()),
            key: line.map(|(_, k)| k.to_string()),
            events: c.events,
            by_type,
            by_priority,
            tasks_created: created,
            tasks_completed: completed,
            completion_rate: (created > 0).then(|| completed as f64 / created as f64),
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

    /// The result's event id: the same for the same window, dimension and
    /// key, whoever closes it.
    pub fn event_id(w: &WindowId, line: Option<(Dimension, &str)>) -> String {
        let start = w.start_ms.to_string();
        match line {
            None => derive_event_id(&["aggregates", &w.name, &start]),
            Some((d, k)) => derive_event_id(&["aggregates", &w.name, &start, d.as_str(), k]),
        }
    }

    /// The dimension and key of this result, parsed back.
    fn line(&self) -> Option<(Dimension, &str)> {
        let d = Dimension::parse(self.dimension.as_deref()?)?;
        Some((d, self.key.as_deref()?))
    }

    /// The canonical event to publish, keyed by window so one window's
    /// results stay on one partition.
    pub fn output(&self, w: &WindowId, topic: &str) -> OutputEvent {
        let attributes = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let event = TaskEvent {
            event_id: Self::event_id(w, self.line()),
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

/// The results of `w` as stored now: over every event (`dimension` None),
/// or one per key of `dimension` (at most `max_keys`, then the others
/// folded into one).
pub async fn read(
    state: &dyn StateStore,
    w: &WindowId,
    dimension: Option<Dimension>,
    max_keys: usize,
) -> Result<Vec<WindowResult>, WorkerError> {
    Ok(match dimension {
        None => vec![WindowResult::new(
            w,
            None,
            &store::read_window(state, w).await?,
        )],
        Some(d) => store::read_dimension(state, w, d, max_keys)
            .await?
            .iter()
            .map(|(k, c)| WindowResult::new(w, Some((d, k)), c))
            .collect(),
    })
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
            by_type: BTreeMap::from([
                ("task.created".to_string(), 2),
                ("task.completed".to_string(), 1),
            ]),
            durations,
            distinct_users: 2,
            ..WindowCounts::default()
        };
        let r = WindowResult::new(&w, None, &c);
        assert_eq!(r.completion_rate, Some(0.5));
        assert_eq!(r.completion_seconds.p50, Some(60.0));
        let out = r.output(&w, "task-metrics");
        assert_eq!(out.event.event_id, WindowResult::event_id(&w, None));
        assert_eq!(out.event.attributes["dimension"], serde_json::Value::Null);
        let per_key = WindowResult::new(&w, Some((Dimension::Project, "apollo")), &c);
        let out = per_key.output(&w, "task-metrics");
        assert_eq!(out.event.attributes["dimension"], "project");
        assert_eq!(out.event.attributes["key"], "apollo");
        assert_eq!(
            out.event.event_id,
            WindowResult::event_id(&w, Some((Dimension::Project, "apollo")))
        );
        assert_ne!(
            out.event.event_id,
            WindowResult::event_id(&w, Some((Dimension::Project, "gemini")))
        );
        assert_ne!(out.event.event_id, WindowResult::event_id(&w, None));
        assert_eq!(out.event.attributes["events"], 3);
        assert_eq!(out.event.attributes["window_start"], "1970-01-01T00:01:00Z");
        let other = WindowId {
            name: "1h".into(),
            ..w.clone()
        };
        assert_ne!(
            WindowResult::event_id(&w, None),
            WindowResult::event_id(&other, None)
        );
    }
}
