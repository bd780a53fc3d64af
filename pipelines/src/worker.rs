//! The contract between the pipeline and a worker.
//!
//! A worker is only its business logic: it receives decoded [`Inbound`] events
//! in partition order, and may run timed work beside its consumer. The pipeline
//! around it adds decoding, idempotency, retries, dead letters, offsets,
//! metrics, health and shutdown; the worker never sees them.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::PipelineConfig;
use crate::event::{Dialect, TaskEvent};
use crate::idempotency::IdempotencyGuard;
use crate::kafka::sink::{PublishError, PublishFailure, Publisher};
use crate::output::{EncodedEvent, OutputEvent};
use crate::state::{StateError, StateOp, StateStore};
use crate::timer::{Timer, TimerScope, TimerWakers};

/// Where an event came from.
#[derive(Debug, Clone)]
pub struct Source {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Kafka message timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub received_at: DateTime<Utc>,
}

/// A decoded event and its origin.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub event: TaskEvent,
    pub source: Source,
}

impl Inbound {
    pub fn dialect(&self) -> Dialect {
        self.event.dialect
    }
}

/// What handling one event amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The side effect happened.
    Done,
    /// Nothing to do for this event (a type this worker ignores).
    Skipped,
}

/// What [`Ctx::apply_once_for_all`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Everything landed; the flags of the update's conditional groups.
    Done(Vec<bool>),
    /// Nothing landed: per event, whether it was handled already.
    Duplicates(Vec<bool>),
}

/// Why handling failed; the class decides what the pipeline does next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    /// The message itself is unusable (bad field, impossible rule): dead-letter
    /// it now, retrying cannot help.
    #[error("{0}")]
    Permanent(String),
    /// A transient failure tied to this message: retry with backoff, and
    /// dead-letter after the policy's last attempt.
    #[error("{0}")]
    Retryable(String),
    /// A dependency is down (Redis, database, SMTP relay, broker): wait and retry
    /// for as long as it takes, report not-ready, never dead-letter.
    #[error("{dependency} unavailable: {reason}")]
    Unavailable {
        dependency: &'static str,
        reason: String,
    },
}

impl WorkerError {
    pub fn permanent(reason: impl std::fmt::Display) -> Self {
        WorkerError::Permanent(reason.to_string())
    }

    pub fn retryable(reason: impl std::fmt::Display) -> Self {
        WorkerError::Retryable(reason.to_string())
    }

    pub fn unavailable(dependency: &'static str, reason: impl std::fmt::Display) -> Self {
        WorkerError::Unavailable {
            dependency,
            reason: reason.to_string(),
        }
    }

    /// A bounded label for metrics and the dead-letter `error` class.
    pub fn class(&self) -> &'static str {
        match self {
            WorkerError::Permanent(_) => "permanent",
            WorkerError::Retryable(_) => "retries_exhausted",
            WorkerError::Unavailable { .. } => "unavailable",
        }
    }
}

impl From<StateError> for WorkerError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Unavailable(reason) => WorkerError::Unavailable {
                dependency: "redis",
                reason,
            },
            other => WorkerError::Retryable(other.to_string()),
        }
    }
}

impl From<PublishError> for WorkerError {
    /// A broker that is down or slow is waited for; a message the broker will
    /// never take (too large, unknown topic, not authorised) is the
    /// message's problem: dead-lettered, so the partition moves on.
    fn from(e: PublishError) -> Self {
        match e.kind {
            PublishFailure::Transient => WorkerError::Unavailable {
                dependency: "kafka",
                reason: e.to_string(),
            },
            PublishFailure::TooLarge | PublishFailure::Permanent => {
                WorkerError::Permanent(e.to_string())
            }
        }
    }
}

/// The result of handling a batch: outcomes for the events handled, in order,
/// from the first; if `failure` is set, it is the failure of the next event
/// (`events[outcomes.len()]`), and the events after it were not handled.
#[derive(Debug)]
pub struct BatchOutcome {
    pub outcomes: Vec<Outcome>,
    pub failure: Option<WorkerError>,
}

/// What a worker can use while handling: state, output, config, time, timers.
#[derive(Clone)]
pub struct Ctx {
    worker: &'static str,
    state: Arc<dyn StateStore>,
    publisher: Option<Publisher>,
    config: Arc<PipelineConfig>,
    clock: Clock,
    wakers: Arc<TimerWakers>,
    guard: Option<IdempotencyGuard>,
    stop: CancellationToken,
}

