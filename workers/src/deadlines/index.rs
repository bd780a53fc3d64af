//! The `DeadlineIndex` in the state store, and how one event changes it.
//!
//! Keys (the store adds its prefix):
//! - `deadlines:due`: sorted set, task id by due time (ms): the open tasks
//!   with a deadline (its size is the `tasks indexed` gauge);
//! - `deadlines:task:<id>`: hash, what an announcement says about the task
//!   (title, owner, assignee, project, due time UTC and local with zone),
//!   plus bookkeeping (last event time, crossing set, open, announced);
//! - `deadlines:crossings:<topic>:<partition>`: sorted set of *pending
//!   crossings*, member `task|threshold|due_ms`, score the time to announce:
//!   one per open task, its next crossing (announcing one adds the next, in
//!   the same atomic acknowledgement).
//!   The partition is the one the event that set the due time came from, so
//!   the replica that owns that partition indexes and announces it, and its
//!   timer can be woken in-process. A scan is a range query by score: its cost
//!   follows the crossings due, not the tasks indexed.
//!
//! Every change of one event is one atomic `apply` (with the event's
//! idempotency mark), so a crash never leaves a task half-moved; a batch
//! applies all its events' changes in one, with the adds to each sorted set
//! gathered into one multi-member `ZADD` (`merge_sorted_set_adds`). The scan
//! checks each crossing against the task's hash before announcing it, so a
//! crossing left behind anywhere (a task moved between partitions, a
//! threshold removed from the config) is dropped, never announced.

use std::time::Duration;

use pipelines::state::{StateError, StateOp, StateStore};

use super::entry::{sent_field, Change, StoredTask};
use super::plan::{member, plan};
use super::threshold::{Threshold, OVERDUE};

pub const DUE_KEY: &str = "deadlines:due";

/// How long a closed task's record is kept (so a reopen with an unchanged due
/// time does not announce again what was announced).
pub const CLOSED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub fn task_key(task: &str) -> String {
    format!("deadlines:task:{task}")
}

pub fn crossings_key(topic: &str, partition: i32) -> String {
    format!("deadlines:crossings:{topic}:{partition}")
}

/// The index, with the thresholds it plans for (longest first).
#[derive(Debug, Clone)]
pub struct DeadlineIndex {
    thresholds: Vec<Threshold>,
}

/// The writes one event makes, and the earliest crossing it added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexChange {
    pub ops: Vec<StateOp>,
    /// The earliest new crossing (ms): wake the timer for it.
    pub wake_at_ms: Option<i64>,
    /// The task's record after the change (`None`: unchanged), so a batch
    /// can plan its next event for the same task without reading it back.
    pub record: Option<StoredTask>,
}

impl DeadlineIndex {
    pub fn new(thresholds: Vec<Threshold>) -> Self {
        DeadlineIndex { thresholds }
    }

    pub fn thresholds(&self) -> &[Threshold] {
        &self.thresholds
    }

    /// The task's record, if the index has one.
    pub async fn load(
        &self,
        store: &dyn StateStore,
        task: &str,
    ) -> Result<Option<StoredTask>, StateError> {
        Ok(StoredTask::from_hash(
            &store.hget_all(&task_key(task)).await?,
        ))
    }

    /// The records of `tasks`, in order, in one round trip.
    pub async fn load_many(
        &self,
        store: &dyn StateStore,
        tasks: &[&str],
    ) -> Result<Vec<Option<StoredTask>>, StateError> {
        let keys: Vec<String> = tasks.iter().map(|t| task_key(t)).collect();
        Ok(store
            .hget_all_many(&keys)
            .await?
            .iter()
            .map(StoredTask::from_hash)
            .collect())
    }

