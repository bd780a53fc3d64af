//! The deadlines worker end to end: the real binary (`taskstream run
//! deadlines`) on the mock Kafka cluster and a throwaway redis-server, on
//! the wall clock. Redelivery of every event after a SIGKILL, a replacement
//! process announcing what comes due after the kill, and Redis going away
//! and coming back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use pipelines::event::{decode, DecodeContext, Dialect};
use pipelines::kafka::mock::MockKafka;
use pipelines::testing::{free_port, read_topic, unique, ReadMessage, RedisServer, TestProducer};
use pipelines::{derive_event_id, TaskEvent};

mod common;
use common::{scrape, taskstream, Process};

const INPUT: &str = "task-events";
const OUTPUT: &str = "deadlines-out";

struct Setup {
    mock: MockKafka,
    redis: RedisServer,
    group: String,
    logs: PathBuf,
    producer: TestProducer,
}

impl Setup {
    fn new() -> Setup {
        let mock = MockKafka::start(1).unwrap();
        mock.set_group_initial_rebalance_delay(Duration::ZERO);
        for topic in [INPUT, OUTPUT, "task-events.dlq"] {
            mock.create_topic(topic, 3).unwrap();
        }
        let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
        let logs = std::env::temp_dir().join(unique("deadlines-logs"));
        std::fs::create_dir_all(&logs).unwrap();
        Setup {
            mock,
            redis: RedisServer::start().unwrap(),
            group: unique("deadlines-e2e"),
            logs,
            producer,
        }
    }

    fn run(&self, name: &str, port: u16, env: &[(&str, &str)]) -> Process {
        let log_path = self.logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut c = taskstream();
        c.args(["run", "deadlines"])
            .env("KAFKA_BOOTSTRAP_SERVERS", self.mock.bootstrap_servers())
            .env("REDIS_URL", self.redis.url())
            .env("TASKSTREAM_KAFKA__GROUP_PREFIX", &self.group)
            .env("TASKSTREAM_KAFKA__SESSION_TIMEOUT", "6s")
            .env("TASKSTREAM_RETRY__MAX_BACKOFF", "500ms")
            .env("TASKSTREAM_REDIS__RESPONSE_TIMEOUT", "300ms")
            .env("TASKSTREAM_REDIS__CONNECT_TIMEOUT", "300ms")
            .env("TASKSTREAM_DEADLINES__OUTPUT_TOPIC", OUTPUT)
            .env("TASKSTREAM_DEADLINES__CLAIM_LEASE", "5s")
            .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info");
        for (k, v) in env {
            c.env(k, v);
        }
        Process::logged(
            c.stdout(Stdio::null()).stderr(log).spawn().unwrap(),
            log_path,
        )
    }

    fn send(&self, key: &str, payload: &str) {
        self.producer
            .send(INPUT, key.as_bytes(), payload.as_bytes())
            .unwrap();
        self.producer.flush().unwrap();
    }

    fn read(&self, topic: &str, expected: usize, timeout: Duration) -> Vec<ReadMessage> {
        read_topic(self.mock.bootstrap_servers(), topic, expected, timeout).unwrap()
    }
}

