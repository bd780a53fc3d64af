//! `taskstream run lag-monitor`: collections on their own interval, verdicts
//! published as a pre-rendered snapshot that `/metrics` serves without ever
//! waiting on Kafka.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use pipelines::health::{Health, WorkerHealth};
use pipelines::kafka::offsets::TopicPartition;
use tokio_util::sync::CancellationToken;

use super::collect::Collector;
use super::monitor::{GroupReport, Monitor, MonitorSettings};
use super::status::StatusRules;
use super::watch::{watched_groups, WatchedGroup};
use super::{exposition, metrics, NAME};
use crate::config::Config;

/// The monitor's judgement settings from the config.
pub fn settings(config: &Config) -> MonitorSettings {
    let l = &config.lag_monitor;
    MonitorSettings {
        window: l.window,
        rules: StatusRules {
            min_observations: l.min_observations,
            stopped_after: l.stopped_after,
        },
        allowed_lag: l.allowed_lag,
        timeline_samples: l.timeline_samples,
    }
}

/// The last rendered series; what `/metrics` appends.
#[derive(Clone, Default)]
pub struct Snapshot(Arc<Mutex<Arc<str>>>);

impl Snapshot {
    pub fn get(&self) -> Arc<str> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, text: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::from(text);
    }

    /// Appends this snapshot to every `/metrics` answer of the process.
    pub fn publish(&self) {
        let s = self.clone();
        pipelines::metrics::add_exposition(Arc::new(move || s.get()));
    }
}

/// Runs collections every `lag_monitor.interval` until `shutdown`.
pub async fn run(
    config: &Config,
    health: &Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let me = WorkerHealth::new(NAME);
    health.register(me.clone());
    // The monitor has no state store.
    me.set_dependency(pipelines::health::STATE_STORE, Ok(()));
    let groups = watched_groups(config, &[]);
    tracing::info!(groups = ?groups.iter().map(|g| &g.group).collect::<Vec<_>>(), "lag monitor watching");
    let collector = Collector::new(&config.pipeline.kafka, &config.lag_monitor)
        .context("starting the lag monitor's Kafka clients")?;
    let snapshot = Snapshot::default();
    snapshot.publish();
    let mut round = Round {
        collector,
        monitor: Monitor::new(settings(config)),
        groups: Arc::new(groups),
        data_loss: HashSet::new(),
        clock: pipelines::Clock::System,
    };
    let interval = config.lag_monitor.interval;
    loop {
        let started = Instant::now();
        let (back, result) = tokio::task::spawn_blocking(move || {
            let r = round.collect_once();
            (round, r)
        })
        .await
        .context("the lag monitor's collection panicked")?;
        round = back;
        let took = started.elapsed();
        match result {
            Ok((text, partitions)) => {
                snapshot.set(text);
                metrics::collected(took, partitions, round.clock.now().timestamp() as f64);
                me.set_kafka_up(true);
                me.set_assigned(partitions);
            }
            Err(e) => {
                metrics::collection_failed(took);
                me.set_kafka_up(false);
                tracing::warn!(error = %e, "lag collection failed; serving the last one");
            }
        }
        let wait = interval.saturating_sub(took).max(Duration::from_millis(10));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("lag monitor stopped");
    Ok(())
}

/// What one collection round owns, moved onto a blocking thread and back.
struct Round {
    collector: Collector,
    monitor: Monitor,
    groups: Arc<Vec<WatchedGroup>>,
    data_loss: HashSet<(String, TopicPartition)>,
    /// The pipeline's clock: "now" of every lag-seconds figure.
    clock: pipelines::Clock,
}

impl Round {
    /// Reads, judges and renders; returns the text and the partitions watched.
    fn collect_once(&mut self) -> Result<(String, usize), pipelines::kafka::offsets::OffsetError> {
        let collection = self
            .collector
            .collect(&self.groups, &self.monitor, || self.clock.now())?;
        let reports = self.monitor.observe(&collection);
        self.count_data_loss(&reports);
        let partitions = reports.iter().map(|g| g.partitions.len()).sum();
        Ok((exposition::render(&reports), partitions))
    }

    fn count_data_loss(&mut self, reports: &[GroupReport]) {
        let mut now = HashSet::new();
        for g in reports {
            for p in g.partitions.iter().filter(|p| p.data_loss > 0) {
                let key = (g.group.clone(), TopicPartition::new(&p.topic, p.partition));
                if !self.data_loss.contains(&key) {
                    metrics::data_loss_started(&g.worker);
                    tracing::error!(group = %g.group, topic = %p.topic, partition = p.partition, lost = p.data_loss, "consumer group fell behind retention: records were deleted unread");
                }
                now.insert(key);
            }
        }
        self.data_loss = now;
    }
}

/// `taskstream run lag-monitor` alone: no state store or producer, just the
/// monitor and the HTTP server (`/metrics`, `/healthz`, `/readyz`).
pub async fn run_alone(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let health = Health::default();
    let http = match config.pipeline.metrics.addr.parse::<std::net::SocketAddr>() {
        Ok(addr) => {
            let (health, handle, stop) = (
                health.clone(),
                pipelines::metrics::install(),
                shutdown.clone(),
            );
            Some(tokio::spawn(async move {
                if let Err(e) = pipelines::health::serve(addr, health, handle, stop).await {
                    tracing::error!(%addr, error = %e, "metrics server failed");
                }
            }))
        }
        Err(_) => None,
    };
    tracing::info!("taskstream running: lag monitor");
    let result = run(config, &health, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    result
}
