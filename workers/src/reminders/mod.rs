//! The reminders worker: reminder email (and webhook posts) at the right
//! moment, exactly once, through any restart.
//!
//! - [`worker`]: the `Worker`: events change the schedule, the partition
//!   timer fires it;
//! - [`planner`]: pure time rules (offsets in wall time, DST, quiet hours,
//!   `max_lateness`);
//! - [`schedule`]: pending reminders in the state store, claimed with a lease;
//! - [`directory`]: users' addresses, zones and preferences from `user-events`;
//! - [`outcome`]: the `notification.*` events;
//! - delivery: [`notification`] (what a sender gets and answers), [`mailer`]
//!   and [`relay`] (SMTP or files), [`template`], [`unsubscribe`], [`webhook`];
//! - [`config`] (`[reminders]`) and [`metrics`].

pub mod bench;
pub mod config;
pub mod demo;
pub mod directory;
pub mod mailer;
pub mod metrics;
pub mod notification;
pub mod outcome;
pub mod planner;
pub mod relay;
pub mod schedule;
pub mod template;
pub mod unsubscribe;
pub mod webhook;
pub mod worker;

pub use worker::RemindersWorker;
