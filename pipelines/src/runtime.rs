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

use crate::clock::Clock;
use crate::config::{PipelineConfig, RetryConfig};
use crate::dlq::{self, DeadLetter};
use crate::event::{decode, is_known_type, DecodeContext};
use crate::health::{Health, WorkerHealth, STATE_STORE};
use crate::idempotency::{Claim, Claims, IdempotencyGuard};
use crate::kafka::sink::Publisher;
use crate::kafka::source::{self, BatchProcessor, Processed, SourceSettings};
use crate::kafka::RecordBatch;
use crate::lease::LeaderLease;
use crate::metrics::{self, HandledOutcome};
use crate::retry::{backoff, outage_backoff};
use crate::state::StateStore;
use crate::timer::{self, Timer, TimerOwner, TimerScope, WakeSlot};
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
    /// The one clock of every worker this runtime runs.
    pub clock: Clock,
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
            clock: Clock::System,
        })
    }

    /// The same runtime reading time from `clock` (tests move it by hand).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The context a worker's handlers and timers receive.
    pub fn ctx(&self, worker: &'static str) -> Ctx {
        Ctx::new(
            worker,
            self.state.clone(),
            Some(self.publisher.clone()),
            self.config.clone(),
        )
        .with_clock(self.clock.clone())
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

    /// Runs one worker: its source, its timer and its readiness probe.
    pub async fn run_worker(&self, worker: Arc<dyn Worker>) -> Result<(), RuntimeError> {
        let name = worker.name();
        let health = WorkerHealth::new(name);
        self.health.register(health.clone());
        let tuning = self.config.tuning_for(name);
        let guard = worker.uses_idempotency_guard().then(|| {
            IdempotencyGuard::new(
                self.state.clone(),
                name,
                tuning.idempotency_lease,
                tuning.idempotency_ttl,
            )
            .with_clock(self.clock.clone())
        });
        let ctx = self.ctx(name).with_guard(guard.clone());
        let retry = self.config.retry_for(name);
        let pipeline = Arc::new(Pipeline {
            worker: worker.clone(),
            ctx: ctx.clone(),
            guard,
            publisher: self.publisher.clone(),
            retry: retry.clone(),
            dlq_suffix: tuning.dlq_suffix.clone(),
            health: health.clone(),
        });
        let settings = SourceSettings {
            worker: name,
            group_id: self.config.group_id(name),
            topics: self.config.topics_for(name, worker.topics(&self.config)),
            kafka: self.config.kafka.clone(),
            tuning: tuning.clone(),
        };

        let stop_aux = self.shutdown.child_token();
        let probe = tokio::spawn(probe(
            self.state.clone(),
            worker.clone(),
            health.clone(),
            stop_aux.clone(),
        ));
        let timer = match worker.timer_scope() {
            TimerScope::Process => Some(tokio::spawn(run_process_timer(
                worker.clone(),
                ctx.clone(),
                retry.clone(),
                stop_aux.clone(),
            ))),
            TimerScope::Leader => Some(tokio::spawn(run_leader_timer(
                worker.clone(),
                ctx.clone(),
                LeaderLease::new(self.state.clone(), &settings.group_id, tuning.leader_lease),
                retry.clone(),
                stop_aux.clone(),
            ))),
            // Partition timers run beside their lanes (`run_partition`).
            TimerScope::Partition | TimerScope::None => None,
        };

        let result = source::run(settings, pipeline, health, self.shutdown.clone()).await;
        stop_aux.cancel();
        if let Some(t) = timer {
            let abort = t.abort_handle();
            if tokio::time::timeout(tuning.drain_timeout, t).await.is_err() {
                tracing::warn!(
                    worker = name,
                    "timed work did not stop within drain_timeout: aborted"
                );
                abort.abort();
            }
        }
        let _ = probe.await;
        worker.shutdown().await;
        result.map_err(RuntimeError::from)
    }
}

