//! The recurring tasks worker: when a recurring task is completed, publish its
//! next occurrence, once, at the right local time.
//!
//! - [`rule`]: one [`RecurrenceRule`] type for the three accepted formats
//!   ([`rrule`], [`cron`], [`simple`]), expanded in floating local time and
//!   placed in the rule's IANA zone by [`zone`] (the DST rules live there);
//! - [`occurrence`]: which occurrences a completion creates (catch-up policy,
//!   series end, numbering);
//! - [`series`] and [`directory`]: what events say about a series and what
//!   the worker remembers in the state store;
//! - [`output`]: the canonical `task.created` with ids derived from series and
//!   occurrence number;
//! - [`worker`]: the [`Worker`](pipelines::Worker) itself; [`cli`]:
//!   `taskstream recurrence next`.

pub mod batch;
pub mod bench_events;
pub mod cli;
pub mod config;
pub mod cron;
pub mod demo;
pub mod directory;
pub mod metrics;
pub mod occurrence;
pub mod order;
pub mod output;
pub mod rrule;
pub mod rule;
pub mod series;
pub mod simple;
pub mod worker;
pub mod zone;

pub use config::RecurringConfig;
pub use rule::{Occurrence, RecurrenceRule, RuleError, RuleKind};
pub use worker::RecurringWorker;
