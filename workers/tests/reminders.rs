//! The reminders worker end to end: the real binary on the mock Kafka
//! cluster, a throwaway redis-server and a real SMTP server (aiosmtpd).
//! Reminders are due a second or two after they are produced, so each test
//! takes seconds of real time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use pipelines::config::RedisConfig;
use pipelines::kafka::mock::MockKafka;
use pipelines::state::{RedisStore, ScoreBound, ScoreRange, StateStore};
use pipelines::testing::smtp::{ReceivedMail, SmtpServer};
use pipelines::testing::{free_port, read_topic, unique, ReadMessage, RedisServer, TestProducer};
use serde_json::json;

mod common;
use common::{scrape, taskstream, Process};

const SECRET: &str = "0123456789abcdef-test-secret";

/// Everything one test runs against.
struct Env {
    mock: MockKafka,
    redis: RedisServer,
    smtp: SmtpServer,
    group: String,
    logs: PathBuf,
    producer: TestProducer,
}

impl Env {
    fn start() -> Env {
        let mock = MockKafka::start(1).unwrap();
        mock.set_group_initial_rebalance_delay(Duration::ZERO);
        for t in [
            "reminders",
            "task-events",
            "user-events",
            "notification-events",
        ] {
            mock.create_topic(t, 3).unwrap();
        }
        let logs = std::env::temp_dir().join(unique("reminders-logs"));
        std::fs::create_dir_all(&logs).unwrap();
        let producer = TestProducer::new(mock.bootstrap_servers()).unwrap();
        Env {
            redis: RedisServer::start().unwrap(),
            smtp: SmtpServer::start().unwrap(),
            group: unique("reminders-e2e"),
            logs,
            producer,
            mock,
        }
    }

    fn bootstrap(&self) -> String {
        self.mock.bootstrap_servers().to_string()
    }

    /// `taskstream run reminders`, relaying to `smtp_url`.
    fn run(&self, name: &str, smtp_url: &str, port: u16, extra: &[(&str, &str)]) -> Process {
        let log = std::fs::File::create(self.log(name)).unwrap();
        let mut c = taskstream();
        c.args(["run", "reminders"])
            .env("KAFKA_BOOTSTRAP_SERVERS", self.bootstrap())
            .env("REDIS_URL", self.redis.url())
            .env("SMTP_URL", smtp_url)
            .env("TASKSTREAM_REMINDERS__UNSUBSCRIBE_SECRET", SECRET)
            .env("TASKSTREAM_REMINDERS__SEND_TIMEOUT", "2s")
            .env("TASKSTREAM_REMINDERS__CLAIM_LEASE", "4s")
            .env("TASKSTREAM_KAFKA__GROUP_PREFIX", &self.group)
            .env("TASKSTREAM_KAFKA__SESSION_TIMEOUT", "3s")
            .env("TASKSTREAM_RETRY__MAX_BACKOFF", "500ms")
            .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info");
        for (k, v) in extra {
            c.env(k, v);
        }
        Process::new(c.stdout(Stdio::null()).stderr(log).spawn().unwrap())
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    fn logs_text(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.logs).unwrap().flatten() {
            out += &format!("--- {}\n", e.path().display());
            out += &std::fs::read_to_string(e.path()).unwrap_or_default();
        }
        out
    }

    fn send(&self, topic: &str, key: &str, value: serde_json::Value) {
        self.producer
            .send(topic, key.as_bytes(), value.to_string().as_bytes())
            .unwrap();
    }

    fn flush(&self) {
        self.producer.flush().unwrap();
    }

    fn user(&self, user_id: &str, email: &str, tz: &str) {
        self.send(
            "user-events",
            user_id,
            json!({
                "event_id": unique("user"),
                "event_type": "user.created",
                "timestamp": rfc3339(Utc::now()),
                "data": {"user_id": user_id, "email": email, "name": "Ada Lovelace", "timezone": tz}
            }),
        );
    }

    fn request(&self, task_id: &str, user_id: &str, title: &str, in_ms: i64) {
        let now = Utc::now();
        let remind_at = now + chrono::Duration::milliseconds(in_ms);
        self.request_at(task_id, user_id, title, remind_at, now);
    }

    /// An email reminder request sent at `created_at`, for a task due an
    /// hour after that.
    fn request_at(
        &self,
        task_id: &str,
        user_id: &str,
        title: &str,
        remind_at: chrono::DateTime<Utc>,
        created_at: chrono::DateTime<Utc>,
    ) {
        self.send(
            "reminders",
            task_id,
            json!({
                "task_id": task_id,
                "user_id": user_id,
                "title": title,
                "due_at": rfc3339(created_at + chrono::Duration::hours(1)),
                "remind_at": rfc3339(remind_at),
                "notification_method": "email",
                "created_at": rfc3339(created_at)
            }),
        );
    }

    /// Up to `n` outcome events (`notification-events`), read for at most
    /// `timeout`.
    fn outcomes(&self, n: usize, timeout: Duration) -> Vec<ReadMessage> {
        read_topic(&self.bootstrap(), "notification-events", n, timeout).unwrap()
    }

    /// A client of the workers' Redis, on `rt`.
    fn redis_store(&self, rt: &tokio::runtime::Runtime) -> RedisStore {
        rt.block_on(RedisStore::connect(&RedisConfig {
            url: self.redis.url(),
            ..RedisConfig::default()
        }))
        .unwrap()
    }

