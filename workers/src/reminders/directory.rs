//! The user directory: what the reminders worker knows about each user, kept
//! in the state store from `user-events` (`user.created`, `user.registered`,
//! `user.updated`).
//!
//! A user event may be partial (`user.updated` with only a new time zone), so
//! an update is merged into what is stored: a field the event does not carry
//! keeps its stored value.
//!
//! Preferences come from the event's `preferences` object, or the same keys at
//! the top of the payload (they land in the canonical event's `attributes`):
//! - `email_notifications` (or `email_enabled`): `false` turns reminder email off;
//! - `reminder_offsets` (or `default_offsets`): offsets before the due time
//!   used for the user's tasks without reminder settings (`["-1d", "-30m"]`);
//! - `quiet_hours`: `{"start": "22:00", "end": "07:00"}` in the user's zone;
//!   a reminder due inside them is held until they end.
//!
//! A one-click unsubscribe (the endpoint in [`super::unsubscribe`]) is kept
//! apart from the profile, under its own key
//! (`reminders:unsubscribed:{channel}:{user_id}`, the time of the click), so
//! the endpoint never races the `user-events` handler over one value. It
//! wins over the profile's `email_notifications`: a later user event that
//! does not mention the preference leaves it in force, and so does one that
//! says `true` but happened before the click (a replayed or late event).
//! Only `email_notifications: true` in an event that happened after the
//! click (the user turned email back on in the application) lifts it.

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use pipelines::state::{StateError, StateOp, StateStore};
use pipelines::TaskEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::parse_offset;
use super::notification::Channel;

/// A user event said something the directory cannot keep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("user event without a user id")]
    NoUserId,
    #[error("user {user_id}: timezone {value:?} is not an IANA time zone (such as Europe/Berlin)")]
    TimeZone { user_id: String, value: String },
    #[error("user {user_id}: {field} {value:?}: expected {expected}")]
    Preference {
        user_id: String,
        field: &'static str,
        value: String,
        expected: String,
    },
    #[error("stored profile of user {user_id} is unreadable: {reason}")]
    Stored { user_id: String, reason: String },
}

/// Hours in the user's zone during which no reminder is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// One user, as the directory keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// IANA name; `None` = UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default = "yes")]
    pub email_enabled: bool,
    #[serde(default)]
    pub default_offsets: Vec<String>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// When the user unsubscribed from reminder email with a one-click
    /// link; `None` = not unsubscribed. Stored under its own key (see the
    /// module doc), never in the profile.
    #[serde(skip)]
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

fn yes() -> bool {
    true
}

impl UserRecord {
    /// A user nobody told us about: no address, UTC, email on.
    pub fn unknown(user_id: &str) -> Self {
        UserRecord {
            user_id: user_id.to_owned(),
            email: None,
            name: None,
            time_zone: None,
            email_enabled: true,
            default_offsets: Vec::new(),
            quiet_hours: None,
            unsubscribed_at: None,
        }
    }

    /// The user's zone; UTC when unknown (a stored name was validated when
    /// it was stored, so a parse failure here means none).
    pub fn tz(&self) -> Tz {
        self.time_zone
            .as_deref()
            .and_then(|z| z.parse::<Tz>().ok())
            .unwrap_or(Tz::UTC)
    }

    /// Merges what `event` says into this record (fields it omits are kept).
    pub fn merge(&mut self, event: &TaskEvent) -> Result<(), DirectoryError> {
        let user_id = self.user_id.clone();
        if let Some(p) = &event.user {
            if let Some(e) = &p.email {
                self.email = Some(e.trim().to_owned()).filter(|e| !e.is_empty());
            }
            if let Some(n) = p.name.as_ref().or(p.username.as_ref()) {
                self.name = Some(n.clone());
            }
            if let Some(z) = &p.timezone {
                z.parse::<Tz>().map_err(|_| DirectoryError::TimeZone {
                    user_id: user_id.clone(),
                    value: z.clone(),
                })?;
                self.time_zone = Some(z.clone());
            }
        }
        let prefs = preferences(&event.attributes);
        if let Some(on) = email_preference(&user_id, &prefs)? {
            self.email_enabled = on;
        }
        if let Some(v) = pref(&prefs, &["reminder_offsets", "default_offsets"]) {
            let bad = |value: String, expected: String| DirectoryError::Preference {
                user_id: user_id.clone(),
                field: "reminder_offsets",
                value,
                expected,
            };
            let list = v
                .as_array()
                .ok_or_else(|| bad(v.to_string(), "a list such as [\"-30m\"]".into()))?;
            let mut offsets = Vec::with_capacity(list.len());
            for o in list {
                let text = o
                    .as_str()
                    .ok_or_else(|| bad(o.to_string(), "an offset string".into()))?;
                parse_offset(text).map_err(|expected| bad(text.to_owned(), expected))?;
                offsets.push(text.to_owned());
            }
            self.default_offsets = offsets;
        }
        if let Some(v) = pref(&prefs, &["quiet_hours"]) {
            self.quiet_hours = if v.is_null() {
                None
            } else {
                Some(
                    parse_quiet_hours(v).ok_or_else(|| DirectoryError::Preference {
                        user_id: user_id.clone(),
                        field: "quiet_hours",
                        value: v.to_string(),
                        expected: "{\"start\": \"22:00\", \"end\": \"07:00\"} or null".into(),
                    })?,
                )
            };
        }
        Ok(())
    }
}

