//! Folding a batch of one partition into window updates: the pure step,
//! with no store and no clock, so lateness and window assignment are tested
//! with times passed in.
//!
//! An event counts in one window per configured size, unless that window is
//! late for it: already closed (its close mark exists), or ending at or
//! before its partition's watermark as it stood before the event. The second
//! rule is what makes a close safe without locks: a window closes only once
//! every active partition's stored watermark has passed its end, and each
//! partition's owner, knowing its own watermark, refuses to add to it from
//! then on. A late event is counted as late (per window size), never added.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use pipelines::TaskEvent;

use super::histogram::CompletionHistogram;
use super::window::{WindowId, WindowSpec};

/// What the windows need to know of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFacts {
    pub t_ms: i64,
    pub kind: String,
    pub user: Option<String>,
    pub priority: Option<String>,
    /// Created-to-completed seconds, for a completion whose creation time is known.
    pub completion_seconds: Option<f64>,
    pub task_id: Option<String>,
    /// For a completion: when it was completed (the snapshot's
    /// `completed_at`, else the event time), ms since the epoch.
    pub completed_ms: Option<i64>,
}

impl EventFacts {
    pub fn of(e: &TaskEvent) -> EventFacts {
        let task = e.task.as_ref();
        let completed_ms = (e.kind == "task.completed").then(|| {
            task.and_then(|t| t.completed_at)
                .unwrap_or(e.occurred_at)
                .timestamp_millis()
        });
        let created_ms = task
            .and_then(|t| t.created_at)
            .or_else(|| e.previous.as_ref().and_then(|p| p.created_at))
            .map(|c| c.timestamp_millis());
        let completion_seconds = completed_ms.zip(created_ms).and_then(completion_seconds);
        EventFacts {
            t_ms: e.occurred_at.timestamp_millis(),
            kind: e.kind.clone(),
            user: e.user_id.clone(),
            priority: task
                .and_then(|t| t.priority.as_deref())
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty()),
            completion_seconds,
            task_id: e.task_id.clone(),
            completed_ms,
        }
    }
}

/// Seconds from creation to completion (`None` when negative: clocks of
/// different producers disagree, and a negative time is no measurement).
pub fn completion_seconds((completed_ms, created_ms): (i64, i64)) -> Option<f64> {
    let ms = completed_ms.checked_sub(created_ms)?;
    (ms >= 0).then_some(ms as f64 / 1000.0)
}

/// What a batch adds to one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowDelta {
    pub events: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_priority: BTreeMap<String, u64>,
    pub created: u64,
    pub completed: u64,
    pub durations: CompletionHistogram,
    pub users: BTreeSet<String>,
}

impl WindowDelta {
    /// Adds another delta of the same window.
    pub fn merge(&mut self, other: &WindowDelta) {
        self.events += other.events;
        for (k, n) in &other.by_type {
            *self.by_type.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.by_priority {
            *self.by_priority.entry(k.clone()).or_default() += n;
        }
        self.created += other.created;
        self.completed += other.completed;
        self.durations.merge(&other.durations);
        self.users.extend(other.users.iter().cloned());
    }
}

/// A batch folded: per-window additions, late events per window size, and
/// the partition's newest event time afterwards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchPlan {
    pub windows: BTreeMap<WindowId, WindowDelta>,
    pub late: BTreeMap<Arc<str>, u64>,
    pub max_event_ms: Option<i64>,
}

