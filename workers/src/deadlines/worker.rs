//! The worker: task events in, the index kept; crossings out, once each.
//!
//! Timer scope: **per partition** (see the README's "Deadlines" for why).
//! The partition an event arrives on owns the crossings it plans; the
//! replica that consumes the partition indexes the task and runs that
//! partition's scanner, so a sooner crossing wakes the scanner in-process
//! (`wake_timer_at`), and the scanner sleeps until the partition's next
//! crossing, with no polling. Ownership is the consumer group's: a revoked
//! partition's scanner has stopped before the partition is handed on, a
//! killed replica's partitions go to the others after the session timeout,
//! and the claims in Redis (`zclaim_due`) keep a replica that still thinks
//! it owns a partition from announcing the same crossing within a lease.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pipelines::state::merge_sorted_set_adds;
use pipelines::{
    BatchOutcome, Ctx, Inbound, Outcome, PipelineConfig, Timer, TimerOwner, TimerScope, Worker,
    WorkerError,
};

use super::config::DeadlinesConfig;
use super::entry::{change_of, touches_index, Change, StoredTask};
use super::index::{crossings_key, DeadlineIndex, DUE_KEY};
use super::metrics;
use super::scan::{scan, ScanSpec};

/// The deadlines worker.
pub struct DeadlinesWorker {
    index: DeadlineIndex,
    output_topic: String,
    claim_lease: Duration,
    scan_batch: usize,
    lead: Duration,
}

impl DeadlinesWorker {
    /// Builds the worker from its config section.
    pub fn new(config: &DeadlinesConfig) -> Result<Self, pipelines::config::ConfigError> {
        config.validate()?;
        Ok(DeadlinesWorker {
            index: DeadlineIndex::new(config.parsed_thresholds()?),
            output_topic: config.output_topic.clone(),
            claim_lease: config.claim_lease,
            scan_batch: config.scan_batch,
            lead: config.lead,
        })
    }

    /// When the scan for a crossing due `at` starts: `lead` before it.
    pub fn prepare_at(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at - self.lead
    }

    pub fn index(&self) -> &DeadlineIndex {
        &self.index
    }

    /// One scan of a crossing set (the timer's tick, and the benchmark's).
    pub async fn scan_set(
        &self,
        ctx: &Ctx,
        crossings: &str,
        timer: &Timer,
    ) -> Result<super::scan::ScanReport, WorkerError> {
        let spec = ScanSpec {
            crossings,
            output_topic: &self.output_topic,
            claim_lease: self.claim_lease,
            batch: self.scan_batch,
            lead: self.lead,
        };
        scan(ctx, &self.index, &spec, timer).await
    }
}

/// Default topics (known without building the worker).
pub fn default_topics(config: &PipelineConfig) -> Vec<String> {
    vec![config.topics.task_events.clone()]
}

