//! Moving fields out of a message object into typed slots: which keys a field
//! may go by, what counts as absent, and how each JSON type converts.
//!
//! A field that is taken is removed from its object; whatever is left at the
//! end becomes the event's `attributes`. Null and blank values count as
//! absent and stay where they are, so they reach `attributes` verbatim.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::error::{invalid, DecodeError, Loc};
use super::json::{key_bit, Node, Obj};
use super::time::parse_time;

/// The names a field may go by, in order of preference, with the union of
/// their [`key_bit`]s: an object whose mask shares no bit with it has none of
/// them, which is the common case and costs one comparison.
pub(super) struct Keys {
    pub(super) names: &'static [&'static str],
    mask: u64,
}

impl Keys {
    pub(super) const fn new(names: &'static [&'static str]) -> Self {
        let mut mask = 0;
        let mut i = 0;
        while i < names.len() {
            mask |= key_bit(names[i]);
            i += 1;
        }
        Keys { names, mask }
    }

    /// Whether `map` may have one of these keys.
    pub(super) fn maybe_in(&self, map: &Obj<'_>) -> bool {
        map.mask() & self.mask != 0
    }
}

/// `&Keys` of a list of names, computed at compile time.
macro_rules! keys {
    ($($name:expr),* $(,)?) => {{
        const KEYS: $crate::event::decode::fields::Keys =
            $crate::event::decode::fields::Keys::new(&[$($name),*]);
        &KEYS
    }};
}
pub(super) use keys;

pub(super) const TASK_ID_KEYS: &Keys = keys!["task_id", "taskId"];
/// The actor of a non-user event: explicit actor keys win over `user_id`.
pub(super) const ACTOR_KEYS: &Keys = keys!["actorId", "actor_id", "user_id", "userId"];
/// The subject of a user event: `user_id` wins over the actor.
pub(super) const SUBJECT_KEYS: &Keys = keys!["user_id", "userId", "actorId", "actor_id"];
pub(super) const PROJECT_ID_KEYS: &Keys = keys!["project_id", "projectId"];
/// Inside a task payload `pid` is the project (the SPM publisher).
pub(super) const SNAPSHOT_PROJECT_KEYS: &Keys = keys!["project_id", "projectId", "pid"];
pub(super) const ASSIGNEE_KEYS: &Keys = keys!["assignee_id", "assigneeId"];
pub(super) const VERSION_KEYS: &Keys = keys!["version", "schema_version", "schemaVersion"];
pub(super) const TIME_KEYS: &Keys = keys![
    "timestamp",
    "occurred_at",
    "occurredAt",
    "time",
    "event_time",
    "eventTime",
];
pub(super) const CREATED_KEYS: &Keys = keys!["created_at", "createdAt"];
pub(super) const PREVIOUS_KEYS: &Keys =
    keys!["previous_task_data", "previousTaskData", "previous", "old"];

/// A conversion of one field's value; `Loc` names the field in errors.
pub(super) type Conv<'a, T> = fn(Node<'a>, Loc<'_>) -> Result<T, DecodeError>;

/// Null and blank strings count as absent.
pub(super) fn is_blank(v: &Node<'_>) -> bool {
    match v {
        Node::Null => true,
        // Most strings start with a visible ASCII character.
        Node::Str(s) => {
            !s.as_bytes().first().is_some_and(u8::is_ascii_graphic) && s.trim().is_empty()
        }
        _ => false,
    }
}

/// A number's JSON text: integers without the formatting machinery.
pub(super) fn number_text(n: &serde_json::Number) -> String {
    match (n.as_u64(), n.as_i64()) {
        // What `to_string` writes, without `fmt`: ids are mostly numbers.
        (Some(u), _) => itoa::Buffer::new().format(u).to_owned(),
        (None, Some(i)) => itoa::Buffer::new().format(i).to_owned(),
        _ => n.to_string(),
    }
}

/// Moves the first usable value among `keys` into an empty `slot`.
pub(super) fn fill<'a, T>(
    slot: &mut Option<T>,
    map: &mut Obj<'a>,
    parent: &str,
    keys: &Keys,
    conv: Conv<'a, T>,
) -> Result<(), DecodeError> {
    if slot.is_some() || !keys.maybe_in(map) {
        return Ok(());
    }
    for &key in keys.names {
        let Some(v) = map.take(key) else { continue };
        if is_blank(&v) {
            map.insert(Cow::Borrowed(key), v);
            continue;
        }
        *slot = Some(conv(v, Loc { parent, key })?);
        return Ok(());
    }
    Ok(())
}

