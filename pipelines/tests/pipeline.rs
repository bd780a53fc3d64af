//! End-to-end behaviour of the pipeline on librdkafka's mock cluster and a
//! throwaway redis-server: idempotency across redelivery, dead letters,
//! retries, Redis outages, ordering and graceful shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pipelines::config::PipelineConfig;
use pipelines::kafka::mock::MockKafka;
use pipelines::kafka::source::committed_offsets;
use pipelines::testing::{eventually, read_topic, test_config, RedisServer, TestProducer};
use pipelines::{Ctx, Inbound, Outcome, Runtime, Worker, WorkerError};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "task-events";

/// A worker whose side effect is recording the event id; can be told to fail.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
    started: AtomicUsize,
    permanent: HashSet<String>,
    retryable: Mutex<HashMap<String, u32>>,
    delay: Duration,
}

impl Recorder {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[async_trait]
impl Worker for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn topics(&self, _c: &PipelineConfig) -> Vec<String> {
        vec![TOPIC.to_string()]
    }
    async fn handle(&self, e: &Inbound, _ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let id = e.event.event_id.clone();
        if self.permanent.contains(&id) {
            return Err(WorkerError::permanent(format!(
                "task {id} has an impossible rule"
            )));
        }
        if let Some(left) = self.retryable.lock().unwrap().get_mut(&id) {
            if *left > 0 {
                *left -= 1;
                return Err(WorkerError::retryable("smtp relay said 451, try later"));
            }
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.seen.lock().unwrap().push(id);
        Ok(Outcome::Done)
    }
}

fn event(id: &str, task: u64) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"task.created","timestamp":"2026-02-08T10:30:00Z","version":"1.0","data":{{"task_id":{task},"user_id":"user-1","title":"t{task}"}}}}"#
    )
}

struct Env {
    mock: MockKafka,
    redis: RedisServer,
}

impl Env {
    fn new(partitions: i32) -> Env {
        let mock = MockKafka::start(1).unwrap();
        mock.create_topic(TOPIC, partitions).unwrap();
        Env {
            mock,
            redis: RedisServer::start().unwrap(),
        }
    }
    fn bootstrap(&self) -> String {
        self.mock.bootstrap_servers().to_string()
    }
    fn config(&self) -> PipelineConfig {
        test_config(&self.bootstrap(), &self.redis.url())
    }
    fn produce(&self, msgs: &[(Option<i32>, String, String)]) {
        let p = TestProducer::new(&self.bootstrap()).unwrap();
        for (partition, key, payload) in msgs {
            p.send_to(TOPIC, *partition, key.as_bytes(), payload.as_bytes())
                .unwrap();
        }
        p.flush().unwrap();
    }
}

struct Running {
    rt: Runtime,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), pipelines::runtime::RuntimeError>>,
}

