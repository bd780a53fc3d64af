//! The aggregates worker in process, on the mock cluster, a throwaway
//! redis-server and a manual clock: two replicas count every event exactly
//! once, each window's result is published once, a late event is counted as
//! late and not added, and a restart that re-reads everything (a new group,
//! no committed offsets) adds nothing. The same again on a three-master Redis
//! Cluster (each batch's transaction in the worker's hash slot).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pipelines::config::PipelineConfig;
use pipelines::kafka::mock::MockKafka;
use pipelines::state::StateStore;
use pipelines::testing::cluster::RedisCluster;
use pipelines::testing::{read_topic, test_config, unique, RedisServer, TestProducer};
use pipelines::{Clock, Runtime, Worker};
use taskstream::aggregates::{AggregatesConfig, AggregatesWorker};
use tokio_util::sync::CancellationToken;

const TASKS: &str = "task-events";
const ANALYTICS: &str = "analytics-events";
const METRICS: &str = "task-metrics";
/// Task events, one every 5 s of event time from midnight: 20 minutes.
const N_TASK: i64 = 240;
/// Analytics events, one every 50 s.
const N_ANALYTICS: i64 = 24;
const USERS: i64 = 7;

fn midnight() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn task_event(id: &str, i: i64, at: DateTime<Utc>) -> String {
    let user = format!("u{}", i % USERS);
    if i % 2 == 0 {
        format!(
            r#"{{"event_id":"{id}","event_type":"task.created","timestamp":"{}","data":{{"task_id":{i},"user_id":"{user}","title":"t{i}","priority":"high"}}}}"#,
            ts(at)
        )
    } else {
        format!(
            r#"{{"event_id":"{id}","event_type":"task.completed","timestamp":"{}","data":{{"task_id":{i},"user_id":"{user}","completed":true,"created_at":"{}","completed_at":"{}"}}}}"#,
            ts(at),
            ts(at - chrono::Duration::minutes(10)),
            ts(at)
        )
    }
}

fn analytics_event(j: i64, at: DateTime<Utc>) -> String {
    format!(
        r#"{{"event_id":"a-{j}","event_type":"analytics.dashboard_viewed","timestamp":"{}","data":{{"user_id":"u{}"}}}}"#,
        ts(at),
        j % USERS
    )
}

struct Replica {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), pipelines::runtime::RuntimeError>>,
}

