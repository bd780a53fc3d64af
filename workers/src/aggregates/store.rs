//! The windows in the state store (Redis in production): key layout, the
//! writes a batch makes, and reading a window back.
//!
//! - `agg:w:{window}:{start}`: one hash of every counter of the window:
//!   over every event (`events`, `t:{type}`, `p:{priority}`, `h:{bucket}`,
//!   `dsum_ms`; tasks created and completed are two of the types), and per
//!   key of a dimension as `{dimension}|{counter}|{key}`
//!   (`project|events|apollo`, `project|t:task.created|apollo`): what a
//!   per-key result shows, no more (no `t:` for a type, no `p:` at all: a
//!   priority's own breakdown is itself). A batch adds to it in one step
//!   ([`StateOp::HashIncrByMany`]);
//! - `agg:u:{window}:{start}:{dimension}:{key}`: distinct users per key
//!   (HyperLogLog on Redis, about 0.8 % standard error; exact in the memory
//!   store). The window's own distinct users are the union of its priority
//!   keys' (every event has exactly one priority key), counted at read time,
//!   so no HyperLogLog is written twice for it. Users this replica already
//!   added to a window's key are not sent again ([`KnownUsers`]: an add is
//!   idempotent, so skipping it changes nothing);
//! - (before this layout, read still, so windows open across an upgrade
//!   keep their counts: `agg:d:{window}:{start}:{dimension}` with fields
//!   `{counter}|{key}`, and `agg:u:{window}:{start}`);
//! - `agg:open`: windows with counts and no published result, scored by end;
//! - `agg:closed:{window}:{start}`: the close mark (who claimed it, when);
//! - `agg:last:{window}`: the start of the last window of that size closed;
//! - `agg:marks`: every partition's [`PartitionMark`];
//! - `agg:late:{window}`: events refused as late, per window size;
//! - `agg:created:{task}`: a task's creation time (90 days), so a
//!   completion without `created_at` still has a completion time.
//!
//! Window keys expire `state_ttl` after the window's length, counted from
//! the first write of each replica that writes them (each replica sets the
//! expiry once: a window closes long before). A batch's writes, its partition's mark and its events'
//! idempotency marks are one atomic step (a Lua script on Redis), in which
//! each window's writes are conditional on its close mark being absent: a
//! window being closed is never added to (its events count as late instead),
//! and a redelivered event or a crash between writes never counts twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use pipelines::state::{StateOp, StateStore};
use pipelines::WorkerError;

use super::dimension::{self, Dimension};
use super::histogram::CompletionHistogram;
use super::plan::{BatchPlan, Counts};
use super::users::Hashes;
use super::watermark::PartitionMark;
use super::window::WindowId;

pub const MARKS: &str = "agg:marks";
pub const OPEN: &str = "agg:open";

pub fn counters_key(w: &WindowId) -> String {
    format!("agg:w:{}:{}", w.name, w.start_ms)
}

/// The per-dimension hash of the layout before one hash per window (read only).
pub fn dimension_key(w: &WindowId, d: Dimension) -> String {
    format!("agg:d:{}:{}:{d}", w.name, w.start_ms)
}

/// The window's own distinct users in the layout before (read only).
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

/// The counters of `c` as fields of the window's hash: over every event
/// (`dim` None), or for `key` of `dim` (see the layout).
fn counter_fields(out: &mut Vec<(String, i64)>, dim: Option<(Dimension, &str)>, c: &Counts<'_>) {
    let mut incr = |field: std::fmt::Arguments<'_>, by: u64| {
        if by > 0 {
            let name = match dim {
                None => field.to_string(),
                Some((d, key)) => format!("{d}|{field}|{key}"),
            };
            out.push((name, by as i64));
        }
    };
    incr(format_args!("events"), c.events);
    if dim.map(|(d, _)| d) != Some(Dimension::Type) {
        for (t, n) in &c.by_type {
            incr(format_args!("t:{t}"), *n);
        }
    }
    if dim.is_none() {
        for (p, n) in &c.by_priority {
            incr(format_args!("p:{p}"), *n);
        }
    }
    for (i, n) in c.durations.buckets.iter().enumerate() {
        incr(format_args!("h:{i}"), *n);
    }
    if c.durations.count() > 0 {
        incr(
            format_args!("dsum_ms"),
            (c.durations.sum_seconds * 1000.0).round() as u64,
        );
    }
}

