//! The lag monitor's own metrics (its per-group series are in [`super::exposition`]).

use std::time::Duration;

use metrics::{counter, gauge, histogram};

pub const COLLECTIONS: &str = "taskstream_lag_monitor_collections_total";
pub const COLLECTION_DURATION: &str = "taskstream_lag_monitor_collection_duration_seconds";
pub const LAST_SUCCESS: &str = "taskstream_lag_monitor_last_success_timestamp_seconds";
pub const PARTITIONS: &str = "taskstream_lag_monitor_partitions";
pub const DATA_LOSS_EVENTS: &str = "taskstream_lag_data_loss_events_total";

pub fn collected(took: Duration, partitions: usize, at_unix: f64) {
    counter!(COLLECTIONS, "result" => "ok").increment(1);
    histogram!(COLLECTION_DURATION).record(took.as_secs_f64());
    gauge!(LAST_SUCCESS).set(at_unix);
    gauge!(PARTITIONS).set(partitions as f64);
}

pub fn collection_failed(took: Duration) {
    counter!(COLLECTIONS, "result" => "error").increment(1);
    histogram!(COLLECTION_DURATION).record(took.as_secs_f64());
}

/// A partition of `worker`'s group newly found behind retention.
pub fn data_loss_started(worker: &str) {
    counter!(DATA_LOSS_EVENTS, "worker" => worker.to_string()).increment(1);
}