/// Folds `events` (in partition order) given the partition's newest event
/// time before them and the windows known to be closed.
pub fn plan(
    specs: &[WindowSpec],
    lateness_ms: i64,
    prior_max_ms: Option<i64>,
    closed: &HashSet<WindowId>,
    events: &[EventFacts],
) -> BatchPlan {
    let mut out = BatchPlan {
        max_event_ms: prior_max_ms,
        ..BatchPlan::default()
    };
    for e in events {
        let watermark = out.max_event_ms.map(|m| m.saturating_sub(lateness_ms));
        for spec in specs {
            let w = spec.window_of(e.t_ms);
            if closed.contains(&w) || watermark.is_some_and(|wm| w.end_ms <= wm) {
                *out.late.entry(spec.name.clone()).or_default() += 1;
                continue;
            }
            let d = out.windows.entry(w).or_default();
            d.events += 1;
            *d.by_type.entry(e.kind.clone()).or_default() += 1;
            if let Some(p) = &e.priority {
                *d.by_priority.entry(p.clone()).or_default() += 1;
            }
            match e.kind.as_str() {
                "task.created" => d.created += 1,
                "task.completed" => d.completed += 1,
                _ => {}
            }
            if let Some(s) = e.completion_seconds {
                d.durations.record(s);
            }
            if let Some(u) = &e.user {
                d.users.insert(u.clone());
            }
        }
        out.max_event_ms = Some(out.max_event_ms.map_or(e.t_ms, |m| m.max(e.t_ms)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn specs() -> Vec<WindowSpec> {
        vec![
            WindowSpec::new("1m", Duration::from_secs(60)),
            WindowSpec::new("1h", Duration::from_secs(3600)),
        ]
    }

    fn at(t_s: i64, kind: &str, user: &str) -> EventFacts {
        EventFacts {
            t_ms: t_s * 1000,
            kind: kind.into(),
            user: Some(user.into()),
            priority: None,
            completion_seconds: None,
            task_id: None,
            completed_ms: None,
        }
    }

    fn minute(start_s: i64) -> WindowId {
        specs()[0].window_of(start_s * 1000)
    }

    #[test]
    fn each_event_counts_once_in_every_window_size() {
        let p = plan(
            &specs(),
            60_000,
            None,
            &HashSet::new(),
            &[
                at(10, "task.created", "u1"),
                at(20, "task.completed", "u2"),
                at(70, "task.created", "u1"),
            ],
        );
        assert_eq!(p.windows[&minute(0)].events, 2);
        assert_eq!(p.windows[&minute(0)].created, 1);
        assert_eq!(p.windows[&minute(0)].completed, 1);
        assert_eq!(p.windows[&minute(60)].events, 1);
        let hour = specs()[1].window_of(0);
        assert_eq!(p.windows[&hour].events, 3);
        assert_eq!(p.windows[&hour].users.len(), 2);
        assert!(p.late.is_empty());
        assert_eq!(p.max_event_ms, Some(70_000));
    }

    #[test]
    fn out_of_order_within_the_lateness_lands_in_its_own_window() {
        // Newest at 0:02:30; an event at 0:01:45 is 45 s behind: allowed.
        let p = plan(
            &specs(),
            60_000,
            Some(150_000),
            &HashSet::new(),
            &[at(105, "task.created", "u")],
        );
        assert_eq!(p.windows[&minute(60)].events, 1);
        assert!(p.late.is_empty());
        assert_eq!(p.max_event_ms, Some(150_000), "the max does not go back");
    }

    #[test]
    fn an_event_behind_its_partitions_watermark_is_late_for_that_window_only() {
        // Newest at 0:03:00, watermark 0:02:00: the minute 0:01 has ended
        // behind it, the hour has not.
        let p = plan(
            &specs(),
            60_000,
            Some(180_000),
            &HashSet::new(),
            &[at(100, "task.created", "u")],
        );
        assert!(!p.windows.contains_key(&minute(60)));
        assert_eq!(p.late.get("1m"), Some(&1));
        assert_eq!(p.windows[&specs()[1].window_of(0)].events, 1);
    }

    #[test]
    fn an_event_for_a_closed_window_is_late_whatever_its_partition_says() {
        let closed: HashSet<WindowId> = [minute(0)].into_iter().collect();
        let p = plan(
            &specs(),
            60_000,
            None,
            &closed,
            &[at(5, "task.created", "u")],
        );
        assert_eq!(p.late.get("1m"), Some(&1));
        assert!(!p.windows.contains_key(&minute(0)));
    }

    #[test]
    fn the_watermark_moves_within_a_batch() {
        // The second event moves the max to 0:05:00; the third (0:00:30) is
        // then more than a minute behind.
        let p = plan(
            &specs(),
            60_000,
            None,
            &HashSet::new(),
            &[
                at(10, "task.created", "u"),
                at(300, "task.created", "u"),
                at(30, "task.created", "u"),
            ],
        );
        assert_eq!(p.windows[&minute(0)].events, 1);
        assert_eq!(p.late.get("1m"), Some(&1));
    }

    #[test]
    fn completion_time_comes_from_the_snapshots_creation_time() {
        let e: TaskEvent = serde_json::from_value(serde_json::json!({
            "event_id": "e", "type": "task.completed",
            "occurred_at": "2026-03-01T10:30:00Z", "dialect": "canonical",
            "user_id": "u", "task": {"created_at": "2026-03-01T10:00:00Z", "priority": " High "}
        }))
        .unwrap();
        let f = EventFacts::of(&e);
        assert_eq!(f.completion_seconds, Some(1800.0));
        assert_eq!(f.priority.as_deref(), Some("high"));
    }
}
