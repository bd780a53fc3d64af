//! `taskstream bench`: throughput, latency and memory of a worker on an
//! in-process mock Kafka cluster and a real Redis.
//!
//! A producer thread writes N realistic events in mixed dialects (keyed by task
//! id) *while* the subject consumes them, staying at most a window ahead (the
//! mock keeps only ~5 MB per partition). The clock runs from the first produce
//! to the last event handled. Latency is handling time minus the message's
//! Kafka timestamp (millisecond resolution). CPU and peak RSS are this
//! process's (mock brokers and producer included). Redis runs in its own
//! process: its CPU is reported apart ([`BenchReport::redis_cpu_seconds_per_event`]),
//! as the audit bench reports PostgreSQL's, so a run shows where the
//! machine's time went without a profiler.
//!
//! Subjects: `baseline`, a bare consume-and-commit loop (the reference), or any
//! [`Worker`] run through the full pipeline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::PipelineConfig;
use crate::kafka::mock::MockKafka;
use crate::runtime::Runtime;
use crate::testing::{unique, RedisServer, TestProducer};
use crate::worker::{BatchOutcome, Ctx, Inbound, Outcome, Worker, WorkerError};

/// The mock broker answers a fetch at the end of the log only after the full
/// `fetch.wait.max.ms` (a real broker answers as soon as data arrives), which
/// would make every consumer here wait 500 ms per round; both subjects get the
/// same lower value.
const FETCH_WAIT_MS: &str = "10";

/// The JSON line `taskstream bench` prints; scripts read exactly these keys.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub worker: String,
    pub events: u64,
    pub wall_seconds: f64,
    pub events_per_second: f64,
    pub cpu_seconds_per_event: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub peak_rss_bytes: u64,
    /// The Redis server's CPU (user + system, from `INFO cpu`) over the run,
    /// per event; absent when the subject uses no Redis or the server does
    /// not say. With `--redis-url` it counts whatever else that server did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_seconds_per_event: Option<f64>,
    /// PostgreSQL's CPU over the run, per event (the audit bench, when the
    /// server runs on this machine; see `taskstream bench`'s audit branch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_cpu_seconds_per_event: Option<f64>,
}

/// The CPU seconds (user + system) the Redis server at `url` has used since
/// it started, from `INFO cpu`; `None` when it cannot be asked or does not
/// say (a cluster answers for one node only: `None` too).
pub async fn redis_cpu_seconds(url: &str) -> Option<f64> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    let info: String = tokio::time::timeout(
        Duration::from_secs(5),
        redis::cmd("INFO").arg("cpu").query_async(&mut conn),
    )
    .await
    .ok()?
    .ok()?;
    used_cpu(&info)
}

/// `used_cpu_sys` + `used_cpu_user` of an `INFO cpu` answer.
fn used_cpu(info: &str) -> Option<f64> {
    let field = |name: &str| {
        info.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    Some(field("used_cpu_sys")? + field("used_cpu_user")?)
}

/// What a resource's CPU counter moved by over a run, per event.
pub fn per_event(before: Option<f64>, after: Option<f64>, events: u64) -> Option<f64> {
    Some((after? - before?).max(0.0) / events.max(1) as f64)
}

/// What to measure.
pub enum Subject {
    Baseline,
    Worker(Arc<dyn Worker>),
}

/// Event `i` of a bench's stream as (key, payload).
pub type Sample = Arc<dyn Fn(u64) -> (String, String) + Send + Sync>;

/// How to measure it.
#[derive(Clone)]
pub struct BenchSpec {
    pub events: u64,
    pub partitions: i32,
    /// Redis to use; `None` starts a throwaway `redis-server`.
    pub redis_url: Option<String>,
    /// Base config (topics, tuning); Kafka and Redis settings are replaced.
    pub config: PipelineConfig,
    /// Event `i` as (key, payload); [`sample_event`] unless a worker needs
    /// its own mix (the recurring worker adds recurring tasks to it).
    pub sample: Sample,
}

#[derive(Debug, thiserror::Error)]
#[error("bench: {0}")]
pub struct BenchError(pub String);

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError(e.to_string())
}

