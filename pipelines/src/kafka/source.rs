//! The Kafka source: one consumer-group member per worker.
//!
//! Shape (following rust-rdkafka's `at_least_once` example):
//! - A dedicated poll thread owns the consumer. It polls, groups messages into
//!   per-partition [`RecordBatch`]es and hands them to that partition's *lane*.
//! - A lane is a task with a bounded queue that processes its partition's
//!   batches one after another (so messages of one partition, and therefore of
//!   one key, are handled in order). Lanes of different partitions run
//!   concurrently, at most `concurrency` at a time.
//! - `enable.auto.offset.store=false`: a lane stores a batch's offset only after
//!   the batch is finished; the poll thread commits stored offsets every
//!   `commit_interval`, on revoke (after draining the revoked lanes) and on
//!   shutdown. `enable.auto.commit=false`: nothing is committed behind our back.
//! - Backpressure, in two steps. When a lane's queue is full, its batch is
//!   parked and the poll thread stops polling until the lane has room, so
//!   librdkafka's own prefetch limits stop fetching (cheap: nothing is thrown
//!   away). If a lane stays full for longer than [`PAUSE_AFTER`], its partition
//!   alone is paused and polling resumes for the others; it is resumed once its
//!   backlog is gone. (Pausing is kept for stuck partitions because librdkafka
//!   discards a paused partition's prefetched messages and may take up to a
//!   second to fetch again after a resume.) Nothing is dropped or skipped.
//! - Assignment is `cooperative-sticky`: a rebalance moves only the partitions
//!   that must move, and the others keep flowing.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{base_client_config, scrub, Record, RecordBatch};
use crate::config::{KafkaConfig, PipelineTuning};
use crate::health::WorkerHealth;
use crate::metrics;

/// What a lane did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    /// The highest offset whose message is finished, with every message before
    /// it; its successor is what gets committed.
    pub finished_up_to: Option<i64>,
    /// False when processing stopped early (shutdown or revoke during a retry);
    /// the rest of the batch will be redelivered.
    pub complete: bool,
}

/// Processes the batches of one partition. Implemented by the runtime.
#[async_trait]
pub trait BatchProcessor: Send + Sync + 'static {
    /// Handles `batch`; must return promptly once `stop` is cancelled, except
    /// for a side effect already under way.
    async fn process(&self, batch: RecordBatch, stop: &CancellationToken) -> Processed;

    /// Runs beside the partition's lane from its assignment until `stop`
    /// (the worker's partition hooks and partition-scoped timer). A revoke
    /// waits for it, up to `drain_timeout`, before the partition is handed on.
    async fn run_partition(&self, _topic: Arc<str>, _partition: i32, _stop: CancellationToken) {}
}

/// A source could not start.
#[derive(Debug, thiserror::Error)]
#[error("Kafka consumer for worker {worker}: {message}")]
pub struct SourceError {
    pub worker: &'static str,
    pub message: String,
}

/// Everything a source needs to know.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub worker: &'static str,
    pub group_id: String,
    pub topics: Vec<String>,
    pub kafka: KafkaConfig,
    pub tuning: PipelineTuning,
}

type PartitionKey = (Arc<str>, i32);

struct Lane {
    tx: mpsc::Sender<RecordBatch>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The partition's hooks and timer ([`BatchProcessor::run_partition`]).
    partition_task: tokio::task::JoinHandle<()>,
    /// Batches that did not fit in the queue, in order.
    pending: VecDeque<RecordBatch>,
    /// Since when `pending` is non-empty.
    parked_since: Option<Instant>,
    /// Whether the partition is paused (it was parked too long).
    paused: bool,
}

/// How long a partition may hold up polling before it is paused on its own.
pub const PAUSE_AFTER: Duration = Duration::from_millis(250);

type SourceConsumer = BaseConsumer<SourceContext>;

/// The consumer's callbacks: rebalances, statistics, errors, commits.
pub struct SourceContext {
    worker: &'static str,
    kafka: KafkaConfig,
    tuning: PipelineTuning,
    lanes: Mutex<HashMap<PartitionKey, Lane>>,
    topics: Mutex<HashMap<String, Arc<str>>>,
    processor: Arc<dyn BatchProcessor>,
    permits: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
    consumer: OnceLock<Weak<SourceConsumer>>,
    health: Arc<WorkerHealth>,
    /// Cancelled when a lane dies of a bug: the process shuts down gracefully
    /// rather than leave a partition unprocessed.
    fatal: CancellationToken,
}

