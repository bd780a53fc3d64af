//! The recurring worker end to end: the real binary (`taskstream run
//! recurring`) on the mock Kafka cluster and a throwaway redis-server.
//!
//! Due times are in 2027, so "the next occurrence still in the future" is the
//! one right after the completed occurrence whatever day the tests run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pipelines::event::{decode, DecodeContext, Dialect};
use pipelines::kafka::mock::MockKafka;
use pipelines::testing::{free_port, read_topic, unique, ReadMessage, RedisServer, TestProducer};
use pipelines::TaskEvent;

mod common;
use common::{scrape, taskstream, Process};

const INPUT: &str = "task-events";
const OUTPUT: &str = "recurring-out";

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
        for topic in [INPUT, OUTPUT, "task-events.dlq", "user-events"] {
            mock.create_topic(topic, 3).unwrap();
        }
        let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
        let logs = std::env::temp_dir().join(unique("recurring-logs"));
        std::fs::create_dir_all(&logs).unwrap();
        Setup {
            mock,
            redis: RedisServer::start().unwrap(),
            group: unique("recurring-e2e"),
            logs,
            producer,
        }
    }

    fn bootstrap(&self) -> String {
        self.mock.bootstrap_servers().to_string()
    }

    /// `taskstream run recurring`; `env` adds or overrides settings.
    fn run(&self, name: &str, port: u16, env: &[(&str, &str)]) -> Process {
        let log_path = self.logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut c = taskstream();
        c.args(["run", "recurring"])
            .env("KAFKA_BOOTSTRAP_SERVERS", self.bootstrap())
            .env("REDIS_URL", self.redis.url())
            .env("TASKSTREAM_KAFKA__GROUP_PREFIX", &self.group)
            .env("TASKSTREAM_KAFKA__SESSION_TIMEOUT", "6s")
            .env("TASKSTREAM_RETRY__MAX_BACKOFF", "500ms")
            .env("TASKSTREAM_RECURRING__OUTPUT_TOPIC", OUTPUT)
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

    fn send(&self, partition: Option<i32>, key: &str, payload: &str) {
        self.producer
            .send_to(INPUT, partition, key.as_bytes(), payload.as_bytes())
            .unwrap();
        self.producer.flush().unwrap();
    }

    fn read(&self, topic: &str, expected: usize, timeout: Duration) -> Vec<ReadMessage> {
        read_topic(&self.bootstrap(), topic, expected, timeout).unwrap()
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

fn handled(port: u16) -> f64 {
    scrape(
        port,
        "taskstream_messages_handled_total",
        "worker=\"recurring\"",
    )
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

/// Completion `i` in one of four dialects, and the due time (UTC) its next
/// occurrence must have. Every completed occurrence is due Monday 2027-01-04
/// 09:00 in Berlin (08:00Z).
fn completion(i: u32) -> (String, &'static str) {
    match i % 4 {
        0 => (
            format!(
                r#"{{"event_id":"done-{i}","event_type":"task.completed","timestamp":"2027-01-04T10:00:00Z","data":{{"task_id":{i},"user_id":"u{i}","title":"Standup {i}","due_date":"2027-01-04T08:00:00Z","recurrence":{{"rule":"0 9 * * *","timezone":"Europe/Berlin"}}}}}}"#
            ),
            "2027-01-05T08:00:00Z",
        ),
        1 => (
            format!(
                r#"{{"eventType":"task.completed","taskId":{i},"actorId":9,"timestamp":"2027-01-04T10:00:00Z","payload":{{"title":"Gym {i}","completed":true,"dueDate":"2027-01-04T08:00:00Z","recurrence":"daily","timezone":"Europe/Berlin"}}}}"#
            ),
            "2027-01-05T08:00:00Z",
        ),
        2 => (
            format!(
                r#"{{"event_type":"completed","task_id":{i},"user_id":"user123","timestamp":"2027-01-04T10:00:00Z","task_data":{{"title":"Water plants {i}","completed":true,"priority":"low","due_date":"2027-01-04T08:00:00Z","tags":["home"],"is_recurring":true,"recurring_pattern":"FREQ=WEEKLY;BYDAY=MO","timezone":"Europe/Berlin"}}}}"#
            ),
            "2027-01-11T08:00:00Z",
        ),
        _ => (
            format!(
                r#"{{"event_type":"task_completed","user_id":3,"timestamp":"2027-01-04T10:00:00Z","data":{{"task_id":{i},"due_date":"2027-01-04T08:00:00Z","rrule":"FREQ=MONTHLY;BYMONTHDAY=-1"}}}}"#
            ),
            "2027-01-31T08:00:00Z",
        ),
    }
}

/// Asserts `out` holds exactly one next occurrence for each of the series
/// `0..n`, each a canonical `task.created` at the right due time.
fn assert_one_next_occurrence_each(out: &[ReadMessage], n: u32) {
    let events: Vec<TaskEvent> = out.iter().map(decoded).collect();
    let by_series: BTreeMap<String, Vec<&TaskEvent>> =
        events.iter().fold(BTreeMap::new(), |mut m, e| {
            let s = e.attributes["recurrence_series_id"]
                .as_str()
                .unwrap()
                .to_string();
            m.entry(s).or_insert_with(Vec::new).push(e);
            m
        });
    assert_eq!(by_series.len(), n as usize, "one series per completion");
    for i in 0..n {
        let list = &by_series[&i.to_string()];
        assert_eq!(list.len(), 1, "series {i}: {list:?}");
        let e = list[0];
        assert_eq!(e.kind, "task.created");
        assert_eq!(e.dialect, Dialect::Canonical);
        assert_eq!(e.attributes["recurrence_occurrence"], 2);
        let task = e.task.as_ref().unwrap();
        let want: chrono::DateTime<chrono::Utc> = completion(i).1.parse().unwrap();
        assert_eq!(task.due_at, Some(want), "series {i}");
        assert!(task.recurrence.is_some());
        assert_ne!(e.task_id.as_deref(), Some(i.to_string().as_str()));
    }
}

#[test]
fn completion_creates_exactly_one_next_occurrence_across_a_crash_and_redelivery() {
    let s = Setup::new();
    for i in 0..40 {
        s.send(None, &i.to_string(), &completion(i).0);
    }
    // Nothing is committed: a kill is a crash before commit, so all 40 are
    // delivered again to the next process.
    let no_commit = [("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "1h")];
    let port = free_port().unwrap();
    let p = s.run("1", port, &no_commit);
    wait_for(
        "40 completions handled",
        &p,
        Duration::from_secs(60),
        || handled(port) >= 40.0,
    );
    let out = s.read(OUTPUT, 40, Duration::from_secs(20));
    assert_eq!(out.len(), 40, "log:\n{}", p.log());
    assert_one_next_occurrence_each(&out, 40);
    p.kill();

    // Redelivered: the idempotency guard (Redis kept) makes them duplicates.
    let port = free_port().unwrap();
    let p = s.run("2", port, &no_commit);
    s.send(None, "40", &completion(40).0);
    wait_for(
        "41 events handled again",
        &p,
        Duration::from_secs(60),
        || handled(port) >= 41.0,
    );
    let out = s.read(OUTPUT, 42, Duration::from_secs(3));
    assert_eq!(out.len(), 41, "no second occurrence; log:\n{}", p.log());
    assert_one_next_occurrence_each(&out, 41);
    p.kill();

    // Redis lost too (guard and series state gone): occurrences are published
    // again, but as the very same events (ids derived from series and number),
    // which any consumer dedupes.
    let mut s = s;
    s.redis.restart().unwrap();
    let port = free_port().unwrap();
    let p = s.run("3", port, &no_commit);
    wait_for(
        "41 events handled a third time",
        &p,
        Duration::from_secs(60),
        || handled(port) >= 41.0,
    );
    let out = s.read(OUTPUT, 82, Duration::from_secs(20));
    assert_eq!(out.len(), 82, "log:\n{}", p.log());
    let mut by_id: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for m in &out {
        by_id
            .entry(decoded(m).event_id)
            .or_default()
            .insert(m.payload.clone());
    }
    assert_eq!(by_id.len(), 41, "the same 41 ids");
    assert!(
        by_id.values().all(|payloads| payloads.len() == 1),
        "a republished occurrence is byte-for-byte the same event"
    );
}

#[test]
fn two_instances_create_one_occurrence_per_completion() {
    let s = Setup::new();
    let fast_commit = [("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "200ms")];
    let (port_a, port_b) = (free_port().unwrap(), free_port().unwrap());
    let a = s.run("a", port_a, &fast_commit);
    for i in 0..30 {
        s.send(None, &i.to_string(), &completion(i).0);
    }
    wait_for(
        "instance a handles the first 30",
        &a,
        Duration::from_secs(60),
        || handled(port_a) >= 30.0,
    );
    // The second instance joins: partitions move between them mid-stream.
    let b = s.run("b", port_b, &fast_commit);
    wait_for(
        "instance b joins the group",
        &b,
        Duration::from_secs(60),
        || {
            scrape(
                port_b,
                "taskstream_assigned_partitions",
                "worker=\"recurring\"",
            ) >= 1.0
        },
    );
    for i in 30..60 {
        s.send(None, &i.to_string(), &completion(i).0);
    }
    let out = s.read(OUTPUT, 60, Duration::from_secs(60));
    assert_eq!(out.len(), 60, "log a:\n{}\nlog b:\n{}", a.log(), b.log());
    std::thread::sleep(Duration::from_secs(2));
    let out = s.read(OUTPUT, 61, Duration::from_secs(3));
    assert_eq!(
        out.len(),
        60,
        "no second occurrence from the other instance"
    );
    assert_one_next_occurrence_each(&out, 60);
    assert!(handled(port_b) >= 1.0, "both instances worked");

    // One instance dies (SIGKILL): the other takes its partitions after the
    // session timeout. Whatever was redone is the same event, never a second task.
    a.kill();
    for i in 60..90 {
        s.send(None, &i.to_string(), &completion(i).0);
    }
    let mut out = Vec::new();
    wait_for(
        "every series after the takeover",
        &b,
        Duration::from_secs(60),
        || {
            out = s.read(OUTPUT, 1000, Duration::from_secs(1));
            let series: BTreeSet<String> = out
                .iter()
                .map(|m| decoded(m).attributes["recurrence_series_id"].to_string())
                .collect();
            series.len() >= 90
        },
    );
    let mut by_task: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for m in &out {
        by_task
            .entry(decoded(m).task_id.unwrap())
            .or_default()
            .insert(m.payload.clone());
    }
    assert_eq!(by_task.len(), 90, "one next task per completion");
    assert!(
        by_task.values().all(|p| p.len() == 1),
        "duplicates are identical"
    );
}

#[test]
fn series_continue_from_bare_completions_follow_rule_changes_stop_on_delete_and_bad_rules_are_dead_lettered(
) {
    let s = Setup::new();
    let port = free_port().unwrap();
    // Output to task-events itself (the default): the worker reads its own
    // task.created and remembers the series.
    let p = s.run("1", port, &[("TASKSTREAM_RECURRING__OUTPUT_TOPIC", INPUT)]);
    // Partition 0, in order: a recurring task, its deletion, its completion
    // (nothing: the series is stopped); a bad cron rule (dead letter); then a
    // good completion on the same partition (still handled).
    let created = r#"{"event_id":"c-100","event_type":"task.created","timestamp":"2027-01-01T10:00:00Z","data":{"task_id":100,"user_id":"u","title":"Deleted series","due_date":"2027-01-04T08:00:00Z","recurrence":{"rule":"daily","timezone":"Europe/Berlin"}}}"#;
    let deleted = r#"{"event_id":"d-100","event_type":"task.deleted","timestamp":"2027-01-02T10:00:00Z","data":{"task_id":100,"user_id":"u"}}"#;
    let done = r#"{"event_id":"x-100","event_type":"task.completed","timestamp":"2027-01-04T10:00:00Z","data":{"task_id":100,"user_id":"u"}}"#;
    let bad = r#"{"event_id":"x-101","event_type":"task.completed","timestamp":"2027-01-04T10:00:00Z","data":{"task_id":101,"due_date":"2027-01-04T08:00:00Z","recurrence":{"rule":"61 * * * *","timezone":"Europe/Berlin"}}}"#;
    for msg in [created, deleted, done, bad] {
        s.send(Some(0), "p0", msg);
    }
    // A series told by pattern id only, the pattern from a template event.
    let template = r#"{"event_type":"task_template_created","user_id":"u1","timestamp":"2027-01-01T10:00:00Z","data":{"template_id":7,"name":"Weekly review","recurrence":"FREQ=WEEKLY;BYDAY=FR","timezone":"America/New_York"}}"#;
    s.send(Some(0), "p0", template);
    let by_pattern = r#"{"event_type":"completed","task_id":102,"user_id":"user123","timestamp":"2027-01-08T23:00:00Z","task_data":{"title":"Review","completed":true,"due_date":"2027-01-08T22:00:00Z","is_recurring":true,"recurring_pattern_id":7}}"#;
    s.send(Some(0), "p0", by_pattern);
    // A series started with a full snapshot on partition 1.
    let first = r#"{"event_id":"x-200","event_type":"task.completed","timestamp":"2027-01-04T10:00:00Z","data":{"task_id":200,"user_id":"u","title":"Plants","priority":"low","due_date":"2027-01-04T08:00:00Z","recurrence":{"rule":"FREQ=DAILY;COUNT=3","timezone":"Europe/Berlin"}}}"#;
    s.send(Some(1), "p1", first);

    let is_ours = |m: &ReadMessage| decoded(m).event_id.starts_with("recurring-");
    // Everything on the topic so far (inputs and outputs), then only ours.
    let ours = |_n: usize| -> Vec<TaskEvent> {
        s.read(INPUT, 1000, Duration::from_secs(2))
            .iter()
            .filter(|m| is_ours(m))
            .map(decoded)
            .collect()
    };
    let mut got = ours(2);
    wait_for("two occurrences", &p, Duration::from_secs(30), || {
        got = ours(2);
        got.len() >= 2
    });
    let by_series = |list: &[TaskEvent], series: &str| -> Vec<TaskEvent> {
        list.iter()
            .filter(|e| e.attributes["recurrence_series_id"] == series)
            .cloned()
            .collect()
    };
    let review = by_series(&got, "102");
    assert_eq!(review.len(), 1, "{got:?}");
    let t = review[0].task.as_ref().unwrap();
    // Friday 17:00 in New York, a week later.
    assert_eq!(t.due_at, Some("2027-01-15T22:00:00Z".parse().unwrap()));
    assert_eq!(
        review[0].attributes["due_local"],
        "2027-01-15T17:00:00-05:00"
    );
    assert_eq!(review[0].attributes["recurring_pattern_id"], "7");

    let plants = by_series(&got, "200");
    assert_eq!(plants.len(), 1);
    let second = &plants[0];
    assert_eq!(second.attributes["recurrence_occurrence"], 2);
    assert_eq!(
        second.task.as_ref().unwrap().title.as_deref(),
        Some("Plants")
    );

    // Completing the second occurrence with a bare event (task id only)
    // continues the series from what the worker remembered: occurrence 3, then
    // COUNT=3 ends it.
    let second_id = second.task_id.clone().unwrap();
    wait_for(
        "the worker read its own task.created",
        &p,
        Duration::from_secs(30),
        || scrape(port, "taskstream_messages_handled_total", "outcome=\"ok\"") >= 7.0,
    );
    let bare = format!(
        r#"{{"event_id":"x-201","event_type":"task.completed","timestamp":"2027-01-05T10:00:00Z","data":{{"task_id":"{second_id}"}}}}"#
    );
    s.send(Some(2), "p2", &bare);
    wait_for("occurrence 3", &p, Duration::from_secs(30), || {
        by_series(&ours(3), "200").len() >= 2
    });
    let plants = by_series(&ours(3), "200");
    let third = plants
        .iter()
        .find(|e| e.attributes["recurrence_occurrence"] == 3)
        .expect("occurrence 3");
    assert_eq!(
        third.task.as_ref().unwrap().due_at,
        Some("2027-01-06T08:00:00Z".parse().unwrap())
    );
    assert_eq!(
        third.task.as_ref().unwrap().title.as_deref(),
        Some("Plants")
    );
    let third_id = third.task_id.clone().unwrap();
    wait_for(
        "the third task is remembered",
        &p,
        Duration::from_secs(30),
        || scrape(port, "taskstream_messages_handled_total", "outcome=\"ok\"") >= 9.0,
    );
    let last = format!(
        r#"{{"event_id":"x-202","event_type":"task.completed","timestamp":"2027-01-06T10:00:00Z","data":{{"task_id":"{third_id}"}}}}"#
    );
    s.send(Some(2), "p2", &last);
    wait_for(
        "the series ends at COUNT",
        &p,
        Duration::from_secs(30),
        || {
            scrape(
                port,
                "taskstream_recurring_series_ended_total",
                "count_or_until",
            ) >= 1.0
        },
    );

    // Nothing for the deleted series; the bad rule is dead-lettered with its reason.
    let all = ours(4);
    assert!(by_series(&all, "100").is_empty(), "a deleted series stops");
    assert!(by_series(&all, "101").is_empty());
    assert_eq!(
        by_series(&all, "200").len(),
        2,
        "COUNT=3: two more, no fourth"
    );
    let dlq = s.read("task-events.dlq", 1, Duration::from_secs(10));
    assert_eq!(dlq.len(), 1, "log:\n{}", p.log());
    let error = dlq[0].header("error").unwrap_or_default();
    assert!(
        error.contains("invalid cron expression \"61 * * * *\""),
        "{error}"
    );
    assert!(
        scrape(
            port,
            "taskstream_recurring_rules_rejected_total",
            "kind=\"cron\""
        ) >= 1.0
    );

    // An update that changes the rule: the next completion uses the new rule
    // (and the new title), though the completion itself names neither.
    let created = r#"{"event_id":"c-300","event_type":"task.created","timestamp":"2027-01-01T10:00:00Z","data":{"task_id":300,"user_id":"u","title":"Old title","due_date":"2027-01-04T08:00:00Z","recurrence":{"rule":"daily","timezone":"Europe/Berlin"}}}"#;
    let updated = r#"{"event_type":"updated","task_id":300,"user_id":"u","timestamp":"2027-01-02T10:00:00Z","task_data":{"title":"New title","is_recurring":true,"recurring_pattern":"FREQ=WEEKLY;BYDAY=WE","timezone":"Europe/Berlin"}}"#;
    let done = r#"{"event_id":"x-300","event_type":"task.completed","timestamp":"2027-01-04T10:00:00Z","data":{"task_id":300,"user_id":"u"}}"#;
    for msg in [created, updated, done] {
        s.send(Some(1), "p1", msg);
    }
    let mut next = Vec::new();
    wait_for(
        "the occurrence after the rule change",
        &p,
        Duration::from_secs(30),
        || {
            next = by_series(&ours(0), "300");
            !next.is_empty()
        },
    );
    assert_eq!(next.len(), 1);
    let t = next[0].task.as_ref().unwrap();
    assert_eq!(
        t.due_at,
        Some("2027-01-06T08:00:00Z".parse().unwrap()),
        "Wednesday (the new weekly rule), not Tuesday (the old daily one)"
    );
    assert_eq!(t.title.as_deref(), Some("New title"));
    assert_eq!(t.recurrence.as_ref().unwrap().rule, "FREQ=WEEKLY;BYDAY=WE");
}

#[test]
fn redis_away_means_waiting_not_ready_and_nothing_lost() {
    let mut s = Setup::new();
    let port = free_port().unwrap();
    let p = s.run("1", port, &[("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "200ms")]);
    wait_for("ready", &p, Duration::from_secs(60), || {
        scrape(port, "taskstream_ready", "worker=\"recurring\"") >= 1.0
            && scrape(
                port,
                "taskstream_assigned_partitions",
                "worker=\"recurring\"",
            ) >= 1.0
    });
    s.redis.stop();
    for i in 0..8 {
        s.send(None, &i.to_string(), &completion(i).0);
    }
    wait_for("not ready", &p, Duration::from_secs(30), || {
        scrape(port, "taskstream_ready", "worker=\"recurring\"") == 0.0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(s.read(OUTPUT, 1, Duration::from_secs(2)).is_empty());
    assert!(s
        .read("task-events.dlq", 1, Duration::from_secs(1))
        .is_empty());
    s.redis.restart().unwrap();
    let out = s.read(OUTPUT, 8, Duration::from_secs(60));
    assert_eq!(out.len(), 8, "log:\n{}", p.log());
    assert_one_next_occurrence_each(&out, 8);
    assert!(s
        .read("task-events.dlq", 1, Duration::from_secs(1))
        .is_empty());
}
