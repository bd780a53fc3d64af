//! Every metric the pipeline emits, in one place, so names stay consistent and
//! greppable (the pattern Vector calls "internal events").
//!
//! Conventions: `taskstream_<thing>_<unit>`, counters end in `_total`, durations
//! are `_seconds`. Labels are bounded: `worker`, `topic`, `partition`, `outcome`,
//! `reason`; never user or task ids.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONSUMED: &str = "taskstream_messages_consumed_total";
pub const HANDLED: &str = "taskstream_messages_handled_total";
pub const DECODE_FAILURES: &str = "taskstream_decode_failures_total";
pub const UNKNOWN_EVENTS: &str = "taskstream_unknown_events_total";
pub const HANDLE_DURATION: &str = "taskstream_handle_duration_seconds";
pub const BATCH_SIZE: &str = "taskstream_batch_size_messages";
pub const IN_FLIGHT: &str = "taskstream_in_flight_messages";
pub const CONSUMER_LAG: &str = "taskstream_consumer_lag_messages";
pub const COMMITTED_OFFSET: &str = "taskstream_consumer_committed_offset";
pub const ASSIGNED_PARTITIONS: &str = "taskstream_assigned_partitions";
pub const PAUSED_PARTITIONS: &str = "taskstream_paused_partitions";
pub const DEAD_LETTERS: &str = "taskstream_dead_letters_total";
pub const REDIS_ERRORS: &str = "taskstream_redis_errors_total";
pub const PUBLISHED: &str = "taskstream_messages_published_total";
pub const COMMITS: &str = "taskstream_offset_commits_total";
pub const TICKS: &str = "taskstream_timer_ticks_total";
pub const READY: &str = "taskstream_ready";
pub const DEPENDENCY_UP: &str = "taskstream_dependency_up";
pub const LEADER: &str = "taskstream_timer_leader";
pub const TIMERS: &str = "taskstream_timers_running";

/// Outcomes of handling one message (`outcome` label of [`HANDLED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandledOutcome {
    Ok,
    Duplicate,
    Skipped,
    Retried,
    DeadLettered,
}

impl HandledOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            HandledOutcome::Ok => "ok",
            HandledOutcome::Duplicate => "duplicate",
            HandledOutcome::Skipped => "skipped",
            HandledOutcome::Retried => "retried",
            HandledOutcome::DeadLettered => "dead_lettered",
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle
/// (rendered by `/metrics`). Later calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let size_buckets = [1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_messages".into()), &size_buckets)
                })
                // Task completion times run from minutes to weeks (a full
                // match wins over the `_seconds` suffix).
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("taskstream_aggregates_completion_duration_seconds".into()),
                        &[
                            60.0,
                            300.0,
                            900.0,
                            1800.0,
                            3600.0,
                            7200.0,
                            14_400.0,
                            28_800.0,
                            86_400.0,
                            172_800.0,
                            604_800.0,
                            2_592_000.0,
                        ],
                    )
                })
                .map(|b| b.build_recorder());
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Another recorder may already be installed (tests); keep ours for rendering.
                    let _ = metrics::set_global_recorder(recorder);
                    describe();
                    handle
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not build the Prometheus recorder");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(CONSUMED, "Messages read from Kafka.");
    describe_counter!(
        HANDLED,
        "Messages finished, by outcome: ok, duplicate, skipped, retried, dead_lettered."
    );
    describe_counter!(
        DECODE_FAILURES,
        "Messages no decoder could read, by reason."
    );
    describe_counter!(
        UNKNOWN_EVENTS,
        "Decoded events of a type taskstream does not know; skipped."
    );
    describe_histogram!(HANDLE_DURATION, Unit::Seconds, "Time to handle one batch.");
    describe_histogram!(BATCH_SIZE, "Messages per handled batch.");
    describe_gauge!(IN_FLIGHT, "Messages received but not yet finished.");
    describe_gauge!(
        CONSUMER_LAG,
        "Per partition: high watermark minus the stored (else committed) offset."
    );
    describe_gauge!(COMMITTED_OFFSET, "Per partition: last committed offset.");
    describe_gauge!(ASSIGNED_PARTITIONS, "Partitions assigned to this worker.");
    describe_gauge!(PAUSED_PARTITIONS, "Partitions paused for backpressure.");
    describe_counter!(
        DEAD_LETTERS,
        "Messages sent to a dead-letter topic, by reason."
    );
    describe_counter!(REDIS_ERRORS, "Failed state store (Redis) operations.");
    describe_counter!(PUBLISHED, "Output events published to Kafka.");
    describe_counter!(COMMITS, "Offset commits, by result.");
    describe_counter!(TICKS, "Runs of a worker's timed work, by result.");
    describe_gauge!(
        READY,
        "1 when the worker is ready (Kafka, Redis, partitions)."
    );
    describe_gauge!(
        DEPENDENCY_UP,
        "1 while a worker's dependency (kafka, redis, postgres, smtp) is reachable."
    );
    describe_gauge!(
        LEADER,
        "1 while this replica holds the worker's leader lease."
    );
    describe_gauge!(TIMERS, "Timers of a worker running in this process.");
}

