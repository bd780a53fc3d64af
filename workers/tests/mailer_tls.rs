//! Reminder email over TLS, against aiosmtpd: STARTTLS (`?tls=required`) and
//! implicit TLS (`smtps://`), through OpenSSL (lettre's native-tls).
//!
//! Its own test binary, with one test: the test servers' self-signed
//! certificates are trusted through `SSL_CERT_FILE`, which OpenSSL's probe
//! reads once per process, before the first TLS connector is built.

use std::time::Duration;

use pipelines::testing::smtp::{SmtpServer, SmtpTls};
use pipelines::testing::unique;
use taskstream::reminders::config::{RemindersConfig, Secret};
use taskstream::reminders::mailer::Mailer;
use taskstream::reminders::notification::{Channel, ReminderNotification};

fn reminder(id: &str) -> ReminderNotification {
    ReminderNotification {
        reminder_id: format!("{id}|2026-11-26T08:30:00Z|email"),
        task_id: id.into(),
        title: format!("Over TLS {id}"),
        description: None,
        due_at: None,
        time_zone: chrono_tz::Tz::UTC,
        fire_at: "2026-11-26T08:30:00Z".parse().unwrap(),
        channel: Channel::Email,
        email: Some("ada@example.com".into()),
        display_name: None,
        user_id: "user-7".into(),
        link: None,
    }
}

#[tokio::test]
async fn starttls_and_implicit_tls_relays_deliver_and_an_untrusted_one_is_transient() {
    let starttls = SmtpServer::start_tls(SmtpTls::StartTls).unwrap();
    let smtps = SmtpServer::start_tls(SmtpTls::Implicit).unwrap();
    let untrusted = SmtpServer::start_tls(SmtpTls::StartTls).unwrap();
    let mut bundle = String::new();
    for s in [&starttls, &smtps] {
        bundle.push_str(&std::fs::read_to_string(s.certificate().unwrap()).unwrap());
    }
    let bundle_path = std::env::temp_dir()
        .join(unique("taskstream-ca"))
        .with_extension("pem");
    std::fs::write(&bundle_path, bundle).unwrap();
    // The only test in this process, before any TLS connector exists.
    std::env::set_var("SSL_CERT_FILE", &bundle_path);

    let config = RemindersConfig {
        unsubscribe_secret: Secret::new("tls-test-secret-0123456789"),
        send_timeout: Duration::from_secs(5),
        ..RemindersConfig::default()
    };
    for (server, id) in [(&starttls, "starttls"), (&smtps, "smtps")] {
        let mailer = Mailer::from_config(&config, &server.url()).unwrap();
        let delivered = mailer
            .send(&reminder(id))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", server.url()));
        let mail = server.wait_for_messages(1, Duration::from_secs(5)).unwrap();
        assert_eq!(mail.len(), 1, "{id}");
        assert_eq!(mail[0].recipients, vec!["ada@example.com".to_string()]);
        assert_eq!(
            mail[0].header("Message-ID"),
            Some(delivered.message_id.as_str())
        );
        assert!(mail[0]
            .header("Subject")
            .is_some_and(|s| s.contains(&format!("Over TLS {id}"))));
    }

    // A certificate nobody vouches for: not this reminder's fault, so transient
    // (the relay is not usable until the operator fixes it); nothing is sent.
    let mailer = Mailer::from_config(&config, &untrusted.url()).unwrap();
    let err = mailer.send(&reminder("untrusted")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(untrusted.messages().unwrap().is_empty());
    let _ = std::fs::remove_file(&bundle_path);
}