impl Ctx {
    pub fn new(
        worker: &'static str,
        state: Arc<dyn StateStore>,
        publisher: Option<Publisher>,
        config: Arc<PipelineConfig>,
    ) -> Self {
        Ctx {
            worker,
            state,
            publisher,
            config,
            clock: Clock::System,
            wakers: Arc::new(TimerWakers::default()),
            guard: None,
            stop: CancellationToken::new(),
        }
    }

    /// The same context reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn with_guard(mut self, guard: Option<IdempotencyGuard>) -> Self {
        self.guard = guard;
        self
    }

    /// The context of one batch or tick: `stop` is cancelled on shutdown or
    /// revoke, so a long side effect can stop between items.
    pub(crate) fn with_stop(&self, stop: CancellationToken) -> Self {
        let mut c = self.clone();
        c.stop = stop;
        c
    }

    pub fn worker(&self) -> &'static str {
        self.worker
    }

    /// The worker's state store (Redis in production).
    pub fn state(&self) -> &dyn StateStore {
        self.state.as_ref()
    }

    pub fn state_arc(&self) -> Arc<dyn StateStore> {
        self.state.clone()
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Now, on the pipeline's clock: the only "now" worker logic may read.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Cancelled when the work in hand should stop (shutdown, revoke).
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// Applies `ops` atomically together with marking `event` handled in the
    /// idempotency guard, so the update can never be applied twice for one
    /// event (a counter incremented, then a crash before the pipeline marks
    /// the event, then a redelivery). Without a guard, applies `ops` alone.
    pub async fn apply_for(&self, event: &Inbound, ops: Vec<StateOp>) -> Result<(), WorkerError> {
        let mut ops = ops;
        if let Some(g) = &self.guard {
            ops.extend(g.done_ops([event.event.event_id.as_str()]));
        }
        self.state.apply(&ops).await.map_err(WorkerError::from)
    }

    /// Like [`Ctx::apply_for`] for a whole batch: `ops` and the idempotency
    /// marks of every event in `events`, in one atomic unit. For a worker
    /// that folds a batch into one update (windowed counters): either every
    /// event's effect and mark land, or none.
    pub async fn apply_for_all(
        &self,
        events: &[Inbound],
        ops: Vec<StateOp>,
    ) -> Result<(), WorkerError> {
        let ops = self.with_marks(events, ops);
        self.state.apply(&ops).await.map_err(WorkerError::from)
    }

    /// [`Ctx::apply_for_all`] with conditional groups
    /// ([`StateOp::IfAbsent`]): returns, for each top-level one in `ops`,
    /// whether its key was absent (its `then` branch ran).
    pub async fn apply_for_all_checked(
        &self,
        events: &[Inbound],
        ops: Vec<StateOp>,
    ) -> Result<Vec<bool>, WorkerError> {
        let ops = self.with_marks(events, ops);
        self.state
            .apply_checked(&ops)
            .await
            .map_err(WorkerError::from)
    }

    /// For a worker that commits its own marks ([`Worker::marks_in_update`]):
    /// applies `ops` and the marks of `events` as one atomic unit
    /// ([`StateOp::MarkOnce`] first), unless one of `events` is marked
    /// already or repeats an earlier one's id, in which case nothing lands
    /// and the answer says which (the worker folds again without them).
    /// Either way no event's effect lands twice, whichever replica or
    /// redelivery gets there first. On success, the flags of `ops`'
    /// top-level [`StateOp::IfAbsent`]s, as [`Ctx::apply_for_all_checked`].
    pub async fn apply_once_for_all(
        &self,
        events: &[Inbound],
        ops: Vec<StateOp>,
    ) -> Result<Applied, WorkerError> {
        let Some(g) = &self.guard else {
            let flags = self.state.apply_checked(&ops).await?;
            return Ok(Applied::Done(flags));
        };
        let ids = events.iter().map(|e| e.event.event_id.as_str());
        let mut distinct = std::collections::HashSet::with_capacity(events.len());
        let repeats: Vec<bool> = ids.clone().map(|id| !distinct.insert(id)).collect();
        if repeats.contains(&true) {
            return Ok(Applied::Duplicates(repeats));
        }
        let mut all = Vec::with_capacity(ops.len() + 1);
        all.push(g.mark_once_op(ids.clone()).await?);
        all.extend(ops);
        let mut flags = self.state.apply_checked(&all).await?;
        if flags.first().copied().unwrap_or(true) {
            if !flags.is_empty() {
                flags.remove(0);
            }
            return Ok(Applied::Done(flags));
        }
        // Rare: a redelivery or another replica handled some of them first.
        let ids: Vec<&str> = ids.collect();
        Ok(Applied::Duplicates(g.handled(&ids).await?))
    }

    /// `ops` and the idempotency marks of `events` (when there is a guard).
    fn with_marks(&self, events: &[Inbound], mut ops: Vec<StateOp>) -> Vec<StateOp> {
        if let Some(g) = &self.guard {
            ops.extend(g.done_ops(events.iter().map(|e| e.event.event_id.as_str())));
        }
        ops
    }

    /// Publishes one output event as JSON, keyed (so one key stays ordered), and
    /// waits for the broker's acknowledgement.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: &str,
        event: &T,
    ) -> Result<(), WorkerError> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| WorkerError::permanent(format!("cannot serialise output event: {e}")))?;
        self.send(
            topic,
            key,
            &payload,
            &[("content-type", b"application/json")],
        )
        .await
    }

    /// How many partitions `topic` has (the cluster's metadata; 0 when it
    /// does not exist): for a worker that must know every partition of its
    /// input, not only the ones it owns. Needs the process's Kafka producer.
    pub async fn partition_count(&self, topic: &str) -> Result<usize, WorkerError> {
        let Some(p) = &self.publisher else {
            return Err(WorkerError::unavailable(
                "kafka",
                "no Kafka producer in this process",
            ));
        };
        Ok(p.partition_count(topic).await?)
    }

    /// Publishes a canonical event with the standard headers (`event-id`,
    /// `event-type`, `content-type`, `producer`) and its own. Give it an id
    /// from [`crate::derive_event_id`], so a repeat is recognisable.
    pub async fn publish_event(&self, out: &OutputEvent) -> Result<(), WorkerError> {
        self.publish_encoded(&self.encode_event(out)?).await
    }

    /// What [`Self::publish_event`] sends: the JSON payload and the headers,
    /// for a worker that prepares an event before it is due.
    pub fn encode_event(&self, out: &OutputEvent) -> Result<EncodedEvent, WorkerError> {
        let payload = serde_json::to_vec(&out.event)
            .map_err(|e| WorkerError::permanent(format!("cannot serialise output event: {e}")))?;
        let mut headers: Vec<(String, Vec<u8>)> = vec![
            ("event-id".into(), out.event.event_id.as_bytes().to_vec()),
            ("event-type".into(), out.event.kind.as_bytes().to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
            (
                "producer".into(),
                format!("taskstream-{}", self.worker).into_bytes(),
            ),
        ];
        headers.extend(out.headers.iter().cloned());
        Ok(EncodedEvent {
            topic: out.topic.clone(),
            key: out.key.clone(),
            payload,
            headers,
        })
    }

    /// Publishes an event encoded by [`Self::encode_event`] and waits for the
    /// broker's acknowledgement.
    pub async fn publish_encoded(&self, e: &EncodedEvent) -> Result<(), WorkerError> {
        let headers: Vec<(&str, &[u8])> = e
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        self.send(&e.topic, &e.key, &e.payload, &headers).await
    }

    /// Publishes several events concurrently and waits for every
    /// acknowledgement; the first failure is returned (the others may have
    /// been published: their deterministic ids make a retry harmless).
    pub async fn publish_events(&self, outs: &[OutputEvent]) -> Result<(), WorkerError> {
        let results = futures::future::join_all(outs.iter().map(|o| self.publish_event(o))).await;
        results.into_iter().collect()
    }

    async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), WorkerError> {
        let publisher = self
            .publisher
            .as_ref()
            .ok_or_else(|| WorkerError::unavailable("kafka", "this worker has no producer"))?;
        publisher
            .publish(topic, Some(key.as_bytes()), payload, headers)
            .await?;
        crate::metrics::published(self.worker, topic);
        Ok(())
    }

    /// Wakes every timer of this worker now.
    pub fn wake_timer(&self) {
        self.wakers.wake_all();
    }

    /// Tells the timer that owns `source`'s partition (and a worker-wide
    /// timer) that work is due at `at`: it re-plans only if that is earlier
    /// than its next wake, so calling this for every scheduled item is cheap.
    pub fn wake_timer_at(&self, source: &Source, at: DateTime<Utc>) {
        self.wakers
            .wake_at(&Some((source.topic.clone(), source.partition)), at);
    }

    /// [`Ctx::wake_timer_at`] for the timer of any partition by name (work
    /// for another partition's timer than the event's, a timer re-planning
    /// itself): a no-op when this process does not own that partition.
    pub fn wake_timer_at_partition(&self, topic: &str, partition: i32, at: DateTime<Utc>) {
        self.wakers
            .wake_at(&Some((Arc::from(topic), partition)), at);
    }

    pub(crate) fn wakers(&self) -> &Arc<TimerWakers> {
        &self.wakers
    }
}

