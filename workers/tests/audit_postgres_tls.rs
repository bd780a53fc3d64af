//! The PostgreSQL audit store against a throwaway cluster started by the
//! test (`ssl=on`, a certificate from a test CA made with `openssl`): what
//! each `sslmode` accepts and refuses, and a server that stops answering.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use pipelines::kafka::mock::MockKafka;
use pipelines::testing::{free_port, unique, PostgresServer, RedisServer, TestCa, TestProducer};
use pipelines::Worker;
use taskstream::audit::pg_store::{PgOptions, PgStore};
use taskstream::audit::record::RecordSource;
use taskstream::audit::{AuditQuery, AuditRecord, AuditStore, AuditWorker};

mod common;
use common::{scrape, taskstream, Process};

fn record(i: i64) -> AuditRecord<'static> {
    AuditRecord {
        event_id: format!("tls-{i}").into(),
        event_type: "task.created".into(),
        operation: "created".into(),
        actor_id: Some("u1".into()),
        task_id: Some(format!("t{i}").into()),
        project_id: None,
        occurred_at: Utc::now(),
        received_at: Utc::now(),
        changes: Default::default(),
        details: None,
        source: RecordSource {
            topic: "task-events".into(),
            partition: 0,
            offset: i,
            dialect: "canonical".into(),
        },
        ip_address: None,
        user_agent: None,
    }
}

fn options(schema: &str) -> PgOptions {
    PgOptions {
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        ..PgOptions::new(schema, 1)
    }
}

/// A URL naming the server `host` (what the certificate is checked
/// against) while connecting to 127.0.0.1 (`hostaddr`).
fn url_as(pg: &PostgresServer, host: &str, params: &str) -> String {
    format!(
        "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&{params}",
        pg.port()
    )
}