/// Like [`fill`] for ids, but a repeat of the id already found is dropped
/// (task data often repeats the task id); a *different* id stays in the map.
pub(super) fn fill_id(
    slot: &mut Option<String>,
    map: &mut Obj<'_>,
    parent: &str,
    keys: &Keys,
) -> Result<(), DecodeError> {
    if !keys.maybe_in(map) {
        return Ok(());
    }
    for &key in keys.names {
        let Some(v) = map.take(key) else { continue };
        if is_blank(&v) {
            map.insert(Cow::Borrowed(key), v);
            continue;
        }
        match slot {
            None => *slot = Some(conv_id(v, Loc { parent, key })?),
            Some(existing) => {
                if !id_eq(&v, existing) {
                    map.insert(Cow::Borrowed(key), v);
                }
            }
        }
    }
    Ok(())
}

fn id_eq(v: &Node<'_>, existing: &str) -> bool {
    match v {
        Node::Str(s) => s == existing,
        Node::Num(n) => number_text(n) == existing,
        _ => false,
    }
}

/// The first object among `keys`, removed. A non-object there is an error
/// when `strict`, and is left alone otherwise.
pub(super) fn take_object<'a>(
    map: &mut Obj<'a>,
    parent: &str,
    keys: &Keys,
    strict: bool,
) -> Result<Option<(&'static str, Obj<'a>)>, DecodeError> {
    if !keys.maybe_in(map) {
        return Ok(None);
    }
    for &key in keys.names {
        match map.take(key) {
            None => {}
            Some(Node::Obj(obj)) => return Ok(Some((key, obj))),
            Some(other) => {
                if strict && !other.is_null() {
                    return Err(invalid(Loc { parent, key }, &other, "a JSON object"));
                }
                map.insert(Cow::Borrowed(key), other);
            }
        }
    }
    Ok(None)
}

pub(super) fn conv_id(v: Node<'_>, loc: Loc<'_>) -> Result<String, DecodeError> {
    match v {
        Node::Str(s) => Ok(s.into_owned()),
        Node::Num(n) => Ok(number_text(&n)),
        other => Err(invalid(loc, &other, "a string or number id")),
    }
}

pub(super) fn conv_text(v: Node<'_>, loc: Loc<'_>) -> Result<String, DecodeError> {
    match v {
        Node::Str(s) => Ok(s.into_owned()),
        Node::Num(n) => Ok(number_text(&n)),
        other => Err(invalid(loc, &other, "a string")),
    }
}

pub(super) fn conv_flag(v: Node<'_>, loc: Loc<'_>) -> Result<bool, DecodeError> {
    flag(&v, loc)
}

/// [`conv_flag`] without taking the value.
pub(super) fn flag(v: &Node<'_>, loc: Loc<'_>) -> Result<bool, DecodeError> {
    match v {
        Node::Bool(b) => Ok(*b),
        Node::Str(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Node::Str(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        Node::Num(n) if n.as_u64() == Some(1) => Ok(true),
        Node::Num(n) if n.as_u64() == Some(0) => Ok(false),
        _ => Err(invalid(loc, v, "a boolean")),
    }
}

pub(super) fn conv_tags(v: Node<'_>, loc: Loc<'_>) -> Result<Vec<String>, DecodeError> {
    match v {
        Node::Arr(items) => {
            let mut tags = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Node::Str(s) => tags.push(s.into_owned()),
                    Node::Num(n) => tags.push(number_text(&n)),
                    other => return Err(invalid(loc, &other, "an array of strings")),
                }
            }
            Ok(tags)
        }
        // "work, important": some producers join tags.
        Node::Str(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        other => Err(invalid(loc, &other, "an array of strings")),
    }
}

pub(super) fn conv_time(v: Node<'_>, loc: Loc<'_>) -> Result<DateTime<Utc>, DecodeError> {
    parse_time(&v, loc)
}

pub(super) fn conv_method(v: Node<'_>, loc: Loc<'_>) -> Result<String, DecodeError> {
    if let Node::Str(s) = &v {
        let m = s.trim();
        for known in ["email", "push", "sms", "webhook"] {
            if m.eq_ignore_ascii_case(known) {
                return Ok(known.to_owned());
            }
        }
    }
    Err(invalid(
        loc,
        &v,
        "one of \"email\", \"push\", \"sms\", \"webhook\"",
    ))
}
