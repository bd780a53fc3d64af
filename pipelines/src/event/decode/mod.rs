//! Every producer dialect in, one canonical [`TaskEvent`] out.
//!
//! Producers belong to other teams and will not converge on one format, so the
//! decoder recognises a dialect by the message's *shape* ([`detect`]). The
//! topic is only a hint: one dialect is published to several topics and one
//! topic carries several dialects.
//!
//! The message is read once into borrowed nodes ([`json`]; serde_json reads
//! what its small scanner does not handle, and every error): keys and strings
//! point into the message bytes, so reading costs one `Vec` per object and
//! nothing per field. Each dialect family
//! ([`event_dialects`], [`reminder`], [`cloudevents`], [`canonical`]) then
//! *moves* fields out of those objects into the typed event ([`fields`],
//! [`parts`], [`time`], [`kinds`]); whatever has no canonical home is kept in
//! `attributes`, so nothing the producer said is dropped silently. Only those
//! leftovers become `serde_json::Value`s.
//!
//! Plain task events of the envelope, standard, task-data and camel-case
//! dialects, bare or in a CloudEvent, skip the tree: [`direct`] reads them in
//! one pass, and gives every message it is not sure of to the tree.
//!
//! Decoding never panics. A message that cannot be decoded is a
//! [`DecodeError`] whose text names the field and the offending value, because
//! that text is what a human reads in the dead-letter record.

mod canonical;
mod cloudevents;
mod detect;
mod direct;
mod error;
mod event_dialects;
mod fields;
mod json;
mod kinds;
mod parts;
mod reminder;
mod time;

#[cfg(test)]
mod equivalence;
#[cfg(test)]
mod legacy;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

pub use error::DecodeError;
pub use kinds::{is_known_type, KNOWN_TYPES};

use super::model::{
    Dialect, FieldChange, ReminderRequest, RequestContext, TaskEvent, TaskSnapshot, UserProfile,
};
use json::{Node, Obj};
use kinds::Entity;

/// What the decoder knows about a record besides its bytes.
///
/// The topic only breaks ties (a `reminders` topic makes a type-less message a
/// reminder request even when it lacks `remind_at`, so the error says what is
/// missing); the Kafka timestamp stands in for a message that carries no time
/// of its own, so such messages are still ordered and auditable.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    /// The topic the record was read from.
    pub topic: &'a str,
    /// The record's Kafka timestamp, in milliseconds since the epoch.
    pub kafka_timestamp_ms: Option<i64>,
}

/// Decodes one Kafka record into the canonical event.
///
/// Dialects are recognised by shape (see the README's "Event contract"); the
/// topic in `ctx` is only a hint. A message without an id gets
/// `h:` + the first 16 bytes of SHA-256 of `payload` (hex), so a re-sent
/// identical message is recognised as a duplicate. A message without a
/// timestamp gets the Kafka timestamp.
pub fn decode(payload: &[u8], ctx: &DecodeContext<'_>) -> Result<TaskEvent, DecodeError> {
    // Checked once for both readers (simdutf8: a third of the standard
    // library's time on messages of a few hundred bytes).
    let text = simdutf8::basic::from_utf8(payload).ok();
    if let Some(draft) = &mut text.and_then(direct::read) {
        // An error here is the tree decoder's to report (it may find
        // another first).
        let event = finish(draft, payload, ctx);
        if event.is_ok() {
            return event;
        }
    }
    decode_tree(payload, text, ctx)
}

/// [`decode`] through the [`Node`] tree: every message [`direct`] does not
/// take. `text` is `payload` when it is UTF-8.
fn decode_tree(
    payload: &[u8],
    text: Option<&str>,
    ctx: &DecodeContext<'_>,
) -> Result<TaskEvent, DecodeError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let parsed = match text {
        Some(text) => json::parse_text(text),
        None => json::parse(payload),
    };
    let node = parsed.map_err(|e| DecodeError::NotJson {
        error: e.to_string(),
    })?;
    let obj = match node {
        Node::Obj(obj) => obj,
        other => {
            return Err(DecodeError::NotAnObject {
                found: error::json_kind(&other),
            })
        }
    };
    let mut draft = detect::dispatch(obj, ctx.topic, 0, None)?;
    finish(&mut draft, payload, ctx)
}

