//! The pipeline's second stage end to end, on the mock cluster and throwaway
//! redis-servers: partition-scoped timers across rebalances (with a manual
//! clock), failover errors that must never dead-letter, an oversized output
//! that must not block its partition, and readiness that stays down for a
//! whole outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use pipelines::config::PipelineConfig;
use pipelines::kafka::mock::MockKafka;
use pipelines::testing::{
    eventually, free_port, read_topic, test_config, RedisServer, TestProducer,
};
use pipelines::{
    derive_event_id, Clock, Ctx, Inbound, Outcome, OutputEvent, Runtime, Timer, TimerOwner,
    TimerScope, Worker, WorkerError,
};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "alarms";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

/// What every replica of the test worker records, shared by the test.
#[derive(Default)]
struct Log {
    /// Alarm id → times fired, across every replica.
    fired: Mutex<HashMap<String, u32>>,
    /// Replica → alarms it fired.
    by_replica: Mutex<HashMap<&'static str, u32>>,
    /// (sequence, replica, "assigned" | "revoked", partition).
    hooks: Mutex<Vec<(u64, &'static str, &'static str, i32)>>,
    seq: AtomicU64,
}

impl Log {
    fn fired_total(&self) -> usize {
        self.fired.lock().unwrap().len()
    }
    fn hook(&self, replica: &'static str, what: &'static str, partition: i32) {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        self.hooks
            .lock()
            .unwrap()
            .push((n, replica, what, partition));
    }
    fn owns(&self, replica: &'static str) -> usize {
        let hooks = self.hooks.lock().unwrap();
        let mut owned: HashMap<i32, bool> = HashMap::new();
        for (_, _, what, p) in hooks.iter().filter(|h| h.1 == replica) {
            owned.insert(*p, *what == "assigned");
        }
        owned.values().filter(|v| **v).count()
    }
}

/// Schedules an alarm per event (due at the event's `due_date`) in its
/// partition's sorted set; the partition's timer fires the due ones.
struct Alarms {
    replica: &'static str,
    log: Arc<Log>,
}

fn shard(topic: &str, partition: i32) -> String {
    format!("alarms:{topic}:{partition}")
}

#[async_trait]
impl Worker for Alarms {
    fn name(&self) -> &'static str {
        "alarms"
    }
    fn topics(&self, _c: &PipelineConfig) -> Vec<String> {
        vec![TOPIC.to_string()]
    }
    fn timer_scope(&self) -> TimerScope {
        TimerScope::Partition
    }
    async fn handle(&self, e: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let due = e
            .event
            .task
            .as_ref()
            .and_then(|t| t.due_at)
            .ok_or_else(|| WorkerError::permanent("due_date missing"))?;
        let key = shard(&e.source.topic, e.source.partition);
        ctx.state()
            .zadd(&key, &e.event.event_id, due.timestamp_millis() as f64)
            .await?;
        ctx.wake_timer_at(&e.source, due);
        Ok(Outcome::Done)
    }
    async fn on_assigned(&self, _t: &str, partition: i32, _c: &Ctx) -> Result<(), WorkerError> {
        self.log.hook(self.replica, "assigned", partition);
        Ok(())
    }
    async fn on_revoked(&self, _t: &str, partition: i32, _c: &Ctx) {
        self.log.hook(self.replica, "revoked", partition);
    }
    async fn tick(&self, timer: &Timer, ctx: &Ctx) -> Result<Option<DateTime<Utc>>, WorkerError> {
        let TimerOwner::Partition { topic, partition } = &timer.owner else {
            return Err(WorkerError::permanent("partition timer expected"));
        };
        let key = shard(topic, *partition);
        loop {
            let now = ctx.now().timestamp_millis() as f64;
            let lease_until = now + 600_000.0;
            let due = ctx.state().zclaim_due(&key, now, lease_until, 50).await?;
            if due.is_empty() {
                break;
            }
            for d in due {
                *self
                    .log
                    .fired
                    .lock()
                    .unwrap()
                    .entry(d.member.clone())
                    .or_default() += 1;
                *self
                    .log
                    .by_replica
                    .lock()
                    .unwrap()
                    .entry(self.replica)
                    .or_default() += 1;
                ctx.state()
                    .zrem_if_score(&key, &d.member, lease_until)
                    .await?;
            }
            if timer.stop.is_cancelled() {
                break;
            }
        }
        Ok(ctx
            .state()
            .zfirst(&key)
            .await?
            .and_then(|s| DateTime::from_timestamp_millis(s.score as i64)))
    }
}

