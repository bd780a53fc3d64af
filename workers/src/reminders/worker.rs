//! The reminders worker: events change the schedule, the partition timer
//! fires it.
//!
//! - `handle` (topics `reminders`, `task-events`, `user-events`) only writes
//!   the schedule and the user directory, atomically with the event's
//!   idempotency mark ([`Ctx::apply_for`]), and wakes the partition's timer
//!   when a reminder is due earlier than it planned. Nothing is sent there.
//! - `tick` (one timer per assigned partition, [`TimerScope::Partition`])
//!   claims the due reminders of its shard, delivers them, marks each one
//!   sent, publishes its outcome and acknowledges the claim; it returns the
//!   earliest fire time left, so the timer sleeps exactly until then: there
//!   is no polling interval.
//!
//! Exactly once: a shard is fired by the owner of its partition only; a
//! claim is atomic and leased; the sent mark is checked before delivery. The
//! one window for a second email is a crash after the relay accepted a
//! message and before its mark was written (see [`super::mailer`]).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pipelines::state::{merge_writes, StateOp};
use pipelines::{
    BatchOutcome, Ctx, Inbound, Outcome, PipelineConfig, Timer, TimerOwner, TimerScope, Worker,
    WorkerError,
};

use super::config::{RemindersConfig, MIN_SECRET_BYTES};
use super::directory::{is_user_event, UserDirectory, UserRecord};
use super::mailer::Mailer;
use super::metrics;
use super::notification::{
    Channel, Delivered, DeliveryError, PermanentCause, ReminderNotification,
};
use super::outcome::outcome_event;
use super::planner::{
    at_fire_time, due_wall, fire_time, plan_task, reminder_id, request_times, rule_for_request,
    DueWall, Firing, TaskReminderSettings,
};
use super::schedule::{Claimed, FiredRecord, Origin, ReminderSchedule, StoredReminder, ZoneSource};
use super::webhook::Webhook;

/// Most reminders claimed by one claim, all fired at once (one tick claims
/// again while more are due). One round lasts at most about
/// `send_timeout`, which `claim_lease` exceeds, so a claim never runs out
/// while its round is still delivering.
const CLAIM_BATCH: usize = 64;

/// The worker.
pub struct RemindersWorker {
    mailer: Arc<Mailer>,
    webhook: Option<Webhook>,
    config: RemindersConfig,
    schedule: ReminderSchedule,
    directory: UserDirectory,
}

impl RemindersWorker {
    pub fn new(mailer: Mailer, webhook: Option<Webhook>, config: RemindersConfig) -> Self {
        RemindersWorker {
            mailer: Arc::new(mailer),
            webhook,
            config,
            schedule: ReminderSchedule,
            directory: UserDirectory,
        }
    }

    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    fn max_lateness(&self) -> TimeDelta {
        TimeDelta::from_std(self.config.max_lateness).unwrap_or(TimeDelta::hours(1))
    }

    fn lease(&self) -> TimeDelta {
        TimeDelta::from_std(self.config.claim_lease).unwrap_or(TimeDelta::minutes(1))
    }