/// Whether `schema` exists: the store creates it on its first connection.
async fn schema_exists(pg: &PostgresServer, schema: &str) -> bool {
    let (client, conn) = tokio_postgres::connect(&pg.url("sslmode=disable"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    n > 0
}

/// Connects, writes two records and checks the connection is encrypted.
async fn accepted(pg: &PostgresServer, url: &str) {
    let schema = unique("tls_ok").replace('-', "_");
    let store = PgStore::new(url, &options(&schema)).unwrap();
    store.ready().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(
        store
            .append(&[record(1), record(2)], Utc::now())
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.query(&AuditQuery::default()).await.unwrap().len(), 2);
    let (client, conn) = tokio_postgres::connect(&pg.url("sslmode=disable"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let plain: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'taskstream-audit' AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0, "{url}: every store connection is encrypted");
    store.drop_schema().await.unwrap();
}

/// Refused with an error that says why; the worker is not ready; nothing
/// is written (the schema is never even created).
async fn refused(pg: &PostgresServer, url: &str, why: &str) {
    let schema = unique("tls_refused").replace('-', "_");
    let store = std::sync::Arc::new(PgStore::new(url, &options(&schema)).unwrap());
    let err = store.ready().await.expect_err(url).to_string();
    assert!(
        err.contains("certificate verify failed") && err.contains(why),
        "{url}: {err}"
    );
    let append = store.append(&[record(1)], Utc::now()).await;
    assert!(append.is_err(), "{url}: a refused server takes no record");
    let worker = AuditWorker::new(store, "postgres", Default::default());
    let deps = worker.check_dependencies().await;
    assert!(
        deps.iter()
            .any(|(name, state)| *name == "audit store" && state.is_err()),
        "{url}: not ready: {deps:?}"
    );
    assert!(!schema_exists(pg, &schema).await, "{url}: nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_checks_what_libpq_says_it_checks() {
    let pg = PostgresServer::start_tls().unwrap();
    let ca = pg.ca().unwrap().cert().display().to_string();
    let other_dir = std::env::temp_dir().join(unique("other-ca"));
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = TestCa::new(&other_dir, "someone else's CA").unwrap();
    let other_ca = other.cert().display().to_string();

    // verify-full: the right CA and the name in the certificate.
    accepted(
        &pg,
        &url_as(
            &pg,
            "db.test",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    )
    .await;
    // verify-full: right CA, a name the certificate does not have.
    refused(
        &pg,
        &url_as(
            &pg,
            "wrong.test",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "verify-full",
    )
    .await;
    // verify-full: the right name, signed by a CA we do not trust.
    refused(
        &pg,
        &url_as(
            &pg,
            "db.test",
            &format!("sslmode=verify-full&sslrootcert={other_ca}"),
        ),
        &other_ca,
    )
    .await;
    // verify-full without sslrootcert: the system's roots, which do not
    // include the test CA.
    refused(
        &pg,
        &url_as(&pg, "db.test", "sslmode=verify-full"),
        "system",
    )
    .await;
    // verify-ca: the chain only, so another name is fine...
    accepted(
        &pg,
        &url_as(
            &pg,
            "wrong.test",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
    )
    .await;
    // ...but another CA is not.
    refused(
        &pg,
        &url_as(
            &pg,
            "db.test",
            &format!("sslmode=verify-ca&sslrootcert={other_ca}"),
        ),
        "verify-ca",
    )
    .await;
    // require: encrypted, nothing verified (libpq's meaning).
    accepted(&pg, &url_as(&pg, "wrong.test", "sslmode=require")).await;
    let _ = std::fs::remove_dir_all(&other_dir);
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

async fn rows(pg: &PostgresServer, schema: &str) -> i64 {
    let Ok((client, conn)) =
        tokio_postgres::connect(&pg.url("sslmode=disable"), tokio_postgres::NoTls).await
    else {
        return -1;
    };
    tokio::spawn(conn);
    client
        .query_one(&format!("SELECT count(*) FROM {schema}.audit_records"), &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

fn produce(producer: &TestProducer, range: std::ops::Range<u64>) {
    for i in range {
        let (key, payload) = pipelines::bench::sample_event(i);
        producer
            .send("task-events", key.as_bytes(), payload.as_bytes())
            .unwrap();
    }
    producer.flush().unwrap();
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    log: &Process,
    mut ok: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}; log: {}", log.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_makes_the_worker_not_ready_then_it_recovers() {
    let pg = PostgresServer::start().unwrap();
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("task-events", 2).unwrap();
    let bootstrap = mock.bootstrap_servers().to_string();
    let redis = RedisServer::start().unwrap();
    let schema = unique("audit_hang").replace('-', "_");
    let port = free_port().unwrap();
    let log = std::env::temp_dir().join(unique("audit-hang.log"));
    let p = Process::logged(
        taskstream()
            .args(["run", "audit"])
            .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env("REDIS_URL", redis.url())
            .env("DATABASE_URL", pg.url("sslmode=disable"))
            .env("TASKSTREAM_AUDIT__STORE", "postgres")
            .env("TASKSTREAM_AUDIT__SCHEMA", &schema)
            .env("TASKSTREAM_AUDIT__STATEMENT_TIMEOUT", "2s")
            .env("TASKSTREAM_AUDIT__CONNECT_TIMEOUT", "2s")
            .env("TASKSTREAM_KAFKA__GROUP_PREFIX", unique("audit-hang"))
            .env("TASKSTREAM_RETRY__MAX_BACKOFF", "500ms")
            .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("TASKSTREAM_WORKERS__AUDIT__TOPICS", "[\"task-events\"]")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    );
    let producer = TestProducer::new(&bootstrap).unwrap();
    produce(&producer, 0..40);
    wait_until(
        "the first 40 written",
        Duration::from_secs(90),
        &p,
        async || rows(&pg, &schema).await == 40,
    )
    .await;
    wait_until("ready", Duration::from_secs(30), &p, async || {
        http_status(port, "/readyz") == Some(200)
    })
    .await;

    // The server stops answering; events keep coming.
    pg.pause();
    produce(&producer, 40..80);
    wait_until(
        "not ready while the server does not answer",
        Duration::from_secs(60),
        &p,
        async || http_status(port, "/readyz") == Some(503),
    )
    .await;
    wait_until(
        "a write gave up at the statement timeout",
        Duration::from_secs(60),
        &p,
        async || p.log().contains("audit.statement_timeout"),
    )
    .await;
    assert!(
        scrape(
            port,
            "taskstream_audit_store_errors_total",
            "kind=\"unavailable\""
        ) >= 1.0,
        "{}",
        p.log()
    );
    assert!(
        scrape(port, "taskstream_dead_letters_total", "") <= 0.0,
        "a hung store dead-letters nothing"
    );

    // It answers again: everything is written, once, and the worker is ready.
    pg.resume();
    wait_until("all 80 written", Duration::from_secs(90), &p, async || {
        rows(&pg, &schema).await == 80
    })
    .await;
    wait_until("ready again", Duration::from_secs(30), &p, async || {
        http_status(port, "/readyz") == Some(200)
    })
    .await;
    let store = PgStore::connect_with_schema(&pg.url("sslmode=disable"), 1, &schema)
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    assert_eq!(report.records_checked, 80);
    assert!(report.first_break.is_none(), "{report:?}");
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
}
