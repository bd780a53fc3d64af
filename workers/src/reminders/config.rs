//! `[reminders]`: how reminders are delivered (sender, templates, links, the
//! unsubscribe secret, the webhook, the SMTP pool) and the scheduling keys the
//! worker uses (`max_lateness`, `default_offsets`). The SMTP relay itself is
//! `smtp.url` (env `SMTP_URL`), shared with the rest of the pipeline config.

use std::fmt;
use std::time::Duration;

use lettre::message::Mailbox;
use pipelines::config::{ConfigError, MASK};
use serde::{Deserialize, Serialize};

/// `[reminders]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemindersConfig {
    /// Sender of reminder email, `Name <address>` or a bare address; its
    /// domain also names the `Message-ID`s.
    pub from: String,
    /// Directory holding `reminder.subject.txt`, `reminder.txt` and
    /// `reminder.html`; empty = the templates shipped in the binary (the same
    /// files as `config/templates/`).
    pub templates_dir: String,
    /// Base of the task links in reminders: `<link_base_url>/tasks/<id>`
    /// (the application users open).
    pub link_base_url: String,
    /// Public URL of the one-click unsubscribe endpoint, as mail clients
    /// reach it: the `taskstream` process serves it on its metrics port
    /// (`metrics.addr`) at this URL's path, so point it at that port through
    /// your ingress (`https://reminders.example.com/unsubscribe`). Empty =
    /// `<link_base_url>/unsubscribe` (then route that path to this process).
    pub unsubscribe_url: String,
    /// Key that signs unsubscribe links (HMAC-SHA256). Required, at least 16
    /// bytes, when `smtp.url` is set; masked wherever the config is printed.
    /// Set it from the environment: `TASKSTREAM_REMINDERS__UNSUBSCRIBE_SECRET`.
    pub unsubscribe_secret: Secret,
    /// Where email goes when `smtp.url` is empty: one `.eml` file per message.
    pub mail_dir: String,
    /// `http(s)://` endpoint the `webhook` channel POSTs reminders to (also
    /// used for `push` and `sms` requests); empty = no webhook.
    pub webhook_url: String,
    /// Most SMTP connections kept open to the relay.
    pub smtp_pool_size: u32,
    /// Longest one delivery may take (connect, SMTP dialogue or HTTP request)
    /// before it counts as a transient failure.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// A reminder whose time passed while delivery was impossible is still
    /// sent if it is at most this late; later ones are recorded as missed.
    #[serde(with = "humantime_serde")]
    pub max_lateness: Duration,
    /// Offsets before the due time used when a task has a due date but no
    /// reminder settings of its own and the user has no defaults: `-30m`, `-1d`.
    pub default_offsets: Vec<String>,
    /// How long a claimed due reminder is reserved for the replica that
    /// claimed it. A replica that dies mid-delivery leaves it claimed; it
    /// becomes due again when the lease ends. Longer than `send_timeout`.
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,
}

impl Default for RemindersConfig {
    fn default() -> Self {
        RemindersConfig {
            from: "taskstream <reminders@taskstream.localhost>".into(),
            templates_dir: String::new(),
            link_base_url: "http://localhost:8080".into(),
            unsubscribe_url: String::new(),
            unsubscribe_secret: Secret::default(),
            mail_dir: "mail-out".into(),
            webhook_url: String::new(),
            smtp_pool_size: 4,
            send_timeout: Duration::from_secs(30),
            max_lateness: Duration::from_secs(3600),
            default_offsets: vec!["-30m".into()],
            claim_lease: Duration::from_secs(60),
        }
    }
}

/// Smallest unsubscribe secret accepted when real email is sent.
pub const MIN_SECRET_BYTES: usize = 16;

