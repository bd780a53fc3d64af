//! `taskstream bench --worker reminders`: how fast reminders are scheduled,
//! how late they fire while many are pending, how fast a burst is sent, and
//! that none is sent twice or lost.
//!
//! The worker runs as it does in production, in its own process: this
//! process starts `taskstream run reminders` (the same binary) as a child,
//! so `peak_rss_bytes` is that process's peak resident set (`VmHWM`, read
//! just before it is stopped) and not the harness's. The harness stays
//! here: a mock Kafka cluster, the producers, a throwaway `redis-server` (or
//! `--redis-url`), and an SMTP sink (a minimal SMTP server that accepts
//! everything). The child reads the same config (`--config` /
//! `TASKSTREAM_CONFIG`) with the broker, Redis, relay, consumer group and
//! key prefix pointed at the harness; its log goes to a file named on
//! failure. Three phases, one after another:
//! 1. *pending*: `--events` requests due in 30 days are produced and
//!    scheduled; `schedule_per_second` is that count over the time from the
//!    first produce to the last one in Redis;
//! 2. *lateness*: with those pending, `reminders` more (1 % of `--events`,
//!    at least 1,000, at most 20,000) come due spread evenly over 10 s;
//!    lateness is the sink's acceptance time minus the scheduled time (the
//!    scheduled millisecond travels in the title);
//! 3. *burst*: as many again all due at one instant; `sent_per_second` is
//!    their count over the time from that instant to the last accepted.
//!
//! `duplicates` counts messages accepted more than once, `missed` reminders
//! of phases 2 and 3 not accepted within a minute of the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{SecondsFormat, Utc};
use pipelines::kafka::mock::MockKafka;
use pipelines::state::{RedisStore, StateStore};
use pipelines::testing::{unique, RedisServer, TestProducer};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::schedule::ReminderSchedule;
use crate::bench::child::{produce, Harness, WorkerProcess};
use crate::config::Config;

/// The JSON line the benchmark prints.
#[derive(Debug, Clone, Serialize)]
pub struct RemindersBenchReport {
    pub worker: &'static str,
    /// Reminders fired and measured (phases 2 and 3).
    pub reminders: u64,
    /// Reminders pending while they fired.
    pub pending: u64,
    pub schedule_per_second: f64,
    pub sent_per_second: f64,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
    pub duplicates: u64,
    pub missed: u64,
    pub peak_rss_bytes: u64,
}

/// What the sink accepted: marker -> (scheduled ms, acceptance times ms).
#[derive(Default)]
struct Sink {
    accepted: Mutex<HashMap<u64, (i64, Vec<i64>)>>,
    count: AtomicU64,
}

