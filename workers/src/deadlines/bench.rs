//! `taskstream bench --worker deadlines`: the index and the scan at scale.
//!
//! Against a throwaway `redis-server` (or `--redis-url`) and an in-process
//! mock Kafka cluster for the announcements:
//! 1. indexes `indexed` open tasks (due 10 to 40 days ahead, spread over six
//!    partitions' crossing sets) through the worker's own `handle_batch`, in
//!    batches of 500, 12 at a time: `index_per_second`;
//! 2. scans one partition's crossings when nothing is due, 21 times:
//!    `idle_scan_ms` is the median;
//! 3. indexes `burst` tasks due a few seconds ahead in one partition (their
//!    `1h` is announced at once, not measured), waits for the due time and
//!    scans as the partition's timer would (`deadlines.lead` ahead, preparing
//!    the announcements): `burst_emit_seconds` from the due
//!    time to the last acknowledgement, `emit_lateness_p99_ms` over the burst.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use pipelines::event::{Dialect, TaskSnapshot};
use pipelines::kafka::mock::MockKafka;
use pipelines::kafka::sink::Publisher;
use pipelines::testing::RedisServer;
use pipelines::{Ctx, Inbound, Source, TaskEvent, Timer, TimerOwner, Worker};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::config::DeadlinesConfig;
use super::index::crossings_key;
use super::worker::DeadlinesWorker;
use crate::config::Config;

/// The JSON line the benchmark prints.
#[derive(Debug, Clone, Serialize)]
pub struct DeadlinesBench {
    pub worker: &'static str,
    pub indexed: u64,
    pub index_per_second: f64,
    pub idle_scan_ms: f64,
    pub burst: u64,
    pub burst_emit_seconds: f64,
    pub emit_lateness_p99_ms: f64,
    pub peak_rss_bytes: u64,
}

const TOPIC: &str = "task-events";
const PARTITIONS: i32 = 6;
const BATCH: usize = 500;
const IN_FLIGHT: usize = 12;

fn inbound(i: u64, partition: i32, due: chrono::DateTime<Utc>) -> Inbound {
    let event = TaskEvent {
        event_id: format!("bench-{i}"),
        kind: "task.created".into(),
        occurred_at: Utc::now(),
        task_id: Some(format!("task-{i}")),
        user_id: Some(format!("user-{}", i % 1000)),
        project_id: None,
        task: Some(Box::new(TaskSnapshot {
            title: Some(format!("Task {i}")),
            due_at: Some(due),
            assignee_id: Some("bob".into()),
            ..TaskSnapshot::default()
        })),
        previous: None,
        changes: Default::default(),
        reminder: None,
        user: None,
        context: None,
        dialect: Dialect::Canonical,
        cloudevents: false,
        schema_version: None,
        attributes: Default::default(),
    };
    Inbound {
        event,
        source: Source {
            topic: Arc::from(TOPIC),
            partition,
            offset: i as i64,
            timestamp_ms: None,
            received_at: Utc::now(),
        },
    }
}