impl Replica {
    async fn start(config: PipelineConfig, clock: Clock, agg: &AggregatesConfig) -> Replica {
        let shutdown = CancellationToken::new();
        let worker: Arc<dyn Worker> = Arc::new(AggregatesWorker::new(agg).unwrap());
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

async fn counter(store: &dyn StateStore, window: &str, start: DateTime<Utc>, field: &str) -> i64 {
    store
        .hget(
            &format!("agg:w:{window}:{}", start.timestamp_millis()),
            field,
        )
        .await
        .unwrap()
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

async fn wait_for_count(
    store: &dyn StateStore,
    window: &str,
    start: DateTime<Utc>,
    expected: i64,
) -> i64 {
    let mut n = 0;
    for _ in 0..600 {
        n = counter(store, window, start, "events").await;
        if n >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n
}

/// Results on `task-metrics`, by window name and start (each list holds every
/// copy read, so a window published twice shows two).
fn results(bootstrap: &str, at_least: usize) -> BTreeMap<(String, String), Vec<serde_json::Value>> {
    let read = read_topic(bootstrap, METRICS, at_least + 1, Duration::from_secs(6)).unwrap();
    let mut out: BTreeMap<(String, String), Vec<serde_json::Value>> = BTreeMap::new();
    for m in read {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let a = v["attributes"].clone();
        assert_eq!(v["type"], "metrics.window_closed");
        assert_eq!(m.header("event-id"), v["event_id"].as_str());
        out.entry((
            a["window"].as_str().unwrap().to_string(),
            a["window_start"].as_str().unwrap().to_string(),
        ))
        .or_default()
        .push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_count_every_event_once_close_each_window_once_and_redelivery_adds_nothing() {
    let redis = RedisServer::start().unwrap();
    two_replicas_on(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_on_a_three_master_redis_cluster() {
    let cluster = RedisCluster::start().unwrap();
    two_replicas_on(&cluster.url()).await;
}

async fn two_replicas_on(redis_url: &str) {
    let mock = MockKafka::start(1).unwrap();
    mock.set_group_initial_rebalance_delay(Duration::ZERO);
    mock.create_topic(TASKS, 4).unwrap();
    mock.create_topic(ANALYTICS, 2).unwrap();
    mock.create_topic(METRICS, 1).unwrap();
    let mut config = test_config(mock.bootstrap_servers(), redis_url);
    config.kafka.session_timeout = Duration::from_secs(3);
    let agg = AggregatesConfig {
        windows: vec!["1m".into(), "1h".into()],
        // Longer than any jump of the manual clock: a close in progress
        // while time jumps is not taken over (the process test covers
        // takeovers after a crash).
        close_lease: Duration::from_secs(3600),
        ..AggregatesConfig::default()
    };
    // Processing time: noon; event time: the first 20 minutes of the day.
    let (clock, hand) = Clock::manual(midnight() + chrono::Duration::hours(12));
    let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
    let mut per_minute: HashMap<i64, i64> = HashMap::new();
    // The same input in event-time order, for `taskstream aggregate`.
    let mut in_order: Vec<(i64, String)> = Vec::new();
    for i in 0..N_TASK {
        let at = midnight() + chrono::Duration::seconds(5 * i);
        *per_minute.entry(5 * i / 60).or_default() += 1;
        in_order.push((5 * i, task_event(&format!("e-{i}"), i, at)));
        producer
            .send(
                TASKS,
                format!("task-{i}").as_bytes(),
                task_event(&format!("e-{i}"), i, at).as_bytes(),
            )
            .unwrap();
    }
    for j in 0..N_ANALYTICS {
        let at = midnight() + chrono::Duration::seconds(50 * j);
        *per_minute.entry(50 * j / 60).or_default() += 1;
        in_order.push((50 * j, analytics_event(j, at)));
        producer
            .send(
                ANALYTICS,
                format!("a-{j}").as_bytes(),
                analytics_event(j, at).as_bytes(),
            )
            .unwrap();
    }
    producer.flush().unwrap();

    let a = Replica::start(config.clone(), clock.clone(), &agg).await;
    let b = Replica::start(config.clone(), clock.clone(), &agg).await;
    // What the worker sees (on a cluster: its keys in its hash slot).
    let store = pipelines::state::slot::for_worker(
        &pipelines::state::open(&config.redis).await.unwrap(),
        config.redis.is_cluster(),
        "aggregates",
    );
    let base = N_TASK + N_ANALYTICS;
    assert_eq!(
        wait_for_count(store.as_ref(), "1h", midnight(), base).await,
        base,
        "every event counted in the hour"
    );

    // A minute and a bit later every partition is idle: the watermark is the
    // newest event (00:19:55) minus the lateness, so the minutes up to 00:18
    // close, and nothing else.
    hand.advance(Duration::from_secs(61));
    let r = {
        let mut r = BTreeMap::new();
        for _ in 0..100 {
            r = results(mock.bootstrap_servers(), 18);
            if r.len() >= 18 {
                break;
            }
        }
        r
    };
    assert_eq!(
        r.len(),
        18,
        "the minutes 00:00 to 00:17 closed: {:?}",
        r.keys()
    );
    for ((window, start), copies) in &r {
        assert_eq!(window, "1m");
        assert_eq!(copies.len(), 1, "{start} published once: {copies:?}");
        let minute = (DateTime::parse_from_rfc3339(start).unwrap().timestamp()
            - midnight().timestamp())
            / 60;
        assert_eq!(
            copies[0]["attributes"]["events"].as_i64(),
            Some(per_minute[&minute]),
            "minute {minute}"
        );
    }

    // `taskstream aggregate` over the same messages gives the same minutes.
    in_order.sort_by_key(|(t, _)| *t);
    let input: Vec<String> = in_order.into_iter().map(|(_, l)| l).collect();
    let mut out = Vec::new();
    taskstream::aggregates::cli::aggregate(
        input.join("\n").as_bytes(),
        &mut out,
        &taskstream::aggregates::window::WindowSpec::new("1m", Duration::from_secs(60)),
        60_000,
        TASKS,
    )
    .unwrap();
    let offline: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut compared = 0;
    for line in offline.iter().filter(|l| l["summary"].is_null()) {
        let key = (
            "1m".to_string(),
            line["window_start"].as_str().unwrap().to_string(),
        );
        let Some(copies) = r.get(&key) else {
            continue;
        };
        compared += 1;
        for field in [
            "events",
            "by_type",
            "tasks_created",
            "tasks_completed",
            "distinct_users",
            "completion_seconds",
        ] {
            assert_eq!(
                line[field], copies[0]["attributes"][field],
                "{key:?} {field}"
            );
        }
    }
    assert_eq!(compared, 18, "every minute the worker closed");
    assert_eq!(
        offline.last().unwrap(),
        &serde_json::json!({"summary": true, "events": base, "late": 0, "windows": 20})
    );

    // A late event (00:00:30, its minute closed) is counted as late, not
    // added to the minute; the hour is still open and takes it.
    producer
        .send(
            TASKS,
            b"late",
            task_event("late-1", 0, midnight() + chrono::Duration::seconds(30)).as_bytes(),
        )
        .unwrap();
    producer.flush().unwrap();
    assert_eq!(
        wait_for_count(store.as_ref(), "1h", midnight(), base + 1).await,
        base + 1
    );
    assert_eq!(
        counter(store.as_ref(), "1m", midnight(), "events").await,
        per_minute[&0],
        "the closed minute did not take the late event"
    );
    let late: i64 = String::from_utf8(store.get("agg:late:1m").await.unwrap().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(late, 1);

    // Restart without committed offsets: a new group re-reads every message.
    a.stop().await;
    b.stop().await;
    let mut fresh = config.clone();
    fresh.kafka.group_prefix = unique("fresh");
    let c = Replica::start(fresh, clock.clone(), &agg).await;
    // One marker per partition, after the re-read messages (00:19:5x):
    // once all are counted, every partition has been re-read.
    let mut markers = 0;
    for (topic, partitions) in [(TASKS, 4), (ANALYTICS, 2)] {
        for p in 0..partitions {
            let at = midnight() + chrono::Duration::seconds(19 * 60 + 50 + markers);
            producer
                .send_to(
                    topic,
                    Some(p),
                    b"marker",
                    task_event(&format!("marker-{topic}-{p}"), 0, at).as_bytes(),
                )
                .unwrap();
            markers += 1;
        }
    }
    producer.flush().unwrap();
    let expected = base + 1 + markers;
    assert_eq!(
        wait_for_count(store.as_ref(), "1h", midnight(), expected).await,
        expected,
        "the markers are counted"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        counter(store.as_ref(), "1h", midnight(), "events").await,
        expected,
        "re-read messages were not counted again"
    );

    // An event two hours on, on an otherwise idle worker, closes the last
    // two minutes and the hour: each once, with exact totals.
    hand.advance(Duration::from_secs(61));
    producer
        .send(
            TASKS,
            b"later",
            task_event("later-1", 0, midnight() + chrono::Duration::hours(2)).as_bytes(),
        )
        .unwrap();
    producer.flush().unwrap();
    let mut r = BTreeMap::new();
    for _ in 0..100 {
        r = results(mock.bootstrap_servers(), 21);
        if r.len() >= 21 {
            break;
        }
    }
    c.stop().await;
    assert_eq!(r.len(), 21, "the 20 minutes and the hour: {:?}", r.keys());
    assert!(
        r.values().all(|copies| copies.len() == 1),
        "each window published once"
    );
    let hour = &r[&("1h".to_string(), "2026-03-01T00:00:00Z".to_string())][0]["attributes"];
    assert_eq!(hour["events"].as_i64(), Some(expected));
    assert_eq!(
        hour["tasks_created"].as_i64(),
        Some(N_TASK / 2 + 1 + markers)
    );
    assert_eq!(hour["tasks_completed"].as_i64(), Some(N_TASK / 2));
    assert_eq!(
        hour["by_type"]["analytics.dashboard_viewed"].as_i64(),
        Some(N_ANALYTICS)
    );
    assert_eq!(hour["distinct_users"].as_i64(), Some(USERS));
    assert_eq!(
        hour["completion_seconds"]["count"].as_i64(),
        Some(N_TASK / 2)
    );
    assert_eq!(hour["completion_seconds"]["p50"].as_f64(), Some(900.0));
    let minutes: i64 = r
        .iter()
        .filter(|((w, _), _)| w == "1m")
        .map(|(_, c)| c[0]["attributes"]["events"].as_i64().unwrap())
        .sum();
    assert_eq!(
        minutes,
        base + markers,
        "the minutes hold every event but the late one"
    );
}
