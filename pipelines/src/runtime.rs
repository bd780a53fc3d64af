//! Wires a [`Worker`] into the pipeline and runs it.
//!
//! The stages a batch of one partition goes through, in offset order:
//! 1. **decode** every message into a [`TaskEvent`]; an undecodable one is
//!    dead-lettered in place (with its reason), an unknown type is counted and
//!    skipped;
//! 2. **claim** the event ids with the [`IdempotencyGuard`] (one pipelined round
//!    trip); duplicates are skipped;
//! 3. **handle** the claimed events with the worker, in order;
//! 4. **complete** the claims of handled events (one round trip);
//! 5. report the highest finished offset, which the source stores and commits.
//!
//! Failures: a *permanent* error dead-letters the event at once; a *retryable*
//! one is retried with backoff and dead-lettered after the policy's last
//! attempt; an *unavailable* dependency (Redis, database, broker) is waited for
//! as long as it takes: the lane stops, its queue fills, the partition pauses,
//! the worker reports not-ready, and nothing is skipped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{PipelineConfig, RetryConfig};
use crate::dlq::{self, DeadLetter};
use crate::event::{decode, is_known_type, DecodeContext};
use crate::health::{Health, WorkerHealth};
use crate::idempotency::{Claim, Claims, IdempotencyGuard};
use crate::kafka::sink::Publisher;
use crate::kafka::source::{self, BatchProcessor, Processed, SourceSettings};
use crate::kafka::RecordBatch;
use crate::metrics::{self, HandledOutcome};
use crate::retry::{backoff, outage_backoff};
use crate::state::StateStore;
use crate::worker::{Ctx, Inbound, Outcome, Source, Worker, WorkerError};

/// A failure to start a worker.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error("{0}")]
    Setup(String),
}

/// The shared pieces of one process: config, state store, producer, health.
#[derive(Clone)]
pub struct Runtime {
    pub config: Arc<PipelineConfig>,
    pub state: Arc<dyn StateStore>,
    pub publisher: Publisher,
    pub health: Health,
    pub shutdown: CancellationToken,
}

impl Runtime {
    /// Opens the state store and the producer a config names.
    pub async fn new(
        config: PipelineConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, RuntimeError> {
        let state = crate::state::open(&config.redis)
            .await
            .map_err(|e| RuntimeError::Setup(e.to_string()))?;
        let publisher = Publisher::new(&config.kafka, &config.kafka.client_id)
            .map_err(|e| RuntimeError::Setup(e.to_string()))?;
        Ok(Runtime {
            config: Arc::new(config),
            state,
            publisher,
            health: Health::default(),
            shutdown,
        })
    }

    /// The context a worker's handlers and timers receive.
    pub fn ctx(&self, worker: &'static str) -> Ctx {
        Ctx::new(
            worker,
            self.state.clone(),
            Some(self.publisher.clone()),
            self.config.clone(),
        )
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on the configured address (if any).
    pub fn serve_http(&self) -> Option<tokio::task::JoinHandle<()>> {
        let addr: SocketAddr = self.config.metrics.addr.parse().ok()?;
        let handle = metrics::install();
        let health = self.health.clone();
        let shutdown = self.shutdown.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = crate::health::serve(addr, health, handle, shutdown).await {
                tracing::error!(%addr, error = %e, "metrics server failed");
            }
        }))
    }

    /// Runs the workers until shutdown; returns once every one has drained.
    pub async fn run(&self, workers: Vec<Arc<dyn Worker>>) -> Result<(), RuntimeError> {
        let mut tasks = Vec::new();
        for w in workers {
            let rt = self.clone();
            tasks.push(tokio::spawn(async move { rt.run_worker(w).await }));
        }
        let mut first_err = None;
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "worker failed");
                    self.shutdown.cancel();
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    self.shutdown.cancel();
                    first_err
                        .get_or_insert(RuntimeError::Setup(format!("worker task panicked: {e}")));
                }
            }
        }
        self.publisher.flush(Duration::from_secs(10));
        first_err.map_or(Ok(()), Err)
    }

    /// Runs one worker: its source, its timer and its store probe.
    pub async fn run_worker(&self, worker: Arc<dyn Worker>) -> Result<(), RuntimeError> {
        let name = worker.name();
        let health = WorkerHealth::new(name);
        self.health.register(health.clone());
        let ctx = self.ctx(name);
        let tuning = self.config.tuning_for(name);
        let guard = worker.uses_idempotency_guard().then(|| {
            IdempotencyGuard::new(
                self.state.clone(),
                name,
                tuning.idempotency_lease,
                tuning.idempotency_ttl,
            )
        });
        let pipeline = Arc::new(Pipeline {
            worker: worker.clone(),
            ctx: ctx.clone(),
            guard,
            publisher: self.publisher.clone(),
            retry: self.config.retry_for(name),
            dlq_suffix: tuning.dlq_suffix.clone(),
            health: health.clone(),
        });
        let settings = SourceSettings {
            worker: name,
            group_id: self.config.group_id(name),
            topics: self.config.topics_for(name, worker.topics(&self.config)),
            kafka: self.config.kafka.clone(),
            tuning,
        };

        let stop_aux = self.shutdown.child_token();
        let probe = tokio::spawn(probe_store(
            self.state.clone(),
            worker.needs_state_store(),
            health.clone(),
            stop_aux.clone(),
        ));
        let timer = worker.has_timer().then(|| {
            tokio::spawn(run_timer(
                worker.clone(),
                ctx.clone(),
                self.config.retry.clone(),
                stop_aux.clone(),
            ))
        });

        let result = source::run(settings, pipeline, health, self.shutdown.clone()).await;
        stop_aux.cancel();
        if let Some(t) = timer {
            let _ = t.await;
        }
        let _ = probe.await;
        worker.shutdown().await;
        result.map_err(RuntimeError::from)
    }
}

