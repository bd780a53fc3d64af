//! `taskstream bench --worker lag-monitor`: the monitor's own cost per
//! collection with many groups and partitions, and how fast `/metrics`
//! answers while Kafka is down.
//!
//! The mock cluster runs in a child process (`taskstream dev-kafka`), so this
//! process's CPU time is the monitor's alone (its librdkafka clients included).
//! Each group reads its own topic; every partition has records and a commit
//! part-way, so every partition lags. Collections measured:
//! - `cold`: the first, reading every partition's first unconsumed record;
//! - `warm`: nothing moved, records already known;
//! - `moving`: every group committed one more record on every partition since
//!   the last collection, so every first unconsumed record is read again.
//!
//! Then the cluster is killed and `/metrics` is scraped while collections
//! wait on their timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use pipelines::testing::{commit_offsets, free_port, TestProducer};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::collect::Collector;
use super::config::WatchedGroup as ExtraGroup;
use super::exposition;
use super::monitor::Monitor;
use super::service::{self, settings};
use super::watch::WatchedGroup;
use crate::config::Config;

/// The JSON line `taskstream bench --worker lag-monitor` prints.
#[derive(Debug, Clone, Serialize)]
pub struct LagBenchReport {
    pub worker: &'static str,
    pub groups: usize,
    pub partitions: usize,
    /// Wall time of one collection, milliseconds (median of its kind).
    pub cold_collection_ms: f64,
    pub warm_collection_ms: f64,
    pub moving_collection_ms: f64,
    /// This process's CPU time per collection, milliseconds.
    pub cold_cpu_ms: f64,
    pub warm_cpu_ms: f64,
    pub moving_cpu_ms: f64,
    /// Judging and rendering alone (no Kafka), per collection.
    pub evaluate_and_render_ms: f64,
    pub exposition_bytes: usize,
    /// `/metrics` round trips over loopback while Kafka is down.
    pub scrape_down_p50_ms: f64,
    pub scrape_down_max_ms: f64,
    pub peak_rss_bytes: u64,
}

struct DevKafka(Child);