    /// A started environment, one worker (its metrics on the returned
    /// port) and a user it has read.
    fn with_user(user_id: &str, email: &str, tz: &str) -> (Env, u16, Process) {
        let env = Env::start();
        let port = free_port().unwrap();
        let p = env.run("1", &env.smtp.url(), port, &[]);
        wait_ready(&env, port);
        env.user(user_id, email, tz);
        env.flush();
        std::thread::sleep(Duration::from_millis(300));
        (env, port, p)
    }
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    http(port, "GET", path, "").map(|(status, _)| status)
}

/// One HTTP/1.0 request to 127.0.0.1:`port`: the status and the body. A
/// `POST` body is sent form-urlencoded, as mail clients send RFC 8058's.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let head = if method == "POST" {
        format!(
            "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    } else {
        format!("{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n")
    };
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Some((status, body))
}

/// Waits until `port` answers `/readyz` with 200 (the worker consumes).
fn wait_ready(env: &Env, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(port, "/readyz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "not ready in time; logs:\n{}",
            env.logs_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Messages by subject, counting each.
fn by_subject(mail: &[ReceivedMail]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in mail {
        *out.entry(m.header("Subject").unwrap_or("").to_owned())
            .or_default() += 1;
    }
    out
}

fn settle(env: &Env, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
    let mail = env.smtp.wait_for_messages(n, timeout).unwrap();
    // Anything extra (a duplicate) would arrive right after.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = mail;
    env.smtp.messages().unwrap()
}

#[test]
fn a_requested_reminder_arrives_once_with_recipient_subject_and_body_and_a_hostile_title_is_harmless(
) {
    let (env, port, p) = Env::with_user("u-ada", "ada@example.com", "Europe/Berlin");
    let started = Utc::now();
    env.request("task-1", "u-ada", "Pay the rent", 1500);
    env.request(
        "task-2",
        "u-ada",
        "Hi\r\nBcc: victim@example.com\r\n\r\n<script>alert(1)</script><b>bold</b>",
        1500,
    );
    env.flush();

    let mail = settle(&env, 2, Duration::from_secs(20));
    assert_eq!(mail.len(), 2, "logs:\n{}", env.logs_text());
    let rent = mail
        .iter()
        .find(|m| {
            m.header("Subject")
                .is_some_and(|s| s.contains("Pay the rent"))
        })
        .expect("the rent reminder");
    assert_eq!(rent.recipients, vec!["ada@example.com".to_string()]);
    assert!(rent.mail_from.contains("reminders@"), "{}", rent.mail_from);
    let text = rent.part("text/plain").expect("a plain-text part");
    assert!(text.contains("Pay the rent"), "{text}");
    assert!(text.contains("/tasks/task-1"), "{text}");
    assert!(
        rent.header("Message-ID")
            .is_some_and(|m| m.contains("reminder-")),
        "a Message-ID derived from the reminder"
    );
    assert!(rent.header("List-Unsubscribe").is_some());
    assert_eq!(
        rent.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );

    let hostile = mail
        .iter()
        .find(|m| m.header("Subject").is_some_and(|s| s.contains("Bcc")))
        .expect("the hostile reminder");
    assert_eq!(
        hostile.recipients,
        vec!["ada@example.com".to_string()],
        "no recipient added"
    );
    assert!(hostile.header("Bcc").is_none(), "no header added");
    assert!(!hostile.header("Subject").unwrap().contains('\n'));
    let html = hostile.part("text/html").expect("an HTML part");
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");

    // Each outcome is published once, with the schedule and the actual time.
    let events = env.outcomes(2, Duration::from_secs(10));
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e.header("event-type"), Some("notification.sent"));
        let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(v["user_id"], "u-ada");
        assert_eq!(v["attributes"]["channel"], "email");
        let scheduled: chrono::DateTime<Utc> = v["attributes"]["scheduled_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let actual: chrono::DateTime<Utc> = v["attributes"]["actual_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(actual >= scheduled && scheduled > started);
        assert!(
            (actual - scheduled).num_milliseconds() < 1000,
            "sent on time: {v}"
        );
    }
    assert_eq!(scrape(port, "taskstream_reminders_sent_total", ""), 2.0);
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
}

/// A reminder planned again after it fired (another message naming the
/// same task, time and channel: the demo's task and reminder request for
/// task 124 do) fires again, finds it was sent, and neither mails nor
/// publishes its outcome a second time.
#[test]
fn a_reminder_planned_again_after_it_fired_publishes_its_outcome_once() {
    let (env, port, p) = Env::with_user("u-ada", "ada@example.com", "Europe/Berlin");
    let now = Utc::now();
    let remind_at = now + chrono::Duration::milliseconds(1500);
    env.request_at("task-again", "u-ada", "Pay the rent", remind_at, now);
    env.flush();
    let mail = settle(&env, 1, Duration::from_secs(20));
    assert_eq!(mail.len(), 1, "logs:\n{}", env.logs_text());
    let first = env.outcomes(1, Duration::from_secs(10));
    assert_eq!(first.len(), 1);

    // Another message (its own content id) planning the same reminder.
    env.request_at("task-again", "u-ada", "Pay the rent", remind_at, Utc::now());
    env.flush();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(env.smtp.messages().unwrap().len(), 1, "mailed once");
    let events = env.outcomes(2, Duration::from_secs(5));
    assert_eq!(
        events.len(),
        1,
        "the outcome published once; logs:\n{}",
        env.logs_text()
    );
    assert_eq!(scrape(port, "taskstream_reminders_sent_total", ""), 1.0);
    // Nothing of the second plan is left behind in the schedule.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = env.redis_store(&rt);
    let task_index = rt.block_on(store.hget_all("reminders:task:task-again"));
    assert!(task_index.unwrap().is_empty());
    let payloads = rt.block_on(store.any_key_with_prefix("reminders:reminder:", 10_000));
    assert_eq!(payloads.unwrap(), Some(false));
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
}

#[test]
fn completing_the_task_first_cancels_and_a_due_date_change_moves_it() {
    let env = Env::start();
    let port = free_port().unwrap();
    let p = env.run("1", &env.smtp.url(), port, &[]);
    wait_ready(&env, port);
    env.user("u-bob", "bob@example.com", "America/New_York");
    let now = Utc::now();
    let task = |id: &str, kind: &str, title: &str, due_in_ms: i64| {
        json!({
            "event_id": unique("task"),
            "event_type": kind,
            "timestamp": rfc3339(Utc::now()),
            "data": {
                "task_id": id,
                "user_id": "u-bob",
                "title": title,
                "due_date": rfc3339(now + chrono::Duration::milliseconds(due_in_ms)),
                "reminder_offsets": ["-1s"]
            }
        })
    };
    // Cancelled: completed before its reminder (due in 3 s, reminder at 2 s).
    env.send(
        "task-events",
        "t-cancel",
        task("t-cancel", "task.created", "Cancelled one", 3000),
    );
    env.send(
        "task-events",
        "t-cancel",
        json!({"event_id": unique("task"), "event_type": "task.completed", "timestamp": rfc3339(Utc::now()),
               "data": {"task_id": "t-cancel", "user_id": "u-bob", "completed": true}}),
    );
    // Moved: due in a minute, then moved to 3.5 s from now.
    env.send(
        "task-events",
        "t-move",
        task("t-move", "task.created", "Moved one", 60_000),
    );
    env.send(
        "task-events",
        "t-move",
        task("t-move", "task.updated", "Moved one", 3500),
    );
    env.flush();

    let mail = settle(&env, 1, Duration::from_secs(20));
    let subjects = by_subject(&mail);
    assert_eq!(
        subjects.len(),
        1,
        "{subjects:?}; logs:\n{}",
        env.logs_text()
    );
    let (subject, n) = subjects.iter().next().unwrap();
    assert!(subject.contains("Moved one"), "{subject}");
    assert_eq!(*n, 1);
    assert!(
        Utc::now() - now < chrono::Duration::seconds(20),
        "the moved reminder did not wait for the old due date"
    );
    // Wait past the cancelled reminder's time: still nothing for it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!by_subject(&env.smtp.messages().unwrap())
        .keys()
        .any(|s| s.contains("Cancelled")));
    assert!(scrape(port, "taskstream_reminders_cancelled_total", "") >= 2.0);
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
}