    /// The writes for `change` of `task` by an event at `event_ms`, seen at
    /// `now_ms` on the partition whose crossing set is `crossings`. `old` is
    /// the task's record. Pure: the caller applies the ops.
    pub fn change(
        &self,
        task: &str,
        old: Option<StoredTask>,
        change: &Change,
        event_ms: i64,
        now_ms: i64,
        crossings: &str,
    ) -> IndexChange {
        let stale = old.as_ref().is_some_and(|o| {
            o.updated_ms > event_ms && o.crossings_key.as_deref() != Some(crossings)
        });
        if stale {
            // Older than what the index already applied, from another
            // partition than the one that set the task's due time (its events
            // took different paths). Within one partition the log's order
            // wins: producers' clocks disagree by seconds.
            return IndexChange::default();
        }
        let key = task_key(task);
        match change {
            Change::Ignore => IndexChange::default(),
            Change::Remove => {
                let mut ops = Vec::new();
                if let Some(o) = &old {
                    ops.extend(self.drop_crossings(task, o));
                }
                let mut closed = old.unwrap_or_default();
                closed.open = false;
                closed.updated_ms = event_ms;
                ops.push(StateOp::ZRem {
                    key: DUE_KEY.into(),
                    member: task.into(),
                });
                ops.push(StateOp::Delete { key: key.clone() });
                ops.push(StateOp::HashSet {
                    key: key.clone(),
                    fields: closed.to_fields(),
                });
                let closed_record = closed;
                ops.push(StateOp::Expire {
                    key,
                    ttl: CLOSED_TTL,
                });
                IndexChange {
                    ops,
                    wake_at_ms: None,
                    record: Some(closed_record),
                }
            }
            Change::Upsert(fields) => {
                let was_open = old.as_ref().is_some_and(|o| o.open);
                let old_due = old.as_ref().and_then(|o| o.due_ms).filter(|_| was_open);
                let mut new = old.clone().unwrap_or_default().with(fields);
                new.updated_ms = event_ms;
                let Some(due_ms) = new.due_ms else {
                    // No deadline: remembered only for a later due date.
                    return IndexChange {
                        ops: vec![StateOp::HashSet {
                            key,
                            fields: new.to_fields(),
                        }],
                        wake_at_ms: None,
                        record: Some(new),
                    };
                };
                let mut ops = Vec::new();
                let mut wake_at_ms = None;
                if old_due != Some(due_ms) {
                    // New, reopened, or moved: (re-)arm for this due time.
                    if let Some(o) = old.as_ref().filter(|_| was_open) {
                        ops.extend(self.drop_crossings(task, o));
                        if let Some(d) = o.due_ms {
                            new.sent.retain(|s| !s.ends_with(&format!(":{d}")));
                        }
                    }
                    // Only the first crossing is pending; announcing it
                    // adds the next (`next_crossing`), so a task costs one
                    // member in the set, not one per threshold.
                    if let Some((op, at_ms)) =
                        self.first_crossing(task, crossings, due_ms, now_ms, |t| {
                            new.was_sent(t, due_ms)
                        })
                    {
                        wake_at_ms = Some(at_ms);
                        ops.push(op);
                    }
                    new.crossings_key = Some(crossings.into());
                    new.open = true;
                    ops.push(StateOp::ZAdd {
                        key: DUE_KEY.into(),
                        member: task.into(),
                        score: due_ms as f64,
                    });
                }
                // A full rewrite: also clears a closed record's expiry.
                if old.is_some() {
                    ops.push(StateOp::Delete { key: key.clone() });
                }
                ops.push(StateOp::HashSet {
                    key,
                    fields: new.to_fields(),
                });
                IndexChange {
                    ops,
                    wake_at_ms,
                    record: Some(new),
                }
            }
        }
    }

    /// Removes every pending crossing of `o`'s due time.
    fn drop_crossings(&self, task: &str, o: &StoredTask) -> Vec<StateOp> {
        let (Some(key), Some(due_ms)) = (&o.crossings_key, o.due_ms) else {
            return Vec::new();
        };
        self.thresholds
            .iter()
            .map(|t| t.label.as_str())
            .chain([OVERDUE])
            .map(|label| StateOp::ZRem {
                key: key.clone(),
                member: member(task, label, due_ms),
            })
            .collect()
    }

