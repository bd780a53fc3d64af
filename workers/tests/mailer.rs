//! Reminder delivery against real receivers: a real SMTP server (Debian's
//! aiosmtpd, started by the harness on a free port), lettre's file transport,
//! and a small HTTP endpoint for the webhook.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipelines::testing::smtp::SmtpServer;
use pipelines::testing::unique;
use pipelines::WorkerError;
use taskstream::reminders::config::{RemindersConfig, Secret};
use taskstream::reminders::mailer::Mailer;
use taskstream::reminders::notification::{Channel, ReminderNotification};
use taskstream::reminders::unsubscribe::UnsubscribeLinks;
use taskstream::reminders::webhook::Webhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "integration-test-secret-0123456789";

fn config() -> RemindersConfig {
    RemindersConfig {
        from: "Taskstream Reminders <reminders@mail.example.com>".into(),
        link_base_url: "https://app.example.com".into(),
        unsubscribe_secret: Secret::new(SECRET),
        mail_dir: scratch_dir("mail").display().to_string(),
        send_timeout: Duration::from_secs(5),
        smtp_pool_size: 2,
        ..RemindersConfig::default()
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(unique(&format!("taskstream-{name}")))
}

fn reminder(id: &str, email: &str, title: &str) -> ReminderNotification {
    ReminderNotification {
        reminder_id: format!("{id}|2026-11-26T08:30:00Z|email"),
        task_id: id.into(),
        title: title.into(),
        description: Some("Slides are in the shared folder.".into()),
        due_at: Some("2026-11-26T09:00:00Z".parse().unwrap()),
        time_zone: "Europe/Berlin".parse().unwrap(),
        fire_at: "2026-11-26T08:30:00Z".parse().unwrap(),
        channel: Channel::Email,
        email: Some(email.into()),
        display_name: Some("Ada Lovelace".into()),
        user_id: "user-7".into(),
        link: None,
    }
}

fn smtp_mailer(server: &SmtpServer) -> Mailer {
    Mailer::from_config(&config(), &server.url()).expect("mailer builds")
}

#[tokio::test]
async fn delivered_email_has_recipient_subject_bodies_message_id_and_unsubscribe_headers() {
    let server = SmtpServer::start().unwrap();
    let mailer = smtp_mailer(&server);
    let n = reminder("task-1", "ada@example.com", "Quarterly review");
    let delivered = mailer.send(&n).await.expect("delivered");
    assert!(delivered.receipt.starts_with("250"), "{delivered:?}");

    let mail = server.wait_for_messages(1, Duration::from_secs(5)).unwrap();
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    assert_eq!(m.recipients, vec!["ada@example.com".to_string()]);
    assert_eq!(m.mail_from, "reminders@mail.example.com");
    assert_eq!(m.header("To"), Some("Ada Lovelace <ada@example.com>"));
    assert_eq!(
        m.header("Subject"),
        Some("Reminder: Quarterly review (due Thu 26 Nov 10:00 CET)")
    );
    assert!(m
        .header("Content-Type")
        .is_some_and(|c| c.starts_with("multipart/alternative")));

    let text = m.part("text/plain").expect("a text part");
    assert!(text.contains("Hello Ada Lovelace,"), "{text}");
    assert!(
        text.contains("It is due Thursday 26 November 2026, 10:00 CET."),
        "{text}"
    );
    assert!(
        text.contains("https://app.example.com/tasks/task-1"),
        "{text}"
    );
    let html = m.part("text/html").expect("an html part");
    assert!(html.contains("<strong>Quarterly review</strong>"), "{html}");

    let message_id = m.header("Message-ID").unwrap();
    assert_eq!(message_id, delivered.message_id);
    assert_eq!(message_id, mailer.message_id(&n.reminder_id));
    assert!(message_id.starts_with("<reminder-"), "{message_id}");
    assert!(message_id.ends_with("@mail.example.com>"), "{message_id}");

    assert_eq!(
        m.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let unsubscribe = m.header("List-Unsubscribe").unwrap();
    let link = unsubscribe
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix('>'))
        .unwrap_or_else(|| panic!("List-Unsubscribe is one <URL>: {unsubscribe}"));
    assert!(
        link.starts_with("https://app.example.com/unsubscribe?"),
        "{link}"
    );
    let links = UnsubscribeLinks::new(
        SECRET.as_bytes(),
        &url::Url::parse("https://app.example.com").unwrap(),
    )
    .unwrap();
    let request = links.verify_link(link).expect("the link verifies");
    assert_eq!(request.user_id, "user-7");
    assert_eq!(request.channel, Channel::Email);
    assert!(text.contains(link), "the body offers the same link: {text}");
}

#[tokio::test]
async fn title_with_crlf_html_and_bcc_adds_no_header_or_recipient() {
    let server = SmtpServer::start().unwrap();
    let mailer = smtp_mailer(&server);
    let title =
        "Pay rent\r\nBcc: thief@example.net\r\nX-Injected: yes\r\n\r\n<script>alert(1)</script>";
    let mut n = reminder("task-2", "ada@example.com", title);
    n.description = Some("<img src=x onerror=alert(1)>\r\n.\r\nQUIT".into());
    mailer.send(&n).await.expect("delivered");

    let mail = server.wait_for_messages(1, Duration::from_secs(5)).unwrap();
    assert_eq!(mail.len(), 1, "one message, no smuggled second one");
    let m = &mail[0];
    assert_eq!(m.recipients, vec!["ada@example.com".to_string()]);
    assert!(m.header("Bcc").is_none());
    assert!(m.header("X-Injected").is_none());
    assert_eq!(m.headers_named("Subject").len(), 1);
    let subject = m.header("Subject").unwrap();
    assert!(!subject.contains(['\r', '\n']), "{subject:?}");
    assert!(
        subject.starts_with("Reminder: Pay rent Bcc: thief@example.net X-Injected: yes"),
        "{subject}"
    );
    let head = &m.raw[..m
        .raw
        .find("\r\n\r\n")
        .or_else(|| m.raw.find("\n\n"))
        .unwrap()];
    assert!(
        !head
            .lines()
            .any(|l| l.starts_with("Bcc") || l.starts_with("X-Injected")),
        "{head}"
    );
    let html = m.part("text/html").unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    let text = m.part("text/plain").unwrap();
    assert!(
        text.contains(".\nQUIT") || text.contains(".\r\nQUIT"),
        "{text}"
    );
}

#[tokio::test]
async fn relay_down_is_transient_and_the_same_reminder_is_delivered_once_it_is_back() {
    let mut server = SmtpServer::start().unwrap();
    let mailer = smtp_mailer(&server);
    // A first message leaves a pooled connection behind, which the outage breaks.
    mailer
        .send(&reminder("task-warm", "ada@example.com", "Warm-up"))
        .await
        .expect("delivered before the outage");

    server.stop();
    let n = reminder("task-3", "ada@example.com", "During the outage");
    let err = mailer.send(&n).await.expect_err("the relay is down");
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "connection");
    match WorkerError::from(err) {
        WorkerError::Unavailable { dependency, .. } => assert_eq!(dependency, "smtp"),
        other => panic!("a relay outage is unavailability, got {other:?}"),
    }
    assert!(mailer.relay_ready().await.is_err(), "not ready while down");

    server.restart().unwrap();
    mailer.relay_ready().await.expect("ready once it is back");
    let delivered = mailer.send(&n).await.expect("delivered after the outage");
    let mail = server.wait_for_messages(2, Duration::from_secs(5)).unwrap();
    assert_eq!(mail.len(), 2);
    assert_eq!(
        mail[1].header("Message-ID"),
        Some(delivered.message_id.as_str())
    );
    assert!(mail[1]
        .header("Subject")
        .is_some_and(|s| s.contains("During the outage")));
}

