//! The audit worker end to end: the real binary on the mock Kafka cluster, a
//! throwaway redis-server and the real PostgreSQL; crash and redelivery; diffs
//! per dialect; queries, report and verify from the CLI.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use pipelines::event::{decode, DecodeContext};
use pipelines::kafka::mock::MockKafka;
use pipelines::kafka::source::committed_offsets;
use pipelines::testing::{free_port, unique, RedisServer, TestProducer};
use pipelines::{Inbound, Source};
use taskstream::audit::file_store::FileStore;
use taskstream::audit::pg_store::{PgOptions, PgStore};
use taskstream::audit::{AuditQuery, AuditRecord, AuditStore};

mod common;
use common::{scrape, taskstream, Process};

/// The record of `inbound`, with its own copy of the event's text.
fn to_record(inbound: &Inbound, now: chrono::DateTime<Utc>) -> AuditRecord<'static> {
    taskstream::audit::convert::to_record(inbound, now).into_owned()
}

fn database_url() -> String {
    std::env::var("TASKSTREAM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn schema() -> String {
    unique("audit_test").replace('-', "_")
}

/// A store on a new schema of its own (one connection), and the schema.
async fn fresh_store() -> (String, PgStore) {
    let schema = schema();
    let store = PgStore::connect_with_schema(&database_url(), 1, &schema)
        .await
        .unwrap();
    (schema, store)
}

fn inbound(payload: &str, offset: i64) -> Inbound {
    let ctx = DecodeContext {
        topic: "task-events",
        kafka_timestamp_ms: Some(1_767_000_000_000),
    };
    Inbound {
        event: decode(payload.as_bytes(), &ctx).expect("decodes"),
        source: Source {
            topic: Arc::from("task-events"),
            partition: 0,
            offset,
            timestamp_ms: Some(1_767_000_000_000),
            received_at: Utc::now(),
        },
    }
}

/// Mixed-dialect task events for task `t`, distinct per `i`.
fn sample(i: u64) -> String {
    pipelines::bench::sample_event(i).1
}

// ---------------------------------------------------------------- diffs

#[test]
fn update_diffs_are_right_for_each_dialect() {
    // envelope: the message lists its changes.
    let r = to_record(
        &inbound(
            r#"{"event_id":"d1","event_type":"task.updated","timestamp":"2026-02-08T11:00:00Z","version":"1.0","data":{"task_id":123,"user_id":"user-456","changes":{"title":{"old":"Buy groceries","new":"Buy groceries and cook dinner"}}}}"#,
            1,
        ),
        Utc::now(),
    );
    assert_eq!(r.operation, "updated");
    assert_eq!(r.changes.len(), 1);
    assert_eq!(r.changes["title"].old, "Buy groceries");
    assert_eq!(r.changes["title"].new, "Buy groceries and cook dinner");

    // task_data: computed from previous_task_data; unchanged fields left out.
    let r = to_record(
        &inbound(
            r#"{"event_type":"updated","task_id":124,"user_id":"user123","timestamp":"2026-01-03T11:00:00Z","task_data":{"title":"T","priority":"high","due_date":"2026-01-12T09:00:00Z","tags":["work"]},"previous_task_data":{"title":"T","priority":"medium","due_date":"2026-01-10T09:00:00Z","tags":["work"]},"ip_address":"203.0.113.7","user_agent":"cli/1"}"#,
            2,
        ),
        Utc::now(),
    );
    let fields: BTreeSet<&str> = r.changes.keys().map(String::as_str).collect();
    assert_eq!(fields, BTreeSet::from(["due_at", "priority"]));
    assert_eq!(r.changes["priority"].old, "medium");
    assert_eq!(r.changes["priority"].new, "high");
    assert_eq!(r.ip_address.as_deref(), Some("203.0.113.7"));
    assert_eq!(r.user_agent.as_deref(), Some("cli/1"));
    assert_eq!(r.actor_id.as_deref(), Some("user123"));

    // standard: no previous state, no listed changes: no diff, snapshot kept.
    let r = to_record(
        &inbound(
            r#"{"event_type":"task_status_changed","user_id":123,"timestamp":"2025-09-07T11:30:00Z","data":{"task_id":456,"status":"in_progress"},"metadata":{"source":"django_backend","version":"1.0"}}"#,
            3,
        ),
        Utc::now(),
    );
    assert!(r.changes.is_empty());
    assert_eq!(
        r.details.as_ref().unwrap().to_value()["status"],
        "in_progress"
    );
    assert_eq!(r.event_type, "task.status_changed");

    // camel_case: partial payload, actor from actorId.
    let r = to_record(
        &inbound(
            r#"{"eventType":"task.updated","taskId":1,"teamId":1,"actorId":9,"creatorId":1,"assigneeId":2,"timestamp":"2025-08-25T22:41:54.574Z","payload":{"title":"Updated Task Title","completed":false}}"#,
            4,
        ),
        Utc::now(),
    );
    assert_eq!(r.actor_id.as_deref(), Some("9"));
    assert_eq!(r.task_id.as_deref(), Some("1"));
    assert!(r.changes.is_empty());
    assert_eq!(r.source.dialect, "camel_case");

    // CloudEvents around the envelope: same diff, dialect says it was wrapped.
    let r = to_record(
        &inbound(
            r#"{"specversion":"1.0","id":"ce-1","source":"api","type":"com.dapr.event.sent","datacontenttype":"application/json","data":{"event_id":"d5","event_type":"task.updated","timestamp":"2026-02-08T11:00:00Z","data":{"task_id":7,"user_id":"u","changes":{"priority":{"old":"low","new":"high"}}}}}"#,
            5,
        ),
        Utc::now(),
    );
    assert_eq!(r.changes["priority"].new, "high");
    assert_eq!(r.source.dialect, "cloudevents/envelope");
}

// ---------------------------------------------------------------- end to end

fn run_audit(
    bootstrap: &str,
    redis: &str,
    database_url: &str,
    schema: &str,
    group: &str,
    log: &Path,
    port: u16,
) -> Process {
    let log = std::fs::File::create(log).unwrap();
    Process::new(
        taskstream()
            .args(["run", "audit"])
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            .env("REDIS_URL", redis)
            .env("DATABASE_URL", database_url)
            .env("TASKSTREAM_AUDIT__STORE", "postgres")
            .env("TASKSTREAM_AUDIT__SCHEMA", schema)
            .env("TASKSTREAM_KAFKA__GROUP_PREFIX", group)
            // An unreachable store is retried at least every half second.
            .env("TASKSTREAM_RETRY__MAX_BACKOFF", "500ms")
            // Nothing is committed until shutdown: a kill is a crash before commit.
            .env("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "1h")
            // The killed member holds its partitions until its session expires.
            .env("TASKSTREAM_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000")
            .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("TASKSTREAM_WORKERS__AUDIT__TOPICS", "[\"task-events\"]")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

async fn wait_rows(store: &PgStore, n: usize, timeout: Duration) -> Vec<AuditRecord<'static>> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = store.query(&AuditQuery::default()).await.unwrap();
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_becomes_one_row_across_crash_redelivery_and_sigterm() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("task-events", 3).unwrap();
    let bootstrap = mock.bootstrap_servers().to_string();
    let mut redis = RedisServer::start().unwrap();
    let schema = schema();
    let group = unique("audit-e2e");
    let logs = std::env::temp_dir().join(unique("audit-logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let store = PgStore::connect_with_schema(&database_url(), 1, &schema)
        .await
        .unwrap();

    let producer = TestProducer::new(&bootstrap).unwrap();
    for i in 0..300 {
        let (key, payload) = pipelines::bench::sample_event(i);
        producer
            .send("task-events", key.as_bytes(), payload.as_bytes())
            .unwrap();
    }
    producer.flush().unwrap();

    // 1. Write everything, then crash (SIGKILL) before any commit.
    let port = free_port().unwrap();
    let p = run_audit(
        &bootstrap,
        &redis.url(),
        &database_url(),
        &schema,
        &group,
        &logs.join("1.log"),
        port,
    );
    let rows = wait_rows(&store, 300, Duration::from_secs(60)).await;
    assert_eq!(
        rows.len(),
        300,
        "log: {}",
        std::fs::read_to_string(logs.join("1.log")).unwrap()
    );
    p.signal(libc::SIGKILL);
    p.wait(Duration::from_secs(10));
    let committed: i64 = committed_offsets_for(&bootstrap, &group);
    assert_eq!(committed, 0, "the crash happened before any commit");

    // 2. Restart with Redis wiped too: all 300 are redelivered, and the store
    //    alone must keep them to one row each.
    redis.restart().unwrap();
    let p = run_audit(
        &bootstrap,
        &redis.url(),
        &database_url(),
        &schema,
        &group,
        &logs.join("2.log"),
        port,
    );
    let (key, payload) = pipelines::bench::sample_event(300);
    producer
        .send("task-events", key.as_bytes(), payload.as_bytes())
        .unwrap();
    producer.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while scrape(
        port,
        "taskstream_messages_handled_total",
        "worker=\"audit\"",
    ) < 301.0
    {
        assert!(
            Instant::now() < deadline,
            "redelivered messages not handled; log: {}",
            std::fs::read_to_string(logs.join("2.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(scrape(port, "taskstream_consumer_lag_messages", "worker=\"audit\"") >= 0.0);
    let rows = store.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 301, "redelivery made no second row");

    // 3. SIGTERM drains and commits everything.
    p.signal(libc::SIGTERM);
    let status = p.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "clean exit on SIGTERM: {}",
        std::fs::read_to_string(logs.join("2.log")).unwrap()
    );
    assert_eq!(committed_offsets_for(&bootstrap, &group), 301);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = store.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 301, "no second row for any event");
    let ids: BTreeSet<_> = rows.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(ids.len(), 301);
    let report = store.verify().await.unwrap();
    assert!(report.first_break.is_none(), "{report:?}");
    store.drop_schema().await.unwrap();
}

fn committed_offsets_for(bootstrap: &str, group: &str) -> i64 {
    let kafka = pipelines::config::KafkaConfig {
        bootstrap_servers: bootstrap.into(),
        ..Default::default()
    };
    committed_offsets(&kafka, &format!("{group}-audit"), "task-events", 3)
        .unwrap()
        .into_iter()
        .map(|o| o.max(0))
        .sum()
}

// ---------------------------------------------------------------- CLI

fn cli(args: &[&str], envs: &[(&str, String)]) -> (bool, String) {
    let mut c = taskstream();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn records() -> Vec<AuditRecord<'static>> {
    (0..40u64)
        .map(|i| {
            let mut r = to_record(&inbound(&sample(i), i as i64), Utc::now());
            r.occurred_at = Utc
                .with_ymd_and_hms(2026, 3, 1 + (i % 10) as u32, 12, 0, 0)
                .unwrap();
            r
        })
        .collect()
}

async fn check_query_and_report(store: &dyn AuditStore, envs: &[(&str, String)]) {
    let recs = records();
    assert_eq!(store.append(&recs, Utc::now()).await.unwrap(), 40);
    assert_eq!(
        store.append(&recs[..10], Utc::now()).await.unwrap(),
        0,
        "appending again writes nothing"
    );

    let task = recs[3].task_id.clone().unwrap().into_owned();
    let (ok, out) = cli(
        &["audit", "query", "--task", &task, "--format", "json"],
        envs,
    );
    assert!(ok, "{out}");
    let got: Vec<AuditRecord<'static>> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<&AuditRecord<'_>> = recs
        .iter()
        .filter(|r| r.task_id.as_deref() == Some(task.as_str()))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got
        .iter()
        .all(|r| r.task_id.as_deref() == Some(task.as_str())));

    let user = recs[2].actor_id.clone().unwrap();
    let (ok, out) = cli(
        &[
            "audit",
            "query",
            "--user",
            &user,
            "--type",
            "task.status_changed",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-05",
            "--format",
            "csv",
        ],
        envs,
    );
    assert!(ok, "{out}");
    let want = recs
        .iter()
        .filter(|r| r.actor_id.as_deref() == Some(&user) && r.event_type == "task.status_changed")
        .filter(|r| r.occurred_at < Utc.with_ymd_and_hms(2026, 3, 5, 0, 0, 0).unwrap())
        .count();
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("task.status_changed"))
        .collect();
    assert_eq!(lines.len(), want, "{out}");
    assert!(out.starts_with("occurred_at,event_type,actor_id"), "{out}");

    let (ok, out) = cli(&["audit", "query", "--type", "task.created"], envs);
    assert!(ok && out.contains("(8 records)"), "{out}");

    let (ok, out) = cli(
        &[
            "audit",
            "report",
            "--from",
            "2026-03-01",
            "--to",
            "2026-04-01",
        ],
        envs,
    );
    assert!(ok, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("user_id,event_type,count"));
    let total: u64 = lines
        .filter_map(|l| l.rsplit(',').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 40, "{out}");

    let (ok, out) = cli(&["audit", "verify"], envs);
    assert!(ok && out.contains("ok: 40 records"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_queries_report_and_verify_on_postgres() {
    let (schema, store) = fresh_store().await;
    let envs = [
        ("DATABASE_URL", database_url()),
        ("TASKSTREAM_AUDIT__STORE", "postgres".to_string()),
        ("TASKSTREAM_AUDIT__SCHEMA", schema.clone()),
    ];
    check_query_and_report(&store, &envs).await;
    store.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_queries_report_and_verify_on_files_and_detects_tampering() {
    let dir = std::env::temp_dir().join(unique("audit-files"));
    let store = FileStore::open(&dir).unwrap();
    let envs = [
        ("TASKSTREAM_AUDIT__STORE", "file".to_string()),
        ("TASKSTREAM_AUDIT__DIR", dir.to_string_lossy().into_owned()),
    ];
    check_query_and_report(&store, &envs).await;

    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("task.created", "task.deleted", 1)).unwrap();
    let (ok, out) = cli(&["audit", "verify"], &envs);
    assert!(!ok, "verify exits non-zero on a tampered trail");
    assert!(
        out.contains("BROKEN at") && out.contains(".jsonl:"),
        "{out}"
    );
}

// ---------------------------------------------------------------- PostgreSQL tamper evidence and retention

/// `store`'s trail verifies: no break, and `checked` records checked.
async fn assert_verifies(store: &dyn AuditStore, checked: u64) {
    let report = store.verify().await.unwrap();
    assert!(report.first_break.is_none(), "{report:?}");
    assert_eq!(report.records_checked, checked);
}

/// A connection of its own with `schema` on the search path.
async fn connect_to(schema: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .unwrap();
    client
}

async fn sql(schema: &str, statement: &str) {
    connect_to(schema)
        .await
        .batch_execute(statement)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_detects_an_edited_a_deleted_and_a_truncated_chain() {
    let recs = records();
    let cases = [
        // (tampering, what verify must say)
        ("UPDATE audit_records SET actor_id = 'mallory' WHERE chain_seq = 5", "edited"),
        ("DELETE FROM audit_records WHERE chain_seq = 7", "deleted"),
        ("DELETE FROM audit_records WHERE chain_seq = 40", "deleted from the end"),
        // Swapped through a spare number: (chain, chain_seq) is unique.
        ("UPDATE audit_records SET chain_seq = -3 WHERE chain_seq = 3; UPDATE audit_records SET chain_seq = 3 WHERE chain_seq = 4; UPDATE audit_records SET chain_seq = 4 WHERE chain_seq = -3", "moved"),
    ];
    for (tamper, expected) in cases {
        let (schema, store) = fresh_store().await;
        assert_eq!(store.append(&recs, Utc::now()).await.unwrap(), 40);
        let ok = store.verify().await.unwrap();
        assert_eq!(ok.records_checked, 40);
        assert!(ok.first_break.is_none(), "{ok:?}");
        sql(&schema, tamper).await;
        let report = store.verify().await.unwrap();
        let b = report
            .first_break
            .unwrap_or_else(|| panic!("`{tamper}` went unnoticed"));
        assert!(b.reason.contains(expected), "`{tamper}`: {b:?}");
        store.drop_schema().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_2_backfills_the_chain_offsets_so_redelivery_is_still_skipped() {
    let (schema, store) = fresh_store().await;
    let recs = records();
    assert_eq!(store.append(&recs[..30], Utc::now()).await.unwrap(), 30);
    // A trail written before migration 2: heads without offsets.
    sql(
        &schema,
        "UPDATE audit_chain_heads SET last_offset = NULL;
         DELETE FROM taskstream_audit_migrations WHERE version = 2;",
    )
    .await;
    let upgraded = PgStore::connect_with_schema(&database_url(), 1, &schema)
        .await
        .unwrap();
    assert_eq!(
        upgraded.append(&recs, Utc::now()).await.unwrap(),
        10,
        "the 30 already stored are recognised from the backfilled offsets"
    );
    assert_verifies(&upgraded, 40).await;
    upgraded.drop_schema().await.unwrap();
}

/// The one value `query` returns.
async fn sql_value<T: for<'a> tokio_postgres::types::FromSql<'a>>(schema: &str, query: &str) -> T {
    let client = connect_to(schema).await;
    client.query_one(query, &[]).await.unwrap().get(0)
}

async fn sql_count(schema: &str, query: &str) -> i64 {
    sql_value(schema, query).await
}

/// The event ids `q` must return from `recs`, in order.
fn expected_ids(recs: &[AuditRecord<'_>], q: &AuditQuery) -> Vec<String> {
    let mut hits: Vec<&AuditRecord<'_>> = recs.iter().filter(|r| q.matches(r)).collect();
    hits.sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
    let skip = q.limit.map_or(0, |n| hits.len().saturating_sub(n));
    hits[skip..]
        .iter()
        .map(|r| r.event_id.to_string())
        .collect()
}

async fn check_indexed_queries(store: &PgStore, recs: &[AuditRecord<'_>]) {
    let day = |d| Some(Utc.with_ymd_and_hms(2026, 3, d, 0, 0, 0).unwrap());
    let id = |t: &str| Some(t.to_string());
    let queries = [
        AuditQuery {
            task_id: id("task-1"),
            ..Default::default()
        },
        AuditQuery {
            user_id: id("user-2"),
            ..Default::default()
        },
        AuditQuery {
            task_id: id("task-2"),
            user_id: id("user-1"),
            ..Default::default()
        },
        AuditQuery {
            task_id: id("task-0"),
            event_type: id("task.updated"),
            ..Default::default()
        },
        AuditQuery {
            user_id: id("user-3"),
            from: day(3),
            to: day(8),
            ..Default::default()
        },
        AuditQuery {
            task_id: id("task-1"),
            limit: Some(2),
            ..Default::default()
        },
        AuditQuery {
            task_id: id("no-such-task"),
            ..Default::default()
        },
    ];
    for q in &queries {
        let got: Vec<String> = store
            .query(q)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event_id.into_owned())
            .collect();
        let want = expected_ids(recs, q);
        assert!(
            !want.is_empty() || q.task_id.as_deref() == Some("no-such-task"),
            "{q:?}"
        );
        assert_eq!(got, want, "{q:?}");
    }
}

/// Any text and time a record can hold comes back from PostgreSQL as it was
/// written (the store writes each column's binary form itself: see
/// `CopyRows`), and the chain over it verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_text_and_time_exactly() {
    let (_, store) = fresh_store().await;
    let texts = [
        "tab\there",
        "line\nbreak",
        "cr\rhere",
        "back\\slash",
        "\\N",
        "\\.",
        "\\",
        "é 🦀",
        "",
        "quote \" and '",
    ];
    let times = [
        "2026-11-27T19:00:00.123456Z",
        "2026-11-27T19:00:00Z",
        "0000-03-01T00:00:00Z",
        "-0044-03-15T12:00:00.000001Z",
        "9999-12-31T23:59:59.999999Z",
        "1999-12-31T23:59:59.5Z",
    ];
    let template = records().remove(0);
    let recs: Vec<AuditRecord<'static>> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut r = template.clone();
            let text = Some(std::borrow::Cow::Owned(text.to_string()));
            r.event_id = format!("odd-{i}-{}", texts[i]).into();
            r.actor_id = text.clone();
            r.task_id = text.clone();
            r.project_id = text.clone();
            r.ip_address = text.clone();
            r.user_agent = text;
            r.occurred_at = times[i % times.len()].parse().unwrap();
            r.changes = [(
                texts[i].to_string(),
                taskstream::audit::record::Change {
                    old: serde_json::Value::Null,
                    new: texts[i].into(),
                },
            )]
            .into();
            r.details = Some(
                taskstream::audit::record::RawJson::of(&serde_json::json!({ "title": texts[i] }))
                    .unwrap(),
            );
            r.source.offset = i as i64;
            r
        })
        .collect();
    let now = Utc::now();
    assert_eq!(store.append(&recs, now).await.unwrap(), recs.len());
    let mut got = store.query(&AuditQuery::default()).await.unwrap();
    got.sort_by_key(|a| a.source.offset);
    assert_eq!(got.len(), recs.len());
    for (got, want) in got.iter().zip(&recs) {
        let want = taskstream::audit::record::as_stored(want, now);
        assert_eq!(got, &*want);
    }
    assert_verifies(&store, recs.len() as u64).await;
    store.drop_schema().await.unwrap();
}

/// The indexes of the audit table, by name.
async fn indexes(schema: &str) -> Vec<String> {
    let client = connect_to(schema).await;
    client
        .query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'audit_records' ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// How PostgreSQL answers `query`: the plan's text (sequential scans off,
/// as a large table's statistics would have them).
async fn plan_of(schema: &str, query: &str) -> String {
    let client = connect_to(schema).await;
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let rows = client
        .query(&format!("EXPLAIN {query}"), &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queries_by_task_user_and_time_use_the_brin_index_also_after_migrations_3_to_5() {
    let (schema, store) = fresh_store().await;
    let mut recs = records();
    for (i, r) in recs.iter_mut().enumerate() {
        r.task_id = Some(format!("task-{}", i % 3).into());
        r.actor_id = (i % 5 != 4).then(|| format!("user-{}", i % 4).into());
    }
    // Four batches, then a redelivery that writes nothing.
    for chunk in recs.chunks(10) {
        assert_eq!(store.append(chunk, Utc::now()).await.unwrap(), 10);
    }
    assert_eq!(store.append(&recs[5..15], Utc::now()).await.unwrap(), 0);
    check_indexed_queries(&store, &recs).await;
    for condition in [
        "task_id = 'task-1'",
        "actor_id = 'user-2'",
        "occurred_at >= '2026-03-02'",
    ] {
        let plan = plan_of(
            &schema,
            &format!("SELECT * FROM audit_records WHERE {condition}"),
        )
        .await;
        assert!(
            plan.contains("Bitmap Index Scan on audit_records_")
                && plan.contains("occurred_at_task_id_actor_id_idx"),
            "{plan}"
        );
    }
    assert_eq!(indexes(&schema).await, ["audit_records_brin"]);
    let batch_index = format!(
        "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'audit_batch_index'"
    );
    assert_eq!(sql_count(&schema, &batch_index).await, 0);

    // A trail written before migration 3: no batch index, the per-record
    // B-tree. Migration 3 indexes what is there in a batch index and drops
    // the B-tree; migration 4 replaces the batch index with the Bloom
    // filters, built over the rows already there, and migration 5 makes
    // them and the time index one.
    sql(
        &schema,
        "DROP INDEX audit_records_brin;
         CREATE INDEX audit_records_occurred_brin ON audit_records USING brin (occurred_at);
         DELETE FROM taskstream_audit_migrations WHERE version >= 3;
         CREATE INDEX audit_records_task_idx ON audit_records (task_id, occurred_at);",
    )
    .await;
    let upgraded = PgStore::connect_with_schema(&database_url(), 1, &schema)
        .await
        .unwrap();
    check_indexed_queries(&upgraded, &recs).await;
    assert_eq!(indexes(&schema).await, ["audit_records_brin"]);
    assert_eq!(sql_count(&schema, &batch_index).await, 0);
    let plan = plan_of(
        &schema,
        "SELECT * FROM audit_records WHERE task_id = 'task-1'",
    )
    .await;
    assert!(plan.contains("Bitmap Index Scan"), "{plan}");
    assert_verifies(&upgraded, 40).await;
    upgraded.drop_schema().await.unwrap();
}

/// Migrations that read the whole trail take longer than a statement may:
/// they are not cut off at `audit.statement_timeout` (which would only
/// start them again, forever, on a large trail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_are_not_held_to_the_statement_timeout() {
    let schema = schema();
    let mut options = PgOptions::new(&schema, 1);
    options.statement_timeout = Duration::from_millis(1);
    let store = PgStore::new(&database_url(), &options).unwrap();
    store
        .ready()
        .await
        .expect("migrated despite a 1 ms statement timeout");
    assert_eq!(
        sql_count(&schema, "SELECT count(*) FROM taskstream_audit_migrations").await,
        6
    );
    let cleanup = PgStore::connect_with_schema(&database_url(), 1, &schema)
        .await
        .unwrap();
    cleanup.drop_schema().await.unwrap();
}

/// A batch holds runs of records from several source partitions, in any
/// order, with redeliveries among them: each chain gets its own records in
/// order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batch_interleaving_partitions_writes_each_chain_once_in_order() {
    let (schema, store) = fresh_store().await;
    let at = |i: u64, partition: i32, offset: i64| {
        let mut r = to_record(&inbound(&sample(i), offset), Utc::now());
        r.source.partition = partition;
        r.task_id = Some(format!("task-p{partition}-{offset}").into());
        r
    };
    // Partitions 0, 1, 0, 2, 1 in turn; then offsets already written.
    let first = vec![
        at(0, 0, 1),
        at(1, 0, 2),
        at(2, 1, 1),
        at(3, 0, 3),
        at(4, 2, 7),
        at(5, 1, 2),
        at(6, 1, 3),
    ];
    assert_eq!(store.append(&first, Utc::now()).await.unwrap(), 7);
    let second = vec![
        at(7, 1, 3),
        at(8, 0, 2),
        at(9, 0, 4),
        at(10, 2, 7),
        at(11, 1, 4),
        at(12, 0, 3),
        at(13, 2, 8),
    ];
    assert_eq!(store.append(&second, Utc::now()).await.unwrap(), 3);
    for (partition, offsets) in [(0, "1,2,3,4"), (1, "1,2,3,4"), (2, "7,8")] {
        let chain = format!("task-events/{partition}");
        let got: String = sql_value(
            &schema,
            &format!(
                "SELECT string_agg(source_offset::text, ',' ORDER BY chain_seq) || '|' ||
                        string_agg(chain_seq::text, ',' ORDER BY chain_seq)
                 FROM audit_records WHERE chain = '{chain}'"
            ),
        )
        .await;
        let n = offsets.split(',').count();
        let seqs: Vec<String> = (1..=n).map(|s| s.to_string()).collect();
        assert_eq!(got, format!("{offsets}|{}", seqs.join(",")), "{chain}");
    }
    let hits = store
        .query(&AuditQuery {
            task_id: Some("task-p1-4".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].event_id, second[4].event_id);
    assert_verifies(&store, 10).await;
    store.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retention_drops_whole_partitions_and_the_chain_continues() {
    let (schema, store) = fresh_store().await;
    let recs = records();
    assert_eq!(store.append(&recs[..20], Utc::now()).await.unwrap(), 20);
    // A cutoff before this month's start drops nothing.
    assert_eq!(
        store
            .enforce_retention(Utc::now() - chrono::Duration::days(40))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.query(&AuditQuery::default()).await.unwrap().len(), 20);
    // A cutoff after this month's end drops the month's partition, whole.
    assert_eq!(
        store
            .enforce_retention(Utc::now() + chrono::Duration::days(40))
            .await
            .unwrap(),
        1
    );
    assert!(store
        .query(&AuditQuery::default())
        .await
        .unwrap()
        .is_empty());
    let report = store.verify().await.unwrap();
    assert!(
        report.first_break.is_none(),
        "an emptied chain still verifies: {report:?}"
    );
    // The dropped records' index entries left with their partitions.
    let gone = AuditQuery {
        task_id: recs[3].task_id.as_deref().map(String::from),
        ..Default::default()
    };
    assert!(store.query(&gone).await.unwrap().is_empty());
    // New records continue the chain from where retention left it.
    assert_eq!(store.append(&recs[20..], Utc::now()).await.unwrap(), 20);
    assert_eq!(
        sql_count(&schema, "SELECT count(*) FROM audit_chain_starts").await,
        1,
        "the chain starts again in this month"
    );
    let found = AuditQuery {
        task_id: recs[25].task_id.as_deref().map(String::from),
        ..Default::default()
    };
    assert_eq!(store.query(&found).await.unwrap().len(), 1);
    assert_verifies(&store, 20).await;
    store.drop_schema().await.unwrap();
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, sec: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, sec).unwrap()
}

/// The table has no index in chain order: `verify` reads it in storage
/// order and puts each chain in order itself, whatever order the rows are
/// stored in, and still sees a number written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_orders_each_chain_itself_whatever_the_storage_order() {
    let (schema, store) = fresh_store().await;
    let mut recs = records();
    for r in recs.iter_mut().skip(1).step_by(3) {
        r.source.partition = 1;
    }
    for chunk in recs.chunks(7) {
        store.append(chunk, Utc::now()).await.unwrap();
    }
    // Stored newest first.
    sql(
        &schema,
        "CREATE TEMP TABLE reversed AS SELECT * FROM audit_records ORDER BY chain_seq DESC;
         DELETE FROM audit_records;
         INSERT INTO audit_records SELECT * FROM reversed;",
    )
    .await;
    let first = sql_value::<String>(
        &schema,
        "SELECT chain || ' ' || chain_seq FROM audit_records LIMIT 1",
    )
    .await;
    assert!(first.ends_with(" 27"), "stored newest first: {first}");
    assert_verifies(&store, 40).await;

    sql(
        &schema,
        "INSERT INTO audit_records SELECT * FROM audit_records WHERE chain = 'task-events/1' AND chain_seq = 5",
    )
    .await;
    let b = store
        .verify()
        .await
        .unwrap()
        .first_break
        .expect("a number written twice");
    assert!(
        b.reason.contains("sequence number 5 where") && b.reason.contains("inserted"),
        "{b:?}"
    );
    assert!(b.location.contains("chain task-events/1 record 5"), "{b:?}");
    store.drop_schema().await.unwrap();
}

/// A writer whose clock is behind a chain's last record (another replica's
/// clock is ahead) writes at that record's time, so a chain never goes back
/// in time, not even into the month before, whose partition it would be in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_chain_never_goes_back_in_time() {
    let (schema, store) = fresh_store().await;
    let recs = records();
    let ahead = at(2026, 12, 1, 0, 0, 5);
    assert_eq!(store.append(&recs[..10], ahead).await.unwrap(), 10);
    // Another replica, its clock behind, that has not seen December's
    // partition yet.
    let behind = PgStore::connect_with_schema(&database_url(), 1, &schema)
        .await
        .unwrap();
    assert_eq!(
        behind
            .append(&recs[10..20], at(2026, 11, 30, 23, 59, 0))
            .await
            .unwrap(),
        10
    );
    let times = sql_value::<Vec<chrono::DateTime<Utc>>>(
        &schema,
        "SELECT array_agg(DISTINCT received_at) FROM audit_records_202612",
    )
    .await;
    assert_eq!(times, [ahead]);
    assert_eq!(
        sql_count(&schema, "SELECT count(*) FROM audit_records_202611").await,
        0
    );
    // A later clock moves on.
    let later = at(2026, 12, 1, 0, 1, 0);
    assert_eq!(store.append(&recs[20..], later).await.unwrap(), 20);
    assert_eq!(
        sql_count(
            &schema,
            &format!(
                "SELECT count(*) FROM audit_records WHERE received_at = '{}'",
                later.to_rfc3339()
            )
        )
        .await,
        20
    );
    assert_verifies(&store, 40).await;
    store.drop_schema().await.unwrap();
}

/// The partition a batch makes in its own transaction (its chain's time
/// is in a month this process has not written in) is known to exist only
/// once a batch that made it commits: one that wrote nothing (a
/// redelivery) rolled it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_partition_made_by_a_batch_that_wrote_nothing_is_made_again() {
    let (schema, store) = fresh_store().await;
    let recs = records();
    let now = at(2026, 11, 20, 0, 0, 0);
    assert_eq!(store.append(&recs[..10], now).await.unwrap(), 10);
    // The chain's time moved to a month with no partition (as if the head
    // were written by a replica whose clock is far ahead).
    sql(
        &schema,
        "UPDATE audit_chain_heads SET last_received_at = '2027-02-03T00:00:00Z'",
    )
    .await;
    assert_eq!(store.append(&recs[..10], now).await.unwrap(), 0);
    assert_eq!(store.append(&recs[10..20], now).await.unwrap(), 10);
    assert_eq!(
        sql_count(&schema, "SELECT count(*) FROM audit_records_202702").await,
        10
    );
    store.drop_schema().await.unwrap();
}

/// Retention of the oldest months: each chain then starts at its first
/// record of the oldest month left (or after its head, when none is left),
/// which verify accepts and the next record continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retention_of_the_oldest_months_keeps_every_chain_verifiable() {
    let (schema, store) = fresh_store().await;
    let mut recs = records();
    // Chain task-events/1 is written in September only.
    for r in recs[..5].iter_mut() {
        r.source.partition = 1;
    }
    assert_eq!(
        store
            .append(&recs[..10], at(2026, 9, 15, 8, 0, 0))
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        store
            .append(&recs[10..20], at(2026, 10, 15, 8, 0, 0))
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        store
            .append(&recs[20..25], at(2026, 10, 31, 23, 0, 0))
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store
            .append(&recs[25..30], at(2026, 11, 1, 1, 0, 0))
            .await
            .unwrap(),
        5
    );
    let starts = "SELECT count(*) FROM audit_chain_starts";
    assert_eq!(
        sql_count(&schema, starts).await,
        4,
        "task-events/0 in three months, /1 in one"
    );

    assert_eq!(
        store
            .enforce_retention(at(2026, 10, 1, 0, 0, 0))
            .await
            .unwrap(),
        1
    );
    assert_verifies(&store, 20).await;
    assert_eq!(sql_count(&schema, starts).await, 2);
    let anchors = sql_value::<Vec<String>>(
        &schema,
        "SELECT array_agg(chain || ' ' || seq ORDER BY chain) FROM audit_chain_anchors",
    )
    .await;
    assert_eq!(anchors, ["task-events/0 6", "task-events/1 6"]);

    assert_eq!(
        store
            .enforce_retention(at(2026, 11, 1, 0, 0, 0))
            .await
            .unwrap(),
        1
    );
    assert_verifies(&store, 5).await;
    assert_eq!(
        store
            .append(&recs[30..], at(2026, 11, 20, 0, 0, 0))
            .await
            .unwrap(),
        10
    );
    assert_verifies(&store, 15).await;
    store.drop_schema().await.unwrap();
}

/// A trail written before migration 6 (with the primary key, heads without
/// times): the upgrade records each chain's time and monthly starts from
/// the rows, drops the key, and the trail verifies and ages out as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_6_backfills_chain_times_and_starts() {
    let (schema, store) = fresh_store().await;
    let recs = records();
    assert_eq!(
        store
            .append(&recs[..10], at(2026, 10, 15, 8, 0, 0))
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        store
            .append(&recs[10..20], at(2026, 11, 15, 8, 0, 0))
            .await
            .unwrap(),
        10
    );
    sql(
        &schema,
        "ALTER TABLE audit_records ADD PRIMARY KEY (chain, chain_seq, received_at);
         UPDATE audit_chain_heads SET last_received_at = NULL;
         DROP TABLE audit_chain_starts;
         DELETE FROM taskstream_audit_migrations WHERE version = 6;",
    )
    .await;
    let upgraded = PgStore::connect_with_schema(&database_url(), 1, &schema)
        .await
        .unwrap();
    upgraded.ready().await.unwrap();
    assert_eq!(indexes(&schema).await, ["audit_records_brin"]);
    let starts = sql_value::<Vec<String>>(
        &schema,
        "SELECT array_agg(chain || ' ' || to_char(month AT TIME ZONE 'UTC', 'YYYY-MM') || ' ' || seq ORDER BY month) FROM audit_chain_starts",
    )
    .await;
    assert_eq!(
        starts,
        ["task-events/0 2026-10 1", "task-events/0 2026-11 11"]
    );
    // The head's time holds back a writer whose clock is behind.
    assert_eq!(
        upgraded
            .append(&recs[20..], at(2026, 11, 1, 0, 0, 0))
            .await
            .unwrap(),
        20
    );
    assert_eq!(
        sql_count(&schema, "SELECT count(*) FROM audit_records_202611").await,
        30
    );
    assert_eq!(
        upgraded
            .enforce_retention(at(2026, 11, 1, 0, 0, 0))
            .await
            .unwrap(),
        1
    );
    assert_verifies(&upgraded, 30).await;
    upgraded.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rejects_a_record_it_cannot_store_as_invalid_not_as_an_outage() {
    let (_, store) = fresh_store().await;
    let mut recs = records();
    recs[1].actor_id = Some("nul\u{0}byte".into());
    match store.append(&recs[..3], Utc::now()).await {
        Err(taskstream::audit::StoreError::Invalid(reason)) => {
            assert!(reason.contains("audit records"), "{reason}")
        }
        other => panic!("expected Invalid (dead-letter the record), got {other:?}"),
    }
    // Nothing of the failed batch was written; the good records still go in.
    assert!(store
        .query(&AuditQuery::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .append(&[recs[0].clone(), recs[2].clone()], Utc::now())
            .await
            .unwrap(),
        2
    );
    assert!(store.verify().await.unwrap().first_break.is_none());
    store.drop_schema().await.unwrap();
}

// ---------------------------------------------------------------- store outage

/// A TCP proxy to the real PostgreSQL that can refuse connections ("down").
struct PgProxy {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
}

impl PgProxy {
    async fn start() -> PgProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        PgProxy { port, up }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/test", self.port)
    }
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_pauses_the_worker_and_nothing_is_lost() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("task-events", 3).unwrap();
    let bootstrap = mock.bootstrap_servers().to_string();
    let redis = RedisServer::start().unwrap();
    let proxy = PgProxy::start().await;
    let schema = schema();
    let group = unique("audit-outage");
    let logs = std::env::temp_dir().join(unique("audit-outage-logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("run.log");
    let port = free_port().unwrap();

    // Start with the database unreachable.
    let p = run_audit(
        &bootstrap,
        &redis.url(),
        &proxy.url(),
        &schema,
        &group,
        &log,
        port,
    );
    let producer = TestProducer::new(&bootstrap).unwrap();
    for i in 0..60 {
        let (key, payload) = pipelines::bench::sample_event(i);
        producer
            .send("task-events", key.as_bytes(), payload.as_bytes())
            .unwrap();
    }
    producer.flush().unwrap();

    // While it is down: not ready, nothing handled, nothing committed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrape(
        port,
        "taskstream_audit_store_errors_total",
        "kind=\"unavailable\"",
    ) < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "no store error seen; log: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_status(port, "/readyz") != Some(503) {
        assert!(
            Instant::now() < deadline,
            "not ready while the audit store is down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(scrape(port, "taskstream_messages_handled_total", "outcome=\"ok\"") <= 0.0);
    assert!(
        scrape(port, "taskstream_dead_letters_total", "") <= 0.0,
        "an outage dead-letters nothing"
    );

    // Back up: everything is written, once.
    proxy.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let store = PgStore::connect_with_schema(&database_url(), 1, &schema)
        .await
        .unwrap();
    let rows = wait_rows(&store, 60, Duration::from_secs(60)).await;
    assert_eq!(
        rows.len(),
        60,
        "log: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(port, "/readyz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "ready again once the store is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
    assert_eq!(committed_offsets_for(&bootstrap, &group), 60);
    assert_eq!(store.query(&AuditQuery::default()).await.unwrap().len(), 60);
    store.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_use_tls_when_the_url_asks_for_it() {
    let (plain, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let ssl_on: String = plain.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let app = unique("tls_check").replace('-', "_");
    let sep = if database_url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{sep}sslmode=require&application_name={app}",
        database_url()
    );
    let schema = schema();
    let store = PgStore::connect_with_schema(&url, 1, &schema).await;
    if ssl_on == "on" {
        let store = store.expect("sslmode=require connects to a server with TLS on");
        let encrypted: bool = plain
            .query_one(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        assert!(encrypted, "the store's connection is encrypted");
        store.drop_schema().await.unwrap();
    } else {
        let err = store
            .err()
            .expect("sslmode=require must not fall back to plain text");
        assert!(
            err.to_string().contains("TLS") || err.to_string().contains("SSL"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------- file store: one writer, crash-safe head

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_on_the_same_directory_refuses_to_start() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("task-events", 1).unwrap();
    let bootstrap = mock.bootstrap_servers().to_string();
    let redis = RedisServer::start().unwrap();
    let dir = std::env::temp_dir().join(unique("audit-one-writer"));
    let run = |log: &Path| {
        taskstream()
            .args(["run", "audit"])
            .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env("REDIS_URL", redis.url())
            .env("TASKSTREAM_AUDIT__STORE", "file")
            .env("TASKSTREAM_AUDIT__DIR", &dir)
            .env("TASKSTREAM_KAFKA__GROUP_PREFIX", unique("audit-one-writer"))
            .env(
                "TASKSTREAM_METRICS_ADDR",
                format!("127.0.0.1:{}", free_port().unwrap()),
            )
            .env("TASKSTREAM_WORKERS__AUDIT__TOPICS", "[\"task-events\"]")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    let first_log = dir.with_extension("first.log");
    let first = Process::logged(run(&first_log), first_log);
    let lock = dir.join("audit.lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.pid().to_string() {
        assert!(
            Instant::now() < deadline,
            "the first writer took no lock; log: {}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let second_log = dir.with_extension("second.log");
    let second = Process::logged(run(&second_log), second_log);
    let status = second.wait(Duration::from_secs(30));
    assert!(!status.success(), "a second writer must not start");
    let text = std::fs::read_to_string(dir.with_extension("second.log")).unwrap();
    assert!(
        text.contains(&dir.display().to_string()) && text.contains(&first.pid().to_string()),
        "the error names the directory and the holder's pid: {text}"
    );
    // Readers run beside the writer.
    let envs = [
        ("TASKSTREAM_AUDIT__STORE", "file".to_string()),
        ("TASKSTREAM_AUDIT__DIR", dir.to_string_lossy().into_owned()),
    ];
    let (ok, out) = cli(&["audit", "verify"], &envs);
    assert!(ok && out.contains("ok: 0 records"), "{out}");
    first.signal(libc::SIGTERM);
    assert!(first.wait(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_accepts_a_trail_left_by_a_crash_between_the_head_temp_write_and_its_rename() {
    let dir = std::env::temp_dir().join(unique("audit-head-crash"));
    let recs = records();
    let store = FileStore::open(&dir).unwrap();
    assert_eq!(store.append(&recs[..20], Utc::now()).await.unwrap(), 20);
    let old_head = std::fs::read(dir.join("chain.head")).unwrap();
    assert_eq!(store.append(&recs[20..], Utc::now()).await.unwrap(), 20);
    let new_head = std::fs::read(dir.join("chain.head")).unwrap();
    drop(store);
    // The second batch's lines are synced; its head reached only the
    // temporary file (cut short here) before the crash.
    std::fs::write(dir.join("chain.head"), &old_head).unwrap();
    std::fs::write(dir.join("chain.head.tmp"), &new_head[..new_head.len() / 2]).unwrap();
    let envs = [
        ("TASKSTREAM_AUDIT__STORE", "file".to_string()),
        ("TASKSTREAM_AUDIT__DIR", dir.to_string_lossy().into_owned()),
    ];
    let (ok, out) = cli(&["audit", "verify"], &envs);
    assert!(ok && out.contains("ok: 40 records"), "{out}");
    // The restarted writer skips the redelivered batch and goes on.
    let store = FileStore::open(&dir).unwrap();
    assert_eq!(store.append(&recs[20..], Utc::now()).await.unwrap(), 0);
    let (ok, out) = cli(&["audit", "verify"], &envs);
    assert!(ok && out.contains("ok: 40 records"), "{out}");
}
