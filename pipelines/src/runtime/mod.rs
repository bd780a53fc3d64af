//! Wires a [`Worker`] into the pipeline and runs it: the batch stages in
//! [`batch`], timed work in [`timers`], readiness in [`readiness`].
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
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::PipelineConfig;
use crate::health::{Health, WorkerHealth};
use crate::idempotency::IdempotencyGuard;
use crate::kafka::sink::Publisher;
use crate::kafka::source::{self, SourceSettings};
use crate::lease::LeaderLease;
use crate::metrics;
use crate::state::StateStore;
use crate::timer::TimerScope;
use crate::worker::{Ctx, Worker};

mod batch;
mod readiness;
mod timers;

pub use batch::Pipeline;
use readiness::probe;
use timers::{run_leader_timer, run_process_timer};

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

    /// The store `worker` uses: on a Redis Cluster every key it names gets the
    /// worker's hash tag, so its batches, transactions and scripts stay in one
    /// slot ([`crate::state::slot`]).
    pub fn state_for(&self, worker: &str) -> Arc<dyn StateStore> {
        crate::state::slot::for_worker(&self.state, self.config.redis.is_cluster(), worker)
    }

    /// The context a worker's handlers and timers receive.
    pub fn ctx(&self, worker: &'static str) -> Ctx {
        Ctx::new(
            worker,
            self.state_for(worker),
            Some(self.publisher.clone()),
            self.config.clone(),
        )
        .with_clock(self.clock.clone())
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on the configured address (if any).
    pub fn serve_http(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.serve_http_for(&[])
    }

    /// [`Runtime::serve_http`] plus the routes of `workers` ([`Worker::routes`]).
    pub fn serve_http_for(
        &self,
        workers: &[Arc<dyn Worker>],
    ) -> Option<tokio::task::JoinHandle<()>> {
        let addr: SocketAddr = self.config.metrics.addr.parse().ok()?;
        let handle = metrics::install();
        let health = self.health.clone();
        let shutdown = self.shutdown.clone();
        let extra = workers
            .iter()
            .filter_map(|w| w.routes(&self.ctx(w.name())))
            .fold(axum::Router::new(), axum::Router::merge);
        Some(tokio::spawn(async move {
            if let Err(e) = crate::health::serve_with(addr, health, handle, extra, shutdown).await {
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
        let tuning = self.config.tuning_for_worker(
            name,
            worker.max_concurrency(),
            worker.preferred_max_batch(),
        );
        let state = self.state_for(name);
        let guard = worker.uses_idempotency_guard().then(|| {
            IdempotencyGuard::new(
                state.clone(),
                name,
                tuning.idempotency_lease,
                tuning.idempotency_ttl,
            )
            .with_clock(self.clock.clone())
        });
        let ctx = self.ctx(name).with_guard(guard.clone());
        let retry = self.config.retry_for(name);
        // A worker that commits its own marks gets no claims from the pipeline.
        let claims = guard.filter(|_| !worker.marks_in_update());
        let pipeline = Arc::new(Pipeline::new(
            worker.clone(),
            ctx.clone(),
            claims,
            self.publisher.clone(),
            retry.clone(),
            tuning.dlq_suffix.clone(),
            health.clone(),
        ));
        let settings = SourceSettings {
            worker: name,
            group_id: self.config.group_id(name),
            topics: self.config.topics_for(name, worker.topics(&self.config)),
            kafka: self.config.kafka.clone(),
            tuning: tuning.clone(),
        };

        let stop_aux = self.shutdown.child_token();
        let probe = tokio::spawn(probe(
            state.clone(),
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
                LeaderLease::new(state.clone(), &settings.group_id, tuning.leader_lease),
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