fn alarm_event(i: u64, due: DateTime<Utc>) -> String {
    format!(
        r#"{{"event_id":"alarm-{i}","event_type":"task.updated","timestamp":"2026-02-28T10:00:00Z","data":{{"task_id":{i},"due_date":"{}"}}}}"#,
        due.to_rfc3339()
    )
}

struct Replica {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), pipelines::runtime::RuntimeError>>,
}

impl Replica {
    async fn start(config: PipelineConfig, clock: Clock, worker: Arc<dyn Worker>) -> Replica {
        let shutdown = CancellationToken::new();
        let rt = Runtime::new(config, shutdown.clone())
            .await
            .unwrap()
            .with_clock(clock);
        let task = tokio::spawn(async move { rt.run(vec![worker]).await });
        Replica { shutdown, task }
    }
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(40), self.task)
            .await
            .expect("replica stops")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_timers_fire_each_due_item_once_while_a_third_replica_joins_and_leaves() {
    let mock = MockKafka::start(1).unwrap();
    mock.set_group_initial_rebalance_delay(Duration::ZERO);
    mock.create_topic(TOPIC, 4).unwrap();
    let redis = RedisServer::start().unwrap();
    let mut config = test_config(mock.bootstrap_servers(), &redis.url());
    config.kafka.session_timeout = Duration::from_secs(3);
    let (clock, hand) = Clock::manual(t0());
    let log = Arc::new(Log::default());
    let replica = |name: &'static str| -> Arc<dyn Worker> {
        Arc::new(Alarms {
            replica: name,
            log: log.clone(),
        })
    };

    // 200 alarms over the next 24 hours of (manual) time.
    let due = |i: u64| t0() + chrono::Duration::minutes(7 * i as i64 + 1);
    let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
    for i in 0..200 {
        producer
            .send(
                TOPIC,
                format!("task-{i}").as_bytes(),
                alarm_event(i, due(i)).as_bytes(),
            )
            .unwrap();
    }
    producer.flush().unwrap();

    let a = Replica::start(config.clone(), clock.clone(), replica("a")).await;
    let b = Replica::start(config.clone(), clock.clone(), replica("b")).await;
    assert!(
        eventually(Duration::from_secs(30), || log.owns("a") + log.owns("b")
            == 4)
        .await,
        "a and b own the 4 partitions"
    );
    let store = pipelines::state::open(&config.redis).await.unwrap();
    let mut scheduled = 0;
    for _ in 0..300 {
        scheduled = 0;
        for p in 0..4 {
            scheduled += store.zcard(&shard(TOPIC, p)).await.unwrap();
        }
        if scheduled == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(scheduled, 200, "every alarm scheduled");
    assert_eq!(log.fired_total(), 0, "nothing is due before time moves");

    let mut c = None;
    for hour in 1..=25u64 {
        hand.advance(Duration::from_secs(3600));
        let now = clock.now();
        let expected = (0..200).filter(|i| due(*i) <= now).count();
        assert!(
            eventually(Duration::from_secs(20), || log.fired_total() == expected).await,
            "hour {hour}: {} of {expected} due alarms fired",
            log.fired_total()
        );
        if hour == 6 {
            // A third replica joins; time keeps moving during the rebalance.
            c = Some(Replica::start(config.clone(), clock.clone(), replica("c")).await);
        }
        if hour == 12 {
            assert!(
                eventually(Duration::from_secs(30), || log.owns("c") > 0).await,
                "c was given partitions"
            );
        }
        if hour == 16 {
            c.take().unwrap().stop().await;
        }
    }
    a.stop().await;
    b.stop().await;

    let fired = log.fired.lock().unwrap().clone();
    assert_eq!(fired.len(), 200, "every alarm fired");
    let twice: Vec<_> = fired.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "fired more than once: {twice:?}");
    assert!(
        log.by_replica
            .lock()
            .unwrap()
            .get("c")
            .copied()
            .unwrap_or(0)
            > 0,
        "the joining replica fired its partitions' alarms"
    );
    // A partition is revoked from its old owner before the new owner's
    // `on_assigned` runs.
    let hooks = log.hooks.lock().unwrap().clone();
    for (seq, replica, what, p) in &hooks {
        if *what != "assigned" {
            continue;
        }
        let previous_owner = hooks
            .iter()
            .rev()
            .find(|h| h.0 < *seq && h.3 == *p && h.2 == "assigned" && h.1 != *replica);
        if let Some(prev) = previous_owner {
            let revoked = hooks.iter().any(|h| {
                h.0 > prev.0 && h.0 < *seq && h.1 == prev.1 && h.3 == *p && h.2 == "revoked"
            });
            assert!(
                revoked,
                "partition {p} reached {replica} before {} let go: {hooks:?}",
                prev.1
            );
        }
    }
}