#[tokio::test]
async fn retrying_with_backoff_through_an_outage_delivers_exactly_once() {
    let mut server = SmtpServer::start().unwrap();
    let mailer = Arc::new(smtp_mailer(&server));
    server.stop();
    let n = reminder("task-4", "ada@example.com", "Outage with retries");
    let sender = {
        let mailer = mailer.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            let mut transient = 0;
            loop {
                match mailer.send(&n).await {
                    Ok(d) => return (transient, d),
                    Err(e) if e.is_transient() => {
                        transient += 1;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(400));
                    }
                    Err(e) => panic!("an outage is never permanent: {e}"),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.messages().unwrap().is_empty());
    server.restart().unwrap();
    let (transient, delivered) = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("delivered after the relay came back")
        .unwrap();
    assert!(transient >= 2, "retried while down: {transient}");
    let mail = server.wait_for_messages(1, Duration::from_secs(5)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.messages().unwrap().len(), 1, "exactly one copy");
    assert_eq!(
        mail[0].header("Message-ID"),
        Some(delivered.message_id.as_str())
    );
}

#[tokio::test]
async fn concurrent_reminders_share_the_pool_and_each_arrives_once() {
    let server = SmtpServer::start().unwrap();
    let mailer = smtp_mailer(&server);
    let reminders: Vec<ReminderNotification> = (0..40)
        .map(|i| {
            reminder(
                &format!("task-c{i}"),
                &format!("user{i}@example.com"),
                "Batch",
            )
        })
        .collect();
    let results = futures::future::join_all(reminders.iter().map(|n| mailer.send(n))).await;
    let mut expected: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("delivered").message_id)
        .collect();
    let mail = server
        .wait_for_messages(40, Duration::from_secs(10))
        .unwrap();
    let mut received: Vec<String> = mail
        .iter()
        .map(|m| m.header("Message-ID").unwrap().to_string())
        .collect();
    expected.sort();
    received.sort();
    assert_eq!(received, expected, "each reminder once");
    let mut ids = received.clone();
    ids.dedup();
    assert_eq!(ids.len(), 40, "forty different Message-IDs");
    for m in &mail {
        assert_eq!(m.recipients.len(), 1);
    }
}

