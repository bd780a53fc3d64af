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

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use pipelines::event::KNOWN_TYPES;
use pipelines::TaskEvent;

use super::dimension::{self, priority_label, Dimension};
use super::histogram::CompletionHistogram;
use super::users::User;
use super::window::{WindowId, WindowSpec};

/// What the windows need to know of one event (borrowed from it: folding a
/// batch copies no strings).
#[derive(Debug, Clone, PartialEq)]
pub struct EventFacts<'a> {
    pub t_ms: i64,
    /// A known event type (`other` for any other: the pipeline hands
    /// workers known types only).
    pub kind: &'static str,
    pub user: Option<User<'a>>,
    /// The task's priority as one of a fixed few ([`priority_label`]).
    pub priority: &'static str,
    /// The event's project, else its task's.
    pub project: Option<&'a str>,
    /// Created-to-completed seconds, for a completion whose creation time is known.
    pub completion_seconds: Option<f64>,
    pub task_id: Option<&'a str>,
    /// For a completion: when it was completed (the snapshot's
    /// `completed_at`, else the event time), ms since the epoch.
    pub completed_ms: Option<i64>,
}

/// `kind` as the static name of a known type, or `other`.
pub fn known_kind(kind: &str) -> &'static str {
    KNOWN_TYPES
        .binary_search(&kind)
        .map_or("other", |i| KNOWN_TYPES[i])
}

impl<'a> EventFacts<'a> {
    pub fn of(e: &'a TaskEvent) -> EventFacts<'a> {
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
            kind: known_kind(&e.kind),
            user: e.user_id.as_deref().map(User::new),
            priority: priority_label(task.and_then(|t| t.priority.as_deref())),
            project: e
                .project_id
                .as_deref()
                .or_else(|| task.and_then(|t| t.project_id.as_deref()))
                .filter(|p| !p.is_empty()),
            completion_seconds,
            task_id: e.task_id.as_deref(),
            completed_ms,
        }
    }

    /// Its key in `dimension`.
    pub fn key(&self, dimension: Dimension) -> &'a str {
        match dimension {
            Dimension::Type => self.kind,
            Dimension::Project => self.project.unwrap_or(dimension::NONE),
            Dimension::Priority => self.priority,
        }
    }
}

/// Seconds from creation to completion (`None` when negative: clocks of
/// different producers disagree, and a negative time is no measurement).
pub fn completion_seconds((completed_ms, created_ms): (i64, i64)) -> Option<f64> {
    let ms = completed_ms.checked_sub(created_ms)?;
    (ms >= 0).then_some(ms as f64 / 1000.0)
}