#[async_trait]
impl Worker for DeadlinesWorker {
    fn name(&self) -> &'static str {
        "deadlines"
    }

    fn topics(&self, config: &PipelineConfig) -> Vec<String> {
        default_topics(config)
    }

    fn timer_scope(&self) -> TimerScope {
        TimerScope::Partition
    }

    /// Events that change no task's due time or state (comments, tags, ...)
    /// are passed by without the guard's claim and mark.
    fn needs_claim(&self, event: &pipelines::TaskEvent) -> bool {
        event.task_id.is_some() && touches_index(event)
    }

    /// A batch: the records of its tasks read at once (pipelined `HGETALL`s),
    /// each event planned in order against them (a later event of the same
    /// task sees the earlier one's result), and every write of the batch in
    /// one `MULTI`/`EXEC`, the adds to each sorted set in one `ZADD`.
    /// Replaying a batch (a crash before the pipeline marked it handled)
    /// changes nothing more: an unchanged due time is not re-armed, a moved
    /// or closed task is found moved or closed.
    async fn handle_batch(&self, events: &[Inbound], ctx: &Ctx) -> BatchOutcome {
        let fail = |e: WorkerError| BatchOutcome {
            outcomes: Vec::new(),
            failure: Some(e),
        };
        let changes: Vec<(Option<&str>, Change)> = events
            .iter()
            .map(|i| (i.event.task_id.as_deref(), change_of(&i.event)))
            .collect();
        let tasks: BTreeSet<&str> = changes
            .iter()
            .filter(|(_, c)| *c != Change::Ignore)
            .filter_map(|(t, _)| *t)
            .collect();
        let tasks: Vec<&str> = tasks.into_iter().collect();
        let loaded = match self.index.load_many(ctx.state(), &tasks).await {
            Ok(l) => l,
            Err(e) => return fail(e.into()),
        };
        let mut view: HashMap<&str, Option<StoredTask>> = tasks.into_iter().zip(loaded).collect();
        let now_ms = ctx.now().timestamp_millis();
        let mut ops = Vec::new();
        let mut wakes = Vec::new();
        let mut outcomes = Vec::with_capacity(events.len());
        for (inbound, (task, change)) in events.iter().zip(&changes) {
            let Some(task) = task.filter(|_| *change != Change::Ignore) else {
                outcomes.push(Outcome::Skipped);
                continue;
            };
            let set = crossings_key(&inbound.source.topic, inbound.source.partition);
            let old = view.get(task).cloned().flatten();
            let planned = self.index.change(
                task,
                old,
                change,
                inbound.event.occurred_at.timestamp_millis(),
                now_ms,
                &set,
            );
            if planned.ops.is_empty() {
                outcomes.push(Outcome::Skipped);
                continue;
            }
            ops.extend(planned.ops);
            if let Some(r) = planned.record {
                view.insert(task, Some(r));
            }
            if let Some(at) = planned.wake_at_ms.and_then(DateTime::from_timestamp_millis) {
                wakes.push((&inbound.source, at));
            }
            outcomes.push(Outcome::Done);
        }
        if !ops.is_empty() {
            let ops = merge_sorted_set_adds(ops);
            if let Err(e) = ctx.state().apply(&ops).await {
                return fail(e.into());
            }
        }
        for (source, at) in wakes {
            ctx.wake_timer_at(source, self.prepare_at(at));
        }
        BatchOutcome {
            outcomes,
            failure: None,
        }
    }

    /// One event: its record read, then every write together with the
    /// event's idempotency mark.
    async fn handle(&self, inbound: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let e = &inbound.event;
        let change = change_of(e);
        let (Some(task), false) = (e.task_id.as_deref(), change == Change::Ignore) else {
            return Ok(Outcome::Skipped);
        };
        let old = self.index.load(ctx.state(), task).await?;
        let now_ms = ctx.now().timestamp_millis();
        let set = crossings_key(&inbound.source.topic, inbound.source.partition);
        let planned = self.index.change(
            task,
            old,
            &change,
            e.occurred_at.timestamp_millis(),
            now_ms,
            &set,
        );
        if planned.ops.is_empty() {
            return Ok(Outcome::Skipped);
        }
        ctx.apply_for(inbound, planned.ops).await?;
        if let Some(at) = planned.wake_at_ms.and_then(DateTime::from_timestamp_millis) {
            ctx.wake_timer_at(&inbound.source, self.prepare_at(at));
        }
        Ok(Outcome::Done)
    }

    async fn on_assigned(
        &self,
        _topic: &str,
        _partition: i32,
        _ctx: &Ctx,
    ) -> Result<(), WorkerError> {
        metrics::took_over();
        Ok(())
    }

    /// Announces the partition's due crossings; sleeps until its next one.
    async fn tick(&self, timer: &Timer, ctx: &Ctx) -> Result<Option<DateTime<Utc>>, WorkerError> {
        let TimerOwner::Partition { topic, partition } = &timer.owner else {
            return Err(WorkerError::permanent(
                "the deadlines timer runs per partition",
            ));
        };
        let report = self
            .scan_set(ctx, &crossings_key(topic, *partition), timer)
            .await?;
        metrics::scanned(report.took);
        metrics::tasks_indexed(ctx.state().zcard(DUE_KEY).await?);
        Ok(report
            .next_ms
            .and_then(DateTime::from_timestamp_millis)
            .map(|at| self.prepare_at(at)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;
    use pipelines::event::{decode, DecodeContext};
    use pipelines::state::MemoryStore;
    use pipelines::{Clock, Source};

    use super::*;

    /// `json` decoded as a `task-events` record of partition 0.
    pub(crate) fn inbound(json: &str) -> Inbound {
        Inbound {
            event: decode(
                json.as_bytes(),
                &DecodeContext {
                    topic: "task-events",
                    kafka_timestamp_ms: None,
                },
            )
            .unwrap(),
            source: Source {
                topic: Arc::from("task-events"),
                partition: 0,
                offset: 0,
                timestamp_ms: None,
                received_at: Utc::now(),
            },
        }
    }

    async fn members(ctx: &Ctx) -> Vec<String> {
        ctx.state()
            .zrange_by_score(&crossings_key("task-events", 0), f64::MIN, f64::MAX, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.member)
            .collect()
    }

    #[tokio::test]
    async fn a_batch_plans_each_event_on_the_previous_ones_result() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap();
        let ctx = Ctx::new(
            "deadlines",
            Arc::new(MemoryStore::new("t:")),
            None,
            Arc::new(PipelineConfig::default()),
        )
        .with_clock(Clock::manual(now).0);
        let w = DeadlinesWorker::new(&DeadlinesConfig::default()).unwrap();
        let batch = [
            inbound(
                r#"{"event_id":"c","event_type":"task.created","timestamp":"2026-11-25T10:00:00Z","data":{"task_id":"t1","user_id":"alice","title":"T","due_date":"2026-12-10T09:00:00Z"}}"#,
            ),
            inbound(
                r#"{"event_id":"m","event_type":"task.due_date_set","timestamp":"2026-11-25T11:00:00Z","data":{"task_id":"t1","due_date":"2026-12-20T09:00:00Z"}}"#,
            ),
            inbound(
                r#"{"event_id":"u","event_type":"user.updated","timestamp":"2026-11-25T11:00:00Z","data":{"user_id":"alice"}}"#,
            ),
        ];
        let out = w.handle_batch(&batch, &ctx).await;
        assert!(out.failure.is_none());
        assert_eq!(
            out.outcomes,
            [Outcome::Done, Outcome::Done, Outcome::Skipped]
        );
        let due = DateTime::parse_from_rfc3339("2026-12-20T09:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            members(&ctx).await,
            vec![format!("t1|3d|{due}")],
            "only the moved due time is armed, with its first crossing"
        );
        let record = w.index().load(ctx.state(), "t1").await.unwrap().unwrap();
        assert_eq!(
            record.owner.as_deref(),
            Some("alice"),
            "kept across the move"
        );

        let done = inbound(
            r#"{"event_id":"d","event_type":"task.completed","timestamp":"2026-11-25T12:00:00Z","data":{"task_id":"t1"}}"#,
        );
        assert_eq!(w.handle(&done, &ctx).await.unwrap(), Outcome::Done);
        assert!(
            members(&ctx).await.is_empty(),
            "completion drops every crossing"
        );
        assert_eq!(ctx.state().zcard(DUE_KEY).await.unwrap(), 0);
    }
}