/// The users this replica has added to each window's distinct counts (as
/// their hashes, [`super::users::User`]): adding one again changes nothing,
/// so a batch sends only users new to the window's key. Most users of a long window recur, and
/// each `PFADD` to a large sparse HyperLogLog costs Redis a scan of it. A
/// key this replica has written already has its expiry: later batches do
/// not set it again (its state outlives the window's close by `state_ttl`
/// counted from this replica's first write; so does the window's counters
/// hash). Bounded: past
/// [`KnownUsers::CAPACITY`] users it starts afresh (which only costs adds
/// and expiries again).
#[derive(Default)]
pub struct KnownUsers {
    windows: HashMap<WindowId, [HashMap<Box<str>, Hashes>; 3]>,
    len: usize,
}

fn dim_index(d: Dimension) -> usize {
    match d {
        Dimension::Type => 0,
        Dimension::Project => 1,
        Dimension::Priority => 2,
    }
}

impl KnownUsers {
    pub const CAPACITY: usize = 500_000;

    /// Whether this replica has written to `w`.
    fn has_window(&self, w: &WindowId) -> bool {
        self.windows.contains_key(w)
    }

    fn known(&self, w: &WindowId, dim: Dimension, key: &str) -> Option<&Hashes> {
        self.windows.get(w)?[dim_index(dim)].get(key)
    }

    /// Records the users of the windows `plan` added to (`open[i]`: the
    /// update of `plan.windows[i]` landed).
    pub fn record(&mut self, plan: &BatchPlan<'_>, open: &[bool]) {
        for ((w, d), open) in plan.windows.iter().zip(open) {
            if !*open {
                self.forget(w);
                continue;
            }
            let keys = self.windows.entry(w.clone()).or_default();
            for ((dim, key), c) in &d.by {
                if c.users.is_empty() {
                    continue;
                }
                let by_key = &mut keys[dim_index(*dim)];
                let set = match by_key.get_mut(*key) {
                    Some(set) => set,
                    None => by_key.entry(Box::from(*key)).or_default(),
                };
                for u in &c.users {
                    if set.insert(u.hash) {
                        self.len += 1;
                    }
                }
            }
        }
        if self.len > Self::CAPACITY {
            self.windows.clear();
            self.len = 0;
        }
    }

    /// Drops a window (closed: nothing more is added to it).
    pub fn forget(&mut self, w: &WindowId) {
        if let Some(keys) = self.windows.remove(w) {
            self.len -= keys
                .iter()
                .flat_map(|k| k.values())
                .map(HashSet::len)
                .sum::<usize>();
        }
    }
}