impl SourceContext {
    fn intern(&self, topic: &str) -> Arc<str> {
        let mut t = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = t.get(topic) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(topic);
        t.insert(topic.to_string(), a.clone());
        a
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionKey, Lane>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn assign(&self, tpl: &TopicPartitionList) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut lanes = self.lanes();
        for elem in tpl.elements() {
            let key = (self.intern(elem.topic()), elem.partition());
            if lanes.contains_key(&key) {
                continue;
            }
            let (tx, rx) = mpsc::channel(self.tuning.partition_queue);
            let stop = CancellationToken::new();
            let task = self.runtime.spawn(run_lane(
                rx,
                stop.clone(),
                self.processor.clone(),
                self.permits.clone(),
                consumer.clone(),
                self.fatal.clone(),
                self.worker,
            ));
            let partition_task = self.runtime.spawn({
                let processor = self.processor.clone();
                let (topic, partition, stop) = (key.0.clone(), key.1, stop.clone());
                async move { processor.run_partition(topic, partition, stop).await }
            });
            tracing::info!(worker = self.worker, topic = %key.0, partition = key.1, "partition assigned");
            lanes.insert(
                key,
                Lane {
                    tx,
                    stop,
                    task,
                    partition_task,
                    pending: VecDeque::new(),
                    parked_since: None,
                    paused: false,
                },
            );
        }
        self.health.set_assigned(lanes.len());
    }

    /// Stops the lanes of `keys` (or all lanes): each finishes the batch in
    /// hand, queued batches are abandoned (their offsets were never stored, so
    /// they are redelivered), and this waits for them and their partition
    /// tasks up to `drain_timeout`, then aborts what is still running (its
    /// offsets are not stored, so its messages are redelivered).
    fn stop_lanes(&self, keys: Option<Vec<PartitionKey>>) {
        let stopped: Vec<(PartitionKey, Lane)> = {
            let mut lanes = self.lanes();
            let keys = keys.unwrap_or_else(|| lanes.keys().cloned().collect());
            let out = keys
                .into_iter()
                .filter_map(|k| lanes.remove(&k).map(|l| (k, l)))
                .collect();
            self.health.set_assigned(lanes.len());
            out
        };
        if stopped.is_empty() {
            return;
        }
        let mut tasks = Vec::with_capacity(stopped.len());
        for ((topic, partition), lane) in stopped {
            lane.stop.cancel();
            drop(lane.tx);
            tasks.push(lane.task);
            tasks.push(lane.partition_task);
            metrics::partition_revoked(self.worker, &topic, partition);
            tracing::info!(worker = self.worker, %topic, partition, "partition released");
        }
        let timeout = self.tuning.drain_timeout;
        let worker = self.worker;
        // The poll thread is not a runtime thread, so it may block on the runtime.
        self.runtime.block_on(async move {
            let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
            if tokio::time::timeout(timeout, futures::future::join_all(tasks))
                .await
                .is_err()
            {
                tracing::warn!(
                    worker,
                    ?timeout,
                    "in-flight work did not finish within drain_timeout: aborted"
                );
                for a in aborts {
                    a.abort();
                }
            }
        });
    }

    fn commit(&self, consumer: &SourceConsumer, mode: CommitMode) {
        match consumer.commit_consumer_state(mode) {
            Ok(()) => {}
            // Nothing stored since the last commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                metrics::committed(self.worker, false);
                tracing::warn!(worker = self.worker, error = %scrub(&self.kafka, &e.to_string()), "offset commit failed");
            }
        }
    }

    /// Hands a batch to its lane, or parks it when the lane is full. Batches
    /// of a partition that is no longer ours are dropped: their offsets were
    /// never stored, so the new owner reads them again.
    fn dispatch(&self, batch: RecordBatch) {
        let mut lanes = self.lanes();
        let key = (batch.topic.clone(), batch.partition);
        let Some(lane) = lanes.get_mut(&key) else {
            return;
        };
        if !lane.pending.is_empty() {
            lane.pending.push_back(batch);
            return;
        }
        match lane.tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(batch)) => {
                lane.pending.push_back(batch);
                lane.parked_since = Some(Instant::now());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!(worker = self.worker, topic = %key.0, partition = key.1, "lane closed while assigned");
            }
        }
    }

    /// Moves parked batches into lanes that have room, resumes partitions whose
    /// backlog is gone and pauses those parked longer than [`PAUSE_AFTER`].
    /// Returns whether polling must wait: some partition is parked, not paused.
    fn flush_pending(&self, consumer: &SourceConsumer) -> bool {
        let mut lanes = self.lanes();
        let mut changed = false;
        let mut hold = false;
        for (key, lane) in lanes.iter_mut() {
            if lane.pending.is_empty() {
                continue;
            }
            while let Some(batch) = lane.pending.pop_front() {
                match lane.tx.try_send(batch) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(b))
                    | Err(mpsc::error::TrySendError::Closed(b)) => {
                        lane.pending.push_front(b);
                        break;
                    }
                }
            }
            if lane.pending.is_empty() {
                lane.parked_since = None;
                if lane.paused {
                    lane.paused = false;
                    pause(consumer, key, false, self.worker);
                    changed = true;
                }
            } else if !lane.paused {
                if lane
                    .parked_since
                    .is_some_and(|t| t.elapsed() >= PAUSE_AFTER)
                {
                    lane.paused = true;
                    pause(consumer, key, true, self.worker);
                    changed = true;
                } else {
                    hold = true;
                }
            }
        }
        if changed {
            let paused = lanes.values().filter(|l| l.paused).count();
            metrics::paused_partitions(self.worker, paused);
        }
        hold
    }
}

