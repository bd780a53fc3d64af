//! The `ReminderSchedule`: pending reminders in the state store (Redis), so
//! they survive restarts and follow the consumer group's assignment.
//!
//! Keys (logical; the store adds its prefix):
//! - `reminders:due:{topic}:{partition}`: one sorted set per *shard*, member =
//!   reminder id, score = fire time in ms. A reminder lives in the shard of
//!   the (topic, partition) whose event scheduled it, so the timer that must
//!   fire it runs in the process that owns that partition (and
//!   `Ctx::wake_timer_at` reaches it);
//! - `reminders:reminder:{id}`: the reminder's payload (JSON);
//! - `reminders:task:{task_id}`: hash reminder id -> shard, so a completed or
//!   deleted task cancels every pending reminder of it, in any shard;
//! - `reminders:user-pending:{user_id}`: hash reminder id -> task id, so a
//!   user's new time zone reschedules their reminders set in local time;
//! - `reminders:ended:{task_id}`: the task was completed, deleted or
//!   archived (kept for [`ENDED_TTL`]), so a request for it that arrives
//!   after the completion (another topic, no order between them) is ignored;
//! - `reminders:sent:{id}`: the sent mark (id = task, nominal fire time and
//!   channel), holding the outcome; set with the payload's removal in one
//!   atomic update, kept for [`SENT_MARK_TTL`].
//!
//! Firing is claim, deliver, mark, ack: [`ReminderSchedule::claim_due`]
//! re-scores due members to a lease (atomically, a Lua script on Redis);
//! [`ReminderSchedule::finish_ops`] sets the mark and drops the payload;
//! [`ReminderSchedule::ack`] removes the member only while it still holds the
//! lease score. A process that dies after claiming leaves the member at the
//! lease, where it becomes due again and is fired by whoever owns the shard
//! then: the sent mark decides whether it still needs delivering.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pipelines::state::{StateError, StateOp, StateStore};
use serde::{Deserialize, Serialize};

use super::notification::Channel;
use super::planner::{DueWall, ReminderRule};

/// How long a sent mark is kept: longer than any redelivery of the event
/// that scheduled the reminder (topic retention is 7 days).
pub const SENT_MARK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long an ended task is remembered: the topics' retention, so every
/// late request for it is still recognised.
pub const ENDED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What caused a reminder, which decides what a due-date change does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Planned from the task's settings or the user's defaults: replanned
    /// whenever the task's due time changes.
    Task,
    /// An explicit request on the `reminders` topic: kept, and moved with
    /// the due time when it was relative to one.
    Request,
}

/// Where the zone of a reminder's wall time came from, which decides what
/// a user's new time zone does to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneSource {
    /// The producer named the zone, or the time is a fixed instant: a new
    /// user zone changes nothing.
    #[default]
    Producer,
    /// A fixed due instant read in the user's zone: the due instant stays,
    /// offsets are re-applied in the new zone's wall time.
    UserInstant,
    /// A naive wall time read in the user's zone: the wall time stays (09:00
    /// stays 09:00 where the user now is).
    UserLocal,
}

/// One pending reminder, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReminder {
    pub reminder_id: String,
    pub task_id: String,
    pub user_id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// The wall time and zone the rule is anchored to: the due time, or
    /// the requested time of a request written in naive local time.
    #[serde(default)]
    pub due_local: Option<chrono::NaiveDateTime>,
    #[serde(default)]
    pub due_tz: Option<String>,
    #[serde(default)]
    pub zone: ZoneSource,
    pub rule: ReminderRule,
    /// The planned fire time (before any quiet-hours hold): part of the id.
    pub nominal_at: DateTime<Utc>,
    pub channel: Channel,
    pub origin: Origin,
    /// The shard (sorted-set key) it lives in.
    pub shard: String,
    /// Transient failures of its webhook delivery so far: each retry waits
    /// longer (the pipeline's outage backoff).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// When it first came due, once a transient webhook failure postponed
    /// it: lateness and `max_lateness` count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_due: Option<DateTime<Utc>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StoredReminder {
    /// The due wall time, when the reminder has one.
    pub fn due_wall(&self) -> Option<DueWall> {
        Some(DueWall {
            local: self.due_local?,
            tz: self.due_tz.as_deref()?.parse().ok()?,
        })
    }
}