impl RemindersConfig {
    /// Rejects values that parse but make no sense, naming key, value and
    /// expectation. `smtp_url` is `smtp.url`: real email needs a real secret.
    pub fn validate(&self, smtp_url: &str) -> Result<(), ConfigError> {
        self.sender()?;
        check_http_url("reminders.link_base_url", &self.link_base_url, false)?;
        check_http_url("reminders.webhook_url", &self.webhook_url, true)?;
        check_http_url("reminders.unsubscribe_url", &self.unsubscribe_url, true)?;
        if !smtp_url.is_empty() && self.unsubscribe_secret.expose().len() < MIN_SECRET_BYTES {
            return Err(ConfigError::invalid(
                "reminders.unsubscribe_secret",
                MASK,
                format!(
                    "a secret of at least {MIN_SECRET_BYTES} bytes when smtp.url is set \
                     (set TASKSTREAM_REMINDERS__UNSUBSCRIBE_SECRET)"
                ),
            ));
        }
        if smtp_url.is_empty() && self.mail_dir.trim().is_empty() {
            return Err(ConfigError::invalid(
                "reminders.mail_dir",
                "",
                "a directory for .eml files (used when smtp.url is empty)",
            ));
        }
        if self.smtp_pool_size == 0 {
            return Err(ConfigError::invalid(
                "reminders.smtp_pool_size",
                0,
                "a whole number above zero",
            ));
        }
        if self.send_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "reminders.send_timeout",
                "0s",
                "a duration above zero, such as 30s",
            ));
        }
        if self.claim_lease <= self.send_timeout {
            return Err(ConfigError::invalid(
                "reminders.claim_lease",
                humantime::format_duration(self.claim_lease),
                "a duration longer than reminders.send_timeout",
            ));
        }
        for offset in &self.default_offsets {
            parse_offset(offset).map_err(|expected| {
                ConfigError::invalid("reminders.default_offsets", offset, expected)
            })?;
        }
        Ok(())
    }

    /// Where unsubscribe links point: `unsubscribe_url`, else
    /// `<link_base_url>/unsubscribe` (query and fragment dropped).
    pub fn unsubscribe_endpoint(&self) -> Result<url::Url, ConfigError> {
        let (key, value) = if self.unsubscribe_url.trim().is_empty() {
            ("reminders.link_base_url", &self.link_base_url)
        } else {
            ("reminders.unsubscribe_url", &self.unsubscribe_url)
        };
        let mut url = url::Url::parse(value)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    pipelines::config::mask_url(value),
                    "an http:// or https:// URL",
                )
            })?;
        if self.unsubscribe_url.trim().is_empty() {
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.pop_if_empty().push("unsubscribe");
            }
        }
        url.set_query(None);
        url.set_fragment(None);
        Ok(url)
    }

    /// The parsed `from` mailbox.
    pub fn sender(&self) -> Result<Mailbox, ConfigError> {
        self.from.parse::<Mailbox>().map_err(|e| {
            ConfigError::invalid(
                "reminders.from",
                &self.from,
                format!("a mailbox such as `taskstream <reminders@example.com>` ({e})"),
            )
        })
    }

    /// A copy safe to print: the secret masked.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        if !c.unsubscribe_secret.expose().is_empty() {
            c.unsubscribe_secret = Secret::new(MASK);
        }
        c
    }
}

/// Parses a reminder offset relative to the due time: a sign and a
/// humantime duration, `-30m`, `-1d`, `-1h 30m`, `+15m` (after the due time).
/// Returns the signed offset in seconds' precision as a chrono duration.
pub fn parse_offset(text: &str) -> Result<chrono::TimeDelta, String> {
    let expected = || format!("an offset such as -30m, -1d or +15m (got {text:?})");
    let t = text.trim();
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => return Err(expected()),
    };
    let d = humantime::parse_duration(rest.trim()).map_err(|_| expected())?;
    let d = chrono::TimeDelta::from_std(d).map_err(|_| expected())?;
    Ok(if sign < 0 { -d } else { d })
}

fn check_http_url(key: &str, value: &str, may_be_empty: bool) -> Result<(), ConfigError> {
    if value.is_empty() && may_be_empty {
        return Ok(());
    }
    let ok = url::Url::parse(value)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            pipelines::config::mask_url(value),
            if may_be_empty {
                "an http:// or https:// URL, or empty"
            } else {
                "an http:// or https:// URL"
            },
        ))
    }
}