#[tokio::test]
async fn recipient_rejected_with_5xx_is_permanent() {
    let server = SmtpServer::start().unwrap();
    server
        .reply_to_recipient("gone@example.com", "550 5.1.1 mailbox unavailable")
        .unwrap();
    let mailer = smtp_mailer(&server);
    let err = mailer
        .send(&reminder("task-5", "gone@example.com", "Nobody home"))
        .await
        .expect_err("rejected");
    assert!(err.is_permanent(), "{err}");
    assert_eq!(err.reason(), "smtp_5xx");
    assert!(err.to_string().contains("550"), "{err}");
    assert!(matches!(WorkerError::from(err), WorkerError::Permanent(_)));
    // The connection stays usable for the next reminder.
    mailer
        .send(&reminder("task-6", "ada@example.com", "Next one"))
        .await
        .expect("the next reminder is delivered");
    let mail = server.wait_for_messages(1, Duration::from_secs(5)).unwrap();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].recipients, vec!["ada@example.com".to_string()]);
}

#[tokio::test]
async fn recipient_deferred_with_4xx_is_transient_then_delivered() {
    let server = SmtpServer::start().unwrap();
    server
        .reply_to_recipient("busy@example.com", "451 4.3.0 try again later")
        .unwrap();
    let mailer = smtp_mailer(&server);
    let n = reminder("task-7", "busy@example.com", "Greylisted");
    let err = mailer.send(&n).await.expect_err("deferred");
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "smtp_4xx");
    assert!(matches!(
        WorkerError::from(err),
        WorkerError::Unavailable {
            dependency: "smtp",
            ..
        }
    ));
    server.reply_to_recipient("busy@example.com", "").unwrap();
    mailer.send(&n).await.expect("accepted on retry");
    let mail = server.wait_for_messages(1, Duration::from_secs(5)).unwrap();
    assert_eq!(mail[0].recipients, vec!["busy@example.com".to_string()]);
}

#[tokio::test]
async fn a_relay_that_never_answers_times_out_as_transient() {
    // Accepts TCP connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    let cfg = RemindersConfig {
        send_timeout: Duration::from_millis(500),
        ..config()
    };
    let mailer = Mailer::from_config(&cfg, &format!("smtp://127.0.0.1:{port}")).unwrap();
    let started = std::time::Instant::now();
    let err = mailer
        .send(&reminder("task-8", "ada@example.com", "Silence"))
        .await
        .expect_err("no greeting");
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "timeout", "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn without_smtp_url_the_file_transport_writes_an_eml_file() {
    let cfg = config();
    let mailer = Mailer::from_config(&cfg, "").unwrap();
    let dir = PathBuf::from(&cfg.mail_dir);
    assert_eq!(mailer.mail_dir(), Some(dir.as_path()));
    let n = reminder("task-9", "ada@example.com", "Written to a file");
    let delivered = mailer.send(&n).await.expect("written");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    assert_eq!(delivered.receipt, files[0].display().to_string());
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        eml.contains("To: \"Ada Lovelace\" <ada@example.com>"),
        "{eml}"
    );
    assert!(
        eml.contains("Subject: Reminder: Written to a file"),
        "{eml}"
    );
    assert!(
        eml.contains(&format!("Message-ID: {}", delivered.message_id)),
        "{eml}"
    );
    assert!(eml.contains("List-Unsubscribe: <https://app.example.com/unsubscribe?"));
    assert!(eml.contains("Content-Type: text/html"), "{eml}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A one-request-at-a-time HTTP endpoint answering `status`, recording bodies
/// and headers of what it received.
struct Endpoint {
    url: String,
    received: Arc<Mutex<Vec<(String, String)>>>,
}

async fn endpoint(status: u16) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hooks/reminders?token=s3cret",
        listener.local_addr().unwrap().port()
    );
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let head = text[..end].to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break (head, text[end + 4..end + 4 + length].to_string());
                    }
                }
            };
            log.lock().unwrap().push((head, body));
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    Endpoint { url, received }
}

