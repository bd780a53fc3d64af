//! The deadlines worker: announces, once each, when an open task's deadline
//! is near (`deadline.approaching`, per configured threshold) and when it
//! has passed (`deadline.overdue`).
//!
//! - [`threshold`]: a threshold and its normalised label;
//! - [`plan`]: which crossings a due time has, given now (pure);
//! - [`entry`]: what a task event says, and the per-task record;
//! - [`index`]: the `DeadlineIndex` in the state store and one event's writes;
//! - [`scan`]: claim, check, announce, acknowledge;
//! - [`output`]: the canonical announcement with its derived id;
//! - [`worker`]: the [`Worker`](pipelines::Worker); [`metrics`], [`config`],
//!   [`bench`] (`taskstream bench --worker deadlines`), [`demo`].

pub mod bench;
pub mod config;
pub mod demo;
pub mod entry;
pub mod index;
pub mod metrics;
pub mod output;
pub mod plan;
pub mod scan;
pub mod threshold;
pub mod worker;

pub use config::DeadlinesConfig;
pub use index::DeadlineIndex;
pub use worker::DeadlinesWorker;