    async fn user(&self, ctx: &Ctx, user_id: &str) -> Result<UserRecord, WorkerError> {
        Ok(self
            .directory
            .get(ctx.state(), user_id)
            .await?
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unreadable user profile; using defaults");
                UserRecord::unknown(user_id)
            }))
    }

    // ------------------------------------------------------------ handling

    /// Keeps the directory; a new time zone reschedules the user's pending
    /// reminders that were set in the user's local time.
    async fn handle_user(&self, event: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let old_tz = match event.event.user_id.as_deref() {
            Some(u) => Some(self.user(ctx, u).await?.tz()),
            None => None,
        };
        let (record, mut ops) = self
            .directory
            .updated(ctx.state(), &event.event)
            .await?
            .map_err(WorkerError::permanent)?;
        let mut wakes = Vec::new();
        if old_tz.is_some_and(|t| t != record.tz()) {
            for (id, task_id) in self
                .schedule
                .pending_of_user(ctx.state(), &record.user_id)
                .await?
            {
                let Some(r) = self.schedule.load(ctx.state(), &id).await? else {
                    ops.push(StateOp::HashDelete {
                        key: ReminderSchedule::user_key(&record.user_id),
                        fields: vec![id],
                    });
                    continue;
                };
                if let Some(moved) = rezone(&r, record.tz()) {
                    ops.extend(ReminderSchedule::cancel_ops(
                        &task_id,
                        &id,
                        &r.shard,
                        Some(&r.user_id),
                    ));
                    ops.extend(ReminderSchedule::schedule_ops(&moved, moved.nominal_at));
                    wakes.push((moved.shard.clone(), moved.nominal_at));
                }
            }
        }
        ctx.apply_for(event, ops).await?;
        for (shard, at) in wakes {
            wake_shard(ctx, &shard, at);
        }
        Ok(Outcome::Done)
    }

    /// A `reminder.requested`: one reminder at `remind_at` (relative to the
    /// due time when the request names one, so it moves with it).
    async fn handle_request(&self, event: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let task_id = event.event.task_id.as_deref().unwrap_or_default();
        if self.schedule.ended(ctx.state(), &[task_id]).await?[0] {
            return Ok(Outcome::Skipped);
        }
        let (ops, fire_at) = self.request_ops(event, ctx).await?;
        ctx.apply_for(event, ops).await?;
        ctx.wake_timer_at(&event.source, fire_at);
        metrics::scheduled(1);
        Ok(Outcome::Done)
    }

    /// The schedule update of a request, and its fire time.
    async fn request_ops(
        &self,
        event: &Inbound,
        ctx: &Ctx,
    ) -> Result<(Vec<StateOp>, DateTime<Utc>), WorkerError> {
        let e = &event.event;
        let (Some(task_id), Some(user_id), Some(req)) = (&e.task_id, &e.user_id, &e.reminder)
        else {
            return Err(WorkerError::permanent(
                "reminder request without task_id, user_id or remind_at",
            ));
        };
        let channel = Channel::parse(&req.method).ok_or_else(|| {
            WorkerError::permanent(format!(
                "notification_method {:?}: expected email, webhook, push or sms",
                req.method
            ))
        })?;
        // The user's zone matters only for times relative to a due time or
        // written without a zone.
        let user_tz = if req.due_at.is_some() || req.remind_local.is_some() {
            self.user(ctx, user_id).await?.tz()
        } else {
            chrono_tz::Tz::UTC
        };
        let (remind_at, due) = request_times(
            req.remind_at,
            req.remind_local.as_ref(),
            req.due_at,
            user_tz,
        );
        // A naive wall time is anchored where it was written, so a new user
        // zone can re-read it; without a due time the anchor is the
        // requested time itself.
        let (zone, anchor) = match (&req.remind_local, due) {
            (Some(l), d) if l.timezone.is_none() => (
                ZoneSource::UserLocal,
                d.or(Some(DueWall {
                    local: l.local,
                    tz: user_tz,
                })),
            ),
            (Some(_), d) => (ZoneSource::Producer, d),
            (None, Some(d)) => (ZoneSource::UserInstant, Some(d)),
            (None, None) => (ZoneSource::Producer, None),
        };
        let rule = rule_for_request(remind_at, anchor);
        let fire_at = fire_time(rule, anchor).unwrap_or(remind_at);
        let r = StoredReminder {
            reminder_id: reminder_id(task_id, fire_at, channel),
            task_id: task_id.clone(),
            user_id: user_id.clone(),
            title: req.title.clone().unwrap_or_default(),
            description: text_attribute(e, "description"),
            due_at: due.map(|d| d.instant()),
            due_local: anchor.map(|d| d.local),
            due_tz: anchor.map(|d| d.tz.name().to_owned()),
            zone,
            rule,
            nominal_at: fire_at,
            channel,
            origin: Origin::Request,
            shard: ReminderSchedule::shard_key(&event.source.topic, event.source.partition),
            attempts: 0,
            first_due: None,
        };
        Ok((ReminderSchedule::schedule_ops(&r, fire_at), fire_at))
    }

    /// Requests in a row are scheduled with one atomic update: their ops
    /// are idempotent (the same request sets the same keys to the same
    /// values), so they need not be tied to each event's idempotency mark.
    async fn handle_requests(
        &self,
        events: &[Inbound],
        ctx: &Ctx,
    ) -> Result<Vec<Outcome>, WorkerError> {
        let tasks: Vec<&str> = events
            .iter()
            .map(|e| e.event.task_id.as_deref().unwrap_or_default())
            .collect();
        let ended = self.schedule.ended(ctx.state(), &tasks).await?;
        let mut ops = Vec::with_capacity(events.len() * 4);
        let mut wakes = Vec::with_capacity(events.len());
        let mut outcomes = Vec::with_capacity(events.len());
        for (e, ended) in events.iter().zip(ended) {
            if ended {
                outcomes.push(Outcome::Skipped);
                continue;
            }
            outcomes.push(Outcome::Done);
            let (o, at) = self.request_ops(e, ctx).await?;
            ops.extend(o);
            wakes.push((&e.source, at));
        }
        // One command per sorted set and per hash (the shard, the user's
        // index), not one per reminder.
        ctx.state().apply(&merge_writes(ops)).await?;
        metrics::scheduled(wakes.len());
        for (source, at) in wakes {
            ctx.wake_timer_at(source, at);
        }
        Ok(outcomes)
    }

    async fn handle_task(&self, event: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let e = &event.event;
        let Some(task_id) = e.task_id.as_deref() else {
            return Ok(Outcome::Skipped);
        };
        if ends_task(e) {
            return self.cancel_task(event, ctx, task_id, true).await;
        }
        let snapshot = e.task.clone().unwrap_or_default();
        let settings = TaskReminderSettings::from_attributes(task_id, &e.attributes)
            .map_err(WorkerError::permanent)?;
        let due_removed = e
            .changes
            .get("due_at")
            .or_else(|| e.changes.get("due_date"))
            .is_some_and(|c| c.new.is_null());
        let Some(due_at) = snapshot.due_at.filter(|_| !due_removed) else {
            if due_removed {
                return self.cancel_task(event, ctx, task_id, false).await;
            }
            if snapshot.title.is_some() || snapshot.description.is_some() {
                return self.retitle(event, ctx, task_id, &snapshot).await;
            }
            return Ok(Outcome::Skipped);
        };
        let Some(user_id) = snapshot.assignee_id.as_ref().or(e.user_id.as_ref()) else {
            return Ok(Outcome::Skipped);
        };
        let user = self.user(ctx, user_id).await?;
        let due = due_wall(due_at, snapshot.due_local.as_ref(), user.tz());
        let zone = match &snapshot.due_local {
            Some(l) if l.timezone.is_some() => ZoneSource::Producer,
            Some(_) => ZoneSource::UserLocal,
            None => ZoneSource::UserInstant,
        };
        let due_at = due.instant();
        let shard = ReminderSchedule::shard_key(&event.source.topic, event.source.partition);
        let pending = self.pending(ctx, task_id).await?;
        let title = snapshot
            .title
            .clone()
            .or_else(|| {
                pending
                    .iter()
                    .find_map(|(_, _, r)| r.as_ref().map(|r| r.title.clone()))
            })
            .unwrap_or_default();
        let description = snapshot.description.clone().or_else(|| {
            pending
                .iter()
                .find_map(|(_, _, r)| r.as_ref().and_then(|r| r.description.clone()))
        });
        let base = |rule, fire_at, channel, origin, shard: &str| StoredReminder {
            reminder_id: reminder_id(task_id, fire_at, channel),
            task_id: task_id.to_owned(),
            user_id: user_id.clone(),
            title: title.clone(),
            description: description.clone(),
            due_at: Some(due_at),
            due_local: Some(due.local),
            due_tz: Some(due.tz.name().to_owned()),
            zone,
            rule,
            nominal_at: fire_at,
            channel,
            origin,
            shard: shard.to_owned(),
            attempts: 0,
            first_due: None,
        };
        let mut keep: Vec<StoredReminder> = plan_task(
            task_id,
            due,
            &settings,
            &user,
            &self.config.default_offsets,
            e.occurred_at,
        )
        .into_iter()
        .map(|p| base(p.rule, p.fire_at, p.channel, Origin::Task, &shard))
        .collect();
        // Requests move with the due time (a fixed one stays where it is).
        for (_, old_shard, r) in &pending {
            if let Some(r) = r.as_ref().filter(|r| r.origin == Origin::Request) {
                if let Some(at) = fire_time(r.rule, Some(due)) {
                    let mut moved = base(r.rule, at, r.channel, Origin::Request, old_shard);
                    if !r.title.is_empty() && snapshot.title.is_none() {
                        moved.title = r.title.clone();
                    }
                    keep.push(moved);
                }
            }
        }
        let mut ops: Vec<StateOp> = vec![ReminderSchedule::reopened_op(task_id)];
        let mut cancelled = 0;
        for (id, old_shard, r) in &pending {
            if !keep.iter().any(|k| &k.reminder_id == id) {
                let user = r.as_ref().map(|r| r.user_id.as_str());
                ops.extend(ReminderSchedule::cancel_ops(task_id, id, old_shard, user));
                cancelled += 1;
            }
        }
        for r in &keep {
            ops.extend(ReminderSchedule::schedule_ops(r, r.nominal_at));
        }
        ctx.apply_for(event, ops).await?;
        for r in &keep {
            if r.shard == shard {
                ctx.wake_timer_at(&event.source, r.nominal_at);
            } else {
                // Another shard's timer may be in another process: it plans
                // from its sorted set; a wake here reaches it when local.
                ctx.wake_timer();
            }
        }
        metrics::cancelled(cancelled);
        metrics::scheduled(keep.len());
        Ok(Outcome::Done)
    }

    /// Pending reminders of a task: (id, shard, payload).
    async fn pending(
        &self,
        ctx: &Ctx,
        task_id: &str,
    ) -> Result<Vec<(String, String, Option<StoredReminder>)>, WorkerError> {
        let mut out = Vec::new();
        for (id, shard) in self.schedule.pending_of_task(ctx.state(), task_id).await? {
            let r = self.schedule.load(ctx.state(), &id).await.unwrap_or(None);
            out.push((id, shard, r));
        }
        Ok(out)
    }

    async fn cancel_task(
        &self,
        event: &Inbound,
        ctx: &Ctx,
        task_id: &str,
        ended: bool,
    ) -> Result<Outcome, WorkerError> {
        let pending = self.pending(ctx, task_id).await?;
        let mut ops: Vec<StateOp> = pending
            .iter()
            .flat_map(|(id, shard, r)| {
                let user = r.as_ref().map(|r| r.user_id.as_str());
                ReminderSchedule::cancel_ops(task_id, id, shard, user)
            })
            .collect();
        if ended {
            ops.push(ReminderSchedule::ended_op(task_id));
        }
        ctx.apply_for(event, ops).await?;
        metrics::cancelled(pending.len());
        Ok(Outcome::Done)
    }

    /// A title or description change reaches reminders not yet sent.
    async fn retitle(
        &self,
        event: &Inbound,
        ctx: &Ctx,
        task_id: &str,
        snapshot: &pipelines::event::TaskSnapshot,
    ) -> Result<Outcome, WorkerError> {
        let mut ops = Vec::new();
        for (_, _, r) in self.pending(ctx, task_id).await? {
            if let Some(mut r) = r {
                if let Some(t) = &snapshot.title {
                    r.title = t.clone();
                }
                if let Some(d) = &snapshot.description {
                    r.description = Some(d.clone());
                }
                ops.push(StateOp::Set {
                    key: ReminderSchedule::payload_key(&r.reminder_id),
                    value: serde_json::to_vec(&r).unwrap_or_default(),
                    ttl: None,
                });
            }
        }
        if ops.is_empty() {
            return Ok(Outcome::Skipped);
        }
        ctx.apply_for(event, ops).await?;
        Ok(Outcome::Done)
    }

    // ------------------------------------------------------------ firing

    /// Fires one claimed reminder, holding its firing right
    /// ([`ReminderSchedule::take_firing`]): the same reminder planned into
    /// two shards may come due in both at once, and the second firer then
    /// comes back at the end of its claim, when the first has fired it.
    async fn fire(
        &self,
        ctx: &Ctx,
        shard: &str,
        claimed: &Claimed,
        lease_until: DateTime<Utc>,
    ) -> Result<(), WorkerError> {
        let store = ctx.state();
        let id = &claimed.reminder_id;
        let holder = format!("{shard}@{}", lease_until.timestamp_millis());
        let lease = self.config.claim_lease;
        if !self.schedule.take_firing(store, id, &holder, lease).await? {
            self.schedule
                .requeue(store, shard, id, lease_until, lease_until)
                .await?;
            wake_shard(ctx, shard, lease_until);
            return Ok(());
        }
        let fired = self.fire_held(ctx, shard, claimed, lease_until).await;
        let released = self.schedule.release_firing(store, id, &holder).await;
        fired?;
        Ok(released?)
    }

    /// [`Self::fire`], the firing right held. A transient delivery failure
    /// puts it back at its time and is returned (the timer retries with
    /// backoff).
    async fn fire_held(
        &self,
        ctx: &Ctx,
        shard: &str,
        claimed: &Claimed,
        lease_until: DateTime<Utc>,
    ) -> Result<(), WorkerError> {
        let store = ctx.state();
        let id = &claimed.reminder_id;
        if let Some(record) = self.schedule.fired(store, id).await? {
            // Fired before: by a process that crashed after marking, or
            // planned again (from another message naming the same task, time
            // and channel, maybe into another shard) after or while it fired.
            // Only the outcome event may be missing.
            if !record.published {
                if ctx.now() - record.at < self.lease() {
                    // Its firer may be publishing it right now: come back
                    // once that firer's lease is over, and publish only if
                    // it did not.
                    let until = record.at + self.lease();
                    self.schedule
                        .requeue(store, shard, id, lease_until, until)
                        .await?;
                    wake_shard(ctx, shard, until);
                    return Ok(());
                }
                self.publish(ctx, &record).await?;
                self.schedule.mark_published(store, id, &record).await?;
            }
            // What is left of it goes: this member, and the payload and
            // index entries of a second plan.
            let (task, user) = (&record.task_id, Some(record.user_id.as_str()));
            store
                .apply(&ReminderSchedule::cancel_ops(task, id, shard, user))
                .await?;
            return Ok(());
        }
        let Some(r) = self.schedule.load(store, id).await? else {
            // Cancelled since it was claimed.
            self.schedule.ack(store, shard, id, lease_until).await?;
            return Ok(());
        };
        let user = self.user(ctx, &r.user_id).await?;
        let now = ctx.now();
        // Lateness counts from when it first came due (a postponed webhook
        // retry keeps that time).
        let due_at = r.first_due.unwrap_or(claimed.scheduled_at);
        let record = |outcome: &str, at, reason: Option<String>, message_id| FiredRecord {
            reminder_id: r.reminder_id.clone(),
            task_id: r.task_id.clone(),
            user_id: r.user_id.clone(),
            channel: r.channel,
            outcome: outcome.to_owned(),
            at,
            scheduled_at: due_at,
            reason,
            message_id,
            published: false,
        };
        let fired = match at_fire_time(now, due_at, &user, self.max_lateness()) {
            Firing::Hold { until } => {
                metrics::held();
                self.schedule
                    .requeue(store, shard, id, lease_until, until)
                    .await?;
                wake_shard(ctx, shard, until);
                return Ok(());
            }
            Firing::Missed { lateness } => {
                tracing::warn!(
                    reminder = %id,
                    late_seconds = lateness.num_seconds(),
                    "reminder later than max_lateness: recorded as missed"
                );
                metrics::missed(r.channel.as_str());
                record("missed", now, Some("max_lateness".into()), None)
            }
            Firing::Send { .. } => match self.deliver(&r, &user).await {
                Ok(d) => {
                    let at = ctx.now();
                    let late = (at - due_at).num_milliseconds().max(0) as f64 / 1e3;
                    metrics::sent(r.channel.as_str(), late);
                    record("sent", at, None, Some(d.message_id))
                }
                Err(e) if e.is_transient() && r.channel != Channel::Email => {
                    return self.postpone(ctx, shard, &r, due_at, lease_until, &e).await;
                }
                Err(e) if e.is_transient() => {
                    self.schedule
                        .requeue(store, shard, id, lease_until, claimed.scheduled_at)
                        .await?;
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::warn!(reminder = %id, error = %e, "reminder not deliverable");
                    metrics::failed(r.channel.as_str(), e.reason());
                    record("failed", ctx.now(), Some(e.reason().to_owned()), None)
                }
            },
        };
        store
            .apply(&ReminderSchedule::finish_ops(id, &fired))
            .await?;
        self.publish(ctx, &fired).await?;
        self.schedule.mark_published(store, id, &fired).await?;
        self.schedule.ack(store, shard, id, lease_until).await?;
        Ok(())
    }

    /// A transient webhook failure: the reminder is moved to a retry after
    /// the pipeline's outage backoff for its attempt, keeping the time it
    /// first came due. The tick itself goes on, so email due in the same
    /// shard is not held up by the webhook (email failures instead fail the
    /// tick: every email would fail alike). `/readyz` learns of the outage
    /// from the webhook's own signal ([`Webhook::ready`]).
    async fn postpone(
        &self,
        ctx: &Ctx,
        shard: &str,
        r: &StoredReminder,
        due_at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        error: &DeliveryError,
    ) -> Result<(), WorkerError> {
        let store = ctx.state();
        let attempts = r.attempts.saturating_add(1);
        let wait = pipelines::retry::outage_backoff(&ctx.config().retry, attempts);
        let retry_at = ctx.now() + TimeDelta::from_std(wait).unwrap_or(TimeDelta::seconds(1));
        tracing::warn!(
            reminder = %r.reminder_id,
            error = %error,
            attempts,
            retry_in_ms = wait.as_millis() as u64,
            "reminder not delivered for now; retrying"
        );
        // Move first: a claim cancelled or rescheduled meanwhile is left
        // alone, and its payload not rewritten.
        if self
            .schedule
            .requeue(store, shard, &r.reminder_id, lease_until, retry_at)
            .await?
        {
            let mut retried = r.clone();
            retried.attempts = attempts;
            retried.first_due = Some(due_at);
            store
                .set(
                    &ReminderSchedule::payload_key(&r.reminder_id),
                    &serde_json::to_vec(&retried).unwrap_or_default(),
                    None,
                )
                .await?;
        }
        Ok(())
    }

    async fn deliver(
        &self,
        r: &StoredReminder,
        user: &UserRecord,
    ) -> Result<Delivered, DeliveryError> {
        let n = ReminderNotification {
            reminder_id: r.reminder_id.clone(),
            task_id: r.task_id.clone(),
            title: r.title.clone(),
            description: r.description.clone(),
            due_at: r.due_at,
            time_zone: user.tz(),
            fire_at: r.nominal_at,
            channel: r.channel,
            email: user.email.clone(),
            display_name: user.name.clone(),
            user_id: r.user_id.clone(),
            link: None,
        };
        match (r.channel, &self.webhook) {
            (Channel::Email, _) if user.unsubscribed_at.is_some() => Err(DeliveryError::permanent(
                Channel::Email,
                PermanentCause::Unsubscribed,
                "the user unsubscribed from reminder email (one-click link)",
            )),
            (Channel::Email, _) if !user.email_enabled => Err(DeliveryError::permanent(
                Channel::Email,
                PermanentCause::OptedOut,
                "the user turned reminder email off",
            )),
            (Channel::Email, _) => self.mailer.send(&n).await,
            (_, Some(w)) => w.send(&n).await,
            (c, None) => Err(DeliveryError::permanent(
                c,
                PermanentCause::Unsupported,
                format!("channel {c} is unsupported without reminders.webhook_url"),
            )),
        }
    }

    async fn publish(&self, ctx: &Ctx, record: &FiredRecord) -> Result<(), WorkerError> {
        let topic = &ctx.config().topics.notification_events;
        ctx.publish_event(&outcome_event(topic, record)).await
    }
}