/// An event being assembled; [`finish`] fills the id and time fallbacks.
struct Draft<'a> {
    event_id: Option<String>,
    kind: String,
    occurred_at: Option<DateTime<Utc>>,
    task_id: Option<String>,
    user_id: Option<String>,
    project_id: Option<String>,
    task: Option<Box<TaskSnapshot>>,
    previous: Option<Box<TaskSnapshot>>,
    changes: BTreeMap<String, FieldChange>,
    reminder: Option<ReminderRequest>,
    user: Option<UserProfile>,
    context: RequestContext,
    dialect: Dialect,
    cloudevents: bool,
    schema_version: Option<String>,
    /// What is left of the message: becomes `attributes`.
    attributes: Obj<'a>,
}

impl Draft<'_> {
    fn new(kind: String, dialect: Dialect) -> Self {
        Draft {
            event_id: None,
            kind,
            occurred_at: None,
            task_id: None,
            user_id: None,
            project_id: None,
            task: None,
            previous: None,
            changes: BTreeMap::new(),
            reminder: None,
            user: None,
            context: RequestContext::default(),
            dialect,
            cloudevents: false,
            schema_version: None,
            attributes: Obj::new(),
        }
    }
}

/// Fills the fallbacks and checks what every event needs. The draft is
/// taken from where it is (about a kilobyte: not moved to get here).
fn finish(
    d: &mut Draft<'_>,
    payload: &[u8],
    ctx: &DecodeContext<'_>,
) -> Result<TaskEvent, DecodeError> {
    if Entity::of(&d.kind) == Entity::Task && d.task_id.is_none() {
        return Err(DecodeError::MissingField {
            field: "task_id".to_owned(),
        });
    }
    let occurred_at = match (d.occurred_at, ctx.kafka_timestamp_ms) {
        (Some(t), _) => t,
        (None, Some(ms)) => {
            DateTime::from_timestamp_millis(ms).ok_or_else(|| DecodeError::InvalidField {
                field: "kafka timestamp".to_owned(),
                value: ms.to_string(),
                expected: "milliseconds since the epoch",
            })?
        }
        (None, None) => {
            return Err(DecodeError::MissingField {
                field: "timestamp".to_owned(),
            })
        }
    };
    let event_id = match d.event_id.take() {
        Some(id) => id,
        None => content_id(payload),
    };
    let context = (d.context != RequestContext::default()).then(|| std::mem::take(&mut d.context));
    Ok(TaskEvent {
        event_id,
        kind: std::mem::take(&mut d.kind),
        occurred_at,
        task_id: d.task_id.take(),
        user_id: d.user_id.take(),
        project_id: d.project_id.take(),
        task: d.task.take(),
        previous: d.previous.take(),
        changes: std::mem::take(&mut d.changes),
        reminder: d.reminder.take(),
        user: d.user.take(),
        context,
        dialect: d.dialect,
        cloudevents: d.cloudevents,
        schema_version: d.schema_version.take(),
        attributes: std::mem::take(&mut d.attributes).into_map(),
    })
}

/// `h:` + hex of the first 16 bytes of SHA-256 of the message: stable for a
/// re-sent identical message, so it deduplicates like a producer's id.
fn content_id(payload: &[u8]) -> String {
    let digest = Sha256::digest(payload);
    let mut id = [0u8; 34];
    id[..2].copy_from_slice(b"h:");
    hex::encode_to_slice(&digest[..16], &mut id[2..]).expect("16 bytes are 32 hex digits");
    // `from_utf8`, not `from_utf8_lossy`: its ASCII check is a few
    // instructions where the lossy one walks the bytes in chunks.
    std::str::from_utf8(&id)
        .expect("`h:` and hex digits are ASCII")
        .to_owned()
}