/// Keeps the worker's store health current, so `/readyz` reflects an outage
/// even while no message is flowing.
async fn probe_store(
    state: Arc<dyn StateStore>,
    needed: bool,
    health: Arc<WorkerHealth>,
    stop: CancellationToken,
) {
    if !needed {
        health.set_store_up(true);
        return;
    }
    loop {
        let up = tokio::time::timeout(Duration::from_secs(2), state.ping())
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        if !up {
            metrics::redis_error(health.name);
        }
        health.set_store_up(up);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn run_timer(worker: Arc<dyn Worker>, ctx: Ctx, retry: RetryConfig, stop: CancellationToken) {
    let wake = ctx.wake_handle();
    let mut failures = 0u32;
    loop {
        let next = match worker.tick(&ctx).await {
            Ok(next) => {
                failures = 0;
                metrics::ticked(worker.name(), true);
                next
            }
            Err(e) => {
                failures += 1;
                metrics::ticked(worker.name(), false);
                tracing::warn!(worker = worker.name(), error = %e, "timed work failed; retrying");
                Some(outage_backoff(&retry, failures))
            }
        };
        let sleep = async {
            match next {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = sleep => {}
        }
    }
}

/// The per-worker [`BatchProcessor`]: the stages described in the module docs.
pub struct Pipeline {
    worker: Arc<dyn Worker>,
    ctx: Ctx,
    guard: Option<IdempotencyGuard>,
    publisher: Publisher,
    retry: RetryConfig,
    dlq_suffix: String,
    health: Arc<WorkerHealth>,
}

/// Retry bookkeeping of the event at the head of a segment.
struct Failing {
    index: usize,
    attempts: u32,
    first_failure_at: DateTime<Utc>,
}

/// Stopped (shutdown or revoke) before finishing.
struct Stopped;

impl Pipeline {
    /// Builds a pipeline without a source, for benchmarks and tests that feed
    /// batches directly.
    pub fn new(
        worker: Arc<dyn Worker>,
        ctx: Ctx,
        guard: Option<IdempotencyGuard>,
        publisher: Publisher,
        retry: RetryConfig,
        dlq_suffix: String,
        health: Arc<WorkerHealth>,
    ) -> Self {
        Pipeline {
            worker,
            ctx,
            guard,
            publisher,
            retry,
            dlq_suffix,
            health,
        }
    }

    fn name(&self) -> &'static str {
        self.worker.name()
    }

    /// Retries `op` while its dependency is down, until it succeeds or `stop`.
    async fn until_available<T, F, Fut>(
        &self,
        stop: &CancellationToken,
        what: &str,
        mut op: F,
    ) -> Result<T, Stopped>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, WorkerError>>,
    {
        let mut attempt = 0u32;
        loop {
            match op().await {
                Ok(v) => {
                    if attempt > 0 {
                        self.health.set_store_up(true);
                    }
                    return Ok(v);
                }
                Err(e) => {
                    attempt += 1;
                    if matches!(
                        e,
                        WorkerError::Unavailable {
                            dependency: "redis",
                            ..
                        }
                    ) {
                        metrics::redis_error(self.name());
                    }
                    self.health.set_store_up(false);
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(worker = self.name(), error = %e, attempt, "{what} failed; waiting for the dependency");
                    }
                    let wait = outage_backoff(&self.retry, attempt);
                    tokio::select! {
                        _ = stop.cancelled() => return Err(Stopped),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        stop: &CancellationToken,
        dl: DeadLetter<'_>,
    ) -> Result<(), Stopped> {
        tracing::warn!(
            worker = self.name(),
            topic = %dl.topic,
            partition = dl.partition,
            offset = dl.record.offset,
            error = %dl.error,
            "message dead-lettered"
        );
        self.until_available(stop, "dead-letter publish", || async {
            dlq::send(&self.publisher, &self.dlq_suffix, &dl)
                .await
                .map_err(WorkerError::from)
        })
        .await?;
        let reason = if dl.error_class.starts_with("decode") {
            "undecodable"
        } else if dl.error_class == "permanent" {
            "permanent"
        } else {
            "retries_exhausted"
        };
        metrics::dead_lettered(self.name(), dl.topic, reason);
        metrics::handled(self.name(), dl.topic, HandledOutcome::DeadLettered, 1);
        Ok(())
    }

    /// Handles a run of decoded events (consecutive records); `indices[i]` is
    /// the record index of `events[i]`. Returns the number of events finished,
    /// from the start, when stopped early.
    async fn handle_segment(
        &self,
        stop: &CancellationToken,
        batch: &RecordBatch,
        indices: &[usize],
        events: &[Inbound],
    ) -> Result<(), usize> {
        let mut held = vec![false; events.len()]; // claims this call holds
        let result = self
            .handle_claimed(stop, batch, indices, events, &mut held)
            .await;
        if result.is_err() {
            // Stopped early: give back the claims of events not handled, so the
            // partition's next owner need not wait out the lease.
            if let Some(g) = &self.guard {
                let ids: Vec<&str> = events
                    .iter()
                    .zip(&held)
                    .filter(|(_, h)| **h)
                    .map(|(e, _)| e.event.event_id.as_str())
                    .collect();
                if !ids.is_empty() {
                    let release = g.release(ids.iter().copied());
                    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), release).await
                    {
                        tracing::debug!(worker = self.name(), error = %e, "could not release claims");
                    }
                }
            }
        }
        result
    }

    async fn handle_claimed(
        &self,
        stop: &CancellationToken,
        batch: &RecordBatch,
        indices: &[usize],
        events: &[Inbound],
        held: &mut [bool],
    ) -> Result<(), usize> {
        let topic = &batch.topic;
        let name = self.name();
        let mut finished = 0usize; // events of the segment finished, in order
        let mut failing: Option<Failing> = None;
        let mut start = 0usize;
        let mut subset: Vec<Inbound> = Vec::new();
        while start < events.len() {
            let slice = &events[start..];
            // Claim what is left; our own earlier claims count as ours.
            // `fresh[i]`: claimed by this very call (under `token`).
            let (claims, token, fresh) = match &self.guard {
                None => (vec![Claim::Claimed; slice.len()], None, Vec::new()),
                Some(g) => {
                    let Claims { token, mut claims } = self
                        .until_available(stop, "idempotency claim", || async {
                            g.claim(slice.iter().map(|e| e.event.event_id.as_str()))
                                .await
                                .map_err(WorkerError::from)
                        })
                        .await
                        .map_err(|_| finished)?;
                    let fresh: Vec<bool> = claims.iter().map(|c| *c == Claim::Claimed).collect();
                    for (i, c) in claims.iter_mut().enumerate() {
                        if *c == Claim::InProgress && held[start + i] {
                            *c = Claim::Claimed;
                        }
                        if *c == Claim::Claimed {
                            held[start + i] = true;
                        }
                    }
                    (claims, Some(token), fresh)
                }
            };
            // Stop before the first event someone else is handling: order matters.
            let ready = claims
                .iter()
                .position(|c| *c == Claim::InProgress)
                .unwrap_or(claims.len());
            let mut handled_pos: Vec<usize> = Vec::with_capacity(ready);
            for (i, claim) in claims[..ready].iter().enumerate() {
                if *claim == Claim::Claimed {
                    handled_pos.push(start + i);
                }
            }
            let duplicates = (ready - handled_pos.len()) as u64;
            metrics::handled(name, topic, HandledOutcome::Duplicate, duplicates);
            // Usually every event is new: hand the worker a sub-slice, no copies.
            let to_handle: &[Inbound] = if duplicates == 0 {
                &slice[..ready]
            } else {
                subset.clear();
                subset.extend(handled_pos.iter().map(|&p| events[p].clone()));
                &subset
            };

            let outcome = if to_handle.is_empty() {
                crate::worker::BatchOutcome {
                    outcomes: Vec::new(),
                    failure: None,
                }
            } else {
                self.worker.handle_batch(to_handle, &self.ctx).await
            };
            let done_count = outcome.outcomes.len().min(to_handle.len());
            // Complete the claims of everything handled: with one marker for
            // the whole claim call when all of its claims were handled, else id
            // by id.
            if let (Some(g), Some(token)) = (&self.guard, &token) {
                let done_pos = &handled_pos[..done_count];
                // Their side effects happened: never give these claims back,
                // even if completing them is interrupted.
                for &p in done_pos {
                    held[p] = false;
                }
                let fresh_total = fresh.iter().filter(|f| **f).count();
                let fresh_done = done_pos.iter().filter(|&&p| fresh[p - start]).count();
                let whole_call = fresh_total > 0 && fresh_done == fresh_total;
                let ids: Vec<&str> = done_pos
                    .iter()
                    .filter(|&&p| !(whole_call && fresh[p - start]))
                    .map(|&p| events[p].event.event_id.as_str())
                    .collect();
                if whole_call {
                    self.until_available(stop, "idempotency complete", || async {
                        g.complete_claims(token).await.map_err(WorkerError::from)
                    })
                    .await
                    .map_err(|_| finished)?;
                }
                if !ids.is_empty() {
                    self.until_available(stop, "idempotency complete", || async {
                        g.complete(ids.iter().copied())
                            .await
                            .map_err(WorkerError::from)
                    })
                    .await
                    .map_err(|_| finished)?;
                }
            }
            let ok = outcome.outcomes[..done_count]
                .iter()
                .filter(|o| **o == Outcome::Done)
                .count() as u64;
            metrics::handled(name, topic, HandledOutcome::Ok, ok);
            metrics::handled(name, topic, HandledOutcome::Skipped, done_count as u64 - ok);
            if done_count > 0 || duplicates > 0 {
                self.health.set_store_up(true);
            }

            match outcome.failure {
                None => {
                    // Everything up to `ready` is finished.
                    finished = start + ready;
                    start += ready;
                    failing = None;
                    if ready < slice.len() {
                        // The next event is held by another consumer: wait for it.
                        tokio::select! {
                            _ = stop.cancelled() => return Err(finished),
                            _ = tokio::time::sleep(backoff(&self.retry, 1)) => {}
                        }
                    }
                }
                Some(error) => {
                    let pos = handled_pos[done_count];
                    // Everything before the failing event is finished.
                    finished = pos;
                    start = pos;
                    let f = match failing.take() {
                        Some(f) if f.index == indices[pos] => f,
                        _ => Failing {
                            index: indices[pos],
                            attempts: 0,
                            first_failure_at: Utc::now(),
                        },
                    };
                    let attempts = f.attempts + 1;
                    let give_up = match &error {
                        WorkerError::Permanent(_) => true,
                        WorkerError::Retryable(_) => attempts >= self.retry.max_attempts,
                        WorkerError::Unavailable { .. } => false,
                    };
                    if give_up {
                        let record = &batch.records[indices[pos]];
                        self.dead_letter(
                            stop,
                            DeadLetter {
                                worker: name,
                                topic,
                                partition: batch.partition,
                                record,
                                error: error.to_string(),
                                error_class: error.class().to_string(),
                                attempts,
                                first_failure_at: f.first_failure_at,
                            },
                        )
                        .await
                        .map_err(|_| finished)?;
                        // Release so a replay from the dead-letter topic is handled.
                        if let Some(g) = &self.guard {
                            let id = events[pos].event.event_id.clone();
                            self.until_available(stop, "idempotency release", || async {
                                g.release([id.as_str()]).await.map_err(WorkerError::from)
                            })
                            .await
                            .map_err(|_| finished)?;
                            held[pos] = false;
                        }
                        finished = pos + 1;
                        start = pos + 1;
                        failing = None;
                        continue;
                    }
                    let wait = match &error {
                        WorkerError::Unavailable { .. } => {
                            self.health.set_store_up(false);
                            tracing::warn!(worker = name, error = %error, "dependency unavailable; waiting");
                            outage_backoff(&self.retry, attempts)
                        }
                        _ => {
                            metrics::handled(name, topic, HandledOutcome::Retried, 1);
                            tracing::info!(worker = name, error = %error, attempts, "handling failed; will retry");
                            backoff(&self.retry, attempts)
                        }
                    };
                    failing = Some(Failing { attempts, ..f });
                    tokio::select! {
                        _ = stop.cancelled() => return Err(finished),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BatchProcessor for Pipeline {
    async fn process(&self, batch: RecordBatch, stop: &CancellationToken) -> Processed {
        let started = Instant::now();
        let name = self.name();
        let n = batch.records.len();
        metrics::in_flight(name, n as f64);
        let received_at = Utc::now();
        let mut finished_up_to: Option<i64> = None;
        // The current segment: decoded events and their record indices.
        let mut segment: Vec<Inbound> = Vec::with_capacity(n);
        let mut indices: Vec<usize> = Vec::with_capacity(n);
        let mut complete = true;

        // Walk the records in order; decodable events accumulate into a segment
        // that is handled as one batch when a dead letter (or the end) is reached.
        let mut i = 0usize;
        'records: while i <= n {
            let dead = if i < n {
                let record = &batch.records[i];
                let ctx = DecodeContext {
                    topic: &batch.topic,
                    kafka_timestamp_ms: record.timestamp_ms,
                };
                match decode(record.payload.as_deref().unwrap_or_default(), &ctx) {
                    Ok(event) if is_known_type(&event.kind) => {
                        indices.push(i);
                        segment.push(Inbound {
                            event,
                            source: Source {
                                topic: batch.topic.clone(),
                                partition: batch.partition,
                                offset: record.offset,
                                timestamp_ms: record.timestamp_ms,
                                received_at,
                            },
                        });
                        i += 1;
                        continue;
                    }
                    Ok(event) => {
                        // Unknown type: counted and skipped, in place.
                        metrics::unknown_event(name, &batch.topic);
                        metrics::handled(name, &batch.topic, HandledOutcome::Skipped, 1);
                        tracing::debug!(worker = name, kind = %event.kind, "unknown event type skipped");
                        // Inside a segment it is finished once the segment is.
                        if segment.is_empty() {
                            finished_up_to = Some(record.offset);
                        }
                        i += 1;
                        continue;
                    }
                    Err(e) => Some((i, e)),
                }
            } else {
                None
            };

            if !segment.is_empty() {
                let result = self.handle_segment(stop, &batch, &indices, &segment).await;
                let offsets: Vec<i64> = segment.iter().map(|e| e.source.offset).collect();
                segment.clear();
                indices.clear();
                match result {
                    Ok(()) => {
                        // Unknown-type records inside the segment are finished too.
                        let upto = dead.as_ref().map_or(n, |(di, _)| *di);
                        finished_up_to = Some(batch.records[upto - 1].offset);
                    }
                    Err(done) => {
                        if done > 0 {
                            finished_up_to = Some(offsets[done - 1]);
                        }
                        complete = false;
                        break 'records;
                    }
                }
            }
            match dead {
                Some((di, e)) => {
                    let record = &batch.records[di];
                    metrics::decode_failed(name, &batch.topic, e.reason());
                    let r = self
                        .dead_letter(
                            stop,
                            DeadLetter {
                                worker: name,
                                topic: &batch.topic,
                                partition: batch.partition,
                                record,
                                error: e.to_string(),
                                error_class: format!("decode:{}", e.reason()),
                                attempts: 1,
                                first_failure_at: Utc::now(),
                            },
                        )
                        .await;
                    if r.is_err() {
                        complete = false;
                        break 'records;
                    }
                    finished_up_to = Some(record.offset);
                    i = di + 1;
                }
                None => break 'records,
            }
        }
        metrics::in_flight(name, -(n as f64));
        metrics::batch_handled(name, n, started.elapsed());
        Processed {
            finished_up_to,
            complete,
        }
    }
}