    /// The crossing that follows the announcement of `threshold` for
    /// `record`'s due time `due_ms`, seen at `now_ms`, as the op that makes
    /// it pending (in the record's crossing set), with its time. By the
    /// rules of [`plan`]: a later threshold that has passed meanwhile (a
    /// late scan) is announced at once, never one older than the most
    /// recent passed.
    pub fn next_crossing(
        &self,
        task: &str,
        record: &StoredTask,
        threshold: &str,
        due_ms: i64,
        now_ms: i64,
    ) -> Option<(StateOp, i64)> {
        let key = record.crossings_key.as_deref()?;
        self.first_crossing(task, key, due_ms, now_ms, |t| {
            t == threshold || record.was_sent(t, due_ms)
        })
    }

    /// The op that makes the first crossing [`plan`] gives pending in the
    /// set `crossings`, with its time.
    fn first_crossing(
        &self,
        task: &str,
        crossings: &str,
        due_ms: i64,
        now_ms: i64,
        sent: impl Fn(&str) -> bool,
    ) -> Option<(StateOp, i64)> {
        let first = plan(due_ms, now_ms, &self.thresholds, sent)
            .into_iter()
            .next()?;
        Some((
            StateOp::ZAdd {
                key: crossings.to_string(),
                member: first.member(task, due_ms),
                score: first.at_ms as f64,
            },
            first.at_ms,
        ))
    }