impl Sink {
    /// Titles are `bench#<n>#<scheduled ms>#`.
    fn record(&self, data: &str, at_ms: i64) {
        let Some(rest) = data.split("bench#").nth(1) else {
            return;
        };
        let mut parts = rest.split('#');
        let (Some(n), Some(ms)) = (parts.next(), parts.next()) else {
            return;
        };
        let (Ok(n), Ok(ms)) = (n.parse::<u64>(), ms.parse::<i64>()) else {
            return;
        };
        let mut a = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        a.entry(n).or_insert((ms, Vec::new())).1.push(at_ms);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A minimal SMTP server that accepts every message (RFC 5321's happy
/// path: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT).
async fn serve_sink(listener: tokio::net::TcpListener, sink: Arc<Sink>) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let sink = sink.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            if w.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                return;
            }
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let cmd = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match cmd.as_str() {
                    "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                    "HELO" => b"250 sink\r\n",
                    "QUIT" => {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    }
                    "DATA" => {
                        if w.write_all(b"354 go\r\n").await.is_err() {
                            return;
                        }
                        let mut data = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            data.push_str(&line);
                        }
                        sink.record(&data, Utc::now().timestamp_millis());
                        b"250 OK\r\n"
                    }
                    _ => b"250 OK\r\n",
                };
                if w.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn request(n: u64, remind_ms: i64) -> (String, String) {
    let task = format!("bench-task-{n}");
    let payload = format!(
        r#"{{"task_id":"{task}","user_id":"bench-user","title":"bench#{n}#{remind_ms}#","remind_at":"{}","notification_method":"email","created_at":"{}"}}"#,
        ts(remind_ms),
        ts(Utc::now().timestamp_millis())
    );
    (task, payload)
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

/// Pending reminders over every shard of `topic`.
async fn pending(store: &RedisStore, topic: &str, partitions: i32) -> anyhow::Result<u64> {
    let mut n = 0;
    for p in 0..partitions {
        n += store
            .zcard(&ReminderSchedule::shard_key(topic, p))
            .await
            .context("counting pending reminders")?;
    }
    Ok(n)
}

/// Waits until `target` reminders are pending, feeding `progress`.
#[allow(clippy::too_many_arguments)]
async fn wait_pending(
    worker: &mut WorkerProcess,
    store: &RedisStore,
    topic: &str,
    partitions: i32,
    base: u64,
    target: u64,
    progress: &AtomicU64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = pending(store, topic, partitions)
            .await?
            .saturating_sub(base);
        progress.store(n, Ordering::Relaxed);
        if n >= target {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {n} of {target} reminders scheduled in time");
        }
        worker.check_alive()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the benchmark (`config_path`: the file the worker process reads too).
pub async fn run(
    config: &Config,
    config_path: Option<&std::path::Path>,
    events: u64,
    partitions: i32,
    redis_url: Option<String>,
) -> anyhow::Result<RemindersBenchReport> {
    let mock = MockKafka::start(1)?;
    let bootstrap = mock.bootstrap_servers().to_string();
    let topics = config.pipeline.topics.clone();
    mock.create_topic(&topics.reminders, partitions)?;
    for t in [
        &topics.task_events,
        &topics.user_events,
        &topics.notification_events,
    ] {
        mock.create_topic(t, partitions)?;
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
    let sink = Arc::new(Sink::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let smtp_url = format!("smtp://{}", listener.local_addr()?);
    tokio::spawn(serve_sink(listener, sink.clone()));

    let key_prefix = format!("{}:", unique("bench"));
    let mut redis_config = config.pipeline.redis.clone();
    redis_config.url = url.clone();
    redis_config.key_prefix = key_prefix.clone();
    let store = RedisStore::connect(&redis_config).await?;
    let pool = config.reminders.smtp_pool_size.max(8);
    let mut worker = WorkerProcess::spawn(
        "reminders",
        &Harness {
            config_path,
            bootstrap: &bootstrap,
            redis_url: &url,
            key_prefix: &key_prefix,
            group_prefix: &unique("bench"),
        },
        &[
            ("SMTP_URL", smtp_url),
            (
                "TASKSTREAM_REMINDERS__UNSUBSCRIBE_SECRET",
                "bench-unsubscribe-secret".into(),
            ),
            ("TASKSTREAM_REMINDERS__SMTP_POOL_SIZE", pool.to_string()),
        ],
    )?;

    // The user every reminder is for.
    let p = TestProducer::new(&bootstrap)?;
    let user = format!(
        r#"{{"event_id":"bench-user","event_type":"user.created","timestamp":"{}","data":{{"user_id":"bench-user","email":"bench@example.com","timezone":"UTC"}}}}"#,
        ts(Utc::now().timestamp_millis())
    );
    p.send(&topics.user_events, b"bench-user", user.as_bytes())?;
    p.flush()?;

    let window = partitions.max(1) as u64 * 8_000;
    let topic = topics.reminders.clone();
    let result = async {
        // 1. Pending: due in 30 days.
        let far = Utc::now().timestamp_millis() + 30 * 24 * 3600 * 1000;
        let progress = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let producer = produce(
            bootstrap.clone(),
            topic.clone(),
            events,
            move |i| request(i, far + i as i64),
            progress.clone(),
            window,
        );
        wait_pending(
            &mut worker,
            &store,
            &topic,
            partitions,
            0,
            events,
            &progress,
            Duration::from_secs(600 + events / 500),
        )
        .await?;
        let schedule_secs = started.elapsed().as_secs_f64();
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
        let schedule_per_second = events as f64 / schedule_secs;

        // 2. Lateness: due over 10 s, starting once they can all be scheduled.
        let fired = (events / 100).clamp(1_000, 20_000);
        let lead_ms = (fired as f64 / schedule_per_second * 1500.0) as i64 + 2_000;
        let start = Utc::now().timestamp_millis() + lead_ms;
        let spread = 10_000 / fired as i64;
        let progress = Arc::new(AtomicU64::new(0));
        let producer = produce(
            bootstrap.clone(),
            topic.clone(),
            fired,
            move |i| request(events + i, start + i as i64 * spread.max(1)),
            progress.clone(),
            u64::MAX,
        );
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
        let end = start + 10_000 + 60_000;
        while sink.count.load(Ordering::Relaxed) < fired && Utc::now().timestamp_millis() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pending_during = pending(&store, &topic, partitions).await?;

        // 3. Burst: as many, due at one instant.
        let burst_at = Utc::now().timestamp_millis() + lead_ms;
        let producer = produce(
            bootstrap.clone(),
            topic.clone(),
            fired,
            move |i| request(events + fired + i, burst_at),
            Arc::new(AtomicU64::new(0)),
            u64::MAX,
        );
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
        let end = burst_at + 60_000;
        while sink.count.load(Ordering::Relaxed) < 2 * fired && Utc::now().timestamp_millis() < end
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Anything sent twice would arrive now.
        tokio::time::sleep(Duration::from_secs(2)).await;
        worker.check_alive()?;
        anyhow::Ok((fired, pending_during, schedule_per_second, burst_at))
    }
    .await;
    let peak_rss_bytes = worker.stop();
    let (fired, pending_during, schedule_per_second, burst_at) = result?;
    let peak_rss_bytes = peak_rss_bytes?;

    let accepted = sink.accepted.lock().unwrap_or_else(|p| p.into_inner());
    let mut lateness = Vec::new();
    let mut duplicates = 0;
    let mut last_burst = burst_at;
    for (n, (scheduled, times)) in accepted.iter() {
        duplicates += times.len().saturating_sub(1) as u64;
        let first = times.iter().copied().min().unwrap_or(*scheduled);
        if *n < events + fired {
            lateness.push(first - scheduled);
        } else {
            last_burst = last_burst.max(first);
        }
    }
    lateness.sort_unstable();
    let burst_received = accepted.keys().filter(|n| **n >= events + fired).count() as u64;
    let received = accepted.keys().filter(|n| **n >= events).count() as u64;
    Ok(RemindersBenchReport {
        worker: "reminders",
        reminders: 2 * fired,
        pending: pending_during,
        schedule_per_second,
        sent_per_second: burst_received as f64 / ((last_burst - burst_at).max(1) as f64 / 1000.0),
        lateness_p50_ms: percentile(&lateness, 0.5),
        lateness_p99_ms: percentile(&lateness, 0.99),
        lateness_max_ms: lateness.last().copied().unwrap_or(0) as f64,
        duplicates,
        missed: (2 * fired).saturating_sub(received),
        peak_rss_bytes,
    })
}