/// What a batch adds to one window, or to one key of a dimension in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts<'a> {
    pub events: u64,
    /// Events per type, in the order first met (a handful: a short list
    /// is cheaper than a map).
    pub by_type: Vec<(&'static str, u64)>,
    /// Events per priority, likewise.
    pub by_priority: Vec<(&'static str, u64)>,
    pub created: u64,
    pub completed: u64,
    pub durations: CompletionHistogram,
    /// Distinct users, ordered by hash (every event's user is pushed while
    /// a batch is folded; [`plan`] sorts them and drops repeats once).
    pub users: Vec<User<'a>>,
}

/// Adds one to `key`'s count (keys are static names: equal ones are
/// usually the same pointer).
fn bump(counts: &mut Vec<(&'static str, u64)>, key: &'static str) {
    match counts
        .iter_mut()
        .find(|(k, _)| std::ptr::eq(*k, key) || *k == key)
    {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}

impl<'a> Counts<'a> {
    /// Counts one event in a key of `dim` (`None`: over every event),
    /// leaving out what that key's result does not show: its types for a
    /// type, priorities for any key (see [`super::result::WindowResult::new`]).
    fn add_for(&mut self, e: &EventFacts<'a>, dim: Option<Dimension>, life: Lifecycle) {
        self.events += 1;
        if dim != Some(Dimension::Type) {
            bump(&mut self.by_type, e.kind);
        }
        if dim.is_none() {
            bump(&mut self.by_priority, e.priority);
        }
        match life {
            Lifecycle::Created => self.created += 1,
            Lifecycle::Completed => self.completed += 1,
            Lifecycle::Other => {}
        }
        if let Some(s) = e.completion_seconds {
            self.durations.record(s);
        }
        if let Some(u) = e.user {
            self.users.push(u);
        }
    }

    /// Makes `users` distinct (sorted by hash, then name).
    fn finish(&mut self) {
        self.users
            .sort_unstable_by(|a, b| a.hash.cmp(&b.hash).then_with(|| a.name.cmp(b.name)));
        self.users.dedup();
    }
}

/// Whether an event created or completed a task (decided once per event,
/// not per window and key).
#[derive(Debug, Clone, Copy)]
enum Lifecycle {
    Created,
    Completed,
    Other,
}

impl Lifecycle {
    fn of(e: &EventFacts<'_>) -> Lifecycle {
        match e.kind {
            "task.created" => Lifecycle::Created,
            "task.completed" => Lifecycle::Completed,
            _ => Lifecycle::Other,
        }
    }
}

/// What a batch adds to one window: over every event, and per dimension and key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowDelta<'a> {
    pub all: Counts<'a>,
    pub by: BTreeMap<(Dimension, &'a str), Counts<'a>>,
}

/// A batch folded: per-window additions (in the order the windows were
/// first met), late events per window size, and the partition's newest
/// event time afterwards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchPlan<'a> {
    pub windows: Vec<(WindowId, WindowDelta<'a>)>,
    pub late: BTreeMap<Arc<str>, u64>,
    pub max_event_ms: Option<i64>,
}

impl<'a> BatchPlan<'a> {
    /// The delta of `w`, if the batch adds to it.
    pub fn window(&self, w: &WindowId) -> Option<&WindowDelta<'a>> {
        self.windows.iter().find(|(id, _)| id == w).map(|(_, d)| d)
    }
}

/// Folds `events` (in partition order) given the partition's newest event
/// time before them and the windows known to be closed.
pub fn plan<'a>(
    specs: &[WindowSpec],
    lateness_ms: i64,
    prior_max_ms: Option<i64>,
    closed: &HashSet<WindowId>,
    events: &[EventFacts<'a>],
) -> BatchPlan<'a> {
    let mut out = BatchPlan {
        max_event_ms: prior_max_ms,
        ..BatchPlan::default()
    };
    // (size, start) -> index in out.windows; consecutive events mostly
    // share windows, so the last one of each size is looked at first.
    let mut index: HashMap<(usize, i64), usize> = HashMap::new();
    let mut last: Vec<Option<(i64, usize)>> = vec![None; specs.len()];
    // The events' keys in every dimension, numbered once per batch: while
    // folding, a window's per-key counts are found by number (`by_key[slot]`,
    // the window at `slot` of `out.windows`), not looked up per window.
    let mut key_ids: HashMap<(Dimension, &'a str), usize> = HashMap::new();
    let mut keys: Vec<(Dimension, &'a str)> = Vec::new();
    let mut by_key: Vec<Vec<Counts<'a>>> = Vec::new();
    for e in events {
        let watermark = out.max_event_ms.map(|m| m.saturating_sub(lateness_ms));
        let life = Lifecycle::of(e);
        let ids = Dimension::ALL.map(|d| {
            let key = (d, e.key(d));
            *key_ids.entry(key).or_insert_with(|| {
                keys.push(key);
                keys.len() - 1
            })
        });
        for (si, spec) in specs.iter().enumerate() {
            let start = spec.start_of(e.t_ms);
            let end = start.saturating_add(spec.size_ms);
            if watermark.is_some_and(|wm| end <= wm) {
                *out.late.entry(spec.name.clone()).or_default() += 1;
                continue;
            }
            let slot = match last[si] {
                Some((s, slot)) if s == start => slot,
                _ => match index.entry((si, start)) {
                    Entry::Occupied(o) => *o.get(),
                    Entry::Vacant(v) => {
                        let w = spec.window_of(e.t_ms);
                        if closed.contains(&w) {
                            *out.late.entry(spec.name.clone()).or_default() += 1;
                            continue;
                        }
                        out.windows.push((w, WindowDelta::default()));
                        by_key.push(Vec::new());
                        *v.insert(out.windows.len() - 1)
                    }
                },
            };
            last[si] = Some((start, slot));
            out.windows[slot].1.all.add_for(e, None, life);
            let per_key = &mut by_key[slot];
            for (d, id) in Dimension::ALL.into_iter().zip(ids) {
                if per_key.len() <= id {
                    per_key.resize_with(id + 1, Counts::default);
                }
                per_key[id].add_for(e, Some(d), life);
            }
        }
        out.max_event_ms = Some(out.max_event_ms.map_or(e.t_ms, |m| m.max(e.t_ms)));
    }
    for ((_, d), per_key) in out.windows.iter_mut().zip(by_key) {
        d.all.finish();
        for (id, mut c) in per_key.into_iter().enumerate() {
            if c.events > 0 {
                c.finish();
                d.by.insert(keys[id], c);
            }
        }
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

    fn at(t_s: i64, kind: &str, user: &'static str) -> EventFacts<'static> {
        EventFacts {
            t_ms: t_s * 1000,
            kind: known_kind(kind),
            user: Some(User::new(user)),
            priority: "none",
            project: None,
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
        assert_eq!(p.window(&minute(0)).unwrap().all.events, 2);
        assert_eq!(p.window(&minute(0)).unwrap().all.created, 1);
        assert_eq!(p.window(&minute(0)).unwrap().all.completed, 1);
        assert_eq!(p.window(&minute(60)).unwrap().all.events, 1);
        let hour = specs()[1].window_of(0);
        assert_eq!(p.window(&hour).unwrap().all.events, 3);
        assert_eq!(p.window(&hour).unwrap().all.users.len(), 2);
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
        assert_eq!(p.window(&minute(60)).unwrap().all.events, 1);
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
        assert!(p.window(&minute(60)).is_none());
        assert_eq!(p.late.get("1m"), Some(&1));
        assert_eq!(p.window(&specs()[1].window_of(0)).unwrap().all.events, 1);
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
        assert!(p.window(&minute(0)).is_none());
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
        assert_eq!(p.window(&minute(0)).unwrap().all.events, 1);
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
        assert_eq!(f.priority, "high");
    }

    #[test]
    fn each_event_counts_once_per_dimension_under_its_key() {
        let e: TaskEvent = serde_json::from_value(serde_json::json!({
            "event_id": "e", "type": "task.created",
            "occurred_at": "2026-03-01T10:30:00Z", "dialect": "canonical",
            "user_id": "u", "project_id": "apollo", "task": {"priority": "urgent"}
        }))
        .unwrap();
        let mut facts = vec![EventFacts::of(&e), at(10, "task.completed", "v")];
        facts[1].t_ms = facts[0].t_ms;
        let p = plan(&specs(), 60_000, None, &HashSet::new(), &facts);
        let d = &p.windows[0].1;
        assert_eq!(d.all.events, 2);
        for dim in Dimension::ALL {
            let per_key: u64 =
                d.by.iter()
                    .filter(|((dd, _), _)| *dd == dim)
                    .map(|(_, c)| c.events)
                    .sum();
            assert_eq!(per_key, 2, "{dim}: the keys add up to the window");
        }
        assert_eq!(d.by[&(Dimension::Project, "apollo")].events, 1);
        assert_eq!(d.by[&(Dimension::Project, dimension::NONE)].events, 1);
        assert_eq!(d.by[&(Dimension::Priority, "urgent")].created, 1);
        let users = &d.by[&(Dimension::Type, "task.completed")].users;
        assert_eq!(users.iter().map(|u| u.name).collect::<Vec<_>>(), ["v"]);
    }
}