    /// Marks a crossing announced (after the broker acknowledged it).
    pub fn sent_op(task: &str, threshold: &str, due_ms: i64) -> StateOp {
        StateOp::HashSet {
            key: task_key(task),
            fields: vec![(sent_field(threshold, due_ms), b"1".to_vec())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadlines::entry::Fields;
    use chrono::DateTime;

    const H: i64 = 3_600_000;

    fn index() -> DeadlineIndex {
        DeadlineIndex::new(vec![
            Threshold::parse("3d").unwrap(),
            Threshold::parse("1h").unwrap(),
        ])
    }

    fn due(ms: i64) -> Change {
        Change::Upsert(Fields {
            title: Some("t".into()),
            due_at: DateTime::from_timestamp_millis(ms),
            ..Fields::default()
        })
    }

    fn zadds(c: &IndexChange) -> Vec<String> {
        c.ops
            .iter()
            .filter_map(|o| match o {
                StateOp::ZAdd { key, member, .. } if key.starts_with("deadlines:crossings") => {
                    Some(member.clone())
                }
                _ => None,
            })
            .collect()
    }

    fn applied(c: &IndexChange) -> StoredTask {
        let fields = c
            .ops
            .iter()
            .rev()
            .find_map(|o| match o {
                StateOp::HashSet { fields, .. } => Some(fields.clone()),
                _ => None,
            })
            .unwrap();
        StoredTask::from_hash(&fields.into_iter().collect()).unwrap()
    }

    #[test]
    fn an_update_that_keeps_the_due_time_does_not_re_arm() {
        let ix = index();
        let now = 1_000 * H;
        let first = ix.change(
            "t1",
            None,
            &due(now + 100 * H),
            1,
            now,
            "deadlines:crossings:t:0",
        );
        assert_eq!(zadds(&first).len(), 1, "only the first crossing is pending");
        let stored = applied(&first);
        let retitled = ix.change(
            "t1",
            Some(stored.clone()),
            &due(now + 100 * H),
            2,
            now + H,
            "deadlines:crossings:t:0",
        );
        assert!(zadds(&retitled).is_empty(), "{:?}", retitled.ops);
        let moved = ix.change(
            "t1",
            Some(stored),
            &due(now + 200 * H),
            3,
            now + H,
            "deadlines:crossings:t:1",
        );
        assert_eq!(
            zadds(&moved).len(),
            1,
            "moved: armed again, from its first crossing"
        );
        let removed: Vec<_> = moved
            .ops
            .iter()
            .filter(|o| matches!(o, StateOp::ZRem { key, .. } if key == "deadlines:crossings:t:0"))
            .collect();
        assert_eq!(removed.len(), 3, "the old due time's crossings dropped");
    }

    #[test]
    fn completion_drops_crossings_and_a_stale_event_from_another_partition_changes_nothing() {
        let ix = index();
        let now = 1_000 * H;
        let stored = applied(&ix.change(
            "t1",
            None,
            &due(now + 100 * H),
            10,
            now,
            "deadlines:crossings:t:0",
        ));
        let done = ix.change(
            "t1",
            Some(stored.clone()),
            &Change::Remove,
            11,
            now,
            "deadlines:crossings:t:0",
        );
        assert_eq!(
            done.ops
                .iter()
                .filter(|o| matches!(o, StateOp::ZRem { .. }))
                .count(),
            4,
            "three crossings and the due entry"
        );
        assert!(!applied(&done).open);
        let stale = ix.change(
            "t1",
            Some(applied(&done)),
            &due(now + 5 * H),
            9,
            now,
            "deadlines:crossings:t:1",
        );
        assert!(
            stale.ops.is_empty(),
            "an event older than the completion, from another partition"
        );
        let same_partition = ix.change(
            "t1",
            Some(applied(&done)),
            &due(now + 5 * H),
            9,
            now,
            "deadlines:crossings:t:0",
        );
        assert!(
            !same_partition.ops.is_empty(),
            "within one partition the log's order wins over timestamps"
        );
    }

    #[test]
    fn a_reopened_task_with_the_same_due_time_does_not_announce_again() {
        let ix = index();
        let now = 1_000 * H;
        let due_ms = now + 30 * 60_000;
        let mut stored =
            applied(&ix.change("t1", None, &due(due_ms), 1, now, "deadlines:crossings:t:0"));
        stored.sent.insert(sent_field("1h", due_ms));
        let closed = applied(&ix.change(
            "t1",
            Some(stored),
            &Change::Remove,
            2,
            now,
            "deadlines:crossings:t:0",
        ));
        let reopened = ix.change(
            "t1",
            Some(closed),
            &due(due_ms),
            3,
            now,
            "deadlines:crossings:t:0",
        );
        assert_eq!(zadds(&reopened), [member("t1", OVERDUE, due_ms)]);
    }

    #[test]
    fn announcing_a_crossing_makes_the_next_one_pending() {
        let ix = index();
        let now = 1_000 * H;
        let due_ms = now + 100 * H;
        let stored =
            applied(&ix.change("t1", None, &due(due_ms), 1, now, "deadlines:crossings:t:0"));
        let next = |threshold: &str, at_ms: i64| {
            ix.next_crossing("t1", &stored, threshold, due_ms, at_ms)
                .map(|(op, t)| match op {
                    StateOp::ZAdd { key, member, score } => {
                        assert_eq!(key, "deadlines:crossings:t:0");
                        assert_eq!(score as i64, t);
                        (member, t)
                    }
                    other => panic!("{other:?}"),
                })
        };
        // On time: 3d, then 1h at its time, then overdue at the due time.
        assert_eq!(
            next("3d", due_ms - 72 * H),
            Some((member("t1", "1h", due_ms), due_ms - H))
        );
        assert_eq!(
            next("1h", due_ms - H),
            Some((member("t1", OVERDUE, due_ms), due_ms))
        );
        assert_eq!(next(OVERDUE, due_ms), None);
        // A late scan (30 minutes before the due time) announces 1h at once.
        assert_eq!(
            next("3d", due_ms - H / 2),
            Some((member("t1", "1h", due_ms), due_ms - H / 2))
        );
        // One after the due time: only overdue, never a stale 1h.
        assert_eq!(
            next("3d", due_ms + H),
            Some((member("t1", OVERDUE, due_ms), due_ms + H))
        );
    }
}