#[derive(Default)]
struct Progress {
    handled: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    done: AtomicBool,
}

impl Progress {
    fn record(&self, timestamps_ms: impl Iterator<Item = Option<i64>>) {
        let now = chrono::Utc::now().timestamp_millis();
        let lat: Vec<u32> = timestamps_ms
            .map(|t| (now - t.unwrap_or(now)).max(0) as u32 * 1000)
            .collect();
        let n = lat.len() as u64;
        if let Ok(mut l) = self.latencies_us.lock() {
            l.extend(lat);
        }
        self.handled.fetch_add(n, Ordering::Relaxed);
    }
}

/// A worker that does nothing: measures the pipeline alone (decode,
/// idempotency guard, offsets).
pub struct NoopWorker;

#[async_trait]
impl Worker for NoopWorker {
    fn name(&self) -> &'static str {
        "pipeline"
    }
    fn topics(&self, config: &PipelineConfig) -> Vec<String> {
        vec![config.topics.task_events.clone()]
    }
    async fn handle(&self, _event: &Inbound, _ctx: &Ctx) -> Result<Outcome, WorkerError> {
        Ok(Outcome::Done)
    }
    async fn handle_batch(&self, events: &[Inbound], _ctx: &Ctx) -> BatchOutcome {
        BatchOutcome {
            outcomes: vec![Outcome::Done; events.len()],
            failure: None,
        }
    }
}

/// Wraps the measured worker, counting what it finished.
struct Measured {
    inner: Arc<dyn Worker>,
    progress: Arc<Progress>,
}