#[test]
fn two_replicas_and_a_rebalance_send_each_reminder_once() {
    let env = Env::start();
    let (pa, pb) = (free_port().unwrap(), free_port().unwrap());
    let a = env.run("a", &env.smtp.url(), pa, &[]);
    let b = env.run("b", &env.smtp.url(), pb, &[]);
    wait_ready(&env, pa);
    wait_ready(&env, pb);
    env.user("u-cy", "cy@example.com", "UTC");
    env.flush();
    std::thread::sleep(Duration::from_millis(500));
    // 30 reminders spread over every partition, due over the next 4 s.
    for i in 0..30 {
        env.request(
            &format!("t-{i}"),
            "u-cy",
            &format!("Reminder {i}"),
            1500 + 100 * i,
        );
    }
    env.flush();
    // B leaves mid-way: its partitions (and shards) move to A.
    std::thread::sleep(Duration::from_millis(2000));
    b.signal(libc::SIGTERM);
    assert!(b.wait(Duration::from_secs(30)).success());

    let mail = settle(&env, 30, Duration::from_secs(30));
    let subjects = by_subject(&mail);
    assert_eq!(
        subjects.len(),
        30,
        "{subjects:?}; logs:\n{}",
        env.logs_text()
    );
    assert!(subjects.values().all(|n| *n == 1), "{subjects:?}");
    assert_eq!(mail.len(), 30);
    a.signal(libc::SIGTERM);
    assert!(a.wait(Duration::from_secs(30)).success());
}

/// A relay that accepts connections and never answers: a send hangs there
/// until `send_timeout`, so a test can kill the worker mid-delivery.
fn black_hole() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    port
}