fn wait_for(what: &str, p: &Process, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn decoded(m: &ReadMessage) -> TaskEvent {
    decode(
        &m.payload,
        &DecodeContext {
            topic: OUTPUT,
            kafka_timestamp_ms: None,
        },
    )
    .expect("the worker's output decodes")
}

fn created(task: &str, due: DateTime<Utc>) -> String {
    format!(
        r#"{{"event_id":"c-{task}","event_type":"task.created","timestamp":"2026-11-20T10:00:00Z","data":{{"task_id":"{task}","user_id":"owner","title":"Task {task}","assignee_id":"bob","due_date":"{}"}}}}"#,
        rfc(due)
    )
}

/// Event ids by count, and the time each was first read.
fn by_id(out: &[ReadMessage]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in out.iter().map(decoded) {
        *m.entry(e.event_id).or_default() += 1;
    }
    m
}

#[test]
fn each_crossing_is_announced_once_across_redelivery_and_a_sigkilled_replica() {
    let s = Setup::new();
    // Due seconds from now, truncated to whole seconds (ids carry the due time).
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let at = |secs: i64| now + chrono::Duration::seconds(secs);
    // Wave 1: already overdue (overdue at once) and due soon (1h at once).
    // Wave 2: overdue 25 s from now, after the first process is killed.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for i in 0..10 {
        let task = format!("past-{i}");
        s.send(&task, &created(&task, at(-3600)));
        expected.insert(derive_event_id(&[&task, "overdue", &rfc(at(-3600))]));
    }
    for i in 0..20 {
        let task = format!("soon-{i}");
        s.send(&task, &created(&task, at(25)));
        expected.insert(derive_event_id(&[&task, "1h", &rfc(at(25))]));
        expected.insert(derive_event_id(&[&task, "overdue", &rfc(at(25))]));
    }
    // Completed before its due time: its 1h goes out at once, its overdue never.
    s.send("done-1", &created("done-1", at(25)));
    expected.insert(derive_event_id(&["done-1", "1h", &rfc(at(25))]));

    // Nothing is committed: every event is delivered again to the next process.
    let no_commit = [("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "1h")];
    let port = free_port().unwrap();
    let p = s.run("1", port, &no_commit);
    wait_for("wave 1 announced", &p, Duration::from_secs(30), || {
        scrape(port, "taskstream_deadlines_events_total", "") >= 31.0
    });
    s.send(
        "done-1",
        r#"{"event_id":"x-done-1","event_type":"task.completed","timestamp":"2026-11-21T10:00:00Z","data":{"task_id":"done-1"}}"#,
    );
    wait_for(
        "the completion handled",
        &p,
        Duration::from_secs(30),
        || scrape(port, "taskstream_messages_handled_total", "outcome=\"ok\"") >= 32.0,
    );
    let wave1 = s.read(OUTPUT, 31, Duration::from_secs(20));
    assert_eq!(wave1.len(), 31, "log:\n{}", p.log());
    let e = decoded(&wave1[0]);
    assert_eq!(e.dialect, Dialect::Canonical);
    assert!(e.kind == "deadline.overdue" || e.kind == "deadline.approaching");
    assert_eq!(e.task.as_ref().unwrap().assignee_id.as_deref(), Some("bob"));
    assert_eq!(e.user_id.as_deref(), Some("owner"));
    p.kill();

    // A replacement: every event redelivered (the guard makes them
    // duplicates), and wave 2 announced by it, on time, once.
    let port = free_port().unwrap();
    let p = s.run("2", port, &no_commit);
    let mut out = Vec::new();
    wait_for("wave 2 announced", &p, Duration::from_secs(60), || {
        out = s.read(OUTPUT, expected.len(), Duration::from_secs(1));
        out.len() >= expected.len()
    });
    let announced_at = Utc::now();
    assert!(
        announced_at < at(25) + chrono::Duration::seconds(15),
        "no gap: wave 2 (due {}) announced by {announced_at}",
        at(25)
    );
    std::thread::sleep(Duration::from_secs(3));
    let out = s.read(OUTPUT, expected.len() + 1, Duration::from_secs(3));
    let ids = by_id(&out);
    assert_eq!(
        ids.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "exactly the expected announcements; log:\n{}",
        p.log()
    );
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "announced twice: {twice:?}");
    assert!(
        scrape(
            port,
            "taskstream_messages_handled_total",
            "outcome=\"duplicate\""
        ) >= 32.0,
        "the redelivered events were recognised"
    );
    assert!(s
        .read("task-events.dlq", 1, Duration::from_secs(1))
        .is_empty());
}

#[test]
fn redis_away_means_waiting_not_ready_and_nothing_lost() {
    let mut s = Setup::new();
    let port = free_port().unwrap();
    let p = s.run("1", port, &[("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "200ms")]);
    wait_for("ready", &p, Duration::from_secs(60), || {
        scrape(port, "taskstream_ready", "worker=\"deadlines\"") >= 1.0
            && scrape(
                port,
                "taskstream_assigned_partitions",
                "worker=\"deadlines\"",
            ) >= 1.0
    });
    s.redis.stop();
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let due = now - chrono::Duration::hours(2);
    for i in 0..8 {
        s.send(&format!("r-{i}"), &created(&format!("r-{i}"), due));
    }
    wait_for("not ready", &p, Duration::from_secs(30), || {
        scrape(port, "taskstream_ready", "worker=\"deadlines\"") == 0.0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(s.read(OUTPUT, 1, Duration::from_secs(2)).is_empty());
    assert!(s
        .read("task-events.dlq", 1, Duration::from_secs(1))
        .is_empty());
    s.redis.restart().unwrap();
    let out = s.read(OUTPUT, 8, Duration::from_secs(60));
    assert_eq!(out.len(), 8, "log:\n{}", p.log());
    let want: BTreeSet<String> = (0..8)
        .map(|i| derive_event_id(&[&format!("r-{i}"), "overdue", &rfc(due)]))
        .collect();
    assert_eq!(by_id(&out).keys().cloned().collect::<BTreeSet<_>>(), want);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.read(OUTPUT, 9, Duration::from_secs(2)).len(), 8);
    assert!(s
        .read("task-events.dlq", 1, Duration::from_secs(1))
        .is_empty());
}

#[test]
fn a_sigkilled_replicas_partitions_are_announced_by_the_survivor_on_time_once() {
    let s = Setup::new();
    let fast_commit = [("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "200ms")];
    let (port_a, port_b) = (free_port().unwrap(), free_port().unwrap());
    let a = s.run("a", port_a, &fast_commit);
    let b = s.run("b", port_b, &fast_commit);
    let owns = |port: u16| {
        scrape(
            port,
            "taskstream_assigned_partitions",
            "worker=\"deadlines\"",
        )
    };
    wait_for(
        "both replicas own partitions",
        &a,
        Duration::from_secs(60),
        || owns(port_a) >= 1.0 && owns(port_b) >= 1.0 && owns(port_a) + owns(port_b) == 3.0,
    );
    // 60 tasks on every partition, due 20 s from now (their 1h at once).
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let due = now + chrono::Duration::seconds(20);
    let mut expected = BTreeSet::new();
    for i in 0..60 {
        let task = format!("k-{i}");
        s.send(&task, &created(&task, due));
        expected.insert(derive_event_id(&[&task, "1h", &rfc(due)]));
        expected.insert(derive_event_id(&[&task, "overdue", &rfc(due)]));
    }
    wait_for("the 1h announcements", &a, Duration::from_secs(30), || {
        s.read(OUTPUT, 60, Duration::from_secs(1)).len() >= 60
    });
    // Kill the replica with the most partitions, before the due time.
    let (victim, survivor, survivor_port) = if owns(port_a) >= owns(port_b) {
        (a, b, port_b)
    } else {
        (b, a, port_a)
    };
    victim.kill();
    let mut out = Vec::new();
    wait_for(
        "every overdue, by the survivor",
        &survivor,
        Duration::from_secs(60),
        || {
            out = s.read(OUTPUT, expected.len(), Duration::from_secs(1));
            out.len() >= expected.len()
        },
    );
    let finished = Utc::now();
    assert!(
        finished < due + chrono::Duration::seconds(15),
        "no gap: due {due}, all announced by {finished}"
    );
    assert_eq!(
        owns(survivor_port),
        3.0,
        "the survivor took every partition"
    );
    std::thread::sleep(Duration::from_secs(3));
    let out = s.read(OUTPUT, expected.len() + 1, Duration::from_secs(3));
    let ids = by_id(&out);
    assert_eq!(ids.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "announced twice: {twice:?}");
}