/// Keeps the readiness signals of the state store and of the worker's own
/// dependencies current: their one writer. Runs every 2 s, and at once when a
/// handler saw a failure (a nudge), so `/readyz` reflects an outage for its
/// whole length even while no message is flowing.
async fn probe(
    state: Arc<dyn StateStore>,
    worker: Arc<dyn Worker>,
    health: Arc<WorkerHealth>,
    stop: CancellationToken,
) {
    let needed = worker.needs_state_store();
    loop {
        // A write, not a PING: a replica promoted away from us (READONLY) or
        // still loading answers PING but cannot take the worker's writes.
        let store = if needed {
            let write = state.set("health:probe", b"1", Some(Duration::from_secs(10)));
            match tokio::time::timeout(Duration::from_secs(2), write).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 2s".to_string()),
            }
        } else {
            Ok(())
        };
        if store.is_err() {
            metrics::redis_error(health.name);
        }
        health.set_dependency(STATE_STORE, store);
        match tokio::time::timeout(Duration::from_secs(5), worker.check_dependencies()).await {
            Ok(deps) => {
                for (dependency, state) in deps {
                    health.set_dependency(dependency, state);
                }
            }
            Err(_) => tracing::warn!(worker = health.name, "dependency check took over 5s"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = health.nudged() => {
                // A burst of failures must not become a busy loop.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One tick with its metrics and logs; the loop decides when the next runs.
async fn tick_once(
    worker: &dyn Worker,
    ctx: &Ctx,
    owner: &TimerOwner,
    stop: &CancellationToken,
) -> Result<Option<DateTime<Utc>>, WorkerError> {
    let timer = Timer {
        owner: owner.clone(),
        stop: stop.clone(),
    };
    let result = worker.tick(&timer, &ctx.with_stop(stop.clone())).await;
    metrics::ticked(worker.name(), result.is_ok());
    if let Err(e) = &result {
        tracing::warn!(worker = worker.name(), ?owner, error = %e, "timed work failed; retrying");
    }
    result
}

/// Runs a timer loop for `owner` on `slot` until `stop`.
async fn run_timer_loop(
    worker: &dyn Worker,
    ctx: &Ctx,
    owner: TimerOwner,
    slot: &WakeSlot,
    retry: &RetryConfig,
    stop: &CancellationToken,
) {
    metrics::timers_running(worker.name(), 1.0);
    timer::run_loop(
        ctx.clock(),
        slot,
        stop,
        || tick_once(worker, ctx, &owner, stop),
        |failures| outage_backoff(retry, failures),
    )
    .await;
    metrics::timers_running(worker.name(), -1.0);
}

async fn run_process_timer(
    worker: Arc<dyn Worker>,
    ctx: Ctx,
    retry: RetryConfig,
    stop: CancellationToken,
) {
    let slot = ctx.wakers().register(None);
    run_timer_loop(
        worker.as_ref(),
        &ctx,
        TimerOwner::Process,
        &slot,
        &retry,
        &stop,
    )
    .await;
    ctx.wakers().unregister(&None);
}

/// Contends for the worker's lease and runs its timer while holding it.
///
/// The lease is renewed every third of its ttl. A renewal that finds the lease
/// gone, or two thirds of the ttl without a successful renewal (the store is
/// unreachable), stops the timer: a running tick gets its stop token and a
/// sixth of the ttl to return, then is dropped, all before the lease can
/// expire and a successor start. On shutdown the lease is released (owner
/// checked), so a successor starts at once; a killed leader's lease simply
/// expires.
async fn run_leader_timer(
    worker: Arc<dyn Worker>,
    ctx: Ctx,
    lease: LeaderLease,
    retry: RetryConfig,
    stop: CancellationToken,
) {
    let name = worker.name();
    let slot = ctx.wakers().register(None);
    let ttl = lease.ttl();
    let period = ttl / 3;
    metrics::leader(name, false);
    while !stop.is_cancelled() {
        let fencing_token = match lease.try_acquire().await {
            Ok(Some(t)) => t,
            Ok(None) => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(period) => continue,
                }
            }
            Err(e) => {
                tracing::debug!(worker = name, error = %e, "cannot contend for the leader lease");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(period) => continue,
                }
            }
        };
        tracing::info!(worker = name, fencing_token, "leader: running timed work");
        metrics::leader(name, true);
        let leading = stop.child_token();
        let renew = async {
            let mut last_ok = Instant::now();
            loop {
                tokio::select! {
                    _ = leading.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                match lease.renew().await {
                    Ok(true) => last_ok = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(worker = name, "leader lease lost: stopping timed work");
                        leading.cancel();
                        return;
                    }
                    Err(e) if last_ok.elapsed() >= ttl * 2 / 3 => {
                        tracing::warn!(worker = name, error = %e, "leader lease not renewable: stopping timed work before it expires");
                        leading.cancel();
                        return;
                    }
                    Err(_) => {}
                }
            }
        };
        let work = async {
            let owner = TimerOwner::Leader { fencing_token };
            let run = run_timer_loop(worker.as_ref(), &ctx, owner, &slot, &retry, &leading);
            tokio::select! {
                _ = run => {}
                _ = async { leading.cancelled().await; tokio::time::sleep(ttl / 6).await } => {
                    tracing::warn!(worker = name, "a tick did not stop in time: abandoned");
                }
            }
            leading.cancel();
        };
        tokio::join!(renew, work);
        metrics::leader(name, false);
        if stop.is_cancelled() {
            if let Err(e) = lease.release().await {
                tracing::debug!(worker = name, error = %e, "could not release the leader lease");
            }
            break;
        }
    }
    ctx.wakers().unregister(&None);
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
                Ok(v) => return Ok(v),
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
                    // The probe owns the readiness signal: ask it to look now.
                    self.health.nudge();
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

    /// Hands `events` to the worker. While it runs longer than a third of the
    /// claim lease (a slow side effect), the claims of `ids` are renewed, so
    /// nobody takes them over mid-effect.
    async fn handle_renewing<'a>(
        &self,
        ctx: &Ctx,
        events: &[Inbound],
        token: Option<&str>,
        ids: impl Iterator<Item = &'a str>,
    ) -> crate::worker::BatchOutcome {
        let handling = self.worker.handle_batch(events, ctx);
        let (Some(g), Some(token)) = (&self.guard, token) else {
            return handling.await;
        };
        tokio::pin!(handling);
        let period = g.lease() / 3;
        // Collected only if the batch turns out slow.
        let mut ids = Some(ids);
        let mut list: Vec<&str> = Vec::new();
        loop {
            tokio::select! {
                outcome = &mut handling => return outcome,
                _ = tokio::time::sleep(period) => {
                    if let Some(it) = ids.take() {
                        list.extend(it);
                    }
                    if let Err(e) = g.renew(token, list.iter().copied()).await {
                        tracing::warn!(worker = self.name(), error = %e, "could not renew claims of a slow batch");
                    }
                }
            }
        }
    }

    /// Handles a run of decoded events (consecutive records); `indices[i]` is
    /// the record index of `events[i]`. Returns the number of events finished,
    /// from the start, when stopped early.
    async fn handle_segment(
        &self,
        ctx: &Ctx,
        stop: &CancellationToken,
        batch: &RecordBatch,
        indices: &[usize],
        events: &[Inbound],
    ) -> Result<(), usize> {
        let mut held = vec![false; events.len()]; // claims this call holds
        let result = self
            .handle_claimed(ctx, stop, batch, indices, events, &mut held)
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
        ctx: &Ctx,
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
                let fresh_ids = handled_pos
                    .iter()
                    .filter(|&&p| fresh.get(p - start).copied().unwrap_or(false))
                    .map(|&p| events[p].event.event_id.as_str());
                self.handle_renewing(ctx, to_handle, token.as_deref(), fresh_ids)
                    .await
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
                            first_failure_at: self.ctx.now(),
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
                            self.health.nudge();
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
    /// The partition's hooks and, for a partition-scoped worker, its timer:
    /// `on_assigned` (retried while it fails), the timer until `stop`, then
    /// `on_revoked`. The source waits for this before handing the partition on.
    async fn run_partition(&self, topic: Arc<str>, partition: i32, stop: CancellationToken) {
        let name = self.name();
        let ctx = self.ctx.with_stop(stop.clone());
        let mut attempt = 0u32;
        loop {
            match self.worker.on_assigned(&topic, partition, &ctx).await {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    self.health.nudge();
                    tracing::warn!(worker = name, %topic, partition, error = %e, attempt, "loading the partition's state failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(outage_backoff(&self.retry, attempt)) => {}
                    }
                }
            }
        }
        if self.worker.timer_scope() == TimerScope::Partition && !stop.is_cancelled() {
            let key = Some((topic.clone(), partition));
            let slot = ctx.wakers().register(key.clone());
            let owner = TimerOwner::Partition {
                topic: topic.clone(),
                partition,
            };
            run_timer_loop(self.worker.as_ref(), &ctx, owner, &slot, &self.retry, &stop).await;
            ctx.wakers().unregister(&key);
        } else {
            stop.cancelled().await;
        }
        self.worker.on_revoked(&topic, partition, &ctx).await;
    }

    async fn process(&self, batch: RecordBatch, stop: &CancellationToken) -> Processed {
        let started = Instant::now();
        let name = self.name();
        let n = batch.records.len();
        metrics::in_flight(name, n as f64);
        let received_at = self.ctx.now();
        let ctx = self.ctx.with_stop(stop.clone());
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
                let result = self
                    .handle_segment(&ctx, stop, &batch, &indices, &segment)
                    .await;
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
                                first_failure_at: self.ctx.now(),
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