#[test]
fn a_worker_killed_after_claiming_sends_once_after_restart() {
    let env = Env::start();
    let port = free_port().unwrap();
    let hole = black_hole();
    let slow = [
        ("TASKSTREAM_REMINDERS__SEND_TIMEOUT", "5s"),
        ("TASKSTREAM_REMINDERS__CLAIM_LEASE", "6s"),
    ];
    let p = env.run("1", &format!("smtp://127.0.0.1:{hole}"), port, &slow);
    // The readiness probe connects to the black hole too: wait for the
    // consumer by the handled-events metric instead.
    env.user("u-dee", "dee@example.com", "UTC");
    env.flush();
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrape(port, "taskstream_messages_handled_total", "") < 1.0 {
        assert!(Instant::now() < deadline, "logs:\n{}", env.logs_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    env.request("t-kill", "u-dee", "Survives a crash", 500);
    env.flush();
    // Wait until it is claimed: its member re-scored to the lease (6 s
    // after the claim, well past its fire time), while delivery hangs.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = env.redis_store(&rt);
    let claimed = |store: &RedisStore| {
        (0..3).any(|p| {
            let members = rt
                .block_on(store.zrange(
                    &format!("reminders:due:reminders:{p}"),
                    ScoreRange {
                        min: ScoreBound::Unbounded,
                        max: ScoreBound::Unbounded,
                        offset: 0,
                        limit: 10,
                    },
                ))
                .unwrap();
            members
                .iter()
                .any(|m| m.score > (Utc::now().timestamp_millis() + 3000) as f64)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !claimed(&store) {
        assert!(
            Instant::now() < deadline,
            "never claimed; logs:\n{}",
            env.logs_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1000));
    p.signal(libc::SIGKILL);
    p.wait(Duration::from_secs(10));
    assert!(env.smtp.messages().unwrap().is_empty());

    // Restarted against the real relay: the dead process's claim runs out
    // (6 s from the claim), then the reminder is sent, once.
    let port = free_port().unwrap();
    let p = env.run("2", &env.smtp.url(), port, &[]);
    let mail = settle(&env, 1, Duration::from_secs(45));
    assert_eq!(mail.len(), 1, "logs:\n{}", env.logs_text());
    assert!(mail[0]
        .header("Subject")
        .unwrap()
        .contains("Survives a crash"));
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
}

#[test]
fn smtp_down_for_ten_seconds_delivers_late_but_once_and_readyz_is_503_meanwhile() {
    let (mut env, port, p) = Env::with_user("u-eve", "eve@example.com", "UTC");
    env.smtp.stop();
    for i in 0..5 {
        env.request(&format!("t-{i}"), "u-eve", &format!("Outage {i}"), 500);
    }
    env.flush();
    let down_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_status(port, "/readyz") != Some(503) {
        assert!(
            Instant::now() < deadline,
            "not ready while the relay is down; logs:\n{}",
            env.logs_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down_at.elapsed()));
    assert_eq!(http_status(port, "/readyz"), Some(503));
    env.smtp.restart().unwrap();

    let mail = settle(&env, 5, Duration::from_secs(30));
    let subjects = by_subject(&mail);
    assert_eq!(
        subjects.len(),
        5,
        "{subjects:?}; logs:\n{}",
        env.logs_text()
    );
    assert!(subjects.values().all(|n| *n == 1), "{subjects:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_status(port, "/readyz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "ready again once the relay is back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(scrape(port, "taskstream_reminders_missed_total", "") <= 0.0);
    let events = env.outcomes(5, Duration::from_secs(10));
    assert_eq!(events.len(), 5);
    for e in &events {
        let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(v["type"], "notification.sent");
        assert!(
            v["attributes"]["lateness_ms"].as_i64().unwrap() > 5000,
            "delivered late, after the outage: {v}"
        );
    }
    assert!(scrape(port, "taskstream_dead_letters_total", "") <= 0.0);
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
}

// ------------------------------------------------- in process, manual clock

/// The worker in this process on the pipeline's runtime with a manual
/// clock, so days pass in milliseconds: the same Kafka, Redis and SMTP as
/// the binary tests.
struct InProcess {
    hand: std::sync::Arc<pipelines::clock::ManualClock>,
    store: RedisStore,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), pipelines::runtime::RuntimeError>>,
}

impl InProcess {
    async fn start(env: &Env, start: chrono::DateTime<Utc>) -> InProcess {
        Self::start_with(env, start, String::new()).await
    }

    async fn start_with(env: &Env, start: chrono::DateTime<Utc>, webhook_url: String) -> InProcess {
        use taskstream::reminders::config::{RemindersConfig, Secret};
        use taskstream::reminders::mailer::Mailer;
        let mut config = pipelines::testing::test_config(&env.bootstrap(), &env.redis.url());
        config.kafka.session_timeout = Duration::from_secs(3);
        let store = RedisStore::connect(&config.redis).await.unwrap();
        let reminders = RemindersConfig {
            unsubscribe_secret: Secret::new(SECRET),
            webhook_url,
            ..RemindersConfig::default()
        };
        let mailer = Mailer::from_config(&reminders, &env.smtp.url()).unwrap();
        let webhook = taskstream::reminders::webhook::Webhook::from_config(&reminders).unwrap();
        let worker = std::sync::Arc::new(taskstream::reminders::RemindersWorker::new(
            mailer, webhook, reminders,
        ));
        let (clock, hand) = pipelines::Clock::manual(start);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let rt = pipelines::Runtime::new(config, shutdown.clone())
            .await
            .unwrap()
            .with_clock(clock);
        let task = tokio::spawn(async move { rt.run(vec![worker]).await });
        InProcess {
            hand,
            store,
            shutdown,
            task,
        }
    }

    /// Waits until `key` exists in the worker's store (an event was handled).
    async fn wait_key(&self, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let there = if key.starts_with("reminders:task:") {
                !self.store.hget_all(key).await.unwrap().is_empty()
            } else {
                self.store.get(key).await.unwrap().is_some()
            };
            if there {
                return;
            }
            assert!(Instant::now() < deadline, "{key} never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn at(s: &str) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&Utc)
}

async fn mail_after(env: &Env, n: usize, wait: Duration) -> Vec<ReceivedMail> {
    let deadline = Instant::now() + wait;
    loop {
        let m = env.smtp.messages().unwrap();
        if m.len() >= n || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dst_change_between_scheduling_and_firing_keeps_the_users_wall_time() {
    let env = Env::start();
    // Friday 2026-03-27, 13:00 in Berlin; DST starts Sunday 02:00.
    let w = InProcess::start(&env, at("2026-03-27T12:00:00Z")).await;
    let user = |id: &str, tz: &str| {
        json!({"event_id": unique("u"), "event_type": "user.created", "timestamp": "2026-03-27T12:00:00Z",
               "data": {"user_id": id, "email": format!("{id}@example.com"), "timezone": tz}})
    };
    env.send("user-events", "berlin", user("berlin", "Europe/Berlin"));
    env.flush();
    w.wait_key("reminders:user:berlin").await;
    // Due Monday 09:00 Berlin (CEST, 07:00 UTC), remind two days before:
    // Saturday 09:00 Berlin, still CET, so 08:00 UTC (47 real hours before,
    // not 48).
    env.send(
        "task-events",
        "dst-task",
        json!({"event_id": unique("t"), "event_type": "task.created", "timestamp": "2026-03-27T12:00:00Z",
               "data": {"task_id": "dst-task", "user_id": "berlin", "title": "Monday meeting",
                        "due_date": "2026-03-30T07:00:00Z", "reminder_offsets": ["-2d"]}}),
    );
    // A request written in naive local time: 09:00 on Sunday in the
    // user's zone (CEST: 07:00 UTC), not 09:00 UTC.
    env.send(
        "reminders",
        "naive-task",
        json!({"task_id": "naive-task", "user_id": "berlin", "title": "Sunday call",
               "remind_at": "2026-03-29T09:00:00", "notification_method": "email",
               "created_at": "2026-03-27T12:00:00Z"}),
    );
    env.flush();
    w.wait_key("reminders:task:dst-task").await;
    w.wait_key("reminders:task:naive-task").await;

    // Saturday 07:59:59.900 UTC = 08:59:59.9 CET: nothing yet.
    w.hand.set(at("2026-03-28T07:59:59.900Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.smtp.messages().unwrap().is_empty());
    // 09:00 CET Saturday = 08:00 UTC: two days before Monday 09:00 in wall
    // time, 47 real hours.
    w.hand.set(at("2026-03-28T08:00:00Z"));
    let m = mail_after(&env, 1, Duration::from_secs(10)).await;
    assert_eq!(m.len(), 1);
    assert!(m[0].header("Subject").unwrap().contains("Monday meeting"));
    // The body shows the due time in the user's wall time.
    assert!(
        m[0].part("text/plain").unwrap().contains("09:00"),
        "{}",
        m[0].part("text/plain").unwrap()
    );

    // Sunday 06:59:59.9 UTC: the naive 09:00 is not 09:00 UTC...
    w.hand.set(at("2026-03-29T06:59:59.900Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.smtp.messages().unwrap().len(), 1);
    // ...but 09:00 CEST.
    w.hand.set(at("2026-03-29T07:00:00Z"));
    let m = mail_after(&env, 2, Duration::from_secs(10)).await;
    assert_eq!(m.len(), 2);
    assert!(m[1].header("Subject").unwrap().contains("Sunday call"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_hours_hold_a_reminder_and_one_later_than_max_lateness_is_recorded_missed() {
    let env = Env::start();
    let w = InProcess::start(&env, at("2026-06-10T21:00:00Z")).await;
    env.send(
        "user-events",
        "night",
        json!({"event_id": unique("u"), "event_type": "user.created", "timestamp": "2026-06-10T21:00:00Z",
               "data": {"user_id": "night", "email": "night@example.com", "timezone": "Europe/Berlin",
                        "preferences": {"quiet_hours": {"start": "22:00", "end": "07:00"}}}}),
    );
    env.flush();
    w.wait_key("reminders:user:night").await;
    let request = |task: &str, title: &str, remind_at: &str| {
        json!({"task_id": task, "user_id": "night", "title": title, "remind_at": remind_at,
               "notification_method": "email", "created_at": "2026-06-10T19:00:00Z"})
    };
    // 23:30 Berlin (CEST): inside quiet hours, held to 07:00 Berlin.
    env.send(
        "reminders",
        "q",
        request("q", "Quiet one", "2026-06-10T21:30:00Z"),
    );
    // Two hours before "now" (the worker was down): later than max_lateness.
    env.send(
        "reminders",
        "m",
        request("m", "Missed one", "2026-06-10T19:00:00Z"),
    );
    env.flush();
    w.wait_key("reminders:task:q").await;

    let events = tokio::task::spawn_blocking({
        let b = env.bootstrap();
        move || read_topic(&b, "notification-events", 1, Duration::from_secs(20))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(events.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&events[0].payload).unwrap();
    assert_eq!(v["type"], "notification.missed");
    assert_eq!(v["task_id"], "m");

    w.hand.set(at("2026-06-10T21:30:00Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.hand.set(at("2026-06-11T04:59:59Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        env.smtp.messages().unwrap().is_empty(),
        "nothing during quiet hours, and nothing for the missed one"
    );
    w.hand.set(at("2026-06-11T05:00:00Z"));
    let m = mail_after(&env, 1, Duration::from_secs(10)).await;
    assert_eq!(m.len(), 1);
    assert!(m[0].header("Subject").unwrap().contains("Quiet one"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.smtp.messages().unwrap().len(), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_traveller_s_new_time_zone_moves_reminders_set_in_local_time() {
    let env = Env::start();
    let w = InProcess::start(&env, at("2026-06-10T06:00:00Z")).await;
    let user = |tz: &str, kind: &str| {
        json!({"event_id": unique("u"), "event_type": kind, "timestamp": "2026-06-10T06:00:00Z",
               "data": {"user_id": "trav", "email": "trav@example.com", "timezone": tz}})
    };
    env.send("user-events", "trav", user("Europe/Berlin", "user.created"));
    env.flush();
    w.wait_key("reminders:user:trav").await;
    // 09:00 wherever the user is, written without a zone.
    env.send(
        "reminders",
        "trip",
        json!({"task_id": "trip", "user_id": "trav", "title": "Morning check-in",
               "remind_at": "2026-06-11T09:00:00", "notification_method": "email",
               "created_at": "2026-06-10T06:00:00Z"}),
    );
    env.flush();
    w.wait_key("reminders:task:trip").await;
    // The user flies to New York: 09:00 there is 13:00 UTC, not 07:00 UTC.
    env.send(
        "user-events",
        "trav",
        user("America/New_York", "user.updated"),
    );
    env.flush();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let first = w
            .store
            .zrange(
                "reminders:due:reminders:0",
                ScoreRange {
                    min: ScoreBound::Unbounded,
                    max: ScoreBound::Unbounded,
                    offset: 0,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        let mut all = first;
        for p in 1..3 {
            all.extend(
                w.store
                    .zrange(
                        &format!("reminders:due:reminders:{p}"),
                        ScoreRange {
                            min: ScoreBound::Unbounded,
                            max: ScoreBound::Unbounded,
                            offset: 0,
                            limit: 10,
                        },
                    )
                    .await
                    .unwrap(),
            );
        }
        let moved =
            all.len() == 1 && all[0].score == at("2026-06-11T13:00:00Z").timestamp_millis() as f64;
        if moved {
            break;
        }
        assert!(Instant::now() < deadline, "not moved: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.hand.set(at("2026-06-11T07:00:00Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        env.smtp.messages().unwrap().is_empty(),
        "not at 09:00 Berlin"
    );
    w.hand.set(at("2026-06-11T13:00:00Z"));
    let m = mail_after(&env, 1, Duration::from_secs(10)).await;
    assert_eq!(m.len(), 1);
    assert!(m[0].header("Subject").unwrap().contains("Morning check-in"));
    w.stop().await;
}

#[test]
fn a_redis_outage_loses_no_reminder_that_arrives_during_it() {
    let mut env = Env::start();
    let port = free_port().unwrap();
    let p = env.run("1", &env.smtp.url(), port, &[]);
    wait_ready(&env, port);
    // Redis goes away (and comes back empty: the harness keeps no data).
    env.redis.stop();
    env.user("u-fay", "fay@example.com", "UTC");
    env.request("t-outage", "u-fay", "Through a Redis outage", 6000);
    env.flush();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_status(port, "/readyz") != Some(503) {
        assert!(Instant::now() < deadline, "not ready while Redis is down");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    env.redis.restart().unwrap();
    let mail = settle(&env, 1, Duration::from_secs(30));
    assert_eq!(mail.len(), 1, "logs:\n{}", env.logs_text());
    assert!(mail[0]
        .header("Subject")
        .unwrap()
        .contains("Through a Redis outage"));
    assert_eq!(mail[0].recipients, vec!["fay@example.com".to_string()]);
    assert!(scrape(port, "taskstream_dead_letters_total", "") <= 0.0);
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_turned_off_or_no_address_sends_nothing_and_records_why() {
    let env = Env::start();
    let w = InProcess::start(&env, at("2026-06-10T08:00:00Z")).await;
    env.send(
        "user-events",
        "quiet-user",
        json!({"event_id": unique("u"), "event_type": "user.created", "timestamp": "2026-06-10T08:00:00Z",
               "data": {"user_id": "quiet-user", "email": "q@example.com", "timezone": "UTC",
                        "preferences": {"email_notifications": false}}}),
    );
    env.flush();
    w.wait_key("reminders:user:quiet-user").await;
    for (task, user) in [("off", "quiet-user"), ("nobody", "unknown-user")] {
        env.send(
            "reminders",
            task,
            json!({"task_id": task, "user_id": user, "title": "Not sent",
                   "remind_at": "2026-06-10T08:30:00Z", "notification_method": "email",
                   "created_at": "2026-06-10T08:00:00Z"}),
        );
    }
    env.flush();
    w.wait_key("reminders:task:off").await;
    w.wait_key("reminders:task:nobody").await;
    w.hand.set(at("2026-06-10T08:30:00Z"));
    let events = tokio::task::spawn_blocking({
        let b = env.bootstrap();
        move || read_topic(&b, "notification-events", 2, Duration::from_secs(20))
    })
    .await
    .unwrap()
    .unwrap();
    let mut reasons: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
            assert_eq!(v["type"], "notification.failed");
            (
                v["task_id"].as_str().unwrap().to_owned(),
                v["attributes"]["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            ("nobody".to_owned(), "no_address".to_owned()),
            ("off".to_owned(), "opted_out".to_owned())
        ]
    );
    assert!(env.smtp.messages().unwrap().is_empty());
    w.stop().await;
}

#[test]
fn the_demo_writes_reminder_email_into_out_mail() {
    let out = std::env::temp_dir().join(unique("reminders-demo"));
    let result = taskstream()
        .args(["demo", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&result.stdout).into_owned()
        + &String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{text}");
    let mail: Vec<String> = std::fs::read_dir(out.join("mail"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        // The demo user's reminders. The recurring demo's next occurrence
        // (09:00 New York on the next weekday) gets its assignee's default
        // reminder 30 minutes before: within `max_lateness`, so sent, when
        // the demo runs between 13:30 and 14:00 UTC on a weekday.
        .filter(|m| m.contains("ada@example.com"))
        .collect();
    assert_eq!(mail.len(), 3, "{text}");
    assert!(mail.iter().any(|m| m.contains("Send the quarterly report")));
    assert!(
        !mail.iter().any(|m| m.contains("Cancelled by completion")),
        "the completed task's reminder was cancelled"
    );
    assert!(text.contains("notification.sent"), "{text}");
    let _ = std::fs::remove_dir_all(&out);
}

/// An HTTP endpoint that answers 200 to everything and keeps the bodies.
async fn hook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    log.lock()
                        .unwrap()
                        .push(text[end + 4..end + 4 + length].to_string());
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_requests_go_to_the_webhook_once() {
    let env = Env::start();
    let (url, bodies) = hook().await;
    let w = InProcess::start_with(&env, at("2026-06-10T08:00:00Z"), url).await;
    env.send(
        "reminders",
        "pushed",
        json!({"task_id": "pushed", "user_id": "u-push", "title": "Pushed reminder",
               "remind_at": "2026-06-10T08:30:00Z", "notification_method": "push",
               "created_at": "2026-06-10T08:00:00Z"}),
    );
    env.flush();
    w.wait_key("reminders:task:pushed").await;
    w.hand.set(at("2026-06-10T08:30:00Z"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while bodies.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "nothing posted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(v["task_id"], "pushed");
    assert!(got[0].contains("Pushed reminder"), "{}", got[0]);
    assert!(
        env.smtp.messages().unwrap().is_empty(),
        "no email for a push"
    );
    w.stop().await;
}

/// The `List-Unsubscribe` URL of a received reminder (`<URL>`).
fn unsubscribe_link(mail: &ReceivedMail) -> url::Url {
    let header = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    let link = header
        .trim()
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix('>'))
        .unwrap_or_else(|| panic!("List-Unsubscribe is one <URL>: {header}"));
    url::Url::parse(link).unwrap()
}

#[test]
fn one_click_unsubscribe_stops_reminder_email_and_a_tampered_link_or_a_get_changes_nothing() {
    let env = Env::start();
    let port = free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}/reminders/unsubscribe");
    let p = env.run(
        "1",
        &env.smtp.url(),
        port,
        &[("TASKSTREAM_REMINDERS__UNSUBSCRIBE_URL", &endpoint)],
    );
    wait_ready(&env, port);
    env.user("u-ada", "ada@example.com", "UTC");
    env.user("u-bob", "bob@example.com", "UTC");
    env.flush();
    std::thread::sleep(Duration::from_millis(300));
    env.request("t-first", "u-ada", "First reminder", 1000);
    env.flush();
    let mail = settle(&env, 1, Duration::from_secs(20));
    assert_eq!(mail.len(), 1, "logs:\n{}", env.logs_text());

    // The link in the message is the configured endpoint on this process.
    let link = unsubscribe_link(&mail[0]);
    assert!(link.as_str().starts_with(&endpoint), "{link}");
    let path = format!("{}?{}", link.path(), link.query().unwrap());
    let one_click = "List-Unsubscribe=One-Click";

    // A GET (a mail scanner, a link preview) only shows a form that POSTs.
    let (status, page) = http(port, "GET", &path, "").unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("method=\"post\""), "{page}");
    assert!(
        page.contains("name=\"List-Unsubscribe\" value=\"One-Click\""),
        "{page}"
    );
    // Tampered: another user under Ada's signature, a flipped signature,
    // no signature. 403, and the reason names nothing secret.
    let sig = link
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .unwrap()
        .1
        .into_owned();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    for bad in [
        path.replace("user=u-ada", "user=u-bob"),
        path.replace(&sig, &flipped),
        format!("{}?user=u-ada&channel=email", link.path()),
    ] {
        let (status, body) = http(port, "POST", &bad, one_click).unwrap();
        assert_eq!(status, 403, "{bad}: {body}");
        assert!(!body.contains(SECRET) && !body.contains(&sig), "{body}");
    }
    // The right link without RFC 8058's body is not a one-click request.
    assert_eq!(http(port, "POST", &path, "").unwrap().0, 400);

    // None of that unsubscribed anyone: both still get their reminders.
    env.request("t-second", "u-ada", "Second reminder", 1000);
    env.request("t-bob-1", "u-bob", "Bob first", 1000);
    env.flush();
    let mail = settle(&env, 3, Duration::from_secs(20));
    let subjects = by_subject(&mail);
    assert!(
        subjects.keys().any(|s| s.contains("Second reminder")),
        "{subjects:?}; logs:\n{}",
        env.logs_text()
    );
    assert!(
        subjects.keys().any(|s| s.contains("Bob first")),
        "{subjects:?}"
    );

    // The one-click POST unsubscribes Ada.
    let (status, body) = http(port, "POST", &path, one_click).unwrap();
    assert_eq!(status, 200, "{body}; logs:\n{}", env.logs_text());
    assert!(body.contains("unsubscribed"), "{body}");
    assert_eq!(
        scrape(port, "taskstream_reminders_unsubscribed_total", ""),
        1.0
    );
    // A later profile update that does not mention the preference leaves it.
    env.send(
        "user-events",
        "u-ada",
        json!({"event_id": unique("user"), "event_type": "user.updated",
               "timestamp": rfc3339(Utc::now()),
               "data": {"user_id": "u-ada", "name": "Ada King"}}),
    );
    env.flush();
    std::thread::sleep(Duration::from_millis(500));
    env.request("t-third", "u-ada", "Third reminder", 1000);
    env.request("t-bob-2", "u-bob", "Bob second", 1000);
    env.flush();
    let mail = settle(&env, 4, Duration::from_secs(20));
    let subjects = by_subject(&mail);
    assert!(
        subjects.keys().any(|s| s.contains("Bob second")),
        "{subjects:?}"
    );
    assert!(
        !subjects.keys().any(|s| s.contains("Third reminder")),
        "no email after the unsubscribe: {subjects:?}"
    );
    assert_eq!(mail.len(), 4, "{subjects:?}");
    let events = env.outcomes(5, Duration::from_secs(10));
    let third: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_slice::<serde_json::Value>(&e.payload).unwrap())
        .filter(|v| v["task_id"] == "t-third")
        .collect();
    assert_eq!(third.len(), 1, "{third:?}");
    assert_eq!(third[0]["type"], "notification.failed");
    assert_eq!(third[0]["attributes"]["reason"], "unsubscribed");
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
}

/// A webhook endpoint on a fixed port that answers `200` and keeps the
/// bodies; `stop` closes the port (connections refused), `start` opens it
/// again.
struct StoppableHook {
    port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl StoppableHook {
    fn new() -> StoppableHook {
        let mut h = StoppableHook {
            port: free_port().unwrap(),
            bodies: Default::default(),
            stop: None,
        };
        h.start();
        h
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook?token=t0ps3cret", self.port)
    }

    fn start(&mut self) {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, bodies) = (stop.clone(), self.bodies.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let request = loop {
                    let n = s.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break Some(text);
                    }
                };
                let Some(text) = request else { continue };
                if text.starts_with("POST") {
                    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
                    bodies.lock().unwrap().push(body.to_owned());
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        self.stop = Some(stop);
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            s.store(true, std::sync::atomic::Ordering::SeqCst);
            // The thread drops the listener within its 10 ms poll.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for StoppableHook {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_webhook_that_is_down_makes_readyz_503_and_its_reminder_is_posted_once_when_it_is_back() {
    let env = Env::start();
    let port = free_port().unwrap();
    let mut hook = StoppableHook::new();
    // Long retry waits: an email held up by the webhook's retries would be
    // seconds late.
    let p = env.run(
        "1",
        &env.smtp.url(),
        port,
        &[
            ("TASKSTREAM_REMINDERS__WEBHOOK_URL", &hook.url()),
            ("TASKSTREAM_RETRY__INITIAL_BACKOFF", "6s"),
            ("TASKSTREAM_RETRY__MAX_BACKOFF", "8s"),
        ],
    );
    wait_ready(&env, port);
    env.user("u-mail", "mail@example.com", "UTC");
    env.flush();
    hook.stop();
    let now = Utc::now();
    env.send(
        "reminders",
        "t-hook",
        json!({"task_id": "t-hook", "user_id": "u-hook", "title": "Hooked reminder",
               "remind_at": rfc3339(now + chrono::Duration::milliseconds(800)),
               "notification_method": "push", "created_at": rfc3339(now)}),
    );
    // An email due in the same shard (same key, so same partition) a little
    // later: it must go out on time while the webhook is retried, not wait
    // for the webhook's retry (3 to 6 s here).
    env.send(
        "reminders",
        "t-hook",
        json!({"task_id": "t-mail", "user_id": "u-mail", "title": "Mail meanwhile",
               "remind_at": rfc3339(now + chrono::Duration::milliseconds(2000)),
               "notification_method": "email", "created_at": rfc3339(now)}),
    );
    env.flush();
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        if let Some((503, body)) = http(port, "GET", "/readyz", "") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "ready while the webhook is down; logs:\n{}",
            env.logs_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.contains("webhook"), "{body}");
    assert!(
        !body.contains("t0ps3cret"),
        "the URL's token is never shown: {body}"
    );
    let mail = settle(&env, 1, Duration::from_secs(20));
    assert_eq!(mail.len(), 1, "logs:\n{}", env.logs_text());
    // It stays down (probes fail too), and nothing is recorded as failed.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(http_status(port, "/readyz"), Some(503));
    assert!(scrape(port, "taskstream_reminders_failed_total", "") <= 0.0);
    assert!(hook.bodies.lock().unwrap().is_empty());

    hook.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.bodies.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "not posted after the webhook came back; logs:\n{}",
            env.logs_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_status(port, "/readyz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "ready again once the webhook is back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "posted once: {bodies:?}");
    assert!(bodies[0].contains("Hooked reminder"), "{}", bodies[0]);
    let events = env.outcomes(2, Duration::from_secs(10));
    assert_eq!(events.len(), 2);
    for e in &events {
        let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(v["type"], "notification.sent", "{v}");
        let late = v["attributes"]["lateness_ms"].as_i64().unwrap();
        if v["attributes"]["channel"] == "push" {
            assert!(late > 4000, "sent after the outage, late: {v}");
        } else {
            assert_eq!(v["attributes"]["channel"], "email");
            assert!(late < 1200, "email on time during the webhook outage: {v}");
        }
    }
    p.signal(libc::SIGTERM);
    assert!(p.wait(Duration::from_secs(30)).success());
}