fn pause(consumer: &SourceConsumer, key: &PartitionKey, pause: bool, worker: &'static str) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&key.0, key.1);
    let r = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match r {
        Ok(()) => tracing::debug!(worker, topic = %key.0, partition = key.1, pause, "backpressure"),
        Err(e) => {
            tracing::warn!(worker, topic = %key.0, partition = key.1, error = %e, "pause/resume failed")
        }
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        let up = stats
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.health.set_kafka_up(up);
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || !p.desired {
                    continue;
                }
                let lag = if p.consumer_lag_stored >= 0 {
                    p.consumer_lag_stored
                } else {
                    p.consumer_lag
                };
                metrics::partition_offsets(self.worker, topic, *partition, lag, p.committed_offset);
            }
        }
    }

    /// Logs only: the Kafka readiness signal has one writer, the statistics
    /// callback above, which sees every broker's state.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(worker = self.worker, error = %scrub(&self.kafka, &error.to_string()), reason = %scrub(&self.kafka, reason), "kafka client error");
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &SourceConsumer, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let keys = tpl
                .elements()
                .iter()
                .map(|e| (self.intern(e.topic()), e.partition()))
                .collect();
            self.stop_lanes(Some(keys));
            // Still assigned here: commit what the drained lanes stored.
            if !consumer.assignment_lost() {
                self.commit(consumer, CommitMode::Sync);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &SourceConsumer, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.assign(tpl),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(worker = self.worker, error = %e, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => metrics::committed(self.worker, true),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                metrics::committed(self.worker, false);
                tracing::warn!(worker = self.worker, error = %e, "offset commit failed");
            }
        }
    }
}

async fn run_lane(
    mut rx: mpsc::Receiver<RecordBatch>,
    stop: CancellationToken,
    processor: Arc<dyn BatchProcessor>,
    permits: Arc<Semaphore>,
    consumer: Arc<SourceConsumer>,
    fatal: CancellationToken,
    worker: &'static str,
) {
    loop {
        let batch = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            b = rx.recv() => match b { Some(b) => b, None => break },
        };
        let Ok(_permit) = permits.acquire().await else {
            break;
        };
        let topic = batch.topic.clone();
        let partition = batch.partition;
        let result = AssertUnwindSafe(processor.process(batch, &stop))
            .catch_unwind()
            .await;
        let processed = match result {
            Ok(p) => p,
            Err(_) => {
                tracing::error!(worker, %topic, partition, "a worker panicked: shutting down so the partition is redelivered");
                fatal.cancel();
                break;
            }
        };
        if let Some(offset) = processed.finished_up_to {
            // rd_kafka_offset_store stores offset + 1: the next message to read.
            if let Err(e) = consumer.store_offset(&topic, partition, offset) {
                tracing::warn!(worker, %topic, partition, offset, error = %e, "could not store offset (partition revoked?)");
            }
        }
        if !processed.complete {
            break;
        }
    }
}

