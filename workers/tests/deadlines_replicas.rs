//! The deadlines worker in process, on the mock cluster, a throwaway
//! redis-server and a manual clock: many tasks, time moved in steps, two
//! replicas with a third joining and leaving; every (task, threshold, due
//! time) is announced exactly once, none early, none missing after its time.
//! And a burst of 10,000 tasks already overdue, each announced once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use pipelines::config::PipelineConfig;
use pipelines::kafka::mock::MockKafka;
use pipelines::testing::{read_topic, test_config, RedisServer, TestProducer};
use pipelines::{derive_event_id, Clock, Runtime, Worker};
use taskstream::deadlines::{DeadlinesConfig, DeadlinesWorker};
use tokio_util::sync::CancellationToken;

const INPUT: &str = "task-events";
const OUTPUT: &str = "schedule-events";
const H: i64 = 3_600_000;
const D: i64 = 24 * H;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap()
}

fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap()
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

struct Replica {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), pipelines::runtime::RuntimeError>>,
}

impl Replica {
    async fn start(config: PipelineConfig, clock: Clock) -> Replica {
        let worker: Arc<dyn Worker> =
            Arc::new(DeadlinesWorker::new(&DeadlinesConfig::default()).unwrap());
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

/// The announcements expected for a task due at `due`, indexed at `seen`,
/// with thresholds 3d and 1h: (label, when due to be announced).
fn expected_crossings(due: i64, seen: i64) -> Vec<(&'static str, i64)> {
    if due <= seen {
        return vec![("overdue", seen)];
    }
    let all = [("3d", 3 * D), ("1h", H)];
    let most_recent_passed = all
        .iter()
        .filter(|(_, th)| due - th <= seen)
        .min_by_key(|(_, th)| *th)
        .map(|(l, _)| *l);
    let mut out = Vec::new();
    for (label, th) in all {
        if due - th > seen {
            out.push((label, due - th));
        } else if Some(label) == most_recent_passed {
            out.push((label, seen));
        }
    }
    out.push(("overdue", due));
    out
}

async fn read_ids(bootstrap: &str, expected: usize, timeout: Duration) -> Vec<String> {
    let bootstrap = bootstrap.to_string();
    let msgs =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, OUTPUT, expected, timeout))
            .await
            .unwrap()
            .unwrap();
    msgs.iter()
        .map(|m| m.header("event-id").unwrap_or_default().to_string())
        .collect()
}

