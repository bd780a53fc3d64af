//! The `webhook` channel: an HTTP POST of the reminder as JSON to
//! `reminders.webhook_url`, for push or chat integrations (`push` and `sms`
//! requests go here too when it is configured).
//!
//! The body is [`WebhookPayload`]; the `Idempotency-Key` header is the
//! reminder's [delivery key](ReminderNotification::delivery_key), the same for
//! every resend, so a receiver can drop the copy a crash between its `2xx` and
//! the sent mark produces (the same window as email: see [`super::mailer`]).
//!
//! Classification: a `2xx` is delivered; a connection error, a timeout, `5xx`,
//! `408` and `429` are transient (retry with backoff, webhook not ready); any
//! other status (`4xx`, or a `3xx`: redirects are not followed, a moved
//! endpoint is a configuration to fix) is permanent.
//!
//! The URL may carry a token (in its query or user part): it is never shown;
//! messages name the scheme, host and path only.
//!
//! ## Readiness (`webhook` in `/readyz`)
//!
//! There is no standard way to ask an HTTP endpoint whether it would take a
//! POST, so readiness follows the posts themselves: a transient failure
//! (connection refused or reset, timeout, `5xx`, `408`, `429`) marks the
//! webhook down with that reason; any post the endpoint answers otherwise
//! (`2xx`, or a permanent `4xx`: it is up, the reminder is at fault) marks it
//! up. While it is down, each readiness check (every 2 s) also sends a
//! `HEAD` to the URL, bounded by [`PROBE_TIMEOUT`]: after a connection
//! failure any answer but `5xx`/`408`/`429` means up (something answers
//! again); after an HTTP status failure only a `2xx` does (an endpoint that
//! answers `HEAD` with `405` but still fails POSTs stays down, rather than
//! flapping). The failed reminders are kept and retried meanwhile (see
//! [`super::worker`]), and a successful retry marks it up at once.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use url::Url;

use super::config::RemindersConfig;
use super::notification::{
    Channel, Delivered, DeliveryError, PermanentCause, ReminderNotification, TransientCause,
};
use super::template::{parse_link_base, task_link, TemplateError};

/// The webhook could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("reminders.webhook_url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    LinkBase(#[from] TemplateError),
    #[error("HTTP client for the webhook: {0}")]
    Client(String),
}

/// What the webhook receives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookPayload<'a> {
    /// Always `reminder`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The delivery key (also the `Idempotency-Key` header).
    pub id: String,
    pub reminder_id: &'a str,
    pub task_id: &'a str,
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub due_at: Option<DateTime<Utc>>,
    pub time_zone: &'a str,
    pub fire_at: DateTime<Utc>,
    pub channel: Channel,
    pub user_id: &'a str,
    pub email: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub link: String,
}

/// Longest a readiness probe (`HEAD`) waits: well inside the pipeline's
/// 5 s bound on a dependency check.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the webhook counts as down.
#[derive(Debug, Clone)]
struct Down {
    reason: String,
    /// The endpoint did not answer at all (rather than answering 5xx).
    unreachable: bool,
}

/// Posts reminders to one URL.
pub struct Webhook {
    client: reqwest::Client,
    url: Url,
    /// Scheme, host, port and path: what messages show.
    shown: String,
    link_base: Url,
    /// `None` while up (see the module doc).
    down: Mutex<Option<Down>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The configured webhook, or `None` when `reminders.webhook_url` is empty.
    pub fn from_config(config: &RemindersConfig) -> Result<Option<Webhook>, WebhookError> {
        if config.webhook_url.trim().is_empty() {
            return Ok(None);
        }
        let link_base = parse_link_base(&config.link_base_url)?;
        Webhook::new(&config.webhook_url, config.send_timeout, &link_base).map(Some)
    }

