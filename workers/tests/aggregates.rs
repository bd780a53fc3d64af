//! The aggregates worker in process, on the mock cluster, a throwaway
//! redis-server and a manual clock: two replicas count every event exactly
//! once (out-of-order ones within the lateness in their own window), each
//! window's results (over every event and per type, project and priority)
//! are published once and equal `taskstream aggregate`'s over the same
//! input, a late event is counted as late and not added, and a restart that
//! re-reads everything (a new group, no committed offsets) adds nothing. The
//! same again on a three-master Redis Cluster (each batch's atomic update in
//! the worker's hash slot). A window closed while a resumed partition writes
//! to it takes nothing more.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pipelines::config::PipelineConfig;
use pipelines::kafka::mock::MockKafka;
use pipelines::state::StateStore;
use pipelines::testing::cluster::RedisCluster;
use pipelines::testing::{read_topic, test_config, unique, RedisServer, TestProducer};
use pipelines::{Clock, Ctx, Runtime, Worker};
use taskstream::aggregates::{AggregatesConfig, AggregatesWorker};
use tokio_util::sync::CancellationToken;

mod common;

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

/// Projects `p0`..`p2`, and none for every fifth task.
fn project(i: i64) -> String {
    if i % 5 == 4 {
        String::new()
    } else {
        format!(r#","project_id":"p{}""#, i % 3)
    }
}

fn task_event(id: &str, i: i64, at: DateTime<Utc>) -> String {
    let user = format!("u{}", i % USERS);
    let project = project(i);
    if i % 2 == 0 {
        format!(
            r#"{{"event_id":"{id}","event_type":"task.created","timestamp":"{}","data":{{"task_id":{i},"user_id":"{user}","title":"t{i}","priority":"high"{project}}}}}"#,
            ts(at)
        )
    } else {
        format!(
            r#"{{"event_id":"{id}","event_type":"task.completed","timestamp":"{}","data":{{"task_id":{i},"user_id":"{user}","completed":true,"priority":"low","created_at":"{}","completed_at":"{}"{project}}}}}"#,
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

/// A result's identity: window, start, dimension and key (both null for
/// the result over every event).
type Line = (String, String, Option<String>, Option<String>);

fn line_of(a: &serde_json::Value) -> Line {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    (
        s(&a["window"]).unwrap(),
        s(&a["window_start"]).unwrap(),
        s(&a["dimension"]),
        s(&a["key"]),
    )
}

/// Results on `task-metrics` (each list holds every copy read, so a result
/// published twice shows two), read until the topic has been quiet.
fn results(bootstrap: &str) -> BTreeMap<Line, Vec<serde_json::Value>> {
    let read = read_topic(bootstrap, METRICS, usize::MAX, Duration::from_secs(4)).unwrap();
    let mut out: BTreeMap<Line, Vec<serde_json::Value>> = BTreeMap::new();
    for m in read {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["type"], "metrics.window_closed");
        assert_eq!(m.header("event-id"), v["event_id"].as_str());
        out.entry(line_of(&v["attributes"])).or_default().push(v);
    }
    out
}

/// The results over every event, by window and start.
fn totals(
    r: &BTreeMap<Line, Vec<serde_json::Value>>,
) -> BTreeMap<(String, String), Vec<serde_json::Value>> {
    r.iter()
        .filter(|((_, _, d, _), _)| d.is_none())
        .map(|((w, s, _, _), c)| ((w.clone(), s.clone()), c.clone()))
        .collect()
}

/// Waits for at least `n` windows' results.
fn wait_for_windows(bootstrap: &str, n: usize) -> BTreeMap<Line, Vec<serde_json::Value>> {
    let mut r = BTreeMap::new();
    for _ in 0..60 {
        r = results(bootstrap);
        if totals(&r).len() >= n {
            // A window's per-key results are published with its total.
            return results(bootstrap);
        }
    }
    r
}

/// `taskstream aggregate --window 1m [--dimension D]` over `input`.
fn offline(input: &str, dimension: Option<&str>) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut cmd = common::taskstream();
    cmd.args(["aggregate", "--window", "1m", "--lateness", "1m"]);
    if let Some(d) = dimension {
        cmd.args(["--dimension", d]);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "taskstream aggregate failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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
    let mut ooo = 0;
    for i in 0..N_TASK {
        let at = midnight() + chrono::Duration::seconds(5 * i);
        *per_minute.entry(5 * i / 60).or_default() += 1;
        in_order.push((5 * i, task_event(&format!("e-{i}"), i, at)));
        let partition = Some((i % 4) as i32);
        producer
            .send_to(
                TASKS,
                partition,
                format!("task-{i}").as_bytes(),
                task_event(&format!("e-{i}"), i, at).as_bytes(),
            )
            .unwrap();
        if i % 12 == 11 {
            // Out of order on its partition, 55 s behind its newest event:
            // within the lateness, it lands in its own (earlier) minute.
            let t = 5 * i - 55;
            let e = task_event(
                &format!("ooo-{i}"),
                i + 1000,
                midnight() + chrono::Duration::seconds(t),
            );
            *per_minute.entry(t / 60).or_default() += 1;
            in_order.push((t, e.clone()));
            producer
                .send_to(
                    TASKS,
                    partition,
                    format!("ooo-{i}").as_bytes(),
                    e.as_bytes(),
                )
                .unwrap();
            ooo += 1;
        }
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
    let base = N_TASK + N_ANALYTICS + ooo;
    assert_eq!(
        wait_for_count(store.as_ref(), "1h", midnight(), base).await,
        base,
        "every event counted in the hour"
    );

    // A minute and a bit later every partition is idle: the watermark is the
    // newest event (00:19:55) minus the lateness, so the minutes up to 00:18
    // close, and nothing else.
    hand.advance(Duration::from_secs(61));
    let all = wait_for_windows(mock.bootstrap_servers(), 18);
    let r = totals(&all);
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
    // One result per minute, dimension and key, each once; the keys of a
    // dimension add up to the minute.
    for ((window, start, dimension, key), copies) in &all {
        assert_eq!(
            copies.len(),
            1,
            "{window} {start} {dimension:?} {key:?} published once"
        );
        assert!(r.contains_key(&(window.clone(), start.clone())));
    }
    for (window, start) in r.keys() {
        for d in ["type", "project", "priority"] {
            let sum: i64 = all
                .iter()
                .filter(|((w, s, dd, _), _)| w == window && s == start && dd.as_deref() == Some(d))
                .map(|(_, c)| c[0]["attributes"]["events"].as_i64().unwrap())
                .sum();
            assert_eq!(
                sum,
                r[&(window.clone(), start.clone())][0]["attributes"]["events"]
                    .as_i64()
                    .unwrap(),
                "{start} {d}"
            );
        }
    }
    let first = |d: &str, k: &str| {
        all[&(
            "1m".to_string(),
            "2026-03-01T00:00:00Z".to_string(),
            Some(d.to_string()),
            Some(k.to_string()),
        )][0]["attributes"]
            .clone()
    };
    // Minute 0: tasks 0..11 (p0: 0, 3, 6; p1: 1, 7, 10; p2: 2, 5, 8, 11;
    // none: 4, 9), the out-of-order completion of task 1011 (p0, low) and
    // the analytics events at 00:00:00 and 00:00:50 (no project).
    assert_eq!(first("project", "p0")["events"], 4);
    assert_eq!(first("project", "p2")["events"], 4);
    assert_eq!(first("project", "(none)")["events"], 4);
    assert_eq!(first("priority", "high")["events"], 6);
    assert_eq!(first("priority", "none")["events"], 2);
    assert_eq!(first("priority", "low")["events"], 7);
    assert_eq!(first("type", "task.completed")["tasks_completed"], 7);
    assert_eq!(first("type", "analytics.dashboard_viewed")["events"], 2);

    // `taskstream aggregate` over the same messages gives the same results.
    in_order.sort_by_key(|(t, _)| *t);
    let input: Vec<String> = in_order.into_iter().map(|(_, l)| l).collect();
    let input = input.join("\n");
    let mut compared = 0;
    for dimension in [None, Some("type"), Some("project"), Some("priority")] {
        let lines = offline(&input, dimension);
        let (summary, lines) = lines.split_last().unwrap();
        assert_eq!(
            summary,
            &serde_json::json!({"summary": true, "events": base, "late": 0, "windows": 20})
        );
        for line in lines {
            let Some(copies) = all.get(&line_of(line)) else {
                continue;
            };
            compared += 1;
            for field in [
                "events",
                "by_type",
                "by_priority",
                "tasks_created",
                "tasks_completed",
                "distinct_users",
                "completion_seconds",
            ] {
                assert_eq!(
                    line[field],
                    copies[0]["attributes"][field],
                    "{:?} {field}",
                    line_of(line)
                );
            }
        }
    }
    assert_eq!(compared, all.len(), "every result the worker published");

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
    let all = wait_for_windows(mock.bootstrap_servers(), 21);
    let r = totals(&all);
    c.stop().await;
    assert_eq!(r.len(), 21, "the 20 minutes and the hour: {:?}", r.keys());
    assert!(
        all.values().all(|copies| copies.len() == 1),
        "each result published once"
    );
    let hour = &r[&("1h".to_string(), "2026-03-01T00:00:00Z".to_string())][0]["attributes"];
    assert_eq!(hour["events"].as_i64(), Some(expected));
    assert_eq!(
        hour["tasks_created"].as_i64(),
        Some(N_TASK / 2 + 1 + markers)
    );
    assert_eq!(hour["tasks_completed"].as_i64(), Some(N_TASK / 2 + ooo));
    assert_eq!(
        hour["by_type"]["analytics.dashboard_viewed"].as_i64(),
        Some(N_ANALYTICS)
    );
    assert_eq!(hour["distinct_users"].as_i64(), Some(USERS));
    assert_eq!(
        hour["completion_seconds"]["count"].as_i64(),
        Some(N_TASK / 2 + ooo)
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

fn inbound(line: &str, partition: i32, offset: i64) -> pipelines::Inbound {
    let ctx = pipelines::event::DecodeContext {
        topic: TASKS,
        kafka_timestamp_ms: None,
    };
    pipelines::Inbound {
        event: pipelines::event::decode(line.as_bytes(), &ctx).unwrap(),
        source: pipelines::Source {
            topic: Arc::from(TASKS),
            partition,
            offset,
            timestamp_ms: None,
            received_at: Utc::now(),
        },
    }
}

/// The race of a partition resuming after being idle: the windows it writes
/// to may be being closed (their close claimed by a replica whose watermark
/// left the idle partition out). The write is conditional on the window's
/// close mark, in the same atomic step: a claimed window takes nothing
/// more, and the events count as late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_claimed_for_closing_takes_no_more_events_they_count_as_late() {
    let redis = RedisServer::start().unwrap();
    let config = test_config("127.0.0.1:9", &redis.url());
    let store = pipelines::state::open(&config.redis).await.unwrap();
    let (clock, _hand) = Clock::manual(midnight() + chrono::Duration::hours(12));
    let ctx = Ctx::new("aggregates", store.clone(), None, Arc::new(config)).with_clock(clock);
    let agg = AggregatesConfig {
        windows: vec!["1m".into(), "1h".into()],
        ..AggregatesConfig::default()
    };
    let worker = AggregatesWorker::new(&agg).unwrap();
    let at = |s: i64| midnight() + chrono::Duration::seconds(s);
    let ok = |o: pipelines::BatchOutcome| assert!(o.failure.is_none(), "{:?}", o.failure);

    // Partition 0 counts an event of minute 0.
    ok(worker
        .handle_batch(&[inbound(&task_event("r-1", 0, at(10)), 0, 0)], &ctx)
        .await);
    assert_eq!(counter(store.as_ref(), "1m", midnight(), "events").await, 1);
    // A replica claims minute 0's close (its watermark passed the minute)...
    assert!(store
        .set_nx(
            &format!("agg:closed:1m:{}", midnight().timestamp_millis()),
            b"0",
            None
        )
        .await
        .unwrap());
    // ...while partition 1, idle so far, resumes with events of minute 0
    // and minute 1: this replica has not seen the close.
    ok(worker
        .handle_batch(
            &[
                inbound(&task_event("r-2", 2, at(20)), 1, 0),
                inbound(&task_event("r-3", 4, at(70)), 1, 1),
            ],
            &ctx,
        )
        .await);
    assert_eq!(
        counter(store.as_ref(), "1m", midnight(), "events").await,
        1,
        "the claimed minute took nothing more"
    );
    assert_eq!(
        counter(store.as_ref(), "1m", midnight(), "type|events|task.created").await,
        1,
        "nor did its per-key counters"
    );
    let late = || async {
        store
            .get("agg:late:1m")
            .await
            .unwrap()
            .and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok())
    };
    assert_eq!(late().await, Some(1), "the event counts as late");
    assert_eq!(counter(store.as_ref(), "1m", at(60), "events").await, 1);
    assert_eq!(
        counter(store.as_ref(), "1h", midnight(), "events").await,
        3,
        "the open hour took every event"
    );
    // The replica now knows the minute is closed: the next event for it is
    // refused before it is written.
    ok(worker
        .handle_batch(&[inbound(&task_event("r-4", 6, at(30)), 1, 2)], &ctx)
        .await);
    assert_eq!(late().await, Some(2));
    assert_eq!(counter(store.as_ref(), "1m", midnight(), "events").await, 1);
    assert_eq!(counter(store.as_ref(), "1h", midnight(), "events").await, 4);
}

/// Distinct users are a Redis HyperLogLog: 0.81 % standard error
/// (documented in the README); exact for small windows. Three standard
/// errors bound a large window's count.
#[tokio::test]
async fn distinct_users_stay_within_the_documented_error() {
    let redis = RedisServer::start().unwrap();
    let config = test_config("127.0.0.1:9", &redis.url());
    let store = pipelines::state::open(&config.redis).await.unwrap();
    for (n, tolerance) in [(7u64, 0.0), (300, 0.0), (50_000, 3.0 * 0.0081)] {
        let key = format!("hll:{n}");
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            store
                .apply(&[pipelines::state::StateOp::DistinctAdd {
                    key: key.clone(),
                    members: chunk.iter().map(|i| format!("user-{i}")).collect(),
                }])
                .await
                .unwrap();
        }
        let counted = store.distinct_count(&[key]).await.unwrap();
        let error = (counted as f64 - n as f64).abs() / n as f64;
        assert!(
            error <= tolerance,
            "{n} users counted as {counted}: error {error}"
        );
    }
}