/// The writes of one batch: per window (in `plan.windows` order) one
/// [`StateOp::IfAbsent`] on its close mark, whose first branch adds the
/// counters (one [`StateOp::HashIncrByMany`]), the users new to each key
/// and the open-window entry and whose second counts the window's events as
/// late; then the late counts and the partition's new mark.
pub fn batch_ops(
    plan: &BatchPlan<'_>,
    mark: Option<(&str, PartitionMark)>,
    state_ttl: Duration,
    known: &KnownUsers,
) -> Vec<StateOp> {
    let mut ops = Vec::with_capacity(plan.windows.len() + plan.late.len() + 1);
    for (w, d) in &plan.windows {
        let ttl = window_ttl(w, state_ttl);
        let mut then = Vec::with_capacity(4 + 2 * d.by.len());
        let key = counters_key(w);
        let mut fields = Vec::with_capacity(16 + 4 * d.by.len());
        counter_fields(&mut fields, None, &d.all);
        for ((dim, k), c) in &d.by {
            counter_fields(&mut fields, Some((*dim, k)), c);
        }
        // Its expiry is set by this replica's first write (see KnownUsers).
        if known.has_window(w) {
            then.push(StateOp::HashIncrByMany { key, fields });
        } else {
            then.push(StateOp::HashIncrByMany {
                key: key.clone(),
                fields,
            });
            then.push(StateOp::Expire { key, ttl });
        }
        for ((dim, k), c) in &d.by {
            let known = known.known(w, *dim, k);
            let members: Vec<String> = c
                .users
                .iter()
                .filter(|u| known.is_none_or(|set| !set.contains(&u.hash)))
                .map(|u| u.name.to_string())
                .collect();
            if !members.is_empty() {
                let key = key_users_key(w, *dim, k);
                then.push(StateOp::DistinctAdd {
                    key: key.clone(),
                    members,
                });
                if known.is_none() {
                    then.push(StateOp::Expire { key, ttl });
                }
            }
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

/// Every partition's mark, by its field ([`mark_field`]; unreadable values
/// are skipped: they hold nothing back).
pub async fn marks(state: &dyn StateStore) -> Result<BTreeMap<String, PartitionMark>, WorkerError> {
    Ok(state
        .hget_all(MARKS)
        .await?
        .into_iter()
        .filter_map(|(f, v)| Some((f, PartitionMark::decode(&v)?)))
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
    fn add_field(&mut self, field: &str, n: u64) {
        match field {
            "events" => self.events += n,
            "dsum_ms" => self.durations.sum_seconds += n as f64 / 1000.0,
            f => {
                if let Some(t) = f.strip_prefix("t:") {
                    *self.by_type.entry(t.to_string()).or_default() += n;
                } else if let Some(p) = f.strip_prefix("p:") {
                    *self.by_priority.entry(p.to_string()).or_default() += n;
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

/// A window's counters as stored: over every event, and per dimension and
/// key (the legacy per-dimension hashes added in).
async fn read_counters(
    state: &dyn StateStore,
    w: &WindowId,
) -> Result<(WindowCounts, BTreeMap<(Dimension, String), WindowCounts>), WorkerError> {
    let mut keys = vec![counters_key(w)];
    keys.extend(Dimension::ALL.iter().map(|d| dimension_key(w, *d)));
    let hashes = state.hget_all_many(&keys).await?;
    let mut all = WindowCounts::default();
    let mut by: BTreeMap<(Dimension, String), WindowCounts> = BTreeMap::new();
    let mut hashes = hashes.into_iter();
    for (field, value) in hashes.next().unwrap_or_default() {
        let n = count(&value);
        match field.split_once('|') {
            None => all.add_field(&field, n),
            Some((d, rest)) => {
                if let (Some(d), Some((name, key))) = (Dimension::parse(d), rest.split_once('|')) {
                    by.entry((d, key.to_string()))
                        .or_default()
                        .add_field(name, n);
                }
            }
        }
    }
    for (d, legacy) in Dimension::ALL.into_iter().zip(hashes) {
        for (field, value) in legacy {
            if let Some((name, key)) = field.split_once('|') {
                by.entry((d, key.to_string()))
                    .or_default()
                    .add_field(name, count(&value));
            }
        }
    }
    Ok((all, by))
}

/// A window's counts over every event.
pub async fn read_window(
    state: &dyn StateStore,
    w: &WindowId,
) -> Result<WindowCounts, WorkerError> {
    let (mut c, by) = read_counters(state, w).await?;
    // Every event has one priority key: their union is the window's users.
    let mut sources: Vec<String> = by
        .keys()
        .filter(|(d, _)| *d == Dimension::Priority)
        .map(|(d, k)| key_users_key(w, *d, k))
        .collect();
    sources.push(users_key(w));
    c.distinct_users = state.distinct_count(&sources).await?;
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
    let (_, by) = read_counters(state, w).await?;
    let keys: Vec<(String, WindowCounts)> = by
        .into_iter()
        .filter(|((d, _), _)| *d == dim)
        .map(|((_, k), c)| (k, c))
        .collect();
    let (mut kept, folded) = dimension::top_keys(keys, |c| c.events, max_keys);
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