    /// A webhook posting to `url`, each request bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration, link_base: &Url) -> Result<Webhook, WebhookError> {
        let parsed = Url::parse(url).map_err(|e| WebhookError::Url {
            url: pipelines::config::mask_url(url),
            reason: e.to_string(),
        })?;
        let shown = shown_url(&parsed);
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(WebhookError::Url {
                url: shown,
                reason: "expected an http:// or https:// URL".into(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("taskstream/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.without_url().to_string()))?;
        Ok(Webhook {
            client,
            url: parsed,
            shown,
            link_base: link_base.clone(),
            down: Mutex::new(None),
        })
    }

    fn set_down(&self, down: Option<Down>) {
        *self.down.lock().unwrap_or_else(|p| p.into_inner()) = down;
    }

    /// Readiness: `Err(reason)` while the endpoint is down (see the module
    /// doc); probes it with `HEAD` then.
    pub async fn ready(&self) -> Result<(), String> {
        let Some(down) = self.down.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return Ok(());
        };
        let probe = self
            .client
            .head(self.url.clone())
            .timeout(PROBE_TIMEOUT)
            .send()
            .await;
        let up = match probe {
            Ok(r) if down.unreachable => !is_transient(r.status()),
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        };
        if up {
            tracing::info!(url = %self.shown, "webhook answers again");
            self.set_down(None);
            Ok(())
        } else {
            Err(down.reason)
        }
    }

    /// The URL as messages show it (no query, no credentials).
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The JSON body for one reminder.
    pub fn payload<'a>(&self, n: &'a ReminderNotification) -> WebhookPayload<'a> {
        WebhookPayload {
            kind: "reminder",
            id: n.delivery_key(),
            reminder_id: &n.reminder_id,
            task_id: &n.task_id,
            title: &n.title,
            description: n.description.as_deref(),
            due_at: n.due_at,
            time_zone: n.time_zone.name(),
            fire_at: n.fire_at,
            channel: n.channel,
            user_id: &n.user_id,
            email: n.email.as_deref(),
            display_name: n.display_name.as_deref(),
            link: task_link(&self.link_base, n),
        }
    }

    /// Posts one reminder. `Ok` means the endpoint answered `2xx`. Keeps
    /// the readiness state (see the module doc).
    pub async fn send(&self, n: &ReminderNotification) -> Result<Delivered, DeliveryError> {
        let result = self.post(n).await;
        match &result {
            Ok(_) => self.set_down(None),
            Err(e @ DeliveryError::Transient { cause, .. }) => self.set_down(Some(Down {
                reason: e.to_string(),
                unreachable: matches!(cause, TransientCause::Connection | TransientCause::Timeout),
            })),
            Err(DeliveryError::Permanent { cause, .. }) if *cause == PermanentCause::HttpStatus => {
                self.set_down(None)
            }
            Err(_) => {}
        }
        result
    }

    async fn post(&self, n: &ReminderNotification) -> Result<Delivered, DeliveryError> {
        let channel = n.channel;
        let payload = self.payload(n);
        let body = serde_json::to_vec(&payload).map_err(|e| {
            DeliveryError::permanent(channel, PermanentCause::Message, e.to_string())
        })?;
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &payload.id)
            .body(body)
            .send()
            .await
            .map_err(|e| self.classify_error(channel, e))?;
        let status = response.status();
        let detail = || format!("{} answered {status}", self.shown);
        if status.is_success() {
            return Ok(Delivered {
                message_id: payload.id,
                receipt: status.to_string(),
            });
        }
        if is_transient(status) {
            Err(DeliveryError::transient(
                channel,
                TransientCause::HttpStatus,
                detail(),
            ))
        } else {
            Err(DeliveryError::permanent(
                channel,
                PermanentCause::HttpStatus,
                detail(),
            ))
        }
    }

    fn classify_error(&self, channel: Channel, e: reqwest::Error) -> DeliveryError {
        let e = e.without_url();
        let detail = format!("{}: {}", self.shown, describe(&e));
        if e.is_timeout() {
            DeliveryError::transient(channel, TransientCause::Timeout, detail)
        } else if e.is_builder() {
            DeliveryError::permanent(channel, PermanentCause::Message, detail)
        } else {
            // Connect, request and body errors: the endpoint is not usable now.
            DeliveryError::transient(channel, TransientCause::Connection, detail)
        }
    }
}

/// `5xx`, `408` and `429`: the endpoint cannot take it now.
fn is_transient(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// `scheme://host[:port]/path`: no credentials, no query, no fragment.
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The error and its sources ("error sending request: connection refused").
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_shown_without_credentials_or_query() {
        let base = Url::parse("https://app.example.com").unwrap();
        let w = Webhook::new(
            "https://bot:s3cret@hooks.example.com/in/1?token=abc",
            Duration::from_secs(1),
            &base,
        )
        .unwrap();
        assert_eq!(w.shown_url(), "https://hooks.example.com/in/1");
        assert!(!format!("{w:?}").contains("s3cret"));
        let err = Webhook::new("ftp://bot:s3cret@x/", Duration::from_secs(1), &base)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
