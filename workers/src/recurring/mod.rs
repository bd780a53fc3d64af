//! The recurring tasks worker: when a recurring task is completed, publish its
//! next occurrence, once, at the right local time.

pub mod cron;
pub mod rrule;
pub mod rule;
pub mod simple;
pub mod zone;

pub use rule::{Occurrence, RecurrenceRule, RuleError, RuleKind};