/// Records handled ids; publishes one output per event (a huge one for
/// ids starting with `huge`).
struct Publisher {
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl Worker for Publisher {
    fn name(&self) -> &'static str {
        "publisher"
    }
    fn topics(&self, _c: &PipelineConfig) -> Vec<String> {
        vec![TOPIC.to_string()]
    }
    async fn handle(&self, e: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let mut out = e.event.clone();
        out.event_id = derive_event_id(&[&e.event.event_id, "echo"]);
        out.kind = "task.echoed".into();
        if e.event.event_id.starts_with("huge") {
            out.attributes
                .insert("blob".into(), "x".repeat(2_000_000).into());
        }
        ctx.publish_event(&OutputEvent::new(
            "echoes",
            e.event.task_id.clone().unwrap_or_default(),
            out,
        ))
        .await?;
        self.seen.lock().unwrap().push(e.event.event_id.clone());
        Ok(Outcome::Done)
    }
}

fn plain_event(id: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"task.created","timestamp":"2026-02-08T10:30:00Z","data":{{"task_id":1,"title":"t"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_output_is_dead_lettered_and_its_partition_moves_on() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic(TOPIC, 1).unwrap();
    mock.create_topic("echoes", 1).unwrap();
    let redis = RedisServer::start().unwrap();
    let config = test_config(mock.bootstrap_servers(), &redis.url());
    let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
    for id in ["before", "huge-1", "after"] {
        producer
            .send(TOPIC, b"task-1", plain_event(id).as_bytes())
            .unwrap();
    }
    producer.flush().unwrap();
    let worker = Arc::new(Publisher {
        seen: Mutex::new(Vec::new()),
    });
    let run = Replica::start(config.clone(), Clock::System, worker.clone()).await;
    assert!(
        eventually(Duration::from_secs(30), || worker
            .seen
            .lock()
            .unwrap()
            .len()
            == 2)
        .await,
        "the partition went on past the oversized output: {:?}",
        worker.seen.lock().unwrap()
    );
    assert_eq!(*worker.seen.lock().unwrap(), vec!["before", "after"]);
    let dead = read_topic(
        mock.bootstrap_servers(),
        &format!("{TOPIC}.dlq"),
        1,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("error-class"), Some("permanent"));
    assert!(dead[0]
        .header("error")
        .unwrap_or_default()
        .contains("TooLarge"));
    let echoes = read_topic(
        mock.bootstrap_servers(),
        "echoes",
        2,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(echoes.len(), 2);
    assert_eq!(
        echoes[0].header("event-id"),
        Some(derive_event_id(&["before", "echo"]).as_str()),
        "output ids derive from their cause"
    );
    run.stop().await;
}

/// Counts handled events; its handling writes to the state store.
#[derive(Default)]
struct Counter {
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl Worker for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn topics(&self, _c: &PipelineConfig) -> Vec<String> {
        vec![TOPIC.to_string()]
    }
    async fn handle(&self, e: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        ctx.apply_for(
            e,
            vec![pipelines::state::StateOp::IncrBy {
                key: "handled".into(),
                by: 1,
                ttl: None,
            }],
        )
        .await?;
        self.seen.lock().unwrap().push(e.event.event_id.clone());
        Ok(Outcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_failover_is_waited_for_and_never_dead_letters() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic(TOPIC, 2).unwrap();
    let redis = RedisServer::start().unwrap();
    let primary = RedisServer::start().unwrap();
    let config = test_config(mock.bootstrap_servers(), &redis.url());
    let worker = Arc::new(Counter::default());
    let run = Replica::start(config.clone(), Clock::System, worker.clone()).await;
    let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
    for i in 0..20 {
        producer
            .send(
                TOPIC,
                format!("k{i}").as_bytes(),
                plain_event(&format!("a-{i}")).as_bytes(),
            )
            .unwrap();
    }
    producer.flush().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || worker
            .seen
            .lock()
            .unwrap()
            .len()
            == 20)
        .await
    );

    // Our Redis becomes a read-only replica of another: writes answer READONLY.
    assert_eq!(
        redis
            .command(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()])
            .unwrap(),
        "OK"
    );
    let store = pipelines::state::open(&config.redis).await.unwrap();
    let refused = store.set("probe", b"1", None).await;
    assert!(
        matches!(refused, Err(pipelines::state::StateError::Unavailable(_))),
        "READONLY is classified as unavailable: {refused:?}"
    );
    for i in 0..20 {
        producer
            .send(
                TOPIC,
                format!("k{i}").as_bytes(),
                plain_event(&format!("b-{i}")).as_bytes(),
            )
            .unwrap();
    }
    producer.flush().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        worker.seen.lock().unwrap().len(),
        20,
        "nothing handled while read-only"
    );

    // Promoted back: everything is handled, once, and nothing was dead-lettered.
    assert_eq!(redis.command(&["REPLICAOF", "NO", "ONE"]).unwrap(), "OK");
    assert!(
        eventually(Duration::from_secs(40), || worker
            .seen
            .lock()
            .unwrap()
            .len()
            == 40)
        .await,
        "handled after the failover: {}",
        worker.seen.lock().unwrap().len()
    );
    run.stop().await;
    let dead = read_topic(
        mock.bootstrap_servers(),
        &format!("{TOPIC}.dlq"),
        1,
        Duration::from_secs(3),
    )
    .unwrap();
    assert!(
        dead.is_empty(),
        "a failover never dead-letters: {} dead letters",
        dead.len()
    );
}

async fn readyz(port: u16) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_stays_not_ready_for_a_whole_redis_outage() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic(TOPIC, 1).unwrap();
    let mut redis = RedisServer::start().unwrap();
    let mut config = test_config(mock.bootstrap_servers(), &redis.url());
    let port = free_port().unwrap();
    config.metrics.addr = format!("127.0.0.1:{port}");
    let shutdown = CancellationToken::new();
    let rt = Runtime::new(config, shutdown.clone()).await.unwrap();
    let http = rt.serve_http();
    let worker = Arc::new(Counter::default());
    let rt2 = rt.clone();
    let task = tokio::spawn(async move { rt2.run(vec![worker]).await });

    let mut ready = false;
    for _ in 0..150 {
        if readyz(port).await == Some(200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "ready before the outage");

    redis.stop();
    let mut down = false;
    for _ in 0..20 {
        if readyz(port).await == Some(503) {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(down, "not ready within 4 s of the outage");
    // Every sample of a 10-second outage says not ready.
    let mut samples = Vec::new();
    for _ in 0..40 {
        samples.push(readyz(port).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        samples.iter().all(|s| *s == Some(503)),
        "readiness flapped during the outage: {samples:?}"
    );

    redis.restart().unwrap();
    let mut back = false;
    for _ in 0..100 {
        if readyz(port).await == Some(200) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "ready again once Redis is back");
    shutdown.cancel();
    task.await.unwrap().unwrap();
    if let Some(h) = http {
        let _ = h.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_its_topic_is_sent_truncated() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic(TOPIC, 1).unwrap();
    let redis = RedisServer::start().unwrap();
    let mut config = test_config(mock.bootstrap_servers(), &redis.url());
    // Our producer accepts less than the broker delivered to us.
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "100000".into());
    let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
    let garbage = vec![b'#'; 300_000];
    producer.send(TOPIC, b"task-1", &garbage).unwrap();
    producer
        .send(TOPIC, b"task-1", plain_event("next").as_bytes())
        .unwrap();
    producer.flush().unwrap();
    let worker = Arc::new(Counter::default());
    let run = Replica::start(config, Clock::System, worker.clone()).await;
    assert!(
        eventually(Duration::from_secs(30), || worker
            .seen
            .lock()
            .unwrap()
            .len()
            == 1)
        .await,
        "the partition moved on past the oversized dead letter"
    );
    let dead = read_topic(
        mock.bootstrap_servers(),
        &format!("{TOPIC}.dlq"),
        1,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("truncated"), Some("300000"));
    assert_eq!(dead[0].payload.len(), pipelines::dlq::TRUNCATED_PAYLOAD);
    assert!(dead[0]
        .header("error-class")
        .unwrap_or_default()
        .starts_with("decode"));
    run.stop().await;
}

/// Wakes its partition's timer on every event and takes its time over the
/// first; its tick records whether a batch was being handled while it
/// claimed (between batches, as real timers claim).
#[derive(Default)]
struct SlowPlanner {
    handled: AtomicU64,
    in_batch: std::sync::atomic::AtomicBool,
    /// Per tick: (a batch was being handled, events handled so far).
    ticks: Mutex<Vec<(bool, u64)>>,
}

#[async_trait]
impl Worker for SlowPlanner {
    fn name(&self) -> &'static str {
        "slow-planner"
    }
    fn topics(&self, _c: &PipelineConfig) -> Vec<String> {
        vec![TOPIC.to_string()]
    }
    fn timer_scope(&self) -> TimerScope {
        TimerScope::Partition
    }
    async fn handle(&self, e: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let n = self.handled.fetch_add(1, Ordering::SeqCst) + 1;
        // Work already due: the timer is woken to run at once.
        ctx.wake_timer_at(&e.source, t0());
        if n == 1 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(Outcome::Done)
    }
    async fn handle_batch(&self, events: &[Inbound], ctx: &Ctx) -> pipelines::BatchOutcome {
        self.in_batch.store(true, Ordering::SeqCst);
        let mut outcomes = Vec::new();
        for e in events {
            outcomes.push(self.handle(e, ctx).await.expect("handled"));
        }
        self.in_batch.store(false, Ordering::SeqCst);
        pipelines::BatchOutcome {
            outcomes,
            failure: None,
        }
    }
    async fn tick(&self, timer: &Timer, _ctx: &Ctx) -> Result<Option<DateTime<Utc>>, WorkerError> {
        let Some(_between) = timer.between_batches().await else {
            return Ok(None);
        };
        let seen = (
            self.in_batch.load(Ordering::SeqCst),
            self.handled.load(Ordering::SeqCst),
        );
        self.ticks.lock().unwrap().push(seen);
        Ok(None)
    }
}

/// A partition's timer claims between its batches: woken by the first
/// event of a batch, it claims after the batch (a task's creation and the
/// update that moves it, say), never half-way through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_timer_woken_mid_batch_claims_after_the_batch() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic(TOPIC, 1).unwrap();
    let config = test_config(mock.bootstrap_servers(), "memory:");
    let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
    for id in ["created", "updated"] {
        producer
            .send(TOPIC, b"task-1", plain_event(id).as_bytes())
            .unwrap();
    }
    producer.flush().unwrap();
    let worker = Arc::new(SlowPlanner::default());
    let run = Replica::start(config, Clock::System, worker.clone()).await;
    assert!(
        eventually(Duration::from_secs(30), || worker
            .ticks
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.1 == 2))
        .await,
        "ticks saw {:?}",
        worker.ticks.lock().unwrap()
    );
    run.stop().await;
    let ticks = worker.ticks.lock().unwrap().clone();
    assert!(
        ticks.iter().all(|(in_batch, _)| !in_batch),
        "a tick claimed while a batch was handled: {ticks:?}"
    );
}