/// The `preferences` object merged over the top-level attributes.
fn preferences(attributes: &Map<String, Value>) -> Map<String, Value> {
    let mut out = attributes.clone();
    if let Some(Value::Object(p)) = attributes.get("preferences") {
        for (k, v) in p {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The event's `email_notifications`, when it says it.
fn email_preference(
    user_id: &str,
    prefs: &Map<String, Value>,
) -> Result<Option<bool>, DirectoryError> {
    pref(prefs, &["email_notifications", "email_enabled"])
        .map(|v| {
            v.as_bool().ok_or_else(|| DirectoryError::Preference {
                user_id: user_id.to_owned(),
                field: "email_notifications",
                value: v.to_string(),
                expected: "true or false".into(),
            })
        })
        .transpose()
}

fn pref<'a>(prefs: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| prefs.get(*n))
}

fn parse_quiet_hours(v: &Value) -> Option<QuietHours> {
    let time = |k: &str| {
        let t = v.get(k)?.as_str()?;
        NaiveTime::parse_from_str(t, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M:%S"))
            .ok()
    };
    let (start, end) = (time("start")?, time("end")?);
    (start != end).then_some(QuietHours { start, end })
}

/// Whether the worker keeps this event in the directory.
pub fn is_user_event(event: &TaskEvent) -> bool {
    matches!(
        event.kind.as_str(),
        "user.created" | "user.registered" | "user.updated"
    )
}

/// The directory in the state store: one JSON value per user.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserDirectory;

impl UserDirectory {
    pub fn key(user_id: &str) -> String {
        format!("reminders:user:{user_id}")
    }

    /// Where a one-click unsubscribe from `channel` is kept.
    pub fn unsubscribed_key(user_id: &str, channel: Channel) -> String {
        format!("reminders:unsubscribed:{channel}:{user_id}")
    }

    /// The op that records a one-click unsubscribe at `at`.
    pub fn unsubscribe_op(user_id: &str, channel: Channel, at: DateTime<Utc>) -> StateOp {
        StateOp::Set {
            key: Self::unsubscribed_key(user_id, channel),
            value: at.to_rfc3339().into_bytes(),
            ttl: None,
        }
    }

    /// The stored record (with its unsubscribe, one round trip), or
    /// [`UserRecord::unknown`].
    pub async fn get(
        &self,
        store: &dyn StateStore,
        user_id: &str,
    ) -> Result<Result<UserRecord, DirectoryError>, StateError> {
        let keys = [
            Self::key(user_id),
            Self::unsubscribed_key(user_id, Channel::Email),
        ];
        let mut raw = store.get_many(&keys).await?.into_iter();
        let (profile, unsubscribed) = (raw.next().flatten(), raw.next().flatten());
        let mut record = match profile {
            None => UserRecord::unknown(user_id),
            Some(bytes) => match serde_json::from_slice::<UserRecord>(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Err(DirectoryError::Stored {
                        user_id: user_id.to_owned(),
                        reason: e.to_string(),
                    }))
                }
            },
        };
        record.unsubscribed_at = unsubscribed.map(|b| {
            // Unreadable counts as unsubscribed now: never mail by mistake.
            std::str::from_utf8(&b)
                .ok()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map_or(DateTime::<Utc>::MAX_UTC, |t| t.with_timezone(&Utc))
        });
        Ok(Ok(record))
    }

    /// The stored record merged with `event`, and the ops that store it
    /// (with the lifting of an unsubscribe, when the event turns email back
    /// on after it: see the module doc).
    pub async fn updated(
        &self,
        store: &dyn StateStore,
        event: &TaskEvent,
    ) -> Result<Result<(UserRecord, Vec<StateOp>), DirectoryError>, StateError> {
        let Some(user_id) = event.user_id.as_deref() else {
            return Ok(Err(DirectoryError::NoUserId));
        };
        // An unreadable stored record is replaced rather than wedging the user.
        let mut record = self
            .get(store, user_id)
            .await?
            .unwrap_or_else(|_| UserRecord::unknown(user_id));
        if let Err(e) = record.merge(event) {
            return Ok(Err(e));
        }
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let mut ops = vec![StateOp::Set {
            key: Self::key(user_id),
            value,
            ttl: None,
        }];
        let turned_on = matches!(
            email_preference(user_id, &preferences(&event.attributes)),
            Ok(Some(true))
        );
        if turned_on
            && record
                .unsubscribed_at
                .is_some_and(|at| event.occurred_at > at)
        {
            record.unsubscribed_at = None;
            ops.push(StateOp::Delete {
                key: Self::unsubscribed_key(user_id, Channel::Email),
            });
        }
        Ok(Ok((record, ops)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::event::{decode, DecodeContext};

    fn event(json: &str) -> TaskEvent {
        decode(
            json.as_bytes(),
            &DecodeContext {
                topic: "user-events",
                kafka_timestamp_ms: Some(1_767_000_000_000),
            },
        )
        .unwrap()
    }

    #[test]
    fn partial_update_keeps_what_it_does_not_mention() {
        let mut r = UserRecord::unknown("u1");
        r.merge(&event(
            r#"{"event_id":"e1","event_type":"user.created","timestamp":"2026-01-01T00:00:00Z","data":{"user_id":"u1","email":"ada@example.com","name":"Ada","timezone":"Europe/Berlin","preferences":{"email_notifications":true,"reminder_offsets":["-1d","-30m"],"quiet_hours":{"start":"22:00","end":"07:00"}}}}"#,
        ))
        .unwrap();
        assert_eq!(r.email.as_deref(), Some("ada@example.com"));
        assert_eq!(r.tz(), chrono_tz::Europe::Berlin);
        assert_eq!(r.default_offsets, vec!["-1d", "-30m"]);
        assert_eq!(
            r.quiet_hours.unwrap().start,
            NaiveTime::from_hms_opt(22, 0, 0).unwrap()
        );
        r.merge(&event(
            r#"{"event_id":"e2","event_type":"user.updated","timestamp":"2026-01-02T00:00:00Z","data":{"user_id":"u1","timezone":"America/New_York","email_notifications":false}}"#,
        ))
        .unwrap();
        assert_eq!(r.tz(), chrono_tz::America::New_York);
        assert!(!r.email_enabled);
        assert_eq!(r.email.as_deref(), Some("ada@example.com"));
        assert_eq!(r.default_offsets, vec!["-1d", "-30m"]);
    }

    #[tokio::test]
    async fn an_unsubscribe_outlives_updates_until_email_is_turned_on_after_it() {
        use pipelines::state::MemoryStore;
        let store = MemoryStore::new("t:");
        let d = UserDirectory;
        let apply = |ops: Vec<StateOp>| {
            let store = &store;
            async move { store.apply(&ops).await.unwrap() }
        };
        let created = event(
            r#"{"event_id":"e1","event_type":"user.created","timestamp":"2026-01-01T00:00:00Z","data":{"user_id":"u1","email":"ada@example.com","email_notifications":true}}"#,
        );
        apply(d.updated(&store, &created).await.unwrap().unwrap().1).await;
        let clicked: DateTime<Utc> = "2026-01-05T00:00:00Z".parse().unwrap();
        apply(vec![UserDirectory::unsubscribe_op(
            "u1",
            Channel::Email,
            clicked,
        )])
        .await;
        let r = d.get(&store, "u1").await.unwrap().unwrap();
        assert_eq!(r.unsubscribed_at, Some(clicked));
        // Silent about the preference, or `true` from before the click
        // (a late or replayed event): still unsubscribed.
        for json in [
            r#"{"event_id":"e2","event_type":"user.updated","timestamp":"2026-01-06T00:00:00Z","data":{"user_id":"u1","name":"Ada King"}}"#,
            r#"{"event_id":"e3","event_type":"user.updated","timestamp":"2026-01-04T00:00:00Z","data":{"user_id":"u1","email_notifications":true}}"#,
        ] {
            let (record, ops) = d.updated(&store, &event(json)).await.unwrap().unwrap();
            assert_eq!(record.unsubscribed_at, Some(clicked), "{json}");
            apply(ops).await;
            let r = d.get(&store, "u1").await.unwrap().unwrap();
            assert_eq!(r.unsubscribed_at, Some(clicked), "{json}");
        }
        // Turned on in the application after the click: lifted.
        let on = event(
            r#"{"event_id":"e4","event_type":"user.updated","timestamp":"2026-01-07T00:00:00Z","data":{"user_id":"u1","preferences":{"email_notifications":true}}}"#,
        );
        apply(d.updated(&store, &on).await.unwrap().unwrap().1).await;
        let r = d.get(&store, "u1").await.unwrap().unwrap();
        assert_eq!(r.unsubscribed_at, None);
        assert!(r.email_enabled);
        assert_eq!(r.email.as_deref(), Some("ada@example.com"));
    }

    #[test]
    fn a_bad_zone_or_offset_names_the_user_and_value() {
        let mut r = UserRecord::unknown("u1");
        let e = r
            .merge(&event(
                r#"{"event_id":"e1","event_type":"user.updated","timestamp":"2026-01-01T00:00:00Z","data":{"user_id":"u1","timezone":"Mars/Olympus"}}"#,
            ))
            .unwrap_err();
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        let e = r
            .merge(&event(
                r#"{"event_id":"e2","event_type":"user.updated","timestamp":"2026-01-01T00:00:00Z","data":{"user_id":"u1","reminder_offsets":["soon"]}}"#,
            ))
            .unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }
}
