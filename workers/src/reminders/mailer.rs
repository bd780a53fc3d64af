//! Reminder email: builds the message and hands it to an SMTP relay (lettre's
//! SMTP client over a pool of `TCP_NODELAY` connections: [`super::relay`]) or, with no relay configured, writes it as an
//! `.eml` file (lettre's file transport: the demo's `demo-out/mail/`).
//!
//! The relay is `smtp.url` (env `SMTP_URL`) in lettre's URL form:
//! `smtp://host:25` for a local relay without TLS, `smtp://host:587?tls=required`
//! for STARTTLS, `smtps://host:465` for implicit TLS, credentials in the user
//! part (`smtps://user:password@host`); TLS is OpenSSL's (native-tls), like the
//! rest of the binary. The URL is only ever shown masked. At most
//! `reminders.smtp_pool_size` connections are open and kept.
//!
//! Each message is `multipart/alternative` (plain text, then HTML) from the
//! [templates](super::template), with:
//! - `Message-ID: <reminder-{hash}@{domain of reminders.from}>`, the hash a
//!   SHA-256 of the reminder id; with `Date` = the scheduled fire time and a
//!   MIME boundary from the same hash, the whole message is a function of the
//!   reminder, so a resend carries the same bytes and the same id;
//! - `List-Unsubscribe` / `List-Unsubscribe-Post` (RFC 8058), a signed
//!   one-click link ([`super::unsubscribe`]);
//! - `Auto-Submitted: auto-generated` (RFC 3834), so autoresponders stay quiet.
//!
//! The envelope is exactly `reminders.from` → the user's address: it is taken
//! from the `From` and `To` headers lettre builds from typed values, never from
//! template output, so a task title cannot add a recipient.
//!
//! ## Exactly once, and its one window
//!
//! The scheduler marks a reminder sent (a key derived from task, fire time and
//! channel) after [`Mailer::send`] returns `Ok`, which is when the relay has
//! accepted the message (`250` to the end of `DATA`). A crash between that
//! acceptance and the mark sends the reminder a second time after the restart;
//! so does a `250` lost on the way back (connection cut, `send_timeout` hit
//! after the relay had accepted): that attempt reports transient and is
//! retried. No protocol closes that window (SMTP has no idempotent submission); the
//! deterministic `Message-ID` makes the second copy recognisable, and mail
//! stores and clients that deduplicate by `Message-ID` (Gmail does) show one.
//!
//! ## Failures
//!
//! [`DeliveryError`] is transient for a 4xx reply, a refused/reset/timed-out
//! connection, a TLS failure and a rejected login (a relay we cannot use now:
//! the scheduler keeps the reminder and reports not-ready), and permanent for a
//! 5xx reply to the message or its recipient, an invalid or missing address
//! (recorded as failed, never retried).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use pipelines::config::{mask_url, ConfigError};
use tokio::sync::Semaphore;

use super::config::RemindersConfig;
use super::notification::{
    delivery_key, Channel, Delivered, DeliveryError, PermanentCause, ReminderNotification,
    TransientCause,
};
use super::relay::{RelayAddress, RelayError, SmtpRelay};
use super::template::{single_line, ReminderTemplates, TemplateError};
use super::unsubscribe::{UnsubscribeError, UnsubscribeLinks};