fn duplicates(ids: &[String]) -> Vec<String> {
    let mut seen = BTreeMap::<&String, u32>::new();
    for id in ids {
        *seen.entry(id).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_threshold_is_announced_once_while_a_third_replica_joins_and_leaves() {
    let mock = MockKafka::start(1).unwrap();
    mock.set_group_initial_rebalance_delay(Duration::ZERO);
    mock.create_topic(INPUT, 4).unwrap();
    mock.create_topic(OUTPUT, 2).unwrap();
    let redis = RedisServer::start().unwrap();
    let mut config = test_config(mock.bootstrap_servers(), &redis.url());
    config.kafka.session_timeout = Duration::from_secs(3);
    let (clock, hand) = Clock::manual(t0());
    let start = t0().timestamp_millis();

    // 200 tasks due from 2 hours ago to 5 days ahead, every 37 minutes: some
    // already overdue, some inside 1 hour, some inside 3 days, some beyond.
    // Every tenth beyond 4 days is completed before time moves (nothing is
    // announced for it); every tenth (other) beyond 4 days is moved a day
    // later (only the new due time is announced).
    let n = 200i64;
    let due = |i: i64| start - 2 * H + i * 37 * 60_000;
    let completed = |i: i64| i % 10 == 5 && due(i) - start > 4 * D;
    let moved = |i: i64| i % 10 == 7 && due(i) - start > 4 * D;
    let final_due = |i: i64| if moved(i) { due(i) + D } else { due(i) };
    let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
    for i in 0..n {
        let key = format!("task-{i}");
        let created = format!(
            r#"{{"event_id":"c-{i}","event_type":"task.created","timestamp":"2026-11-25T10:00:00Z","data":{{"task_id":"{key}","user_id":"owner-{i}","title":"Task {i}","assignee_id":"a-{i}","due_date":"{}"}}}}"#,
            rfc(ms(due(i)))
        );
        producer
            .send(INPUT, key.as_bytes(), created.as_bytes())
            .unwrap();
        if completed(i) {
            let done = format!(
                r#"{{"event_id":"d-{i}","event_type":"task.completed","timestamp":"2026-11-25T11:00:00Z","data":{{"task_id":"{key}"}}}}"#
            );
            producer
                .send(INPUT, key.as_bytes(), done.as_bytes())
                .unwrap();
        }
        if moved(i) {
            let mv = format!(
                r#"{{"event_id":"m-{i}","event_type":"task.due_date_set","timestamp":"2026-11-25T11:00:00Z","data":{{"task_id":"{key}","due_date":"{}"}}}}"#,
                rfc(ms(final_due(i)))
            );
            producer.send(INPUT, key.as_bytes(), mv.as_bytes()).unwrap();
        }
    }
    producer.flush().unwrap();

    // Every expected announcement: id and when it becomes due.
    let mut expected: Vec<(String, i64)> = Vec::new();
    for i in (0..n).filter(|i| !completed(*i)) {
        for (label, at) in expected_crossings(final_due(i), start) {
            let id = derive_event_id(&[&format!("task-{i}"), label, &rfc(ms(final_due(i)))]);
            expected.push((id, at));
        }
    }
    let open = (0..n).filter(|i| !completed(*i)).count() as u64;

    let a = Replica::start(config.clone(), clock.clone()).await;
    let b = Replica::start(config.clone(), clock.clone()).await;
    let store = pipelines::state::open(&config.redis).await.unwrap();
    let mut indexed = 0;
    for _ in 0..300 {
        indexed = store.zcard("deadlines:due").await.unwrap();
        let moves_done = {
            let mut ok = true;
            for i in (0..n).filter(|i| moved(*i)) {
                let s = store
                    .zscore("deadlines:due", &format!("task-{i}"))
                    .await
                    .unwrap();
                ok &= s == Some(final_due(i) as f64);
            }
            ok
        };
        if indexed == open && moves_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(indexed, open, "every open task indexed");

    let mut c = None;
    // Six days in 4-hour steps.
    for step in 0..=36i64 {
        if step > 0 {
            hand.advance(Duration::from_secs(4 * 3600));
        }
        let now = clock.now().timestamp_millis();
        let due_now: BTreeSet<&String> = expected
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(id, _)| id)
            .collect();
        let mut ids = Vec::new();
        for _ in 0..40 {
            ids = read_ids(
                mock.bootstrap_servers(),
                due_now.len(),
                Duration::from_secs(2),
            )
            .await;
            if ids.len() >= due_now.len() {
                break;
            }
        }
        let got: BTreeSet<&String> = ids.iter().collect();
        let missing: Vec<_> = due_now.difference(&got).collect();
        let early: Vec<_> = got.difference(&due_now).collect();
        assert!(missing.is_empty(), "step {step}: {} missing", missing.len());
        assert!(
            early.is_empty(),
            "step {step}: announced early or unexpected: {early:?}"
        );
        assert!(
            duplicates(&ids).is_empty(),
            "step {step}: duplicates {:?}",
            duplicates(&ids)
        );
        if step == 3 {
            c = Some(Replica::start(config.clone(), clock.clone()).await);
        }
        if step == 12 {
            c.take().unwrap().stop().await;
        }
    }
    // Nothing else arrives later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = read_ids(
        mock.bootstrap_servers(),
        expected.len() + 1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        ids.len(),
        expected.len(),
        "exactly the expected announcements"
    );
    assert!(duplicates(&ids).is_empty());
    assert_eq!(
        store.zcard("deadlines:due").await.unwrap(),
        open,
        "announcing does not unindex a task; only closing it does"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_ten_thousand_overdue_tasks_is_announced_once_each() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic(INPUT, 4).unwrap();
    mock.create_topic(OUTPUT, 2).unwrap();
    let redis = RedisServer::start().unwrap();
    let config = test_config(mock.bootstrap_servers(), &redis.url());
    let (clock, _hand) = Clock::manual(t0());
    let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
    let n = 10_000;
    for i in 0..n {
        let msg = format!(
            r#"{{"event_id":"c-{i}","event_type":"task.created","timestamp":"2026-11-20T10:00:00Z","data":{{"task_id":"late-{i}","title":"Late {i}","due_date":"2026-11-25T09:00:00Z"}}}}"#
        );
        producer
            .send(INPUT, format!("late-{i}").as_bytes(), msg.as_bytes())
            .unwrap();
    }
    producer.flush().unwrap();
    let a = Replica::start(config.clone(), clock.clone()).await;
    let ids = read_ids(mock.bootstrap_servers(), n, Duration::from_secs(180)).await;
    assert_eq!(ids.len(), n, "every overdue task announced");
    assert!(duplicates(&ids).is_empty());
    let want: BTreeSet<String> = (0..n)
        .map(|i| derive_event_id(&[&format!("late-{i}"), "overdue", "2026-11-25T09:00:00Z"]))
        .collect();
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), want);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = read_ids(mock.bootstrap_servers(), n + 1, Duration::from_secs(5)).await;
    assert_eq!(again.len(), n, "and nothing twice");
    a.stop().await;
}
