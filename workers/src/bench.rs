//! `taskstream bench --worker NAME`: which subject each name measures.

pub mod child;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pipelines::bench::{
    per_event, redis_cpu_seconds, BenchReport, BenchSpec, NoopWorker, Sample, Subject,
};
use pipelines::kafka::mock::MockKafka;
use pipelines::kafka::offsets::{OffsetReader, TopicPartition};
use pipelines::testing::{unique, RedisServer};

use crate::audit::{pg_store::PgStore, AuditWorker};
use crate::config::Config;
use child::{cpu_seconds_of, postgres_cpu_seconds, produce, Harness, WorkerProcess};

/// Runs the benchmark of `worker` (`baseline`, `pipeline`, `aggregates`,
/// `audit`, `recurring`); `config_path` is the file a worker process reads
/// too (`--store files` runs the audit worker as one); `event_rate` is the
/// aggregates stream's events per second of event time.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: &Config,
    config_path: Option<&std::path::Path>,
    worker: &str,
    events: u64,
    partitions: i32,
    redis_url: Option<String>,
    database_url: Option<String>,
    store: &str,
    event_rate: u64,
) -> anyhow::Result<BenchReport> {
    if events == 0 {
        bail!("--events has value 0: expected a whole number above zero");
    }
    if event_rate == 0 {
        bail!("--event-rate has value 0: expected a whole number above zero");
    }
    if partitions <= 0 {
        bail!("--partitions has value {partitions}: expected a whole number above zero");
    }
    // What runs, and the stream it reads (the standard mix unless said).
    let standard: Sample = Arc::new(pipelines::bench::sample_event);
    let (subject, sample): (Subject, Sample) = match worker {
        "baseline" => (Subject::Baseline, standard),
        "pipeline" => (Subject::Worker(Arc::new(NoopWorker)), standard),
        "aggregates" => {
            let worker = crate::aggregates::AggregatesWorker::new(&config.aggregates)
                .map_err(anyhow::Error::msg)?;
            (
                Subject::Worker(Arc::new(worker)),
                Arc::new(move |i| pipelines::bench::sample_event_at(i, event_rate)),
            )
        }
        "audit" if store == "files" => {
            return audit_files(config, config_path, events, partitions, redis_url).await;
        }
        "audit" if store != "postgres" => {
            bail!("--store has value {store:?}: expected postgres or files")
        }
        "audit" => {
            let url = database_url
                .or_else(|| std::env::var("DATABASE_URL").ok())
                .unwrap_or_else(|| {
                    "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".into()
                });
            let schema = pipelines::testing::unique("bench_audit").replace('-', "_");
            let store = PgStore::connect_with_schema(&url, config.audit.pool_size, &schema)
                .await
                .context("connecting to PostgreSQL for the audit benchmark")?;
            let store = Arc::new(store);
            let worker = AuditWorker::new(store.clone(), "postgres", config.audit.clone());
            let pg_before = postgres_cpu(&store).await;
            let report = pipelines::bench::run(
                spec(config, events, partitions, redis_url, standard),
                Subject::Worker(Arc::new(worker)),
            )
            .await;
            let pg_cpu = per_event(pg_before, postgres_cpu(&store).await, events);
            store.drop_schema().await.ok();
            return Ok(BenchReport {
                postgres_cpu_seconds_per_event: pg_cpu,
                ..report?
            });
        }
        "recurring" => {
            let mut recurring = config.recurring.clone();
            // Its own output topic: occurrences must not be counted as input.
            recurring.output_topic = "bench-recurring-out".into();
            let worker =
                crate::recurring::RecurringWorker::new(&recurring).map_err(anyhow::Error::msg)?;
            (
                Subject::Worker(Arc::new(worker)),
                Arc::new(crate::recurring::bench_events::sample_event),
            )
        }
        other => {
            bail!("--worker has value {other:?}: expected baseline, pipeline, aggregates, audit or recurring")
        }
    };
    let spec = spec(config, events, partitions, redis_url, sample);
    Ok(pipelines::bench::run(spec, subject).await?)
}

fn spec(
    config: &Config,
    events: u64,
    partitions: i32,
    redis_url: Option<String>,
    sample: Sample,
) -> BenchSpec {
    BenchSpec {
        events,
        partitions,
        redis_url,
        config: config.pipeline.clone(),
        sample,
    }
}

/// How often the audit file-store bench reads the group's committed offsets
/// and the topic's watermarks.
const POLL: Duration = Duration::from_millis(25);

/// The child's commit interval in the audit file-store bench: completion is
/// seen through committed offsets, so the default (1 s) would add up to a
/// second to the wall time and hold the producer back.
const CHILD_COMMIT_INTERVAL: &str = "100ms";

