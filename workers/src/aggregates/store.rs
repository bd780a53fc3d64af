//! The windows in the state store (Redis in production): key layout, the
//! writes a batch makes, and reading a window back.
//!
//! - `agg:w:{window}:{start}`: a hash of counters over every event
//!   (`events`, `t:{type}`, `p:{priority}`, `h:{bucket}`, `dsum_ms`; tasks
//!   created and completed are two of the types);
//! - `agg:d:{window}:{start}:{dimension}`: counters per key of a dimension,
//!   as fields `{counter}|{key}` (`events|apollo`, `t:task.created|apollo`):
//!   what a per-key result shows, no more (no `t:` for a type, no `p:` at
//!   all: a priority's own breakdown is itself);
//! - `agg:u:{window}:{start}` and `agg:u:{window}:{start}:{dimension}:{key}`:
//!   distinct users (HyperLogLog on Redis, about 0.8 % standard error;
//!   exact in the memory store);
//! - `agg:open`: windows with counts and no published result, scored by end;
//! - `agg:closed:{window}:{start}`: the close mark (who claimed it, when);
//! - `agg:last:{window}`: the start of the last window of that size closed;
//! - `agg:marks`: every partition's [`PartitionMark`];
//! - `agg:late:{window}`: events refused as late, per window size;
//! - `agg:created:{task}`: a task's creation time (90 days), so a
//!   completion without `created_at` still has a completion time.
//!
//! Window keys expire `state_ttl` after the window's length from their last
//! write. A batch's writes, its partition's mark and its events'
//! idempotency marks are one atomic step (a Lua script on Redis), in which
//! each window's writes are conditional on its close mark being absent: a
//! window being closed is never added to (its events count as late instead),
//! and a redelivered event or a crash between writes never counts twice.

use std::collections::BTreeMap;
use std::time::Duration;

use pipelines::state::{StateOp, StateStore};
use pipelines::WorkerError;

use super::dimension::{self, Dimension};
use super::histogram::CompletionHistogram;
use super::plan::{BatchPlan, Counts};
use super::watermark::PartitionMark;
use super::window::WindowId;

pub const MARKS: &str = "agg:marks";
pub const OPEN: &str = "agg:open";

pub fn counters_key(w: &WindowId) -> String {
    format!("agg:w:{}:{}", w.name, w.start_ms)
}

pub fn dimension_key(w: &WindowId, d: Dimension) -> String {
    format!("agg:d:{}:{}:{d}", w.name, w.start_ms)
}

pub fn users_key(w: &WindowId) -> String {
    format!("agg:u:{}:{}", w.name, w.start_ms)
}

pub fn key_users_key(w: &WindowId, d: Dimension, key: &str) -> String {
    format!("agg:u:{}:{}:{d}:{key}", w.name, w.start_ms)
}

pub fn closed_key(w: &WindowId) -> String {
    format!("agg:closed:{}:{}", w.name, w.start_ms)
}

