//! The contract between the pipeline and a worker.
//!
//! A worker is only its business logic: it receives decoded [`Inbound`] events
//! in partition order, and may run timed work beside its consumer. The pipeline
//! around it adds decoding, idempotency, retries, dead letters, offsets,
//! metrics, health and shutdown; the worker never sees them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;

use crate::config::PipelineConfig;
use crate::event::{Dialect, TaskEvent};
use crate::kafka::sink::{PublishError, Publisher};
use crate::state::{StateError, StateStore};

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
    fn from(e: PublishError) -> Self {
        WorkerError::Unavailable {
            dependency: "kafka",
            reason: e.to_string(),
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

/// What a worker can use while handling: state, output, config, timers.
#[derive(Clone)]
pub struct Ctx {
    worker: &'static str,
    state: Arc<dyn StateStore>,
    publisher: Option<Publisher>,
    config: Arc<PipelineConfig>,
    wake: Arc<Notify>,
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
            wake: Arc::new(Notify::new()),
        }
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

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
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
        let publisher = self
            .publisher
            .as_ref()
            .ok_or_else(|| WorkerError::unavailable("kafka", "this worker has no producer"))?;
        publisher
            .publish(
                topic,
                Some(key.as_bytes()),
                &payload,
                &[("content-type", b"application/json")],
            )
            .await?;
        crate::metrics::published(self.worker, topic);
        Ok(())
    }

    /// Asks the worker's timed work to run now (for example: a new reminder is
    /// due sooner than the one it sleeps for).
    pub fn wake_timer(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
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

    /// Timed work beside the consumer (due reminders, deadline scans, window
    /// closes). Returns how long to sleep before the next run; `None` stops the
    /// timer until [`Ctx::wake_timer`]. Errors are logged and retried with backoff.
    async fn tick(&self, _ctx: &Ctx) -> Result<Option<Duration>, WorkerError> {
        Ok(None)
    }

    /// Whether the worker has timed work at all.
    fn has_timer(&self) -> bool {
        false
    }

    /// Whether the pipeline's idempotency guard should gate this worker's
    /// events. Workers whose side effect is itself idempotent on event id (a
    /// store with a unique key) may turn it off to save a round trip.
    fn uses_idempotency_guard(&self) -> bool {
        true
    }

    /// Whether the state store must be reachable for this worker to be ready
    /// and to consume (true for every worker that uses the guard or state).
    fn needs_state_store(&self) -> bool {
        true
    }

    /// Called once on shutdown, after consumption stopped (flush files, close pools).
    async fn shutdown(&self) {}
}