/// The topics the worker reads: requests, tasks, users.
pub fn default_topics(config: &PipelineConfig) -> Vec<String> {
    let t = &config.topics;
    vec![
        t.reminders.clone(),
        t.task_events.clone(),
        t.user_events.clone(),
    ]
}

/// `r` re-planned for a user now in `tz`, when its wall time was the
/// user's (see [`ZoneSource`]) and its fire time changes.
fn rezone(r: &StoredReminder, tz: chrono_tz::Tz) -> Option<StoredReminder> {
    let due = match r.zone {
        ZoneSource::Producer => return None,
        ZoneSource::UserLocal => DueWall {
            local: r.due_local?,
            tz,
        },
        ZoneSource::UserInstant => DueWall::of(r.due_at?, tz),
    };
    let fire_at = fire_time(r.rule, Some(due))?;
    if fire_at == r.nominal_at {
        return None;
    }
    let mut moved = r.clone();
    moved.reminder_id = reminder_id(&r.task_id, fire_at, r.channel);
    moved.nominal_at = fire_at;
    moved.due_local = Some(due.local);
    moved.due_tz = Some(tz.name().to_owned());
    if r.zone == ZoneSource::UserLocal && r.due_at.is_some() {
        moved.due_at = Some(due.instant());
    }
    Some(moved)
}

