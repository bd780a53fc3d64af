//! The audit worker's own metrics (the pipeline's are in `pipelines::metrics`).

use std::time::Duration;

use metrics::{counter, histogram};

pub const RECORDS_WRITTEN: &str = "taskstream_audit_records_written_total";
pub const BATCH_SIZE: &str = "taskstream_audit_batch_size_records";
pub const WRITE_DURATION: &str = "taskstream_audit_write_duration_seconds";
pub const STORE_ERRORS: &str = "taskstream_audit_store_errors_total";
pub const RETENTION_DELETED: &str = "taskstream_audit_retention_deleted_total";

pub fn written(store: &'static str, batch: usize, new: usize, took: Duration) {
    counter!(RECORDS_WRITTEN, "store" => store).increment(new as u64);
    histogram!(BATCH_SIZE, "store" => store).record(batch as f64);
    histogram!(WRITE_DURATION, "store" => store).record(took.as_secs_f64());
}

pub fn store_error(store: &'static str, kind: &'static str) {
    counter!(STORE_ERRORS, "store" => store, "kind" => kind).increment(1);
}

pub fn retention_deleted(store: &'static str, n: usize) {
    counter!(RETENTION_DELETED, "store" => store).increment(n as u64);
}
