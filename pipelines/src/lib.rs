//! `pipelines`: the shared runtime every taskstream worker runs on.
//!
//! A worker implements [`worker::Worker`] and receives decoded
//! [`event::TaskEvent`]s; this crate owns everything else: configuration,
//! decoding, the Kafka source and sink, idempotency and state, retries, dead
//! letters, metrics, health and shutdown. It is the only crate that talks to
//! Kafka or Redis directly.

#[cfg(feature = "testkit")]
pub mod bench;
pub mod buffers;
pub mod clock;
pub mod config;
pub mod dlq;
pub mod event;
pub mod health;
pub mod idempotency;
pub mod kafka;
pub mod lease;
pub mod metrics;
pub mod output;
pub mod retry;
pub mod runtime;
pub mod shutdown;
pub mod state;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testing;
pub mod timer;
pub mod worker;

pub use clock::Clock;
pub use config::PipelineConfig;
pub use event::TaskEvent;
pub use output::{derive_event_id, EncodedEvent, OutputEvent};
pub use runtime::Runtime;
pub use timer::{Timer, TimerOwner, TimerScope};
pub use worker::{Applied, BatchOutcome, Ctx, Inbound, Outcome, Source, Worker, WorkerError};