/// Completed, deleted or archived: every pending reminder goes.
fn ends_task(e: &pipelines::TaskEvent) -> bool {
    if matches!(e.action(), "completed" | "deleted" | "archived") {
        return true;
    }
    let Some(t) = &e.task else { return false };
    t.completed == Some(true)
        || t.status.as_deref().is_some_and(|s| {
            matches!(
                s.to_ascii_lowercase().as_str(),
                "completed" | "done" | "archived" | "deleted"
            )
        })
}

/// Wakes the timer of a shard's partition (a no-op elsewhere).
fn wake_shard(ctx: &Ctx, shard: &str, at: DateTime<Utc>) {
    if let Some((topic, partition)) = ReminderSchedule::shard_partition(shard) {
        ctx.wake_timer_at_partition(topic, partition, at);
    }
}

fn text_attribute(e: &pipelines::TaskEvent, key: &str) -> Option<String> {
    e.attributes
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

#[async_trait]
impl Worker for RemindersWorker {
    fn name(&self) -> &'static str {
        "reminders"
    }

    fn topics(&self, config: &PipelineConfig) -> Vec<String> {
        default_topics(config)
    }

    async fn handle(&self, event: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let e = &event.event;
        if e.kind == "reminder.requested" {
            self.handle_request(event, ctx).await
        } else if e.entity() == "task" {
            self.handle_task(event, ctx).await
        } else if is_user_event(e) {
            self.handle_user(event, ctx).await
        } else {
            Ok(Outcome::Skipped)
        }
    }

    /// Runs of reminder requests are scheduled one atomic update per run
    /// (50,000 a second needs it); other events one by one. A request that
    /// fails makes its run fail from its start, which is safe to redo.
    async fn handle_batch(&self, events: &[Inbound], ctx: &Ctx) -> BatchOutcome {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut i = 0;
        while i < events.len() {
            let run = events[i..]
                .iter()
                .take_while(|e| e.event.kind == "reminder.requested")
                .count();
            if run > 1 {
                if let Ok(o) = self.handle_requests(&events[i..i + run], ctx).await {
                    outcomes.extend(o);
                } else {
                    // Redo one by one, so only the bad request fails.
                    for e in &events[i..i + run] {
                        match self.handle(e, ctx).await {
                            Ok(o) => outcomes.push(o),
                            Err(f) => {
                                return BatchOutcome {
                                    outcomes,
                                    failure: Some(f),
                                }
                            }
                        }
                    }
                }
                i += run;
                continue;
            }
            match self.handle(&events[i], ctx).await {
                Ok(o) => outcomes.push(o),
                Err(failure) => {
                    return BatchOutcome {
                        outcomes,
                        failure: Some(failure),
                    }
                }
            }
            i += 1;
        }
        BatchOutcome {
            outcomes,
            failure: None,
        }
    }

    /// A partition's shard is fired by the replica that owns the partition.
    fn timer_scope(&self) -> TimerScope {
        TimerScope::Partition
    }

    /// Claims and fires what is due in this partition's shard, then sleeps
    /// until the earliest fire time left.
    async fn tick(&self, timer: &Timer, ctx: &Ctx) -> Result<Option<DateTime<Utc>>, WorkerError> {
        let TimerOwner::Partition { topic, partition } = &timer.owner else {
            return Ok(None);
        };
        let shard = ReminderSchedule::shard_key(topic, *partition);
        let store = ctx.state();
        // Deliveries wait on the relay (bounded by the mailer's pool) and on
        // the broker's acknowledgement of the outcome: many in flight.
        let concurrency = CLAIM_BATCH;
        loop {
            if timer.stop.is_cancelled() {
                return Ok(None);
            }
            // Between the partition's batches: a reminder its next event
            // moves or cancels (in the same batch) is never claimed.
            let Some(between) = timer.between_batches().await else {
                return Ok(None);
            };
            let now = ctx.now();
            let lease_until = now + self.lease();
            let claimed = self
                .schedule
                .claim_due(store, &shard, now, lease_until, CLAIM_BATCH)
                .await?;
            drop(between);
            if claimed.is_empty() {
                break;
            }
            let n = claimed.len();
            let fires: Vec<_> = claimed
                .iter()
                .map(|c| self.fire(ctx, &shard, c, lease_until))
                .collect();
            let results: Vec<Result<(), WorkerError>> = futures::stream::iter(fires)
                .buffer_unordered(concurrency)
                .collect()
                .await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                metrics::pending(
                    topic,
                    *partition,
                    self.schedule.pending(store, &shard).await?,
                );
                return Err(e);
            }
            if n < CLAIM_BATCH {
                break;
            }
        }
        metrics::pending(
            topic,
            *partition,
            self.schedule.pending(store, &shard).await?,
        );
        Ok(self.schedule.next_due(store, &shard).await?)
    }

    /// The SMTP relay (NOOP) and, when configured, the webhook (its recent
    /// posts, and a `HEAD` probe while they fail: see [`super::webhook`]).
    async fn check_dependencies(&self) -> Vec<(&'static str, Result<(), String>)> {
        let smtp = self.mailer.relay_ready().await.map_err(|e| e.to_string());
        let mut out = vec![("smtp", smtp)];
        if let Some(w) = &self.webhook {
            out.push(("webhook", w.ready().await));
        }
        out
    }

    /// The one-click unsubscribe endpoint (see [`super::unsubscribe`]), when
    /// links are signed with a real secret (a link signed with an empty or
    /// short one could be forged, so it unsubscribes nobody).
    fn routes(&self, ctx: &Ctx) -> Option<axum::Router> {
        if self.config.unsubscribe_secret.expose().len() < MIN_SECRET_BYTES {
            tracing::info!(
                "no one-click unsubscribe endpoint: reminders.unsubscribe_secret is not set"
            );
            return None;
        }
        Some(super::unsubscribe::routes(
            self.mailer.unsubscribe_links(),
            ctx,
        ))
    }

    async fn shutdown(&self) {
        self.mailer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reminders::config::RemindersConfig;
    use pipelines::event::{decode, DecodeContext};
    use pipelines::state::{MemoryStore, ScoreRange, StateStore};
    use pipelines::Source;

    fn inbound(topic: &str, partition: i32, json: &str) -> Inbound {
        let event = decode(
            json.as_bytes(),
            &DecodeContext {
                topic,
                kafka_timestamp_ms: Some(1_767_000_000_000),
            },
        )
        .unwrap();
        Inbound {
            event,
            source: Source {
                topic: Arc::from(topic),
                partition,
                offset: 0,
                timestamp_ms: None,
                received_at: Utc::now(),
            },
        }
    }

    fn worker(dir: &std::path::Path) -> RemindersWorker {
        let config = RemindersConfig {
            mail_dir: dir.to_string_lossy().into_owned(),
            ..RemindersConfig::default()
        };
        RemindersWorker::new(Mailer::from_config(&config, "").unwrap(), None, config)
    }

    async fn scores(store: &MemoryStore, shard: &str) -> Vec<f64> {
        store
            .zrange(shard, ScoreRange::inclusive(f64::MIN, f64::MAX, 100))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.score)
            .collect()
    }

    #[tokio::test]
    async fn requests_are_scheduled_to_the_millisecond_in_their_partitions_shard() {
        let dir = std::env::temp_dir().join(pipelines::testing::unique("rem-unit"));
        let w = worker(&dir);
        let store = Arc::new(MemoryStore::new("t:"));
        let ctx = Ctx::new(
            "reminders",
            store.clone(),
            None,
            Arc::new(PipelineConfig::default()),
        );
        for (task, at) in [
            ("a", "2026-06-10T08:30:01.500Z"),
            ("b", "2026-06-10T08:30:01.800Z"),
        ] {
            let json = format!(
                r#"{{"task_id":"{task}","user_id":"u1","title":"T","due_at":"2026-06-10T09:00:00Z","remind_at":"{at}","notification_method":"email","created_at":"2026-06-01T00:00:00Z"}}"#
            );
            assert_eq!(
                w.handle(&inbound("reminders", 2, &json), &ctx)
                    .await
                    .unwrap(),
                Outcome::Done
            );
        }
        let shard = ReminderSchedule::shard_key("reminders", 2);
        let base = chrono::DateTime::parse_from_rfc3339("2026-06-10T08:30:01Z")
            .unwrap()
            .timestamp_millis() as f64;
        assert_eq!(
            scores(&store, &shard).await,
            vec![base + 500.0, base + 800.0]
        );
        // Completing task a cancels its reminder, in whatever shard it is.
        let done = r#"{"event_id":"c1","event_type":"task.completed","timestamp":"2026-06-02T00:00:00Z","data":{"task_id":"a","user_id":"u1"}}"#;
        w.handle(&inbound("task-events", 0, done), &ctx)
            .await
            .unwrap();
        assert_eq!(scores(&store, &shard).await, vec![base + 800.0]);
        // A request for it that arrives after the completion is ignored...
        let late = r#"{"task_id":"a","user_id":"u1","title":"T","remind_at":"2026-06-10T08:40:00Z","notification_method":"email","created_at":"2026-06-01T00:00:00Z"}"#;
        assert_eq!(
            w.handle(&inbound("reminders", 2, late), &ctx)
                .await
                .unwrap(),
            Outcome::Skipped
        );
        let batch = [inbound("reminders", 2, late), inbound("reminders", 2, late)];
        let out = w.handle_batch(&batch, &ctx).await;
        assert!(out.failure.is_none());
        assert_eq!(out.outcomes, vec![Outcome::Skipped, Outcome::Skipped]);
        assert_eq!(scores(&store, &shard).await, vec![base + 800.0]);
        // ...until the task is reopened with a due date.
        let reopened = r#"{"event_id":"r1","event_type":"task.updated","timestamp":"2026-06-03T00:00:00Z","data":{"task_id":"a","user_id":"u1","status":"pending","due_date":"2026-06-10T09:00:00Z","reminder_offsets":["-1h"]}}"#;
        w.handle(&inbound("task-events", 0, reopened), &ctx)
            .await
            .unwrap();
        assert_eq!(
            w.handle(&inbound("reminders", 2, late), &ctx)
                .await
                .unwrap(),
            Outcome::Done
        );
    }

    #[tokio::test]
    async fn the_demo_schedules_each_reminder_at_its_own_millisecond_and_cancels_the_completed_task(
    ) {
        let dir = std::env::temp_dir().join(pipelines::testing::unique("rem-unit"));
        let w = worker(&dir);
        let store = Arc::new(MemoryStore::new("t:"));
        let ctx = Ctx::new(
            "reminders",
            store.clone(),
            None,
            Arc::new(PipelineConfig::default()),
        );
        let now = Utc::now();
        let user = crate::reminders::demo::user_messages(now);
        let (msgs, _) = crate::reminders::demo::reminder_messages(now);
        for (topic, _, payload) in user.iter().chain(msgs.iter()) {
            let i = inbound(topic, 0, std::str::from_utf8(payload).unwrap());
            w.handle(&i, &ctx).await.unwrap();
        }
        let ms = |n: i64| (now.timestamp_millis() + n) as f64;
        assert_eq!(
            scores(&store, &ReminderSchedule::shard_key("reminders", 0)).await,
            vec![ms(1500), ms(1800)]
        );
        assert_eq!(
            scores(&store, &ReminderSchedule::shard_key("task-events", 0)).await,
            vec![ms(2000)],
            "the completed task's reminder is cancelled"
        );
    }
}