/// Runs the source until `shutdown`, then drains in-flight work, commits and
/// leaves the group.
pub async fn run(
    settings: SourceSettings,
    processor: Arc<dyn BatchProcessor>,
    health: Arc<WorkerHealth>,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    let worker = settings.worker;
    let err = |message: String| SourceError { worker, message };
    let mut cfg = base_client_config(
        &settings.kafka,
        &format!("{}-{}", settings.kafka.client_id, worker),
    );
    for (k, v) in [
        ("group.id", settings.group_id.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("partition.assignment.strategy", "cooperative-sticky"),
        (
            "auto.offset.reset",
            settings.kafka.auto_offset_reset.as_str(),
        ),
        ("enable.partition.eof", "false"),
        // librdkafka's default (1 s) idles a partition for a whole second each
        // time its fetch queue was full, i.e. whenever handling is the
        // bottleneck; a short backoff keeps a busy consumer fed.
        ("fetch.queue.backoff.ms", "20"),
    ] {
        cfg.set(k, v);
    }
    // A heartbeat at a third of the session (librdkafka's default is a fixed
    // 3 s, which cannot keep a short session alive).
    let session_ms = settings.kafka.session_timeout.as_millis();
    cfg.set(
        "heartbeat.interval.ms",
        (session_ms / 3).clamp(100, 3000).to_string(),
    );
    cfg.set(
        "session.timeout.ms",
        settings.kafka.session_timeout.as_millis().to_string(),
    )
    .set(
        "statistics.interval.ms",
        settings.kafka.statistics_interval.as_millis().to_string(),
    );
    for (k, v) in &settings.kafka.properties {
        cfg.set(k, v);
    }
    let context = SourceContext {
        worker,
        kafka: settings.kafka.clone(),
        tuning: settings.tuning.clone(),
        lanes: Mutex::new(HashMap::new()),
        topics: Mutex::new(HashMap::new()),
        processor,
        permits: Arc::new(Semaphore::new(settings.tuning.concurrency)),
        runtime: tokio::runtime::Handle::current(),
        consumer: OnceLock::new(),
        health,
        fatal: shutdown.clone(),
    };
    let consumer: SourceConsumer = cfg
        .create_with_context(context)
        .map_err(|e| err(scrub(&settings.kafka, &e.to_string())))?;
    let consumer = Arc::new(consumer);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| err(format!("subscribe to {topics:?}: {e}")))?;
    tracing::info!(worker, group = %settings.group_id, ?topics, "consumer started");

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let commit_interval = settings.kafka.commit_interval;
    let max_batch = settings.tuning.max_batch;
    std::thread::Builder::new()
        .name(format!("poll-{worker}"))
        .spawn(move || {
            poll_loop(&consumer, &shutdown, max_batch, commit_interval);
            // Leave the group here, on the poll thread: close runs the revoke callback.
            drop(consumer);
            let _ = done_tx.send(());
        })
        .map_err(|e| err(format!("cannot start the poll thread: {e}")))?;
    let _ = done_rx.await;
    tracing::info!(worker, "consumer stopped");
    Ok(())
}

fn poll_loop(
    consumer: &Arc<SourceConsumer>,
    shutdown: &CancellationToken,
    max_batch: usize,
    commit_interval: Duration,
) {
    let ctx = consumer.context().clone();
    let mut batches: HashMap<PartitionKey, Vec<Record>> = HashMap::new();
    let mut last_commit = Instant::now();
    let per_cycle = max_batch.saturating_mul(8);
    while !shutdown.is_cancelled() {
        // Backpressure: while a lane is full (and not yet paused), wait for it
        // instead of fetching more; a short park keeps the wait responsive.
        if ctx.flush_pending(consumer) {
            std::thread::park_timeout(Duration::from_millis(1));
            continue;
        }
        let mut timeout = Duration::from_millis(100);
        let mut taken = 0;
        while taken < per_cycle {
            match consumer.poll(timeout) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(worker = ctx.worker, error = %scrub(&ctx.kafka, &e.to_string()), "consume error");
                    break;
                }
                Some(Ok(m)) => {
                    taken += 1;
                    let key = (ctx.intern(m.topic()), m.partition());
                    let record = Record {
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        timestamp_ms: m.timestamp().to_millis(),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| {
                                        (h.key.to_string(), h.value.unwrap_or_default().to_vec())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    };
                    let records = batches.entry(key.clone()).or_default();
                    records.push(record);
                    if records.len() >= max_batch {
                        let records = std::mem::take(records);
                        metrics::consumed(ctx.worker, &key.0, records.len() as u64);
                        ctx.dispatch(RecordBatch {
                            topic: key.0,
                            partition: key.1,
                            records,
                        });
                    }
                }
            }
            timeout = Duration::ZERO;
        }
        for ((topic, partition), records) in batches.iter_mut() {
            if records.is_empty() {
                continue;
            }
            let records = std::mem::take(records);
            metrics::consumed(ctx.worker, topic, records.len() as u64);
            ctx.dispatch(RecordBatch {
                topic: topic.clone(),
                partition: *partition,
                records,
            });
        }
        if last_commit.elapsed() >= commit_interval {
            ctx.commit(consumer, CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    // Graceful stop: finish what is in hand, store, commit, then leave.
    ctx.stop_lanes(None);
    ctx.commit(consumer, CommitMode::Sync);
    consumer.unsubscribe();
}

/// Where each assigned partition's committed offset is, for tests and tools.
pub fn committed_offsets(
    kafka: &KafkaConfig,
    group_id: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<i64>, String> {
    let consumer: BaseConsumer = base_client_config(kafka, "taskstream-offsets")
        .set("group.id", group_id)
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect())
}
