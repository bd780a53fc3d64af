//! The lag monitor (`taskstream run lag-monitor`) and `taskstream lag`:
//! consumer lag of every watched group seen from outside the group, so it
//! stays visible while a worker is down or stuck (a worker cannot report its
//! own lag then).
//!
//! - [`watch`]: which groups, on which topics;
//! - [`collect`]: one read of committed offsets, watermarks and first
//!   unconsumed records (Kafka access is in `pipelines::kafka::offsets`);
//! - [`lag`]: lag in messages and data loss; [`timeline`]: when offset N was
//!   produced (lag seconds' fallback); [`status`]: OK / WARNING / STALLED /
//!   STOPPED / REWIND over a window; [`monitor`]: the state across collections;
//! - [`exposition`]: the per-group series; [`metrics`]: the monitor's own;
//! - [`service`]: the collection loop; [`cli`]: `taskstream lag`;
//!   [`bench`]: `taskstream bench --worker lag-monitor`.

pub mod bench;
pub mod cli;
pub mod collect;
pub mod config;
pub mod exposition;
pub mod lag;
pub mod metrics;
pub mod monitor;
pub mod service;
pub mod status;
pub mod timeline;
pub mod watch;

pub use config::LagMonitorConfig;

/// The name `taskstream run` knows the monitor by (not a consumer-group worker).
pub const NAME: &str = "lag-monitor";
