//! The aggregates worker as real `taskstream run aggregates` processes: one
//! is SIGKILLed before committing its offsets, a second re-reads those
//! messages while Redis stops answering for a few seconds; every window's
//! counts still equal the input exactly and each window has one result.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use pipelines::config::RedisConfig;
use pipelines::kafka::mock::MockKafka;
use pipelines::state::StateStore;
use pipelines::testing::{free_port, read_topic, unique, RedisServer, TestProducer};

mod common;
use common::taskstream;

const N: i64 = 600;

fn midnight() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

fn event(i: i64) -> String {
    let at = (midnight() + chrono::Duration::seconds(2 * i))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let kind = if i % 3 == 0 {
        "task.completed"
    } else {
        "task.created"
    };
    format!(
        r#"{{"event_id":"p-{i}","event_type":"{kind}","timestamp":"{at}","data":{{"task_id":{i},"user_id":"u{}","title":"t"}}}}"#,
        i % 11
    )
}

struct Process {
    child: Child,
    port: u16,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bootstrap: &str, redis: &str, prefix: &str, dir: &std::path::Path) -> Process {
    let port = free_port().unwrap();
    let log = std::fs::File::create(dir.join(format!("aggregates-{port}.log"))).unwrap();
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
        // Longer than the Redis outage below: a partition with a backlog
        // must not be taken for idle.
        .env("TASKSTREAM_AGGREGATES__IDLE_TIMEOUT", "8s")
        .env("TASKSTREAM_AGGREGATES__CLOSE_LEASE", "2s")
        .env("TASKSTREAM_AGGREGATES__CHECK_INTERVAL", "500ms")
        .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Process { child, port }
}

fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
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
    let first = start(mock.bootstrap_servers(), &redis.url(), &prefix, &dir);
    assert_eq!(
        wait_for_hour(store.as_ref(), N / 2, Duration::from_secs(60)).await,
        N / 2,
        "the first process counted the first half"
    );
    drop(first); // SIGKILL
                 // Let the mock coordinator expire the dead member's session first (it
                 // stops answering the newcomer's heartbeats while both are in the group).
    tokio::time::sleep(Duration::from_secs(7)).await;

    // The second half; a new process re-reads everything while Redis stops
    // answering for four seconds.
    send(N / 2..N);
    let second = start(mock.bootstrap_servers(), &redis.url(), &prefix, &dir);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.command(&["CLIENT", "PAUSE", "4000", "ALL"]).unwrap();
    assert_eq!(
        wait_for_hour(store.as_ref(), N, Duration::from_secs(60)).await,
        N,
        "every event counted"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hour_count(store.as_ref()).await, N, "and none twice");

    // Idle after eight seconds: the watermark is 00:19:58 minus a minute, so the
    // minutes 00:00 to 00:17 close, 30 events each, one result each.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut by_window: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    while Instant::now() < deadline {
        let read = read_topic(
            mock.bootstrap_servers(),
            "task-metrics",
            100,
            Duration::from_secs(2),
        )
        .unwrap();
        by_window.clear();
        for m in read {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            by_window
                .entry(
                    v["attributes"]["window_start"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
                .or_default()
                .push((
                    v["event_id"].as_str().unwrap().to_string(),
                    v["attributes"]["events"].as_i64().unwrap(),
                ));
        }
        if by_window.len() >= 18 {
            break;
        }
    }
    assert_eq!(by_window.len(), 18, "{:?}", by_window.keys());
    for (start, copies) in &by_window {
        // A crash between publishing and forgetting the window may republish
        // it: with the same id and the same counts.
        assert!(
            copies.iter().all(|c| *c == copies[0]),
            "{start}: one result, whatever the copies: {copies:?}"
        );
        assert_eq!(copies[0].1, 30, "{start}");
    }
    let metrics = scrape(second.port).unwrap_or_default();
    assert!(
        metrics.contains("taskstream_aggregates_windows_closed_total{"),
        "the dashboard's series is served"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