#[async_trait]
impl Worker for Measured {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn topics(&self, config: &PipelineConfig) -> Vec<String> {
        vec![config.topics.task_events.clone()]
    }
    async fn handle(&self, event: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let r = self.inner.handle(event, ctx).await;
        if r.is_ok() {
            self.progress
                .record(std::iter::once(event.source.timestamp_ms));
        }
        r
    }
    async fn handle_batch(&self, events: &[Inbound], ctx: &Ctx) -> BatchOutcome {
        let out = self.inner.handle_batch(events, ctx).await;
        let n = out.outcomes.len().min(events.len());
        self.progress
            .record(events[..n].iter().map(|e| e.source.timestamp_ms));
        out
    }
    fn timer_scope(&self) -> crate::TimerScope {
        self.inner.timer_scope()
    }
    async fn tick(
        &self,
        timer: &crate::Timer,
        ctx: &Ctx,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, WorkerError> {
        self.inner.tick(timer, ctx).await
    }
    async fn on_assigned(&self, topic: &str, partition: i32, ctx: &Ctx) -> Result<(), WorkerError> {
        self.inner.on_assigned(topic, partition, ctx).await
    }
    async fn on_revoked(&self, topic: &str, partition: i32, ctx: &Ctx) {
        self.inner.on_revoked(topic, partition, ctx).await
    }
    async fn check_dependencies(&self) -> Vec<(&'static str, Result<(), String>)> {
        self.inner.check_dependencies().await
    }
    fn uses_idempotency_guard(&self) -> bool {
        self.inner.uses_idempotency_guard()
    }
    fn max_concurrency(&self) -> Option<usize> {
        self.inner.max_concurrency()
    }
    fn preferred_max_batch(&self) -> Option<usize> {
        self.inner.preferred_max_batch()
    }
    fn needs_claim(&self, event: &crate::TaskEvent) -> bool {
        self.inner.needs_claim(event)
    }
    fn marks_in_update(&self) -> bool {
        self.inner.marks_in_update()
    }
    fn needs_state_store(&self) -> bool {
        self.inner.needs_state_store()
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

/// Realistic events in every dialect, keyed by task id, one second of event
/// time apart. Ids are unique per `i`.
pub fn sample_event(i: u64) -> (String, String) {
    sample_event_at(i, 1)
}

/// [`sample_event`] with `per_second` events in each second of event time
/// (`occurred_at`): as a live stream at that rate carries them, where
/// `per_second` 1 is a replay of history (a day in 86,400 events).
pub fn sample_event_at(i: u64, per_second: u64) -> (String, String) {
    let task = i % 50_000;
    let user = i % 997;
    let t = i / per_second.max(1);
    let ts = format!(
        "2026-11-{:02}T{:02}:{:02}:{:02}Z",
        1 + (t / 86_400) % 28,
        (t / 3600) % 24,
        (t / 60) % 60,
        t % 60
    );
    let payload = match i % 5 {
        0 => format!(
            r#"{{"event_id":"bench-{i}","event_type":"task.created","timestamp":"{ts}","version":"1.0","data":{{"task_id":{task},"user_id":"user-{user}","title":"Buy groceries {i}","description":"Milk, eggs, bread","completed":false,"created_at":"{ts}"}}}}"#
        ),
        1 => format!(
            r#"{{"event_type":"updated","task_id":{task},"user_id":"user{user}","timestamp":"{ts}","task_data":{{"title":"Task {i}","description":"Task description","completed":false,"priority":"high","due_date":"2026-12-10T09:00:00Z","tags":["work","important"]}},"previous_task_data":{{"title":"Task {i}","completed":false,"priority":"medium","tags":["work"]}}}}"#
        ),
        2 => format!(
            r#"{{"event_type":"task_status_changed","user_id":{user},"timestamp":"{ts}","data":{{"task_id":{task},"title":"Implement login {i}","status":"in_progress","priority":"high","action":"status_changed"}},"metadata":{{"source":"django_backend","version":"1.0"}}}}"#
        ),
        3 => format!(
            r#"{{"eventType":"task.completed","taskId":{task},"teamId":1,"actorId":{user},"creatorId":1,"assigneeId":2,"timestamp":"{ts}","payload":{{"completed":true,"seq":{i}}}}}"#
        ),
        _ => format!(
            r#"{{"specversion":"1.0","id":"ce-{i}","source":"todo-api","type":"com.dapr.event.sent","datacontenttype":"application/json","topic":"task-events","pubsubname":"pubsub","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","data":{{"event_id":"bench-{i}","event_type":"task.completed","timestamp":"{ts}","version":"1.0","data":{{"task_id":{task},"user_id":"user-{user}","title":"Task {i}","completed_at":"{ts}","duration_minutes":90}}}}}}"#
        ),
    };
    (task.to_string(), payload)
}

fn rusage() -> (f64, u64) {
    // SAFETY: getrusage writes into the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(u.ru_utime) + secs(u.ru_stime),
        (u.ru_maxrss as u64) * 1024,
    )
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Runs one measurement.
pub async fn run(spec: BenchSpec, subject: Subject) -> Result<BenchReport, BenchError> {
    let mock = MockKafka::start(1).map_err(err)?;
    let topic = spec.config.topics.task_events.clone();
    mock.create_topic(&topic, spec.partitions).map_err(err)?;
    let bootstrap = mock.bootstrap_servers().to_string();
    let progress = Arc::new(Progress::default());
    let label;

    // Keep the producer at most this far ahead of the consumer.
    let window = spec.partitions.max(1) as u64 * 8_000;
    let total = spec.events;
    let sample = spec.sample.clone();
    let start_cpu = rusage().0;
    let started = Instant::now();
    let producer = {
        let progress = progress.clone();
        let bootstrap = bootstrap.clone();
        let topic = topic.clone();
        std::thread::spawn(move || -> Result<(), BenchError> {
            let p = TestProducer::new(&bootstrap).map_err(err)?;
            for i in 0..total {
                while i.saturating_sub(progress.handled.load(Ordering::Relaxed)) > window {
                    if progress.done.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    p.poll();
                    std::thread::sleep(Duration::from_micros(200));
                }
                let (key, payload) = sample(i);
                p.send(&topic, key.as_bytes(), payload.as_bytes())
                    .map_err(err)?;
                if i % 1024 == 0 {
                    p.poll();
                }
            }
            p.flush().map_err(err)
        })
    };

    let mut redis_server = None;
    match subject {
        Subject::Baseline => {
            label = "baseline".to_string();
            let progress2 = progress.clone();
            let consumer =
                std::thread::spawn(move || baseline_loop(&bootstrap, &topic, total, &progress2));
            consumer
                .join()
                .map_err(|_| BenchError("baseline consumer panicked".into()))??;
        }
        Subject::Worker(inner) => {
            label = inner.name().to_string();
            let url = match &spec.redis_url {
                Some(u) => u.clone(),
                None => {
                    let s = RedisServer::start().map_err(err)?;
                    let u = s.url();
                    redis_server = Some(s);
                    u
                }
            };
            let mut config = spec.config.clone();
            config.kafka.bootstrap_servers = bootstrap.clone();
            config.kafka.properties.clear();
            config
                .kafka
                .properties
                .insert("fetch.wait.max.ms".into(), FETCH_WAIT_MS.into());
            let redis_cpu_before = redis_cpu_seconds(&url).await;
            config.redis.url = url.clone();
            config.redis.key_prefix = format!("{}:", unique("bench"));
            config.metrics.addr = String::new();
            config.kafka.group_prefix = unique("bench");
            let shutdown = CancellationToken::new();
            let rt = Runtime::new(config, shutdown.clone()).await.map_err(err)?;
            let measured: Arc<dyn Worker> = Arc::new(Measured {
                inner,
                progress: progress.clone(),
            });
            let run = tokio::spawn(async move { rt.run(vec![measured]).await });
            let deadline = Instant::now() + Duration::from_secs(600 + total / 1000);
            let mut stall = Stall::default();
            while progress.handled.load(Ordering::Relaxed) < total {
                let handled = progress.handled.load(Ordering::Relaxed);
                let stalled = stall.for_how_long(handled);
                if Instant::now() > deadline || run.is_finished() || stalled >= STALL_LIMIT {
                    progress.done.store(true, Ordering::Relaxed);
                    shutdown.cancel();
                    let why = if stalled >= STALL_LIMIT {
                        format!(
                            " (none for {}s: the run is stuck; one known cause is the mock \
                             cluster dropping messages it could not keep, see the README's \
                             Benchmarks)",
                            stalled.as_secs()
                        )
                    } else {
                        String::new()
                    };
                    return Err(BenchError(format!(
                        "only {handled} of {total} events were handled{why}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let wall = started.elapsed();
            let cpu = rusage().0 - start_cpu;
            let redis_cpu = per_event(redis_cpu_before, redis_cpu_seconds(&url).await, total);
            shutdown.cancel();
            let _ = run.await;
            progress.done.store(true, Ordering::Relaxed);
            let _ = producer.join();
            drop(redis_server);
            return Ok(BenchReport {
                redis_cpu_seconds_per_event: redis_cpu,
                ..report(label, total, wall, cpu, &progress)
            });
        }
    }
    let wall = started.elapsed();
    let cpu = rusage().0 - start_cpu;
    progress.done.store(true, Ordering::Relaxed);
    producer
        .join()
        .map_err(|_| BenchError("producer panicked".into()))??;
    Ok(report(label, total, wall, cpu, &progress))
}

/// A run in which no event is handled for this long is stuck: it fails
/// with what it did instead of waiting for the overall deadline.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// How long the handled count has stood still.
#[derive(Default)]
struct Stall {
    last: Option<(u64, Instant)>,
}

impl Stall {
    fn for_how_long(&mut self, handled: u64) -> Duration {
        match self.last {
            Some((seen, since)) if seen == handled => since.elapsed(),
            _ => {
                self.last = Some((handled, Instant::now()));
                Duration::ZERO
            }
        }
    }
}

fn report(label: String, total: u64, wall: Duration, cpu: f64, progress: &Progress) -> BenchReport {
    let mut lat = progress
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let secs = wall.as_secs_f64();
    BenchReport {
        worker: label,
        events: total,
        wall_seconds: (secs * 1000.0).round() / 1000.0,
        events_per_second: (total as f64 / secs).round(),
        cpu_seconds_per_event: cpu / total.max(1) as f64,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        peak_rss_bytes: rusage().1,
        redis_cpu_seconds_per_event: None,
        postgres_cpu_seconds_per_event: None,
    }
}

/// The reference: poll, store the offset, commit every second. Nothing else.
fn baseline_loop(
    bootstrap: &str,
    topic: &str,
    total: u64,
    progress: &Progress,
) -> Result<(), BenchError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("bench-baseline"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .map_err(err)?;
    consumer.subscribe(&[topic]).map_err(err)?;
    let mut last_commit = Instant::now();
    let mut batch_ts: Vec<Option<i64>> = Vec::with_capacity(1024);
    let deadline = Instant::now() + Duration::from_secs(600 + total / 1000);
    while progress.handled.load(Ordering::Relaxed) < total {
        if Instant::now() > deadline {
            return Err(BenchError("baseline timed out".into()));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let _ = consumer.store_offset_from_message(&m);
                batch_ts.push(m.timestamp().to_millis());
                if batch_ts.len() >= 512 {
                    progress.record(batch_ts.drain(..));
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "baseline consume error"),
            None => {
                if !batch_ts.is_empty() {
                    progress.record(batch_ts.drain(..));
                }
            }
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, DecodeContext};

    /// `occurred_at` (seconds) of sample `i` at `per_second` events a second.
    fn occurred(i: u64, per_second: u64) -> i64 {
        let ctx = DecodeContext {
            topic: "task-events",
            kafka_timestamp_ms: None,
        };
        decode(sample_event_at(i, per_second).1.as_bytes(), &ctx)
            .expect("samples decode")
            .occurred_at
            .timestamp()
    }

    #[test]
    fn a_stall_is_how_long_the_count_has_stood_still() {
        let mut stall = Stall::default();
        assert_eq!(stall.for_how_long(10), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(30));
        assert!(stall.for_how_long(10) >= Duration::from_millis(30));
        assert_eq!(stall.for_how_long(11), Duration::ZERO);
        assert!(stall.for_how_long(11) < Duration::from_millis(30));
    }

    #[test]
    fn redis_cpu_is_the_sum_of_system_and_user_time() {
        let info = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n\
                    used_cpu_sys_children:9.000000\r\nused_cpu_user_children:9.000000\r\n";
        assert_eq!(used_cpu(info), Some(3.75));
        assert_eq!(used_cpu("# CPU\r\nused_cpu_sys:1.5\r\n"), None);
        assert_eq!(per_event(Some(3.0), Some(5.0), 4), Some(0.5));
        assert_eq!(per_event(None, Some(5.0), 4), None);
    }

    /// A real server's counter, which work moves.
    #[tokio::test]
    async fn redis_cpu_is_read_from_the_server() {
        let server = RedisServer::start().expect("redis-server");
        let before = redis_cpu_seconds(&server.url()).await.expect("INFO cpu");
        // A few million steps of a script: tens of milliseconds of CPU.
        let busy = "local x = 0 for i = 1, 5000000 do x = x + i end return x";
        server.command(&["EVAL", busy, "0"]).expect("EVAL");
        let after = redis_cpu_seconds(&server.url()).await.expect("INFO cpu");
        assert!(after - before >= 0.005, "{before} s, then {after} s");
    }

    #[tokio::test]
    async fn redis_cpu_is_unknown_where_no_server_answers() {
        assert_eq!(redis_cpu_seconds("redis://127.0.0.1:1/").await, None);
    }

    #[test]
    fn event_time_advances_a_second_every_per_second_events() {
        assert_eq!(occurred(1, 1) - occurred(0, 1), 1);
        assert_eq!(occurred(999, 1000), occurred(0, 1000));
        assert_eq!(occurred(1000, 1000) - occurred(0, 1000), 1);
        assert_eq!(occurred(3_600_000, 1000) - occurred(0, 1000), 3600);
        // Otherwise the same events.
        assert_eq!(sample_event_at(7, 1), sample_event(7));
        assert_eq!(sample_event_at(7, 1000).0, sample_event(7).0);
    }
}
