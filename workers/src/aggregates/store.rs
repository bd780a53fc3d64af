//! The windows in the state store (Redis in production): key layout, the
//! writes a batch makes, and reading a window back.
//!
//! - `agg:w:{window}:{start}`: a hash of counters (`events`, `created`,
//!   `completed`, `t:{type}`, `p:{priority}`, `h:{bucket}`, `dsum_ms`);
//! - `agg:u:{window}:{start}`: distinct users (HyperLogLog on Redis, about
//!   0.8 % standard error; exact in the memory store);
//! - `agg:open`: windows with counts and no published result, scored by end;
//! - `agg:closed:{window}:{start}`: the close mark (who claimed it, when);
//! - `agg:marks`: every partition's [`PartitionMark`];
//! - `agg:late:{window}`: events refused as late, per window size;
//! - `agg:created:{task}`: a task's creation time (90 days), so a
//!   completion without `created_at` still has a completion time.
//!
//! Window keys expire `state_ttl` after the window's length from their last
//! write; a batch's writes, its partition's mark and its events'
//! idempotency marks are one `MULTI`/`EXEC`, so a redelivered event or a
//! crash between them never counts twice.

use std::collections::BTreeMap;
use std::time::Duration;

use pipelines::state::{StateOp, StateStore};
use pipelines::WorkerError;

use super::histogram::CompletionHistogram;
use super::plan::BatchPlan;
use super::watermark::PartitionMark;
use super::window::WindowId;

pub const MARKS: &str = "agg:marks";
pub const OPEN: &str = "agg:open";

pub fn counters_key(w: &WindowId) -> String {
    format!("agg:w:{}:{}", w.name, w.start_ms)
}

pub fn users_key(w: &WindowId) -> String {
    format!("agg:u:{}:{}", w.name, w.start_ms)
}

pub fn closed_key(w: &WindowId) -> String {
    format!("agg:closed:{}:{}", w.name, w.start_ms)
}

/// When a task was created (ms), from its `task.created` event: for
/// completions whose snapshot carries no `created_at`.
pub fn created_key(task_id: &str) -> String {
    format!("agg:created:{task_id}")
}

/// How long a task's creation time is kept for its completion.
pub const CREATED_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

pub fn late_key(window: &str) -> String {
    format!("agg:late:{window}")
}

/// The field of a partition in [`MARKS`].
pub fn mark_field(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The writes of one batch: counters, distinct users, open windows, late
/// counts and the partition's new mark.
pub fn batch_ops(
    plan: &BatchPlan,
    mark: Option<(&str, PartitionMark)>,
    state_ttl: Duration,
) -> Vec<StateOp> {
    let mut ops = Vec::new();
    for (w, d) in &plan.windows {
        let key = counters_key(w);
        let incr = |field: String, by: u64| StateOp::HashIncrBy {
            key: key.clone(),
            field,
            by: by as i64,
        };
        ops.push(incr("events".into(), d.events));
        if d.created > 0 {
            ops.push(incr("created".into(), d.created));
        }
        if d.completed > 0 {
            ops.push(incr("completed".into(), d.completed));
        }
        for (t, n) in &d.by_type {
            ops.push(incr(format!("t:{t}"), *n));
        }
        for (p, n) in &d.by_priority {
            ops.push(incr(format!("p:{p}"), *n));
        }
        for (i, n) in d.durations.buckets.iter().enumerate() {
            if *n > 0 {
                ops.push(incr(format!("h:{i}"), *n));
            }
        }
        if d.durations.count() > 0 {
            ops.push(incr(
                "dsum_ms".into(),
                (d.durations.sum_seconds * 1000.0).round() as u64,
            ));
        }
        let ttl = Duration::from_millis((w.end_ms - w.start_ms).max(0) as u64) + state_ttl;
        ops.push(StateOp::Expire {
            key: key.clone(),
            ttl,
        });
        if !d.users.is_empty() {
            ops.push(StateOp::DistinctAdd {
                key: users_key(w),
                members: d.users.iter().cloned().collect(),
            });
            ops.push(StateOp::Expire {
                key: users_key(w),
                ttl,
            });
        }
        ops.push(StateOp::ZAdd {
            key: OPEN.into(),
            member: w.member(),
            score: w.end_ms as f64,
        });
    }
    for (window, n) in &plan.late {
        ops.push(StateOp::IncrBy {
            key: late_key(window),
            by: *n as i64,
            ttl: None,
        });
    }
    if let Some((field, m)) = mark {
        ops.push(StateOp::HashSet {
            key: MARKS.into(),
            fields: vec![(field.to_string(), m.encode().into_bytes())],
        });
    }
    ops
}

/// Every partition's mark (unreadable values are skipped: they hold nothing back).
pub async fn marks(state: &dyn StateStore) -> Result<Vec<PartitionMark>, WorkerError> {
    Ok(state
        .hget_all(MARKS)
        .await?
        .values()
        .filter_map(|v| PartitionMark::decode(v))
        .collect())
}

/// One partition's mark.
pub async fn mark(
    state: &dyn StateStore,
    topic: &str,
    partition: i32,
) -> Result<Option<PartitionMark>, WorkerError> {
    Ok(state
        .hget(MARKS, &mark_field(topic, partition))
        .await?
        .and_then(|v| PartitionMark::decode(&v)))
}

/// A window's counts as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowCounts {
    pub events: u64,
    pub created: u64,
    pub completed: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_priority: BTreeMap<String, u64>,
    pub durations: CompletionHistogram,
    pub distinct_users: u64,
}

pub async fn read_window(
    state: &dyn StateStore,
    w: &WindowId,
) -> Result<WindowCounts, WorkerError> {
    let (counters, users) = (counters_key(w), [users_key(w)]);
    let (fields, users) =
        futures::try_join!(state.hget_all(&counters), state.distinct_count(&users))?;
    let mut c = WindowCounts {
        durations: CompletionHistogram::new(),
        distinct_users: users,
        ..WindowCounts::default()
    };
    for (field, value) in fields {
        let n: i64 = std::str::from_utf8(&value)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let n = n.max(0) as u64;
        match field.as_str() {
            "events" => c.events = n,
            "created" => c.created = n,
            "completed" => c.completed = n,
            "dsum_ms" => c.durations.sum_seconds = n as f64 / 1000.0,
            f => {
                if let Some(t) = f.strip_prefix("t:") {
                    c.by_type.insert(t.to_string(), n);
                } else if let Some(p) = f.strip_prefix("p:") {
                    c.by_priority.insert(p.to_string(), n);
                } else if let Some(i) = f.strip_prefix("h:").and_then(|i| i.parse().ok()) {
                    c.durations.add_to_bucket(i, n);
                }
            }
        }
    }
    Ok(c)
}

/// Events refused as late so far, per window size.
pub async fn late_total(state: &dyn StateStore, window: &str) -> Result<u64, WorkerError> {
    Ok(state
        .get(&late_key(window))
        .await?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0))
}
