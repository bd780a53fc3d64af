//! Windowed task metrics by event time (issue 15).
//!
//! Tasks created and completed, events by type and priority, distinct
//! active users and completion times, per tumbling window (1 minute, 1 hour,
//! 1 day by default), from `task-events` and `analytics-events`. State is in
//! Redis, so a restart or a rebalance loses nothing; each batch's update and
//! its events' idempotency marks are one atomic step, so nothing is counted
//! twice. A window closes once the worker's watermark (the slowest active
//! partition's newest event time minus the allowed lateness) passes its end;
//! its results (over every event, and per event type, project and
//! priority) are published once to `task-metrics`. Events for a closed
//! window are late: counted as such, never added.
//!
//! - [`window`]: window assignment; [`watermark`]: partition and worker
//!   watermarks; [`plan`]: folding a batch (the pure core); [`dimension`]:
//!   the per-key breakdowns and their bounds;
//! - [`histogram`]: completion durations; [`users`]: distinct users in a
//!   batch; [`store`]: the Redis layout;
//! - [`close`]: closing a window once across replicas; [`result`]: what is
//!   published; [`worker`]: the `Worker`; [`stats`]: `GET /api/stats`;
//!   [`cli`]: `taskstream aggregate`; [`metrics`]; [`config`].

pub mod cli;
pub mod close;
pub mod config;
pub mod demo;
pub mod dimension;
pub mod histogram;
pub mod metrics;
pub mod plan;
pub mod result;
pub mod stats;
pub mod store;
pub mod users;
pub mod watermark;
pub mod window;
pub mod worker;

pub use config::AggregatesConfig;
pub use worker::{default_topics, AggregatesWorker};