/// A taskstream worker.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    /// Stable name: metrics label, consumer group suffix, config section.
    fn name(&self) -> &'static str;

    /// Topics to read (before `[workers.<name>].topics` overrides).
    fn topics(&self, config: &PipelineConfig) -> Vec<String>;

    /// Handles one event. Must be safe to call again for the same event after a
    /// failure (the pipeline retries), and is called at most once after success.
    async fn handle(&self, event: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError>;

    /// Handles events of one partition, in order. Override to batch a side
    /// effect (one database write for the whole batch); the default calls
    /// [`Worker::handle`] for each event and stops at the first failure.
    async fn handle_batch(&self, events: &[Inbound], ctx: &Ctx) -> BatchOutcome {
        let mut outcomes = Vec::with_capacity(events.len());
        for e in events {
            match self.handle(e, ctx).await {
                Ok(o) => outcomes.push(o),
                Err(failure) => {
                    return BatchOutcome {
                        outcomes,
                        failure: Some(failure),
                    }
                }
            }
        }
        BatchOutcome {
            outcomes,
            failure: None,
        }
    }

    /// Where this worker's timed work runs (see [`crate::timer`]).
    fn timer_scope(&self) -> TimerScope {
        TimerScope::None
    }

    /// One run of the timed work. Returns the absolute time of the next run
    /// (`None`: only when woken). Must return promptly once `timer.stop` is
    /// cancelled. Errors are logged and the tick retried with backoff.
    async fn tick(&self, _timer: &Timer, _ctx: &Ctx) -> Result<Option<DateTime<Utc>>, WorkerError> {
        Ok(None)
    }

    /// A partition became this replica's: load its state. None of the
    /// partition's events is handled, and its timer does not tick, before
    /// this returned `Ok`; retried while it fails.
    async fn on_assigned(
        &self,
        _topic: &str,
        _partition: i32,
        _ctx: &Ctx,
    ) -> Result<(), WorkerError> {
        Ok(())
    }

    /// A partition is being handed on (revoke, shutdown): its lane and timer
    /// have stopped; drop its in-process state. The rebalance waits for this.
    async fn on_revoked(&self, _topic: &str, _partition: i32, _ctx: &Ctx) {}

    /// The worker's own dependencies (its database, its SMTP relay), each
    /// with `Err(reason)` while down. The pipeline checks them every few
    /// seconds; each is its own readiness signal with this one writer.
    async fn check_dependencies(&self) -> Vec<(&'static str, Result<(), String>)> {
        Vec::new()
    }

    /// The most batches this worker can usefully handle at once, when the
    /// configuration does not set `workers.<name>.concurrency`: a worker
    /// whose store has one writer gains nothing from more, and each batch
    /// waiting for the writer holds its events in memory.
    fn max_concurrency(&self) -> Option<usize> {
        None
    }

    /// The batch size this worker works best with, used instead of
    /// `pipeline.max_batch` when the configuration does not set
    /// `workers.<name>.max_batch`: a worker whose store pays a fixed cost per
    /// batch (a transaction, a commit) may want larger ones.
    fn preferred_max_batch(&self) -> Option<usize> {
        None
    }

    /// Whether the pipeline's idempotency guard should gate this worker's
    /// events. Workers whose side effect is itself idempotent on event id (a
    /// store with a unique key) may turn it off to save a round trip.
    fn uses_idempotency_guard(&self) -> bool {
        true
    }

    /// Whether handling `event` may have an effect (a write, a publish, a
    /// send). `false` for events the worker passes by untouched (it would
    /// return [`Outcome::Skipped`] without reading or writing anything): the
    /// pipeline's guard then neither claims nor marks them, as handling one
    /// twice changes nothing. It must say `true` for every event the worker
    /// might act on; the default claims every event.
    fn needs_claim(&self, _event: &TaskEvent) -> bool {
        true
    }

    /// Whether this worker commits its events' idempotency marks itself, in
    /// the atomic update that carries their effect, skipping the events
    /// already marked ([`Ctx::apply_once_for_all`]). The pipeline then makes
    /// no claim and no completion round trip of its own: the update is the
    /// only step, so it decides alone what is a duplicate. Only for a worker
    /// whose whole effect is that one update (a replica racing it on the same
    /// events finds their marks and adds nothing). Needs the guard
    /// ([`Worker::uses_idempotency_guard`]).
    fn marks_in_update(&self) -> bool {
        false
    }

    /// Whether the state store must be reachable for this worker to be ready
    /// and to consume (true for every worker that uses the guard or state).
    fn needs_state_store(&self) -> bool {
        true
    }

    /// HTTP routes this worker adds to the process's metrics server (beside
    /// `/metrics`, `/healthz` and `/readyz`): an unsubscribe endpoint, a stats
    /// API. `ctx` is the context its handlers would get. Paths must not clash
    /// with another worker's.
    fn routes(&self, _ctx: &Ctx) -> Option<axum::Router> {
        None
    }

    /// Called once on shutdown, after consumption stopped (flush files, close pools).
    async fn shutdown(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;
    use std::time::Duration;

    fn inbound(id: &str) -> Inbound {
        let event: TaskEvent = serde_json::from_value(serde_json::json!({
            "event_id": id, "type": "task.created",
            "occurred_at": "2026-03-01T10:30:00Z", "dialect": "canonical"
        }))
        .unwrap();
        Inbound {
            event,
            source: Source {
                topic: Arc::from("t"),
                partition: 0,
                offset: 0,
                timestamp_ms: None,
                received_at: Utc::now(),
            },
        }
    }

    fn count(n: i64) -> Vec<StateOp> {
        vec![StateOp::IncrBy {
            key: "n".into(),
            by: n,
            ttl: None,
        }]
    }

    #[tokio::test]
    async fn marks_in_the_update_land_each_event_once_and_name_the_duplicates() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("t:"));
        // A mark of the version before generation hashes (a key per event).
        store.set("idem:w:e", b"done", None).await.unwrap();
        let guard = IdempotencyGuard::new(
            store.clone(),
            "w",
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        let ctx = Ctx::new(
            "w",
            store.clone(),
            None,
            Arc::new(PipelineConfig::default()),
        )
        .with_guard(Some(guard.clone()));
        let (a, b, c) = (inbound("a"), inbound("b"), inbound("c"));
        assert_eq!(
            ctx.apply_once_for_all(&[a.clone(), b.clone()], count(2))
                .await
                .unwrap(),
            Applied::Done(vec![])
        );
        // A redelivery overlapping the first: nothing lands, `b` is named.
        assert_eq!(
            ctx.apply_once_for_all(&[b.clone(), c.clone()], count(2))
                .await
                .unwrap(),
            Applied::Duplicates(vec![true, false])
        );
        // An id repeated within one update: the repeat is a duplicate.
        assert_eq!(
            ctx.apply_once_for_all(&[c.clone(), c.clone()], count(2))
                .await
                .unwrap(),
            Applied::Duplicates(vec![false, true])
        );
        // A mark of the guard's own counts too, and the one of the version
        // before.
        store.apply(&guard.done_ops(["d"])).await.unwrap();
        assert_eq!(
            ctx.apply_once_for_all(&[c.clone(), inbound("d"), inbound("e")], count(3))
                .await
                .unwrap(),
            Applied::Duplicates(vec![false, true, true])
        );
        assert_eq!(
            ctx.apply_once_for_all(std::slice::from_ref(&c), count(1))
                .await
                .unwrap(),
            Applied::Done(vec![])
        );
        assert_eq!(store.get("n").await.unwrap(), Some(b"3".to_vec()));
    }
}