/// `bench --worker audit --store files`: `taskstream run audit` in its own
/// process with the file store in a temporary directory, against a mock
/// Kafka cluster and Redis here; see the README's audit section.
async fn audit_files(
    config: &Config,
    config_path: Option<&std::path::Path>,
    events: u64,
    partitions: i32,
    redis_url: Option<String>,
) -> anyhow::Result<BenchReport> {
    let mock = MockKafka::start(1)?;
    let bootstrap = mock.bootstrap_servers().to_string();
    for t in crate::audit::default_topics(&config.pipeline) {
        mock.create_topic(&t, partitions)?;
    }
    let mut _redis = None;
    let url = match redis_url {
        Some(u) => u,
        None => {
            let s = RedisServer::start()?;
            let u = s.url();
            _redis = Some(s);
            u
        }
    };
    let dir = std::env::temp_dir().join(unique("bench-audit-files"));
    let mut pipeline = config.pipeline.clone();
    pipeline.kafka.bootstrap_servers = bootstrap.clone();
    pipeline.kafka.properties.clear();
    pipeline.kafka.group_prefix = unique("bench");
    let group = pipeline.group_id("audit");
    let worker = WorkerProcess::spawn(
        "audit",
        &Harness {
            config_path,
            bootstrap: &bootstrap,
            redis_url: &url,
            key_prefix: &format!("{}:", unique("bench")),
            group_prefix: &pipeline.kafka.group_prefix,
        },
        &[
            ("TASKSTREAM_AUDIT__STORE", "file".into()),
            ("TASKSTREAM_AUDIT__DIR", dir.display().to_string()),
            (
                "TASKSTREAM_KAFKA__COMMIT_INTERVAL",
                CHILD_COMMIT_INTERVAL.into(),
            ),
        ],
    )?;
    let reader = OffsetReader::new(&pipeline.kafka, "bench-audit", &unique("bench-peek"))?;
    let topic = pipeline.topics.task_events.clone();
    let redis_before = redis_cpu_seconds(&url).await;
    let result = tokio::task::spawn_blocking(move || {
        watch_audit(
            worker, &reader, bootstrap, topic, &group, events, partitions,
        )
    })
    .await
    .context("the audit bench's watcher panicked")?;
    let redis_cpu = per_event(redis_before, redis_cpu_seconds(&url).await, events);
    std::fs::remove_dir_all(&dir).ok();
    Ok(BenchReport {
        redis_cpu_seconds_per_event: redis_cpu,
        ..result?
    })
}

/// PostgreSQL's CPU seconds so far, when it runs on this machine.
async fn postgres_cpu(store: &PgStore) -> Option<f64> {
    let pids = store.local_server_pids().await.ok()??;
    postgres_cpu_seconds(&pids)
}

/// Produces `events` while the child consumes them, until its group has
/// committed them all; then stops it and reports.
fn watch_audit(
    mut worker: WorkerProcess,
    reader: &OffsetReader,
    bootstrap: String,
    topic: String,
    group: &str,
    events: u64,
    partitions: i32,
) -> anyhow::Result<BenchReport> {
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic.clone(), p))
        .collect();
    let timeout = Duration::from_secs(5);
    let committed = Arc::new(AtomicU64::new(0));
    let pid = worker.pid();
    let cpu_before = cpu_seconds_of(pid)?;
    let started = Instant::now();
    let producer = produce(
        bootstrap,
        topic,
        events,
        pipelines::bench::sample_event,
        committed.clone(),
        partitions.max(1) as u64 * 8_000,
    );
    // (seconds since start, produced, committed) at each poll.
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let deadline = started + Duration::from_secs(600 + events / 1000);
    loop {
        let done: u64 = reader
            .committed(group, &tps, timeout)?
            .into_iter()
            .map(|o| o.unwrap_or(0).max(0) as u64)
            .sum();
        let produced: u64 = reader
            .watermarks(&tps, timeout)?
            .iter()
            .map(|w| w.high.max(0) as u64)
            .sum();
        committed.store(done, Ordering::Relaxed);
        samples.push((started.elapsed().as_secs_f64(), produced, done));
        if done >= events {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {done} of {events} events were committed in time");
        }
        worker.check_alive()?;
        std::thread::sleep(POLL);
    }
    let wall = started.elapsed();
    let cpu = cpu_seconds_of(pid)? - cpu_before;
    let peak_rss_bytes = worker.stop()?;
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    let (p50, p99) = produce_to_commit(&samples);
    let secs = wall.as_secs_f64();
    Ok(BenchReport {
        worker: "audit".into(),
        events,
        wall_seconds: (secs * 1000.0).round() / 1000.0,
        events_per_second: (events as f64 / secs).round(),
        cpu_seconds_per_event: cpu / events as f64,
        p50_ms: p50,
        p99_ms: p99,
        peak_rss_bytes,
        redis_cpu_seconds_per_event: None,
        postgres_cpu_seconds_per_event: None,
    })
}

/// Median and 99th percentile, in ms, of the time from an event's produce
/// to its commit, from `(seconds, produced, committed)` samples: the events
/// first seen committed at a sample were produced at the first sample whose
/// produced count reaches them (partitions are read in order, so the count
/// is a fair stand-in for the offsets).
fn produce_to_commit(samples: &[(f64, u64, u64)]) -> (f64, f64) {
    let mut weighted: Vec<(f64, u64)> = Vec::new();
    let mut before = 0;
    let mut j = 0;
    for &(t, _, done) in samples {
        if done <= before {
            continue;
        }
        while j < samples.len() && samples[j].1 < done {
            j += 1;
        }
        let produced_at = samples.get(j).map_or(t, |s| s.0);
        weighted.push(((t - produced_at).max(0.0) * 1000.0, done - before));
        before = done;
    }
    weighted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = weighted.iter().map(|w| w.1).sum();
    let at = |q: f64| {
        let rank = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for &(ms, n) in &weighted {
            seen += n;
            if seen >= rank {
                return ms.round();
            }
        }
        weighted.last().map_or(0.0, |w| w.0.round())
    };
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::produce_to_commit;

    #[test]
    fn produce_to_commit_weighs_each_sample_by_the_events_it_committed() {
        // 100 events produced by 0.1 s; 90 committed at 0.2 s, 10 at 1.1 s.
        let samples = [(0.0, 0, 0), (0.1, 100, 0), (0.2, 100, 90), (1.1, 100, 100)];
        assert_eq!(produce_to_commit(&samples), (100.0, 1000.0));
        assert_eq!(produce_to_commit(&[]), (0.0, 0.0));
    }
}
