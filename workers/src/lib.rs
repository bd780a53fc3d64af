//! taskstream's workers and the glue of the `taskstream` binary.
//!
//! One folder per worker holds its whole logic; everything Kafka, Redis,
//! retries, offsets and metrics lives in the `pipelines` crate.

pub mod aggregates;
pub mod audit;
pub mod bench;
pub mod config;
pub mod deadlines;
pub mod demo;
pub mod lagmon;
pub mod recurring;
pub mod reminders;
pub mod workers;