/// The mailer could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("smtp.url {url}: {reason}")]
    SmtpUrl { url: String, reason: String },
    #[error("reminders.mail_dir {dir}: {reason}")]
    MailDir { dir: PathBuf, reason: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Unsubscribe(#[from] UnsubscribeError),
}

/// Where messages go.
enum Transport {
    Smtp {
        relay: SmtpRelay,
        /// `smtp.url` with the password masked: the only form ever shown.
        masked_url: String,
    },
    Files {
        transport: AsyncFileTransport<Tokio1Executor>,
        dir: PathBuf,
    },
}

/// Sends reminder email. Cheap to share (`Arc`); sends may run concurrently,
/// at most `reminders.smtp_pool_size` at a time.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    /// Right-hand side of every `Message-ID`.
    id_domain: String,
    templates: ReminderTemplates,
    unsubscribe: UnsubscribeLinks,
    send_timeout: Duration,
    /// Bounds open connections (the pool bounds idle ones).
    in_flight: Semaphore,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("destination", &self.destination())
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds the mailer: SMTP when `smtp_url` (`smtp.url`) is set, else files
    /// in `reminders.mail_dir`. Validates the config, loads and checks the
    /// templates; connects to nothing (the first send does).
    pub fn from_config(config: &RemindersConfig, smtp_url: &str) -> Result<Mailer, MailerError> {
        config.validate(smtp_url)?;
        let from = config.sender()?;
        let templates = ReminderTemplates::load(&config.templates_dir, &config.link_base_url)?;
        let unsubscribe = UnsubscribeLinks::at(
            config.unsubscribe_secret.expose().as_bytes(),
            &config.unsubscribe_endpoint()?,
        )?;
        let transport = if smtp_url.is_empty() {
            let dir = PathBuf::from(&config.mail_dir);
            std::fs::create_dir_all(&dir).map_err(|e| MailerError::MailDir {
                dir: dir.clone(),
                reason: e.to_string(),
            })?;
            Transport::Files {
                transport: AsyncFileTransport::<Tokio1Executor>::new(&dir),
                dir,
            }
        } else {
            let masked_url = mask_url(smtp_url);
            let address = RelayAddress::parse(smtp_url).map_err(|reason| MailerError::SmtpUrl {
                url: masked_url.clone(),
                reason: format!(
                    "{reason} (expected smtp://host:port, smtp://host:port?tls=required or smtps://host:port)"
                ),
            })?;
            let relay =
                SmtpRelay::new(address, config.send_timeout, config.smtp_pool_size as usize);
            Transport::Smtp { relay, masked_url }
        };
        Ok(Mailer {
            transport,
            id_domain: from.email.domain().to_string(),
            from,
            templates,
            unsubscribe,
            send_timeout: config.send_timeout,
            in_flight: Semaphore::new(config.smtp_pool_size.max(1) as usize),
        })
    }

    /// Where mail goes, safe to log: the masked SMTP URL or the directory.
    pub fn destination(&self) -> String {
        match &self.transport {
            Transport::Smtp { masked_url, .. } => masked_url.clone(),
            Transport::Files { dir, .. } => format!("file://{}", dir.display()),
        }
    }

    /// The directory `.eml` files are written to, when there is no relay.
    pub fn mail_dir(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Smtp { .. } => None,
            Transport::Files { dir, .. } => Some(dir),
        }
    }

    /// The unsubscribe links this mailer signs (for the endpoint that checks them).
    pub fn unsubscribe_links(&self) -> &UnsubscribeLinks {
        &self.unsubscribe
    }

    /// The `Message-ID` of a reminder's email.
    pub fn message_id(&self, reminder_id: &str) -> String {
        format!("<{}@{}>", delivery_key(reminder_id), self.id_domain)
    }

    /// Builds the email of one reminder, without sending it.
    pub fn build_message(&self, n: &ReminderNotification) -> Result<Message, DeliveryError> {
        let to = recipient(n)?;
        let unsubscribe_url = self.unsubscribe.link(&n.user_id, Channel::Email);
        let rendered = self.templates.render(n, &unsubscribe_url).map_err(|e| {
            DeliveryError::permanent(Channel::Email, PermanentCause::Message, e.to_string())
        })?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(self.message_id(&n.reminder_id)))
            .date(SystemTime::from(n.fire_at))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ));
        for (name, value) in self.unsubscribe.headers(&n.user_id, Channel::Email) {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value,
            ));
        }
        let body = MultiPart::alternative()
            .boundary(format!("=_{}", n.delivery_key()))
            .singlepart(SinglePart::plain(rendered.text))
            .singlepart(SinglePart::html(rendered.html));
        builder.multipart(body).map_err(|e| {
            DeliveryError::permanent(Channel::Email, PermanentCause::Message, e.to_string())
        })
    }

    /// Sends one reminder. `Ok` means the relay accepted it (or the file was
    /// written): the caller reads its clock then and marks the reminder sent.
    pub async fn send(&self, n: &ReminderNotification) -> Result<Delivered, DeliveryError> {
        let message = self.build_message(n)?;
        let message_id = self.message_id(&n.reminder_id);
        let _permit = self.in_flight.acquire().await.map_err(|_| {
            DeliveryError::transient(
                Channel::Email,
                TransientCause::Connection,
                "mailer is shut down",
            )
        })?;
        let attempt = async {
            match &self.transport {
                Transport::Smtp { relay, .. } => relay
                    .send(message.envelope(), &message.formatted())
                    .await
                    .map(|r| {
                        let text: Vec<&str> = r.message().collect();
                        format!("{} {}", r.code(), text.join(" "))
                    })
                    .map_err(classify_smtp),
                Transport::Files { transport, dir } => transport
                    .send(message)
                    .await
                    .map(|id| dir.join(format!("{id}.eml")).display().to_string())
                    .map_err(|e| {
                        DeliveryError::transient(Channel::Email, TransientCause::Io, e.to_string())
                    }),
            }
        };
        let receipt = tokio::time::timeout(self.send_timeout, attempt)
            .await
            .map_err(|_| {
                DeliveryError::transient(
                    Channel::Email,
                    TransientCause::Timeout,
                    format!(
                        "no answer from {} within {}",
                        self.destination(),
                        humantime::format_duration(self.send_timeout)
                    ),
                )
            })??;
        Ok(Delivered {
            message_id,
            receipt,
        })
    }

    /// Whether the relay answers now (NOOP on a pooled or new connection):
    /// for readiness. Always true for the file transport.
    pub async fn relay_ready(&self) -> Result<(), DeliveryError> {
        match &self.transport {
            Transport::Files { .. } => Ok(()),
            Transport::Smtp { relay, .. } => {
                match tokio::time::timeout(self.send_timeout, relay.check()).await {
                    Ok(result) => result.map_err(classify_smtp),
                    Err(_) => Err(DeliveryError::transient(
                        Channel::Email,
                        TransientCause::Timeout,
                        "relay did not answer in time",
                    )),
                }
            }
        }
    }

    /// Closes pooled connections (QUIT) on shutdown.
    pub async fn shutdown(&self) {
        self.in_flight.close();
        if let Transport::Smtp { relay, .. } = &self.transport {
            relay.shutdown().await;
        }
    }
}