/// A secret config value: serialised as itself (so the documented defaults
/// round-trip), but printed as `********` by `Debug` and `Display`, so it
/// never reaches a log line by accident.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str(MASK)
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_without_smtp() {
        RemindersConfig::default().validate("").unwrap();
    }

    #[test]
    fn secret_is_masked_in_debug_and_redacted_copy() {
        let c = RemindersConfig {
            unsubscribe_secret: Secret::new("a-very-secret-signing-key"),
            ..RemindersConfig::default()
        };
        let debug = format!("{c:?}");
        assert!(!debug.contains("a-very-secret"), "{debug}");
        assert!(debug.contains(MASK));
        let printed = toml::to_string(&c.redacted()).unwrap();
        assert!(!printed.contains("a-very-secret"), "{printed}");
        assert!(printed.contains(MASK));
        assert_eq!(c.unsubscribe_secret.expose(), "a-very-secret-signing-key");
    }

    #[test]
    fn real_smtp_requires_a_long_enough_secret() {
        let mut c = RemindersConfig::default();
        let err = c.validate("smtp://relay:25").unwrap_err().to_string();
        assert!(err.contains("reminders.unsubscribe_secret"), "{err}");
        assert!(!err.contains("relay"), "{err}");
        c.unsubscribe_secret = Secret::new("0123456789abcdef");
        c.validate("smtp://relay:25").unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(&str, RemindersConfig)> = vec![
            (
                "reminders.from",
                RemindersConfig {
                    from: "not an address".into(),
                    ..Default::default()
                },
            ),
            (
                "reminders.link_base_url",
                RemindersConfig {
                    link_base_url: "ftp://x".into(),
                    ..Default::default()
                },
            ),
            (
                "reminders.webhook_url",
                RemindersConfig {
                    webhook_url: "hooks.example.com".into(),
                    ..Default::default()
                },
            ),
            (
                "reminders.unsubscribe_url",
                RemindersConfig {
                    unsubscribe_url: "mailto:x@example.com".into(),
                    ..Default::default()
                },
            ),
            (
                "reminders.smtp_pool_size",
                RemindersConfig {
                    smtp_pool_size: 0,
                    ..Default::default()
                },
            ),
            (
                "reminders.send_timeout",
                RemindersConfig {
                    send_timeout: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "reminders.default_offsets",
                RemindersConfig {
                    default_offsets: vec!["30m".into()],
                    ..Default::default()
                },
            ),
        ];
        for (key, c) in cases {
            let err = c.validate("").unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_unsubscribe_endpoint_is_its_own_url_or_under_the_link_base() {
        let c = RemindersConfig {
            link_base_url: "https://app.example.com/base/".into(),
            ..Default::default()
        };
        assert_eq!(
            c.unsubscribe_endpoint().unwrap().as_str(),
            "https://app.example.com/base/unsubscribe"
        );
        let c = RemindersConfig {
            unsubscribe_url: "https://reminders.example.com/u/one-click?x=1".into(),
            ..c
        };
        assert_eq!(
            c.unsubscribe_endpoint().unwrap().as_str(),
            "https://reminders.example.com/u/one-click"
        );
    }

    #[test]
    fn offsets_carry_their_sign() {
        assert_eq!(
            parse_offset("-30m").unwrap(),
            chrono::TimeDelta::minutes(-30)
        );
        assert_eq!(parse_offset("-1d").unwrap(), chrono::TimeDelta::days(-1));
        assert_eq!(
            parse_offset("+15m").unwrap(),
            chrono::TimeDelta::minutes(15)
        );
        assert_eq!(
            parse_offset(" -1h 30m ").unwrap(),
            chrono::TimeDelta::minutes(-90)
        );
        assert!(parse_offset("30m").is_err());
        assert!(parse_offset("-soon").is_err());
        assert!(parse_offset("").is_err());
    }
}