/// Handles `events` through the worker's `handle_batch`, in batches of
/// `BATCH` (as the pipeline hands them over), `IN_FLIGHT` batches at once.
async fn index_all(
    worker: &DeadlinesWorker,
    ctx: &Ctx,
    range: std::ops::Range<u64>,
    make: impl Fn(u64) -> Inbound + Copy,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    // Batches are built as they are handed over, so memory stays flat.
    let starts = (range.start..range.end).step_by(BATCH);
    let end = range.end;
    let mut results = futures::stream::iter(starts)
        .map(|from| async move {
            let batch: Vec<Inbound> = (from..(from + BATCH as u64).min(end)).map(make).collect();
            worker.handle_batch(&batch, ctx).await
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some(r) = results.next().await {
        if let Some(e) = r.failure {
            anyhow::bail!("indexing failed: {e}");
        }
    }
    Ok(())
}

pub async fn run(
    config: &Config,
    indexed: u64,
    burst: u64,
    redis_url: Option<String>,
) -> anyhow::Result<DeadlinesBench> {
    let mock = MockKafka::start(1)?;
    let deadlines = DeadlinesConfig {
        output_topic: "bench-deadlines-out".into(),
        ..config.deadlines.clone()
    };
    mock.create_topic(&deadlines.output_topic, PARTITIONS)?;
    let _redis;
    let url = match redis_url {
        Some(u) => u,
        None => {
            let r = RedisServer::start().map_err(|e| anyhow::anyhow!("{}", e.0))?;
            let u = r.url();
            _redis = r;
            u
        }
    };
    let mut pipeline = config.pipeline.clone();
    pipeline.kafka.bootstrap_servers = mock.bootstrap_servers().to_string();
    pipeline.kafka.properties.clear();
    pipeline.redis.url = url;
    pipeline.redis.key_prefix = format!("{}:", pipelines::testing::unique("bench-deadlines"));
    let store = pipelines::state::open(&pipeline.redis)
        .await
        .context("connecting to Redis")?;
    let publisher =
        Publisher::new(&pipeline.kafka, "bench-deadlines").map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = Ctx::new("deadlines", store, Some(publisher), Arc::new(pipeline));
    let worker = DeadlinesWorker::new(&deadlines)?;
    let timer = Timer::new(TimerOwner::Process, CancellationToken::new());

    // 1. Index.
    let now = Utc::now();
    let started = Instant::now();
    index_all(&worker, &ctx, 0..indexed, |i| {
        let due = now
            + chrono::Duration::days(10)
            + chrono::Duration::seconds((i * 2_591_999 / indexed.max(1)) as i64);
        inbound(i, (i % PARTITIONS as u64) as i32, due)
    })
    .await?;
    let index_secs = started.elapsed().as_secs_f64();

    // 2. Idle scans.
    let idle_key = crossings_key(TOPIC, 0);
    let mut idle = Vec::new();
    for _ in 0..21 {
        let r = worker.scan_set(&ctx, &idle_key, &timer).await?;
        anyhow::ensure!(r.emitted == 0, "an idle scan announced {}", r.emitted);
        idle.push(r.took.as_secs_f64() * 1000.0);
    }
    idle.sort_by(f64::total_cmp);

    // 3. A burst crossing at once, in a partition of its own.
    let burst_partition = PARTITIONS;
    let burst_key = crossings_key(TOPIC, burst_partition);
    let due = Utc::now()
        + chrono::Duration::seconds(5)
        + chrono::Duration::milliseconds(burst as i64 / 2);
    let due = chrono::DateTime::from_timestamp(due.timestamp() + 1, 0).unwrap_or(due);
    index_all(&worker, &ctx, indexed..indexed + burst, |i| {
        inbound(i, burst_partition, due)
    })
    .await?;
    let flushed = worker.scan_set(&ctx, &burst_key, &timer).await?;
    anyhow::ensure!(
        flushed.emitted as u64 == burst,
        "the burst's 1h announcements: {} of {burst}",
        flushed.emitted
    );
    anyhow::ensure!(
        Utc::now() < due,
        "the burst was indexed too slowly to cross at once; use a smaller --burst"
    );
    // As the partition's timer does: the scan starts `lead` ahead.
    ctx.clock().sleep_until(worker.prepare_at(due)).await;
    let mut lateness = Vec::new();
    while (lateness.len() as u64) < burst {
        let r = worker.scan_set(&ctx, &burst_key, &timer).await?;
        lateness.extend(r.lateness_ms);
    }
    let burst_secs = (Utc::now() - due).num_milliseconds() as f64 / 1000.0;
    lateness.sort_unstable();
    let p99 = lateness
        .get(((lateness.len() as f64 - 1.0) * 0.99).round() as usize)
        .copied()
        .unwrap_or(0);

    Ok(DeadlinesBench {
        worker: "deadlines",
        indexed,
        index_per_second: indexed as f64 / index_secs.max(1e-9),
        idle_scan_ms: idle[idle.len() / 2],
        burst,
        burst_emit_seconds: burst_secs,
        emit_lateness_p99_ms: p99 as f64,
        peak_rss_bytes: peak_rss(),
    })
}

fn peak_rss() -> u64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    (u.ru_maxrss as u64) * 1024
}