/// What happened to a fired reminder: the sent mark's value, also what a
/// re-fired reminder republishes (with the same event id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiredRecord {
    pub reminder_id: String,
    pub task_id: String,
    pub user_id: String,
    pub channel: Channel,
    /// `sent`, `failed` or `missed`.
    pub outcome: String,
    pub at: DateTime<Utc>,
    pub scheduled_at: DateTime<Utc>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message_id: Option<String>,
    /// Set once the outcome event is published
    /// ([`ReminderSchedule::mark_published`], after the event): a reminder
    /// fired again (planned again after it fired, from another message
    /// naming the same task, time and channel) republishes only an outcome
    /// not known to be published, as after a crash between the two.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub published: bool,
}

/// A claimed member: its id and the fire time it had.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub reminder_id: String,
    pub scheduled_at: DateTime<Utc>,
}

/// The schedule's key layout and operations.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReminderSchedule;

pub fn ms(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64
}

pub fn from_ms(score: f64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(score as i64)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl ReminderSchedule {
    pub fn shard_key(topic: &str, partition: i32) -> String {
        format!("reminders:due:{topic}:{partition}")
    }

    /// The (topic, partition) a shard key names: its timer's.
    pub fn shard_partition(shard: &str) -> Option<(&str, i32)> {
        let (topic, p) = shard.strip_prefix("reminders:due:")?.rsplit_once(':')?;
        Some((topic, p.parse().ok()?))
    }

    pub fn payload_key(reminder_id: &str) -> String {
        format!("reminders:reminder:{reminder_id}")
    }

    pub fn task_key(task_id: &str) -> String {
        format!("reminders:task:{task_id}")
    }

    pub fn user_key(user_id: &str) -> String {
        format!("reminders:user-pending:{user_id}")
    }

    pub fn ended_key(task_id: &str) -> String {
        format!("reminders:ended:{task_id}")
    }

    /// Marks a task ended: later requests for it are ignored.
    pub fn ended_op(task_id: &str) -> StateOp {
        StateOp::Set {
            key: Self::ended_key(task_id),
            value: b"1".to_vec(),
            ttl: Some(ENDED_TTL),
        }
    }

    /// A task that has a due date again (reopened) takes reminders again.
    pub fn reopened_op(task_id: &str) -> StateOp {
        StateOp::Delete {
            key: Self::ended_key(task_id),
        }
    }

    /// Which of `task_ids` ended, in order.
    pub async fn ended(
        &self,
        store: &dyn StateStore,
        task_ids: &[&str],
    ) -> Result<Vec<bool>, StateError> {
        let keys: Vec<String> = task_ids.iter().map(|t| Self::ended_key(t)).collect();
        Ok(store
            .get_many(&keys)
            .await?
            .into_iter()
            .map(|v| v.is_some())
            .collect())
    }

    pub fn sent_key(reminder_id: &str) -> String {
        format!("reminders:sent:{reminder_id}")
    }

    /// Held by the firer of `reminder_id` while it fires it
    /// ([`Self::take_firing`]).
    pub fn firing_key(reminder_id: &str) -> String {
        format!("reminders:firing:{reminder_id}")
    }

    /// The ops that add (or move) `r` at `fire_at`.
    pub fn schedule_ops(r: &StoredReminder, fire_at: DateTime<Utc>) -> Vec<StateOp> {
        vec![
            StateOp::Set {
                key: Self::payload_key(&r.reminder_id),
                value: serde_json::to_vec(r).unwrap_or_default(),
                ttl: None,
            },
            StateOp::ZAdd {
                key: r.shard.clone(),
                member: r.reminder_id.clone(),
                score: ms(fire_at),
            },
            StateOp::HashSet {
                key: Self::task_key(&r.task_id),
                fields: vec![(r.reminder_id.clone(), r.shard.clone().into_bytes())],
            },
            StateOp::HashSet {
                key: Self::user_key(&r.user_id),
                fields: vec![(r.reminder_id.clone(), r.task_id.clone().into_bytes())],
            },
        ]
    }

    /// The ops that cancel pending reminder `id` of `task_id` in `shard`
    /// (and of `user_id`, when its payload said whose it was).
    pub fn cancel_ops(task_id: &str, id: &str, shard: &str, user_id: Option<&str>) -> Vec<StateOp> {
        let mut ops = vec![
            StateOp::ZRem {
                key: shard.to_owned(),
                member: id.to_owned(),
            },
            StateOp::Delete {
                key: Self::payload_key(id),
            },
            StateOp::HashDelete {
                key: Self::task_key(task_id),
                fields: vec![id.to_owned()],
            },
        ];
        if let Some(u) = user_id {
            ops.push(StateOp::HashDelete {
                key: Self::user_key(u),
                fields: vec![id.to_owned()],
            });
        }
        ops
    }

    /// Every pending reminder of a user: (id, task id). May name reminders
    /// already gone (cancelled without their payload): check the payload.
    pub async fn pending_of_user(
        &self,
        store: &dyn StateStore,
        user_id: &str,
    ) -> Result<Vec<(String, String)>, StateError> {
        Ok(store
            .hget_all(&Self::user_key(user_id))
            .await?
            .into_iter()
            .map(|(id, task)| (id, String::from_utf8_lossy(&task).into_owned()))
            .collect())
    }

    /// Every pending reminder of a task: (id, shard).
    pub async fn pending_of_task(
        &self,
        store: &dyn StateStore,
        task_id: &str,
    ) -> Result<Vec<(String, String)>, StateError> {
        Ok(store
            .hget_all(&Self::task_key(task_id))
            .await?
            .into_iter()
            .map(|(id, shard)| (id, String::from_utf8_lossy(&shard).into_owned()))
            .collect())
    }

    /// A reminder's payload; `None` when cancelled or already fired.
    pub async fn load(
        &self,
        store: &dyn StateStore,
        reminder_id: &str,
    ) -> Result<Option<StoredReminder>, StateError> {
        let Some(bytes) = store.get(&Self::payload_key(reminder_id)).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Protocol {
                key: Self::payload_key(reminder_id),
                message: e.to_string(),
            })
    }

    /// The sent mark, if the reminder already fired.
    pub async fn fired(
        &self,
        store: &dyn StateStore,
        reminder_id: &str,
    ) -> Result<Option<FiredRecord>, StateError> {
        Ok(store
            .get(&Self::sent_key(reminder_id))
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Claims up to `limit` members of `shard` due by `now`, leasing them
    /// until `lease_until`.
    pub async fn claim_due(
        &self,
        store: &dyn StateStore,
        shard: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claimed>, StateError> {
        Ok(store
            .zclaim_due(shard, ms(now), ms(lease_until), limit)
            .await?
            .into_iter()
            .map(|s| Claimed {
                reminder_id: s.member,
                scheduled_at: from_ms(s.score),
            })
            .collect())
    }

    /// The ops that record a fired reminder: the sent mark, and the payload
    /// and task-index entry gone. Applied atomically.
    pub fn finish_ops(reminder_id: &str, record: &FiredRecord) -> Vec<StateOp> {
        let task_id = &record.task_id;
        vec![
            Self::sent_mark_op(reminder_id, record),
            StateOp::Delete {
                key: Self::payload_key(reminder_id),
            },
            StateOp::HashDelete {
                key: Self::task_key(task_id),
                fields: vec![reminder_id.to_owned()],
            },
            StateOp::HashDelete {
                key: Self::user_key(&record.user_id),
                fields: vec![reminder_id.to_owned()],
            },
        ]
    }

    /// Takes the right to fire `reminder_id` for `holder`, for at most
    /// `lease`; false while another firer holds it. A reminder planned into
    /// two shards can come due in both at once: only one firer may deliver
    /// it and publish its outcome. Given back by [`Self::release_firing`],
    /// or gone with the lease after a crash.
    pub async fn take_firing(
        &self,
        store: &dyn StateStore,
        reminder_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StateError> {
        let key = Self::firing_key(reminder_id);
        let taken = store
            .apply_checked(&[StateOp::IfAbsent {
                key: key.clone(),
                then: vec![StateOp::Set {
                    key,
                    value: holder.as_bytes().to_vec(),
                    ttl: Some(lease),
                }],
                otherwise: Vec::new(),
            }])
            .await?;
        Ok(taken.first().copied().unwrap_or(false))
    }

    /// Gives back what [`Self::take_firing`] took for `holder` (not a later
    /// holder's, should the lease have run out).
    pub async fn release_firing(
        &self,
        store: &dyn StateStore,
        reminder_id: &str,
        holder: &str,
    ) -> Result<(), StateError> {
        store
            .delete_if_eq(&Self::firing_key(reminder_id), holder.as_bytes())
            .await
            .map(|_| ())
    }

    /// Records that the outcome event of the fired reminder is published.
    pub async fn mark_published(
        &self,
        store: &dyn StateStore,
        reminder_id: &str,
        record: &FiredRecord,
    ) -> Result<(), StateError> {
        let published = FiredRecord {
            published: true,
            ..record.clone()
        };
        store
            .apply(&[Self::sent_mark_op(reminder_id, &published)])
            .await
    }

    /// The op that writes the sent mark of `reminder_id`.
    fn sent_mark_op(reminder_id: &str, record: &FiredRecord) -> StateOp {
        StateOp::Set {
            key: Self::sent_key(reminder_id),
            value: serde_json::to_vec(record).unwrap_or_default(),
            ttl: Some(SENT_MARK_TTL),
        }
    }

    /// Removes a claimed member, unless it was rescheduled since the claim.
    pub async fn ack(
        &self,
        store: &dyn StateStore,
        shard: &str,
        reminder_id: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        store
            .zrem_if_score(shard, reminder_id, ms(lease_until))
            .await
    }

    /// Moves a claimed member to `at` (a quiet-hours hold, or back to its
    /// time after a failed delivery), unless it was rescheduled or cancelled
    /// since the claim: one atomic compare-and-move, so a cancel or a
    /// reschedule landing between the check and the move cannot be undone.
    pub async fn requeue(
        &self,
        store: &dyn StateStore,
        shard: &str,
        reminder_id: &str,
        lease_until: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        store
            .zmove_if_score(shard, reminder_id, ms(lease_until), ms(at))
            .await
    }

    /// The earliest fire time in `shard` (a leased member counts at its lease).
    pub async fn next_due(
        &self,
        store: &dyn StateStore,
        shard: &str,
    ) -> Result<Option<DateTime<Utc>>, StateError> {
        Ok(store.zfirst(shard).await?.map(|s| from_ms(s.score)))
    }

    pub async fn pending(&self, store: &dyn StateStore, shard: &str) -> Result<u64, StateError> {
        store.zcard(shard).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::state::MemoryStore;
    use pipelines::Clock;

    /// One firer at a time: a second holder is refused until the first
    /// gives the right back, and only the holder can give it back.
    #[tokio::test]
    async fn a_reminder_is_fired_by_one_holder_at_a_time() {
        let store = MemoryStore::new("t:");
        let s = ReminderSchedule;
        let lease = Duration::from_secs(60);
        assert!(s.take_firing(&store, "r1", "a", lease).await.unwrap());
        assert!(!s.take_firing(&store, "r1", "b", lease).await.unwrap());
        assert!(s.take_firing(&store, "r2", "b", lease).await.unwrap());
        s.release_firing(&store, "r1", "b").await.unwrap();
        assert!(!s.take_firing(&store, "r1", "b", lease).await.unwrap());
        s.release_firing(&store, "r1", "a").await.unwrap();
        assert!(s.take_firing(&store, "r1", "b", lease).await.unwrap());
    }

    fn reminder(id: &str, task: &str, shard: &str, at: DateTime<Utc>) -> StoredReminder {
        StoredReminder {
            reminder_id: id.into(),
            task_id: task.into(),
            user_id: "u1".into(),
            title: "Pay rent".into(),
            description: None,
            due_at: None,
            due_local: None,
            due_tz: None,
            zone: ZoneSource::Producer,
            rule: ReminderRule::At { at },
            nominal_at: at,
            channel: Channel::Email,
            origin: Origin::Request,
            shard: shard.into(),
            attempts: 0,
            first_due: None,
        }
    }

    #[tokio::test]
    async fn a_reminder_due_in_a_week_fires_when_the_clock_gets_there() {
        let store = MemoryStore::new("t:");
        let start = Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap();
        let (clock, hand) = Clock::manual(start);
        let s = ReminderSchedule;
        let shard = ReminderSchedule::shard_key("reminders", 0);
        let due = start + chrono::TimeDelta::days(7);
        let r = reminder("r1", "t1", &shard, due);
        store
            .apply(&ReminderSchedule::schedule_ops(&r, due))
            .await
            .unwrap();
        assert_eq!(s.next_due(&store, &shard).await.unwrap(), Some(due));
        let lease = |now: DateTime<Utc>| now + chrono::TimeDelta::seconds(60);
        let now = clock.now();
        assert!(s
            .claim_due(&store, &shard, now, lease(now), 10)
            .await
            .unwrap()
            .is_empty());
        hand.advance(Duration::from_secs(7 * 24 * 3600 - 1));
        let now = clock.now();
        assert!(s
            .claim_due(&store, &shard, now, lease(now), 10)
            .await
            .unwrap()
            .is_empty());
        hand.advance(Duration::from_secs(1));
        let now = clock.now();
        let claimed = s
            .claim_due(&store, &shard, now, lease(now), 10)
            .await
            .unwrap();
        assert_eq!(
            claimed,
            vec![Claimed {
                reminder_id: "r1".into(),
                scheduled_at: due
            }]
        );
        // A second claimer within the lease gets nothing.
        assert!(s
            .claim_due(&store, &shard, now, lease(now), 10)
            .await
            .unwrap()
            .is_empty());
        let record = FiredRecord {
            reminder_id: "r1".into(),
            task_id: "t1".into(),
            user_id: "u1".into(),
            channel: Channel::Email,
            outcome: "sent".into(),
            at: now,
            scheduled_at: due,
            reason: None,
            message_id: None,
            published: false,
        };
        store
            .apply(&ReminderSchedule::finish_ops("r1", &record))
            .await
            .unwrap();
        assert!(s.ack(&store, &shard, "r1", lease(now)).await.unwrap());
        assert_eq!(s.pending(&store, &shard).await.unwrap(), 0);
        assert_eq!(s.fired(&store, "r1").await.unwrap(), Some(record));
        assert!(s.load(&store, "r1").await.unwrap().is_none());
        assert!(s.pending_of_task(&store, "t1").await.unwrap().is_empty());
        assert!(s.pending_of_user(&store, "u1").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_claim_abandoned_by_a_crash_comes_due_again_after_its_lease() {
        let store = MemoryStore::new("t:");
        let start = Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap();
        let s = ReminderSchedule;
        let shard = ReminderSchedule::shard_key("reminders", 1);
        let r = reminder("r1", "t1", &shard, start);
        store
            .apply(&ReminderSchedule::schedule_ops(&r, start))
            .await
            .unwrap();
        let lease_until = start + chrono::TimeDelta::seconds(30);
        assert_eq!(
            s.claim_due(&store, &shard, start, lease_until, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        // The claimer dies here. Until the lease ends nobody sees it due...
        assert_eq!(s.next_due(&store, &shard).await.unwrap(), Some(lease_until));
        // ...then the next claimer gets it, with the lease as its score.
        let again = s
            .claim_due(
                &store,
                &shard,
                lease_until,
                lease_until + chrono::TimeDelta::seconds(30),
                10,
            )
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
    }

    #[tokio::test]
    async fn cancelling_a_task_removes_its_reminders_from_every_shard() {
        let store = MemoryStore::new("t:");
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let s = ReminderSchedule;
        let a = ReminderSchedule::shard_key("reminders", 0);
        let b = ReminderSchedule::shard_key("task-events", 2);
        for r in [
            reminder("r1", "t1", &a, at),
            reminder("r2", "t1", &b, at),
            reminder("r3", "t2", &b, at),
        ] {
            store
                .apply(&ReminderSchedule::schedule_ops(&r, at))
                .await
                .unwrap();
        }
        let pending = s.pending_of_task(&store, "t1").await.unwrap();
        assert_eq!(pending.len(), 2);
        let ops: Vec<StateOp> = pending
            .iter()
            .flat_map(|(id, shard)| ReminderSchedule::cancel_ops("t1", id, shard, Some("u1")))
            .collect();
        store.apply(&ops).await.unwrap();
        assert_eq!(s.pending(&store, &a).await.unwrap(), 0);
        assert_eq!(s.pending(&store, &b).await.unwrap(), 1, "t2's stays");
        assert!(s.pending_of_task(&store, "t1").await.unwrap().is_empty());
    }
}
