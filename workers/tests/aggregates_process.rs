//! The aggregates worker as real `taskstream run aggregates` processes: one
//! is SIGKILLed before committing its offsets, a second re-reads those
//! messages while Redis stops answering for a few seconds; every window's
//! counts still equal the input exactly and each window has one result. The
//! second serves `GET /api/stats` and every metric of the issue, with
//! project labels only for the allow-listed project (p0).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use pipelines::config::RedisConfig;
use pipelines::kafka::mock::MockKafka;
use pipelines::state::StateStore;
use pipelines::testing::{free_port, read_topic, unique, RedisServer, TestProducer};

mod common;
use common::{http_get, scrape, taskstream, Process};

const N: i64 = 600;

fn midnight() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

/// Event `i`, every 2 s from midnight: a third completions (created five
/// minutes earlier), in projects `p0`..`p2` by `i % 3`.
fn event(i: i64) -> String {
    let t = midnight() + chrono::Duration::seconds(2 * i);
    let at = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let created =
        (t - chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let kind = if i % 3 == 0 {
        "task.completed"
    } else {
        "task.created"
    };
    format!(
        r#"{{"event_id":"p-{i}","event_type":"{kind}","timestamp":"{at}","data":{{"task_id":{i},"user_id":"u{}","title":"t","project_id":"p{}","created_at":"{created}"}}}}"#,
        i % 11,
        i % 3
    )
}

fn start(bootstrap: &str, redis: &str, prefix: &str, dir: &std::path::Path) -> (Process, u16) {
    let port = free_port().unwrap();
    let log_path = dir.join(format!("aggregates-{port}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let child = taskstream()
        .args(["run", "aggregates"])
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("REDIS_URL", redis)
        .env("TASKSTREAM_REDIS__KEY_PREFIX", prefix)
        .env("TASKSTREAM_REDIS__RESPONSE_TIMEOUT", "300ms")
        .env("TASKSTREAM_REDIS__CONNECT_TIMEOUT", "300ms")
        .env(
            "TASKSTREAM_KAFKA__GROUP_PREFIX",
            prefix.trim_end_matches(':'),
        )
        .env("TASKSTREAM_KAFKA__SESSION_TIMEOUT", "6s")
        // Nothing is committed before the SIGKILL: everything is re-read.
        .env("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "60s")
        .env("TASKSTREAM_AGGREGATES__WINDOWS", "[\"1m\", \"1h\"]")
        // Far longer than the Redis outage below and than a loaded machine's
        // slowest first fetch after an assignment: a partition with a backlog
        // must not be taken for idle (that would close windows without it).
        .env("TASKSTREAM_AGGREGATES__IDLE_TIMEOUT", "20s")
        .env("TASKSTREAM_AGGREGATES__CLOSE_LEASE", "2s")
        .env("TASKSTREAM_AGGREGATES__CHECK_INTERVAL", "500ms")
        .env("TASKSTREAM_AGGREGATES__PROJECTS", "[\"p0\"]")
        .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (Process::logged(child, log_path), port)
}

async fn hour_count(store: &dyn StateStore) -> i64 {
    store
        .hget(
            &format!("agg:w:1h:{}", midnight().timestamp_millis()),
            "events",
        )
        .await
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

async fn wait_for_hour(store: &dyn StateStore, expected: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = hour_count(store).await;
        if n >= expected || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart_and_a_redis_outage_count_every_event_once() {
    let mock = MockKafka::start(1).unwrap();
    mock.set_group_initial_rebalance_delay(Duration::ZERO);
    mock.create_topic("task-events", 3).unwrap();
    mock.create_topic("analytics-events", 1).unwrap();
    mock.create_topic("task-metrics", 1).unwrap();
    let redis = RedisServer::start().unwrap();
    let prefix = format!("{}:", unique("agg"));
    let dir = std::env::temp_dir().join(unique("aggregates-process"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = pipelines::state::open(&RedisConfig {
        url: redis.url(),
        key_prefix: prefix.clone(),
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
    let send = |range: std::ops::Range<i64>| {
        for i in range {
            producer
                .send(
                    "task-events",
                    format!("task-{i}").as_bytes(),
                    event(i).as_bytes(),
                )
                .unwrap();
        }
        producer.flush().unwrap();
    };

    // The first half, handled by a process that is then SIGKILLed before
    // any offset commit.
    send(0..N / 2);
    let (first, _) = start(mock.bootstrap_servers(), &redis.url(), &prefix, &dir);
    assert_eq!(
        wait_for_hour(store.as_ref(), N / 2, Duration::from_secs(60)).await,
        N / 2,
        "the first process counted the first half"
    );
    first.kill();
    // Let the mock coordinator expire the dead member's session first (it
    // stops answering the newcomer's heartbeats while both are in the group).
    tokio::time::sleep(Duration::from_secs(7)).await;

    // The second half; a new process re-reads everything while Redis stops
    // answering for four seconds.
    send(N / 2..N);
    let (second, port) = start(mock.bootstrap_servers(), &redis.url(), &prefix, &dir);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.command(&["CLIENT", "PAUSE", "4000", "ALL"]).unwrap();
    assert_eq!(
        wait_for_hour(store.as_ref(), N, Duration::from_secs(60)).await,
        N,
        "every event counted"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hour_count(store.as_ref()).await, N, "and none twice");

    // Idle after twenty seconds: the watermark is 00:19:58 minus a minute, so
    // the minutes 00:00 to 00:17 close, 30 events each, one result each,
    // and one per type (2), project (3) and priority (1) each.
    let deadline = Instant::now() + Duration::from_secs(60);
    // (start, dimension, key) -> every copy's (id, events).
    type Copies = BTreeMap<(String, Option<String>, Option<String>), Vec<(String, i64)>>;
    let mut results: Copies = BTreeMap::new();
    let totals = |r: &Copies| r.keys().filter(|(_, d, _)| d.is_none()).count();
    while Instant::now() < deadline {
        let read = read_topic(
            mock.bootstrap_servers(),
            "task-metrics",
            usize::MAX,
            Duration::from_secs(2),
        )
        .unwrap();
        results.clear();
        for m in read {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let a = &v["attributes"];
            let s = |f: &str| a[f].as_str().map(str::to_string);
            results
                .entry((s("window_start").unwrap(), s("dimension"), s("key")))
                .or_default()
                .push((
                    v["event_id"].as_str().unwrap().to_string(),
                    a["events"].as_i64().unwrap(),
                ));
        }
        if totals(&results) >= 18 && results.len() >= 18 * 7 {
            break;
        }
    }
    assert_eq!(totals(&results), 18, "{:?}", results.keys());
    assert_eq!(results.len(), 18 * 7, "{:?}", results.keys());
    for ((start, dimension, key), copies) in &results {
        // A crash between publishing and forgetting the window may republish
        // it: with the same id and the same counts.
        assert!(
            copies.iter().all(|c| *c == copies[0]),
            "{start} {dimension:?} {key:?}: one result, whatever the copies: {copies:?}"
        );
        let expected = match (dimension.as_deref(), key.as_deref()) {
            (None, _) => 30,
            (Some("type"), Some("task.completed")) => 10,
            (Some("type"), _) => 20,
            (Some("project"), _) => 10,
            _ => 30,
        };
        assert_eq!(copies[0].1, expected, "{start} {dimension:?} {key:?}");
    }

    // The stats API: the last closed minute (00:17) and the open ones
    // (00:18, 00:19), per project; 30 events a minute, 10 per project.
    // (The last close records itself just after publishing: poll briefly.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let stats = loop {
        let (status, body) = http_get(port, "/api/stats?window=1m&dimension=project").unwrap();
        assert_eq!(status, 200, "{body}");
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        if stats["last_closed"][0]["window_start"] == "2026-03-01T00:17:00Z"
            || Instant::now() > deadline
        {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stats["window"], "1m");
    let lines = |field: &str| -> Vec<(String, String, i64)> {
        stats[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                assert_eq!(l["dimension"], "project");
                (
                    l["window_start"].as_str().unwrap().to_string(),
                    l["key"].as_str().unwrap().to_string(),
                    l["events"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let project_lines = |minute: &str| {
        ["p0", "p1", "p2"]
            .iter()
            .map(|p| (format!("2026-03-01T00:{minute}:00Z"), p.to_string(), 10))
            .collect::<Vec<_>>()
    };
    assert_eq!(lines("last_closed"), project_lines("17"));
    assert_eq!(
        lines("open"),
        [project_lines("18"), project_lines("19")].concat()
    );
    let (status, body) = http_get(port, "/api/stats?window=1h").unwrap();
    assert_eq!(status, 200, "{body}");
    let hour: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hour["open"][0]["events"], N, "{hour}");
    assert_eq!(hour["open"][0]["dimension"], serde_json::Value::Null);
    assert_eq!(hour["last_closed"], serde_json::json!([]));
    for (query, named) in [
        ("window=5m", "window has value \"5m\""),
        ("dimension=colour", "dimension has value \"colour\""),
    ] {
        let (status, body) = http_get(port, &format!("/api/stats?{query}")).unwrap();
        assert_eq!(status, 400, "{query}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"].as_str().unwrap().starts_with(named),
            "{query}: {body}"
        );
    }

    // A late event (minute 00:00 closed long ago): counted late, not added.
    producer
        .send(
            "task-events",
            b"late",
            event(15).replace("p-15", "late-1").as_bytes(),
        )
        .unwrap();
    producer.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrape(
        port,
        "taskstream_aggregates_late_events_total",
        "window=\"1m\"",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "the late event is counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every metric of the issue is served; project labels only for the
    // allow-listed p0, the others are "other".
    for (metric, filter) in [
        ("taskstream_aggregates_events_total", "project=\"p0\""),
        ("taskstream_aggregates_events_total", "project=\"other\""),
        (
            "taskstream_aggregates_tasks_completed_total",
            "project=\"p0\"",
        ),
        (
            "taskstream_aggregates_completion_duration_seconds_count",
            "",
        ),
        ("taskstream_aggregates_active_users", "window=\"1m\""),
        ("taskstream_aggregates_window_events", "window=\"1m\""),
        ("taskstream_aggregates_late_events_total", "window=\"1m\""),
        (
            "taskstream_aggregates_windows_closed_total",
            "window=\"1m\"",
        ),
    ] {
        assert!(scrape(port, metric, filter) > 0.0, "{metric} {filter}");
    }
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(
        !metrics.contains("project=\"p1\"") && !metrics.contains("project=\"p2\""),
        "projects off the allow-list have no label of their own"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
