//! Which dialect a message is written in, from the keys it has (the README's
//! "Event contract" lists them); the topic only breaks ties.

use super::fields::keys;
use std::borrow::Cow;

use super::canonical::decode_canonical;
use super::cloudevents::{decode_cloudevent, decode_traced};
use super::error::{invalid, key_list, DecodeError, Loc};
use super::event_dialects::decode_fields;
use super::fields::TASK_ID_KEYS;
use super::json::{Node, Obj};
use super::kinds::{is_bare_action, normalize_kind};
use super::reminder::decode_reminder;
use super::Draft;
use crate::event::model::Dialect;

/// Wrappers (CloudEvents, `event_data`) nested deeper than this are refused:
/// no producer does it, and a crafted message could otherwise recurse at will.
pub(super) const MAX_NESTING: u8 = 4;

/// Recognises the dialect of `obj` and decodes it. `fallback_kind` is a
/// CloudEvents `type` usable when the payload names no type of its own.
pub(super) fn dispatch<'a>(
    mut obj: Obj<'a>,
    topic: &str,
    depth: u8,
    fallback_kind: Option<String>,
) -> Result<Draft<'a>, DecodeError> {
    if obj.contains_key("specversion") {
        return decode_cloudevent(obj, topic, depth);
    }
    if obj.contains_key("type") && obj.contains_key("dialect") && obj.contains_key("event_id") {
        return decode_canonical(obj);
    }
    if let Some(v) = obj.take("eventType") {
        let raw = event_type(v, "eventType")?;
        let kind = normalize_kind(&raw, None);
        return decode_fields(obj, kind, Dialect::CamelCase, keys!["payload", "data"]);
    }
    if let Some(v) = obj.take("event_type") {
        let raw = event_type(v, "event_type")?;
        return if raw.contains('.') {
            let kind = normalize_kind(&raw, None);
            decode_fields(
                obj,
                kind,
                Dialect::Envelope,
                keys!["data", "task_data", "payload"],
            )
        } else if obj.contains_key("task_data")
            || obj.contains_key("previous_task_data")
            || is_bare_action(&raw)
        {
            let kind = normalize_kind(&raw, Some("task"));
            decode_fields(obj, kind, Dialect::TaskData, keys!["task_data", "data"])
        } else {
            let kind = normalize_kind(&raw, None);
            decode_fields(obj, kind, Dialect::Standard, keys!["data", "task_data"])
        };
    }
    if let Some(v) = obj.take("operation") {
        let raw = event_type(v, "operation")?;
        let kind = normalize_kind(&raw, Some("task"));
        return decode_fields(obj, kind, Dialect::TaskData, keys!["task_data", "data"]);
    }
    if matches!(obj.get("event_data"), Some(Node::Obj(_))) {
        return decode_traced(obj, topic, depth);
    }
    if obj.contains_key("remind_at")
        || obj.contains_key("remindAt")
        || (topic.contains("reminder") && TASK_ID_KEYS.names.iter().any(|k| obj.contains_key(k)))
    {
        return decode_reminder(obj);
    }
    if let Some(kind) = fallback_kind {
        return decode_fields(
            obj,
            kind,
            Dialect::Envelope,
            keys!["data", "task_data", "payload"],
        );
    }
    Err(DecodeError::UnrecognizedShape {
        keys: key_list(&obj, ""),
    })
}

/// The event type as a string; anything else is a producer bug worth naming.
pub(super) fn event_type<'a>(v: Node<'a>, key: &'static str) -> Result<Cow<'a, str>, DecodeError> {
    match v {
        Node::Str(s) if !s.trim().is_empty() => Ok(s),
        other => Err(invalid(
            Loc::top(key),
            &other,
            "a non-empty event type string",
        )),
    }
}