/// The user's mailbox, or the permanent reason there is none.
fn recipient(n: &ReminderNotification) -> Result<Mailbox, DeliveryError> {
    let email = n
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            DeliveryError::permanent(
                Channel::Email,
                PermanentCause::NoAddress,
                format!("user {:?} has no email address", n.user_id),
            )
        })?;
    let address = email.parse::<Address>().map_err(|e| {
        DeliveryError::permanent(
            Channel::Email,
            PermanentCause::InvalidAddress,
            format!("user {:?} has address {email:?}: {e}", n.user_id),
        )
    })?;
    let name = n
        .display_name
        .as_deref()
        .map(single_line)
        .filter(|s| !s.is_empty());
    Ok(Mailbox::new(name, address))
}

/// Reply codes that mean "we cannot log in": a relay misconfiguration to wait
/// out (not-ready), not a verdict on this reminder.
const LOGIN_REFUSED: [u16; 4] = [530, 534, 535, 538];

/// Classifies relay failures: lettre's SMTP errors, and our connect and TLS ones.
fn classify_smtp(e: RelayError) -> DeliveryError {
    let e = match e {
        RelayError::Smtp(e) => e,
        RelayError::ConnectTimeout { .. } => {
            return DeliveryError::transient(Channel::Email, TransientCause::Timeout, e.to_string())
        }
        other => {
            return DeliveryError::transient(
                Channel::Email,
                TransientCause::Connection,
                other.to_string(),
            )
        }
    };
    let detail = e.to_string();
    let code = e
        .status()
        .map(|c| c.to_string().parse::<u16>().unwrap_or(0));
    if e.is_permanent() {
        if code.is_some_and(|c| LOGIN_REFUSED.contains(&c)) {
            return DeliveryError::transient(Channel::Email, TransientCause::Connection, detail);
        }
        return DeliveryError::permanent(Channel::Email, PermanentCause::Reply, detail);
    }
    if e.is_transient() {
        return DeliveryError::transient(Channel::Email, TransientCause::Reply, detail);
    }
    if e.is_timeout() {
        return DeliveryError::transient(Channel::Email, TransientCause::Timeout, detail);
    }
    // Connection, network, TLS, an unparsable reply, a client-side protocol
    // error, a pool shut down: the relay is not usable now; nothing says the
    // reminder is at fault.
    DeliveryError::transient(Channel::Email, TransientCause::Connection, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reminders::config::Secret;

    fn config(dir: &Path) -> RemindersConfig {
        RemindersConfig {
            from: "Taskstream <reminders@mail.example.com>".into(),
            mail_dir: dir.display().to_string(),
            link_base_url: "https://app.example.com".into(),
            unsubscribe_secret: Secret::new("0123456789abcdef0123"),
            ..RemindersConfig::default()
        }
    }

    fn reminder() -> ReminderNotification {
        ReminderNotification {
            reminder_id: "task-1|2026-03-29T08:30:00Z|email".into(),
            task_id: "task-1".into(),
            title: "Pay rent\r\nBcc: thief@example.net".into(),
            description: None,
            due_at: Some("2026-03-29T09:00:00Z".parse().unwrap()),
            time_zone: "Europe/Berlin".parse().unwrap(),
            fire_at: "2026-03-29T08:30:00Z".parse().unwrap(),
            channel: Channel::Email,
            email: Some("ada@example.com".into()),
            display_name: Some("Ada\r\nBcc: thief@example.net".into()),
            user_id: "u1".into(),
            link: None,
        }
    }

    fn mailer() -> (Mailer, PathBuf) {
        let dir = std::env::temp_dir().join(pipelines::testing::unique("mailer-unit"));
        let m = Mailer::from_config(&config(&dir), "").unwrap();
        (m, dir)
    }

    #[tokio::test]
    async fn message_is_deterministic_and_has_one_recipient() {
        let (m, dir) = mailer();
        let a = m.build_message(&reminder()).unwrap();
        let b = m.build_message(&reminder()).unwrap();
        assert_eq!(
            a.formatted(),
            b.formatted(),
            "a resend carries the same bytes"
        );
        let env = a.envelope();
        assert_eq!(env.to().len(), 1);
        assert_eq!(env.to()[0].to_string(), "ada@example.com");
        assert_eq!(
            env.from().map(|f| f.to_string()).as_deref(),
            Some("reminders@mail.example.com")
        );
        let text = String::from_utf8(a.formatted()).unwrap();
        let head = &text[..text.find("\r\n\r\n").unwrap()];
        assert!(!head.lines().any(|l| l.starts_with("Bcc")), "{head}");
        assert!(head.contains("Message-ID: <reminder-"), "{head}");
        assert!(head.contains("@mail.example.com>"), "{head}");
        assert!(
            head.contains("Date: Sun, 29 Mar 2026 08:30:00 +0000"),
            "{head}"
        );
        assert!(head.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert!(head.contains("Auto-Submitted: auto-generated"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn message_id_depends_on_the_reminder_only() {
        let (m, dir) = mailer();
        let id = m.message_id("r1");
        assert_eq!(id, m.message_id("r1"));
        assert_ne!(id, m.message_id("r2"));
        assert_eq!(
            id.len(),
            "<reminder-".len() + 32 + "@mail.example.com>".len()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn missing_and_invalid_addresses_are_permanent() {
        let (m, dir) = mailer();
        let mut n = reminder();
        n.email = None;
        let e = m.send(&n).await.unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(e.reason(), "no_address");
        for bad in ["not-an-address", "a@b\r\nBcc: x@y", "<a@b>", "a@@b"] {
            n.email = Some(bad.into());
            let e = m.send(&n).await.unwrap_err();
            assert_eq!(e.reason(), "invalid_address", "{bad}: {e}");
        }
        let written = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(written, 0, "nothing was written for unusable addresses");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn smtp_url_is_masked_and_checked() {
        let dir = std::env::temp_dir().join(pipelines::testing::unique("mailer-unit"));
        let c = config(&dir);
        let m = Mailer::from_config(&c, "smtps://bob:hunter2@relay.example.com:465").unwrap();
        assert_eq!(
            m.destination(),
            "smtps://bob:********@relay.example.com:465"
        );
        assert!(!format!("{m:?}").contains("hunter2"));
        Mailer::from_config(&c, "smtp://relay.example.com:587?tls=required").unwrap();
        let err = Mailer::from_config(&c, "imap://bob:hunter2@relay.example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let no_secret = RemindersConfig {
            unsubscribe_secret: Secret::default(),
            ..c
        };
        let err = Mailer::from_config(&no_secret, "smtp://relay:25").unwrap_err();
        assert!(err.to_string().contains("unsubscribe_secret"), "{err}");
    }
}