impl Drop for DevKafka {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark: `groups` groups, each on its own topic of `partitions`.
pub async fn run(
    config: &Config,
    groups: usize,
    partitions: i32,
) -> anyhow::Result<LagBenchReport> {
    if groups == 0 || partitions <= 0 {
        bail!("--groups and --partitions must be above zero");
    }
    let topics: Vec<String> = (0..groups).map(|g| format!("lagbench-{g}")).collect();
    let spec = topics
        .iter()
        .map(|t| format!("{t}:{partitions}"))
        .collect::<Vec<_>>()
        .join(",");
    let exe = std::env::current_exe().context("locating the taskstream binary")?;
    let mut child = Command::new(exe)
        .args(["dev-kafka", "--topics", &spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `taskstream dev-kafka`")?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("dev-kafka stdout")?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the mock cluster's address")?;
    let kafka = DevKafka(child);
    let bootstrap = line.trim().to_string();

    // 10 records per partition; every group committed at 2.
    let producer = TestProducer::new(&bootstrap)?;
    for t in &topics {
        for p in 0..partitions {
            for i in 0..10 {
                producer.send_to(t, Some(p), b"k", format!("record {i}").as_bytes())?;
            }
        }
        producer.poll();
    }
    producer.flush()?;
    let group_id = |g: usize| format!("lagbench-group-{g}");
    let commit_all = |offset: i64| -> anyhow::Result<()> {
        for (g, t) in topics.iter().enumerate() {
            let offsets: Vec<(String, i32, i64)> =
                (0..partitions).map(|p| (t.clone(), p, offset)).collect();
            commit_offsets(&bootstrap, &group_id(g), &offsets)?;
        }
        Ok(())
    };
    commit_all(2)?;

    let mut config = config.clone();
    config.pipeline.kafka.bootstrap_servers = bootstrap.clone();
    config.lag_monitor.request_timeout = Duration::from_secs(2);
    config.lag_monitor.peek_timeout = Duration::from_secs(10);
    config.lag_monitor.groups = topics
        .iter()
        .enumerate()
        .map(|(g, t)| ExtraGroup {
            group: group_id(g),
            topics: vec![t.clone()],
        })
        .collect();
    let watched: Vec<WatchedGroup> = topics
        .iter()
        .enumerate()
        .map(|(g, t)| WatchedGroup {
            group: group_id(g),
            worker: group_id(g),
            topics: vec![t.clone()],
        })
        .collect();

    let lag_cfg = config.lag_monitor.clone();
    let kafka_cfg = config.pipeline.kafka.clone();
    let monitor_settings = settings(&config);
    let commit_bootstrap = bootstrap.clone();
    let topics2 = topics.clone();
    let measured = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut collector = Collector::new(&kafka_cfg, &lag_cfg)?;
        let mut monitor = Monitor::new(monitor_settings);
        let one = |collector: &mut Collector,
                   monitor: &mut Monitor|
         -> anyhow::Result<(f64, f64, usize, usize)> {
            let (cpu, wall) = (cpu_seconds(), Instant::now());
            let c = collector.collect(&watched, monitor, Utc::now)?;
            let reports = monitor.observe(&c);
            let text = exposition::render(&reports);
            let parts = reports.iter().map(|g| g.partitions.len()).sum();
            Ok((
                wall.elapsed().as_secs_f64() * 1000.0,
                (cpu_seconds() - cpu) * 1000.0,
                parts,
                text.len(),
            ))
        };
        let cold = one(&mut collector, &mut monitor)?;
        let mut warm = Vec::new();
        for _ in 0..5 {
            warm.push(one(&mut collector, &mut monitor)?);
        }
        let mut moving = Vec::new();
        for step in 0..5 {
            for (g, t) in topics2.iter().enumerate() {
                let offsets: Vec<(String, i32, i64)> =
                    (0..partitions).map(|p| (t.clone(), p, 3 + step)).collect();
                commit_offsets(&commit_bootstrap, &format!("lagbench-group-{g}"), &offsets)?;
            }
            moving.push(one(&mut collector, &mut monitor)?);
        }
        // Judging and rendering alone, on the last collection's data.
        let c = collector.collect(&watched, &monitor, Utc::now)?;
        let started = Instant::now();
        for _ in 0..10 {
            let reports = monitor.observe(&c);
            std::hint::black_box(exposition::render(&reports));
        }
        let eval_ms = started.elapsed().as_secs_f64() * 100.0;
        Ok((cold, warm, moving, eval_ms))
    })
    .await
    .context("the benchmark panicked")??;
    let (cold, warm, moving, eval_ms) = measured;
    let partitions_total = cold.2;

    // Scrapes while Kafka is down: the real service and HTTP server.
    let port = free_port()?;
    config.pipeline.metrics.addr = format!("127.0.0.1:{port}");
    config.lag_monitor.interval = Duration::from_secs(1);
    config.pipeline.kafka.group_prefix = "lagbench".into();
    let shutdown = CancellationToken::new();
    let svc = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { service::run_alone(&config, shutdown).await })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !scrape(port).is_some_and(|b| b.contains("kafka_consumergroup_group_lag{")) {
        if Instant::now() > deadline {
            bail!("the lag monitor served no lag within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(kafka);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut scrapes = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let body = scrape(port).unwrap_or_default();
        scrapes.push(started.elapsed().as_secs_f64() * 1000.0);
        if !body.contains("kafka_consumergroup_group_lag{") {
            bail!("a scrape while Kafka was down lost the last collection");
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    shutdown.cancel();
    let _ = svc.await;
    let max = scrapes.iter().copied().fold(0.0, f64::max);

    Ok(LagBenchReport {
        worker: "lag-monitor",
        groups,
        partitions: partitions_total,
        cold_collection_ms: cold.0,
        warm_collection_ms: median(warm.iter().map(|w| w.0).collect()),
        moving_collection_ms: median(moving.iter().map(|w| w.0).collect()),
        cold_cpu_ms: cold.1,
        warm_cpu_ms: median(warm.iter().map(|w| w.1).collect()),
        moving_cpu_ms: median(moving.iter().map(|w| w.1).collect()),
        evaluate_and_render_ms: eval_ms,
        exposition_bytes: cold.3,
        scrape_down_p50_ms: median(scrapes),
        scrape_down_max_ms: max,
        peak_rss_bytes: peak_rss(),
    })
}

/// One `/metrics` body over a fresh loopback connection.
fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}