async fn start(config: PipelineConfig, worker: Arc<dyn Worker>) -> Running {
    let shutdown = CancellationToken::new();
    let rt = Runtime::new(config, shutdown.clone()).await.unwrap();
    let rt2 = rt.clone();
    let task = tokio::spawn(async move { rt2.run(vec![worker]).await });
    Running { rt, shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("runtime stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

/// `config` with the recorder in a new consumer group: every message is
/// delivered again, as after a crash before the commit, while the
/// idempotency keys remain.
fn replay_group(config: &PipelineConfig) -> PipelineConfig {
    let mut again = config.clone();
    again.workers.insert(
        "recorder".into(),
        pipelines::config::WorkerOverrides {
            group_id: Some(format!("{}-replay", config.group_id("recorder"))),
            ..Default::default()
        },
    );
    again
}

/// Runs `worker` in [`replay_group`] (three partitions) until all `total`
/// messages are consumed and committed again, then stops it.
async fn redeliver_all(config: &PipelineConfig, worker: Arc<dyn Worker>, total: i64) {
    let again = replay_group(config);
    let run = start(again.clone(), worker).await;
    assert!(
        eventually(Duration::from_secs(30), || committed_total(&again, 3)
            == total)
        .await,
        "the redelivered messages are consumed and committed"
    );
    run.stop().await;
}

fn committed_total(config: &PipelineConfig, partitions: i32) -> i64 {
    committed_offsets(
        &config.kafka,
        &config.group_id("recorder"),
        TOPIC,
        partitions,
    )
    .unwrap()
    .into_iter()
    .map(|o| o.max(0))
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_events_do_not_repeat_side_effects() {
    let env = Env::new(3);
    let msgs: Vec<_> = (0..300)
        .map(|i| (None, format!("k{}", i % 17), event(&format!("e-{i}"), i)))
        .collect();
    env.produce(&msgs);
    let config = env.config();

    let first = Arc::new(Recorder::default());
    let run = start(config.clone(), first.clone()).await;
    assert!(eventually(Duration::from_secs(30), || first.count() == 300).await);
    run.stop().await;
    assert_eq!(
        committed_total(&config, 3),
        300,
        "every offset committed on shutdown"
    );

    // Every message delivered again, as after a crash before the commit: a new
    // consumer group reads from the start, but the idempotency keys remain.
    let second = Arc::new(Recorder::default());
    redeliver_all(&config, second.clone(), 300).await;
    assert_eq!(
        second.count(),
        0,
        "no side effect repeated: {:?}",
        second.seen()
    );
    let unique: HashSet<_> = first.seen().into_iter().collect();
    assert_eq!(unique.len(), 300, "each event handled exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_one_key_are_handled_in_order() {
    let env = Env::new(3);
    let msgs: Vec<_> = (0..400)
        .map(|i| (None, "same-task".to_string(), event(&format!("o-{i}"), 7)))
        .collect();
    env.produce(&msgs);
    let rec = Arc::new(Recorder::default());
    let run = start(env.config(), rec.clone()).await;
    assert!(eventually(Duration::from_secs(30), || rec.count() == 400).await);
    run.stop().await;
    let expected: Vec<String> = (0..400).map(|i| format!("o-{i}")).collect();
    assert_eq!(rec.seen(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_goes_to_dlq_with_headers_and_partition_continues() {
    let env = Env::new(1);
    let msgs = vec![
        (Some(0), "a".into(), event("good-1", 1)),
        (
            Some(0),
            "a".into(),
            r#"{"event_type": "task_created", "data": {"task_id": 9"#.to_string(),
        ),
        (Some(0), "a".into(), event("good-2", 2)),
        (Some(0), "a".into(), event("bad-rule", 3)),
        (Some(0), "a".into(), event("good-3", 4)),
    ];
    env.produce(&msgs);
    let rec = Arc::new(Recorder {
        permanent: ["bad-rule".to_string()].into_iter().collect(),
        ..Default::default()
    });
    let config = env.config();
    let run = start(config.clone(), rec.clone()).await;
    assert!(eventually(Duration::from_secs(30), || rec.count() == 3).await);
    assert_eq!(rec.seen(), vec!["good-1", "good-2", "good-3"]);

    let bootstrap = env.bootstrap();
    let dead = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, "task-events.dlq", 2, Duration::from_secs(20)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 2, "both unusable messages dead-lettered");
    let poison = &dead[0];
    assert_eq!(poison.payload, msgs[1].2.as_bytes(), "original bytes kept");
    assert_eq!(poison.key.as_deref(), Some(&b"a"[..]));
    assert_eq!(poison.header("worker"), Some("recorder"));
    assert_eq!(poison.header("original-topic"), Some(TOPIC));
    assert_eq!(poison.header("original-partition"), Some("0"));
    assert_eq!(poison.header("original-offset"), Some("1"));
    assert_eq!(poison.header("attempts"), Some("1"));
    assert_eq!(poison.header("error-class"), Some("decode:not_json"));
    assert!(
        poison.header("error").unwrap().contains("line 1"),
        "{:?}",
        poison.header("error")
    );
    assert!(poison.header("first-failure-at").unwrap().ends_with('Z'));
    let rule = &dead[1];
    assert_eq!(rule.header("original-offset"), Some("3"));
    assert_eq!(rule.header("error-class"), Some("permanent"));
    assert!(rule.header("error").unwrap().contains("impossible rule"));

    assert!(eventually(Duration::from_secs(10), || committed_total(&config, 1) == 5).await);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_back_off_then_dead_letter_after_last_attempt() {
    let env = Env::new(1);
    env.produce(&[
        (Some(0), "k".into(), event("flaky", 1)),
        (Some(0), "k".into(), event("broken", 2)),
        (Some(0), "k".into(), event("after", 3)),
    ]);
    let rec = Arc::new(Recorder {
        retryable: Mutex::new([("flaky".to_string(), 2), ("broken".to_string(), 99)].into()),
        ..Default::default()
    });
    let run = start(env.config(), rec.clone()).await;
    assert!(eventually(Duration::from_secs(30), || rec.count() == 2).await);
    assert_eq!(
        rec.seen(),
        vec!["flaky", "after"],
        "flaky succeeded on its third attempt"
    );
    let bootstrap = env.bootstrap();
    let dead = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, "task-events.dlq", 1, Duration::from_secs(20)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("attempts"), Some("3"), "max_attempts = 3");
    assert_eq!(dead[0].header("error-class"), Some("retries_exhausted"));
    assert_eq!(dead[0].header("original-offset"), Some("1"));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_pauses_consumption_and_resumes_without_loss() {
    let mut env = Env::new(2);
    let batch = |from: u64| -> Vec<(Option<i32>, String, String)> {
        (from..from + 100)
            .map(|i| (None, format!("k{i}"), event(&format!("r-{i}"), i)))
            .collect()
    };
    env.produce(&batch(0));
    let rec = Arc::new(Recorder::default());
    let run = start(env.config(), rec.clone()).await;
    assert!(eventually(Duration::from_secs(30), || rec.count() == 100).await);
    assert!(eventually(Duration::from_secs(10), || run.rt.health.all_ready()).await);

    env.redis.stop();
    env.produce(&batch(100));
    assert!(
        eventually(Duration::from_secs(10), || !run.rt.health.all_ready()).await,
        "not ready while Redis is down"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rec.count(),
        100,
        "nothing handled without the idempotency guard"
    );

    env.redis.restart().unwrap();
    assert!(
        eventually(Duration::from_secs(40), || rec.count() == 200).await,
        "resumed after Redis came back: {} handled",
        rec.count()
    );
    assert!(eventually(Duration::from_secs(10), || run.rt.health.all_ready()).await);
    run.stop().await;
    let unique: HashSet<_> = rec.seen().into_iter().collect();
    assert_eq!(unique.len(), 200, "no loss, no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_work_and_commits() {
    let env = Env::new(1);
    let msgs: Vec<_> = (0..30)
        .map(|i| (Some(0), "k".to_string(), event(&format!("s-{i}"), i)))
        .collect();
    env.produce(&msgs);
    let mut config = env.config();
    config.pipeline.max_batch = 5;
    // No periodic commit: what is committed must come from the shutdown path.
    config.kafka.commit_interval = Duration::from_secs(3600);
    let rec = Arc::new(Recorder {
        delay: Duration::from_millis(100),
        ..Default::default()
    });
    let run = start(config.clone(), rec.clone()).await;
    assert!(eventually(Duration::from_secs(30), || rec.count() >= 3).await);
    run.stop().await;
    let started = rec.started.load(Ordering::SeqCst);
    let done = rec.count();
    assert_eq!(started, done, "every event that started was finished");
    assert!(done < 30, "stopped before the end ({done})");
    assert_eq!(
        committed_total(&config, 1),
        done as i64,
        "the committed offset is exactly past the finished events"
    );

    let rest = Arc::new(Recorder::default());
    let run = start(config.clone(), rest.clone()).await;
    assert!(eventually(Duration::from_secs(30), || rest.count() == 30 - done).await);
    run.stop().await;
    let mut all = rec.seen();
    all.extend(rest.seen());
    let expected: Vec<String> = (0..30).map(|i| format!("s-{i}")).collect();
    assert_eq!(
        all, expected,
        "the restart continues exactly where the drain stopped"
    );
}

#[tokio::test]
async fn redis_store_passes_the_conformance_suite() {
    let redis = RedisServer::start().unwrap();
    let mut cfg = pipelines::config::RedisConfig {
        url: redis.url(),
        ..Default::default()
    };
    cfg.key_prefix = "{conf}:".into();
    let store = pipelines::state::RedisStore::connect(&cfg).await.unwrap();
    pipelines::state::conformance::run_all(&store).await;
    // One node can always tell whether a prefix has keys (a cluster cannot).
    use pipelines::state::StateStore;
    store.set("idem:w:1", b"done", None).await.unwrap();
    assert_eq!(
        store.any_key_with_prefix("idem:w:", 1_000).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        store.any_key_with_prefix("idem:v:", 1_000).await.unwrap(),
        Some(false)
    );
}

#[tokio::test]
async fn redis_store_over_tls_passes_the_conformance_suite() {
    let redis = RedisServer::start_tls().unwrap();
    let cfg = pipelines::config::RedisConfig {
        url: redis.tls_url().unwrap(),
        key_prefix: "{tls}:".into(),
        ..Default::default()
    };
    let store = pipelines::state::RedisStore::connect(&cfg).await.unwrap();
    pipelines::state::conformance::run_all(&store).await;
}

#[test]
fn sasl_ssl_scram_configuration_is_accepted_by_the_kafka_client() {
    let mut kafka = pipelines::config::KafkaConfig {
        bootstrap_servers: "broker.example.invalid:9096".into(),
        ..Default::default()
    };
    for (k, v) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", "taskstream"),
        ("sasl.password", "hunter2-very-secret"),
    ] {
        kafka.properties.insert(k.into(), v.into());
    }
    // librdkafka rejects SASL_SSL/SCRAM at creation when built without them.
    let publisher = pipelines::kafka::sink::Publisher::new(&kafka, "sasl-test");
    assert!(publisher.is_ok(), "{:?}", publisher.err());
    let shown = format!(
        "{:?}",
        PipelineConfig {
            kafka: kafka.clone(),
            ..Default::default()
        }
        .redacted()
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("********"));
    assert_eq!(
        pipelines::kafka::scrub(&kafka, "auth failed for password hunter2-very-secret"),
        "auth failed for password ********"
    );
}

/// A worker that acts only on events whose id starts with `e-`, and says so
/// through `needs_claim`.
#[derive(Default)]
struct Picky {
    inner: Recorder,
    passed_by: AtomicUsize,
}

#[async_trait]
impl Worker for Picky {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn topics(&self, _c: &PipelineConfig) -> Vec<String> {
        vec![TOPIC.to_string()]
    }
    fn needs_claim(&self, e: &pipelines::TaskEvent) -> bool {
        e.event_id.starts_with("e-")
    }
    async fn handle(&self, e: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        if !self.needs_claim(&e.event) {
            self.passed_by.fetch_add(1, Ordering::SeqCst);
            return Ok(Outcome::Skipped);
        }
        self.inner.handle(e, ctx).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_worker_passes_by_are_not_claimed_and_the_others_still_once() {
    let env = Env::new(3);
    // Interleaved, so batches mix claimed and unclaimed events.
    let msgs: Vec<_> = (0..200)
        .map(|i| {
            let id = if i % 2 == 0 {
                format!("e-{i}")
            } else {
                format!("skip-{i}")
            };
            (None, format!("k{}", i % 17), event(&id, i))
        })
        .collect();
    env.produce(&msgs);
    let config = env.config();

    let first = Arc::new(Picky::default());
    let run = start(config.clone(), first.clone()).await;
    assert!(
        eventually(Duration::from_secs(30), || committed_total(&config, 3)
            == 200)
        .await,
        "every event consumed and committed"
    );
    run.stop().await;
    assert_eq!(first.inner.count(), 100);
    assert_eq!(first.passed_by.load(Ordering::SeqCst), 100);

    let client = redis::Client::open(env.redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    // Claims are fields of the worker's generation hashes.
    let hashes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}idem-gen:*", config.redis.key_prefix))
        .query_async(&mut con)
        .await
        .unwrap();
    let mut keys: Vec<String> = Vec::new();
    for h in &hashes {
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(h)
            .query_async(&mut con)
            .await
            .unwrap();
        keys.extend(fields);
    }
    let claimed = |prefix: &str| keys.iter().filter(|id| id.starts_with(prefix)).count();
    assert_eq!(claimed("e-"), 100, "each acted-on event claimed: {keys:?}");
    assert_eq!(claimed("skip-"), 0, "no passed-by event claimed: {keys:?}");

    // Redelivered: the acted-on events are still recognised.
    let second = Arc::new(Picky::default());
    redeliver_all(&config, second.clone(), 200).await;
    assert_eq!(second.inner.count(), 0, "no side effect repeated");
    assert_eq!(second.passed_by.load(Ordering::SeqCst), 100);
}