/// The start (ms) of the last closed window of size `window`.
pub fn last_closed_key(window: &str) -> String {
    format!("agg:last:{window}")
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

/// How long a window's state is kept: its length plus `state_ttl`.
pub fn window_ttl(w: &WindowId, state_ttl: Duration) -> Duration {
    Duration::from_millis((w.end_ms - w.start_ms).max(0) as u64) + state_ttl
}

/// `HINCRBY`s of `c` on the hash `key`, each field followed by `suffix`:
/// over every event (`dim` None), or for a key of `dim` (see the layout).
fn counter_ops(
    ops: &mut Vec<StateOp>,
    key: &str,
    suffix: &str,
    dim: Option<Dimension>,
    c: &Counts<'_>,
) {
    let mut incr = |field: &str, by: u64| {
        if by > 0 {
            let mut f = String::with_capacity(field.len() + suffix.len());
            f.push_str(field);
            f.push_str(suffix);
            ops.push(StateOp::HashIncrBy {
                key: key.to_string(),
                field: f,
                by: by as i64,
            });
        }
    };
    incr("events", c.events);
    if dim != Some(Dimension::Type) {
        for (t, n) in &c.by_type {
            incr(&format!("t:{t}"), *n);
        }
    }
    if dim.is_none() {
        for (p, n) in &c.by_priority {
            incr(&format!("p:{p}"), *n);
        }
    }
    for (i, n) in c.durations.buckets.iter().enumerate() {
        incr(&format!("h:{i}"), *n);
    }
    if c.durations.count() > 0 {
        incr("dsum_ms", (c.durations.sum_seconds * 1000.0).round() as u64);
    }
}

/// `PFADD` of `c`'s users to `key` and its expiry.
fn users_ops(ops: &mut Vec<StateOp>, key: String, c: &Counts<'_>, ttl: Duration) {
    if !c.users.is_empty() {
        ops.push(StateOp::DistinctAdd {
            key: key.clone(),
            members: c.users.iter().map(|u| u.to_string()).collect(),
        });
        ops.push(StateOp::Expire { key, ttl });
    }
}

/// The writes of one batch: per window (in `plan.windows` order) one
/// [`StateOp::IfAbsent`] on its close mark, whose first branch adds the
/// counters, distinct users and the open-window entry and whose second
/// counts the window's events as late; then the late counts and the
/// partition's new mark.
pub fn batch_ops(
    plan: &BatchPlan<'_>,
    mark: Option<(&str, PartitionMark)>,
    state_ttl: Duration,
) -> Vec<StateOp> {
    let mut ops = Vec::with_capacity(plan.windows.len() + plan.late.len() + 1);
    for (w, d) in &plan.windows {
        let ttl = window_ttl(w, state_ttl);
        let mut then = Vec::new();
        let key = counters_key(w);
        counter_ops(&mut then, &key, "", None, &d.all);
        then.push(StateOp::Expire { key, ttl });
        users_ops(&mut then, users_key(w), &d.all, ttl);
        let mut last: Option<(Dimension, String)> = None;
        for ((dim, k), c) in &d.by {
            let key = match &last {
                Some((ld, key)) if ld == dim => key.clone(),
                _ => {
                    if let Some((_, key)) = last.take() {
                        then.push(StateOp::Expire { key, ttl });
                    }
                    dimension_key(w, *dim)
                }
            };
            counter_ops(&mut then, &key, &format!("|{k}"), Some(*dim), c);
            users_ops(&mut then, key_users_key(w, *dim, k), c, ttl);
            last = Some((*dim, key));
        }
        if let Some((_, key)) = last {
            then.push(StateOp::Expire { key, ttl });
        }
        then.push(StateOp::ZAdd {
            key: OPEN.into(),
            member: w.member(),
            score: w.end_ms as f64,
        });
        ops.push(StateOp::IfAbsent {
            key: closed_key(w),
            then,
            otherwise: vec![StateOp::IncrBy {
                key: late_key(&w.name),
                by: d.all.events as i64,
                ttl: None,
            }],
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

/// The counts of a window (or of one key of a dimension in it) as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowCounts {
    pub events: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_priority: BTreeMap<String, u64>,
    pub durations: CompletionHistogram,
    pub distinct_users: u64,
}

impl WindowCounts {
    /// `c` with `c.users` counted exactly.
    pub fn of(c: &Counts<'_>) -> WindowCounts {
        let mut w = WindowCounts::default();
        w.add(c);
        w.distinct_users = c.users.len() as u64;
        w
    }

    /// Adds `c` (all but its distinct users, which do not add up).
    pub fn add(&mut self, c: &Counts<'_>) {
        self.events += c.events;
        for (t, n) in &c.by_type {
            *self.by_type.entry(t.to_string()).or_default() += n;
        }
        for (p, n) in &c.by_priority {
            *self.by_priority.entry(p.to_string()).or_default() += n;
        }
        self.durations.merge(&c.durations);
    }

    /// Adds another's counts (all but distinct users).
    pub fn merge(&mut self, o: &WindowCounts) {
        self.events += o.events;
        for (t, n) in &o.by_type {
            *self.by_type.entry(t.clone()).or_default() += n;
        }
        for (p, n) in &o.by_priority {
            *self.by_priority.entry(p.clone()).or_default() += n;
        }
        self.durations.merge(&o.durations);
    }

    /// Adds one stored counter.
    fn set_field(&mut self, field: &str, n: u64) {
        match field {
            "events" => self.events = n,
            "dsum_ms" => self.durations.sum_seconds = n as f64 / 1000.0,
            f => {
                if let Some(t) = f.strip_prefix("t:") {
                    self.by_type.insert(t.to_string(), n);
                } else if let Some(p) = f.strip_prefix("p:") {
                    self.by_priority.insert(p.to_string(), n);
                } else if let Some(i) = f.strip_prefix("h:").and_then(|i| i.parse().ok()) {
                    self.durations.add_to_bucket(i, n);
                }
            }
        }
    }
}

fn count(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0) as u64
}

/// A window's counts over every event.
pub async fn read_window(
    state: &dyn StateStore,
    w: &WindowId,
) -> Result<WindowCounts, WorkerError> {
    let (counters, users) = (counters_key(w), [users_key(w)]);
    let (fields, users) =
        futures::try_join!(state.hget_all(&counters), state.distinct_count(&users))?;
    let mut c = WindowCounts {
        distinct_users: users,
        ..WindowCounts::default()
    };
    for (field, value) in fields {
        c.set_field(&field, count(&value));
    }
    Ok(c)
}

/// A window's counts per key of `dim`, ordered by key: the `max_keys` keys
/// with the most events, then the others folded into [`dimension::OTHER`].
pub async fn read_dimension(
    state: &dyn StateStore,
    w: &WindowId,
    dim: Dimension,
    max_keys: usize,
) -> Result<Vec<(String, WindowCounts)>, WorkerError> {
    let mut keys: BTreeMap<String, WindowCounts> = BTreeMap::new();
    for (field, value) in state.hget_all(&dimension_key(w, dim)).await? {
        if let Some((name, key)) = field.split_once('|') {
            keys.entry(key.to_string())
                .or_default()
                .set_field(name, count(&value));
        }
    }
    let (mut kept, folded) =
        dimension::top_keys(keys.into_iter().collect(), |c| c.events, max_keys);
    let users = futures::future::try_join_all(
        kept.iter()
            .map(|(k, _)| async move { state.distinct_count(&[key_users_key(w, dim, k)]).await }),
    )
    .await?;
    for ((_, c), n) in kept.iter_mut().zip(users) {
        c.distinct_users = n;
    }
    if !folded.is_empty() {
        let mut other = WindowCounts::default();
        for (_, c) in &folded {
            other.merge(c);
        }
        let sources: Vec<String> = folded
            .iter()
            .map(|(k, _)| key_users_key(w, dim, k))
            .collect();
        other.distinct_users = state.distinct_count(&sources).await?;
        kept.push((dimension::OTHER.to_string(), other));
    }
    Ok(kept)
}

/// Events refused as late so far, per window size.
pub async fn late_total(state: &dyn StateStore, window: &str) -> Result<u64, WorkerError> {
    Ok(state
        .get(&late_key(window))
        .await?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0))
}