pub fn consumed(worker: &'static str, topic: &str, n: u64) {
    counter!(CONSUMED, "worker" => worker, "topic" => topic.to_string()).increment(n);
}

pub fn handled(worker: &'static str, topic: &str, outcome: HandledOutcome, n: u64) {
    if n > 0 {
        counter!(HANDLED, "worker" => worker, "topic" => topic.to_string(), "outcome" => outcome.as_str())
            .increment(n);
    }
}

pub fn decode_failed(worker: &'static str, topic: &str, reason: &'static str) {
    counter!(DECODE_FAILURES, "worker" => worker, "topic" => topic.to_string(), "reason" => reason)
        .increment(1);
}

pub fn unknown_event(worker: &'static str, topic: &str) {
    counter!(UNKNOWN_EVENTS, "worker" => worker, "topic" => topic.to_string()).increment(1);
}

pub fn batch_handled(worker: &'static str, size: usize, took: Duration) {
    histogram!(HANDLE_DURATION, "worker" => worker).record(took.as_secs_f64());
    histogram!(BATCH_SIZE, "worker" => worker).record(size as f64);
}

pub fn in_flight(worker: &'static str, delta: f64) {
    gauge!(IN_FLIGHT, "worker" => worker).increment(delta);
}

pub fn partition_offsets(
    worker: &'static str,
    topic: &str,
    partition: i32,
    lag: i64,
    committed: i64,
) {
    let p = partition.to_string();
    gauge!(CONSUMER_LAG, "worker" => worker, "topic" => topic.to_string(), "partition" => p.clone())
        .set(lag.max(0) as f64);
    if committed >= 0 {
        gauge!(COMMITTED_OFFSET, "worker" => worker, "topic" => topic.to_string(), "partition" => p)
            .set(committed as f64);
    }
}

/// Drops the lag series of a partition this worker no longer owns, so Grafana
/// does not show a stale lag for it.
pub fn partition_revoked(worker: &'static str, topic: &str, partition: i32) {
    gauge!(CONSUMER_LAG, "worker" => worker, "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(0.0);
}

pub fn assigned_partitions(worker: &'static str, n: usize) {
    gauge!(ASSIGNED_PARTITIONS, "worker" => worker).set(n as f64);
}

pub fn paused_partitions(worker: &'static str, n: usize) {
    gauge!(PAUSED_PARTITIONS, "worker" => worker).set(n as f64);
}

pub fn dead_lettered(worker: &'static str, topic: &str, reason: &'static str) {
    counter!(DEAD_LETTERS, "worker" => worker, "topic" => topic.to_string(), "reason" => reason)
        .increment(1);
}

pub fn redis_error(worker: &'static str) {
    counter!(REDIS_ERRORS, "worker" => worker).increment(1);
}

pub fn published(worker: &'static str, topic: &str) {
    counter!(PUBLISHED, "worker" => worker, "topic" => topic.to_string()).increment(1);
}

pub fn committed(worker: &'static str, ok: bool) {
    counter!(COMMITS, "worker" => worker, "result" => if ok { "ok" } else { "error" }).increment(1);
}

pub fn ticked(worker: &'static str, ok: bool) {
    counter!(TICKS, "worker" => worker, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// One readiness signal (`dependency`: kafka, redis, postgres, smtp).
pub fn dependency_up(worker: &'static str, dependency: &'static str, up: bool) {
    gauge!(DEPENDENCY_UP, "worker" => worker, "dependency" => dependency).set(if up {
        1.0
    } else {
        0.0
    });
}

/// Whether this replica holds the worker's leader lease.
pub fn leader(worker: &'static str, leading: bool) {
    gauge!(LEADER, "worker" => worker).set(if leading { 1.0 } else { 0.0 });
}

/// Timers of a worker running in this process (one per owned partition for
/// partition-scoped work).
pub fn timers_running(worker: &'static str, delta: f64) {
    gauge!(TIMERS, "worker" => worker).increment(delta);
}

pub fn ready(worker: &'static str, ready: bool) {
    gauge!(READY, "worker" => worker).set(if ready { 1.0 } else { 0.0 });
}

/// Text in the Prometheus exposition format that another part of the process
/// renders itself, appended to every `/metrics` answer. For series that must
/// disappear when what they describe does (the lag monitor's per-group series:
/// the `metrics` crate can never delete a series once written).
pub type ExtraExposition = Arc<dyn Fn() -> Arc<str> + Send + Sync>;

static EXTRA: Mutex<Vec<ExtraExposition>> = Mutex::new(Vec::new());

/// Adds a source of extra exposition text; it must return at once (serve a
/// snapshot, never wait on a network).
pub fn add_exposition(source: ExtraExposition) {
    EXTRA.lock().unwrap_or_else(|p| p.into_inner()).push(source);
}

/// What `/metrics` answers: the recorder's metrics, then every extra source.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    let sources: Vec<ExtraExposition> = EXTRA.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for s in sources {
        let text = s();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&text);
    }
    out
}