fn webhook(url: &str) -> Webhook {
    let cfg = RemindersConfig {
        webhook_url: url.into(),
        ..config()
    };
    Webhook::from_config(&cfg).unwrap().expect("configured")
}

#[tokio::test]
async fn webhook_posts_the_reminder_as_json_with_an_idempotency_key() {
    let ep = endpoint(204).await;
    let mut n = reminder("task-10", "ada@example.com", "Push me");
    n.channel = Channel::Push;
    let delivered = webhook(&ep.url).send(&n).await.expect("posted");
    assert_eq!(delivered.message_id, n.delivery_key());
    let received = ep.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (head, body) = &received[0];
    assert!(
        head.starts_with("POST /hooks/reminders?token=s3cret HTTP/1.1"),
        "{head}"
    );
    let head_lower = head.to_ascii_lowercase();
    assert!(
        head_lower.contains("content-type: application/json"),
        "{head}"
    );
    assert!(
        head_lower.contains(&format!("idempotency-key: {}", n.delivery_key())),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["type"], "reminder");
    assert_eq!(json["task_id"], "task-10");
    assert_eq!(json["title"], "Push me");
    assert_eq!(json["channel"], "push");
    assert_eq!(json["time_zone"], "Europe/Berlin");
    assert_eq!(json["due_at"], "2026-11-26T09:00:00Z");
    assert_eq!(json["fire_at"], "2026-11-26T08:30:00Z");
    assert_eq!(json["link"], "https://app.example.com/tasks/task-10");
    assert_eq!(json["id"], n.delivery_key());
}

#[tokio::test]
async fn webhook_5xx_is_transient_and_4xx_permanent() {
    let mut n = reminder("task-11", "ada@example.com", "Hook");
    n.channel = Channel::Webhook;
    for (status, transient) in [
        (500, true),
        (503, true),
        (429, true),
        (400, false),
        (404, false),
        (301, false),
    ] {
        let ep = endpoint(status).await;
        let err = webhook(&ep.url).send(&n).await.expect_err("not 2xx");
        assert_eq!(err.is_transient(), transient, "{status}: {err}");
        assert!(err.to_string().contains(&status.to_string()), "{err}");
        assert!(
            !err.to_string().contains("s3cret"),
            "the token is never shown: {err}"
        );
        if transient {
            assert!(matches!(
                WorkerError::from(err),
                WorkerError::Unavailable {
                    dependency: "webhook",
                    ..
                }
            ));
        }
    }
}

#[tokio::test]
async fn webhook_connection_refused_is_transient() {
    let port = pipelines::testing::free_port().unwrap();
    let mut n = reminder("task-12", "ada@example.com", "Nobody listens");
    n.channel = Channel::Webhook;
    let err = webhook(&format!("http://127.0.0.1:{port}/hook?token=s3cret"))
        .send(&n)
        .await
        .expect_err("refused");
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "connection");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn config_check_masks_the_unsubscribe_secret_and_the_smtp_password() {
    let out = common::taskstream()
        .args(["config", "check"])
        .env(
            "SMTP_URL",
            "smtps://mailer:smtp-secret-pw@relay.example.com:465",
        )
        .env(
            "TASKSTREAM_REMINDERS__UNSUBSCRIBE_SECRET",
            "unsubscribe-secret-value-42",
        )
        .env("TASKSTREAM_REMINDERS__FROM", "Reminders <r@example.com>")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for secret in ["smtp-secret-pw", "unsubscribe-secret-value-42"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}"
        );
    }
    assert!(stdout.contains("[reminders]"), "{stdout}");
    assert!(
        stdout.contains("unsubscribe_secret = \"********\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("smtps://mailer:********@relay.example.com:465"),
        "{stdout}"
    );
    assert!(stdout.contains("Reminders <r@example.com>"), "{stdout}");
}

#[test]
fn config_check_rejects_a_relay_without_an_unsubscribe_secret() {
    let out = common::taskstream()
        .args(["config", "check"])
        .env(
            "SMTP_URL",
            "smtp://mailer:smtp-secret-pw@relay.example.com:25",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("reminders.unsubscribe_secret"), "{stderr}");
    assert!(!stderr.contains("smtp-secret-pw"), "{stderr}");
}
