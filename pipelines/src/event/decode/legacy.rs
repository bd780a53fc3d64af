//! The decoder as it was before the typed rewrite: parses into a
//! `serde_json::Value` tree and moves fields out of it. Kept, for tests only,
//! as the reference the equivalence test (`equivalence.rs`) compares the
//! current decoder with; delete both once that comparison is no longer wanted.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::local_time::{self, LocalTime};
use crate::event::model::{
    Dialect, FieldChange, Recurrence, ReminderRequest, RequestContext, TaskEvent, TaskSnapshot,
    UserProfile,
};

type Object = Map<String, Value>;

pub(super) use super::DecodeContext;
// Unchanged by the rewrite, so shared rather than copied: the string and
// epoch time parsers (the equivalence test is about reading JSON and moving
// fields, not these; the type list is the one in `kinds`).
use super::time::{epoch, naive_time_str, offset_time_str, parse_time_str};

/// Why a message could not be decoded.
///
/// Every variant carries enough to fix the producer without re-reading the
/// message: the field path (`data.due_date`) and the offending value
/// (truncated), because the text ends up in a dead-letter header.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DecodeError {
    /// The record had no bytes (or only whitespace): usually a tombstone.
    #[error("empty message")]
    Empty,
    /// The bytes are not JSON; `error` is serde_json's message with line and column.
    #[error("not JSON: {error}")]
    NotJson { error: String },
    /// Valid JSON, but not an object (`found` is "an array", "a string", ...).
    #[error("expected a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    /// An object with no event type, not a reminder request and not canonical.
    /// `keys` lists the keys seen (truncated), which is usually enough to tell
    /// which producer sent it.
    #[error("unrecognized message shape: no event type among keys [{keys}]")]
    UnrecognizedShape { keys: String },
    /// A field the event cannot do without (`timestamp` with no Kafka
    /// timestamp either, `task_id` on a `task.*` event, `remind_at`).
    #[error("missing field \"{field}\"")]
    MissingField { field: String },
    /// A field is present but its value cannot be used. `value` is the JSON
    /// text of the value, truncated to about 80 characters.
    #[error("field \"{field}\" has value {value}: expected {expected}")]
    InvalidField {
        field: String,
        value: String,
        expected: &'static str,
    },
}

impl DecodeError {
    /// A short, fixed label, so the decode-failure metric gets one series per
    /// kind of failure rather than one per message.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::NotJson { .. } => "not_json",
            DecodeError::NotAnObject { .. } => "not_an_object",
            DecodeError::UnrecognizedShape { .. } => "unrecognized_shape",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::InvalidField { .. } => "invalid_field",
        }
    }

    /// The same error, with field paths made relative to the wrapper
    /// (`data.` for a CloudEvents payload).
    fn within(self, prefix: &str) -> Self {
        match self {
            DecodeError::MissingField { field } => DecodeError::MissingField {
                field: format!("{prefix}.{field}"),
            },
            DecodeError::InvalidField {
                field,
                value,
                expected,
            } => DecodeError::InvalidField {
                field: format!("{prefix}.{field}"),
                value,
                expected,
            },
            other => other,
        }
    }
}

///
/// Dialects are recognised by shape (see the README's "Event contract"); the
/// topic in `ctx` is only a hint. A message without an id gets
/// `h:` + the first 16 bytes of SHA-256 of `payload` (hex), so a re-sent
/// identical message is recognised as a duplicate. A message without a
/// timestamp gets the Kafka timestamp.
pub fn decode(payload: &[u8], ctx: &DecodeContext<'_>) -> Result<TaskEvent, DecodeError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let value: Value = serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson {
        error: e.to_string(),
    })?;
    let obj = match value {
        Value::Object(obj) => obj,
        other => {
            return Err(DecodeError::NotAnObject {
                found: json_kind(&other),
            })
        }
    };
    let draft = dispatch(obj, ctx.topic, 0, None)?;
    finish(draft, payload, ctx)
}

// ---------------------------------------------------------------- field names

/// Wrappers (CloudEvents, `event_data`) nested deeper than this are refused:
/// no producer does it, and a crafted message could otherwise recurse at will.
const MAX_NESTING: u8 = 4;
/// Values and key lists in error messages are cut to about this many characters.
const SNIPPET_CHARS: usize = 80;

const TASK_ID_KEYS: &[&str] = &["task_id", "taskId"];
/// The actor of a non-user event: explicit actor keys win over `user_id`.
const ACTOR_KEYS: &[&str] = &["actorId", "actor_id", "user_id", "userId"];
/// The subject of a user event: `user_id` wins over the actor.
const SUBJECT_KEYS: &[&str] = &["user_id", "userId", "actorId", "actor_id"];
const PROJECT_ID_KEYS: &[&str] = &["project_id", "projectId"];
/// Inside a task payload `pid` is the project (the SPM publisher).
const SNAPSHOT_PROJECT_KEYS: &[&str] = &["project_id", "projectId", "pid"];
const ASSIGNEE_KEYS: &[&str] = &["assignee_id", "assigneeId"];
const VERSION_KEYS: &[&str] = &["version", "schema_version", "schemaVersion"];
const TIME_KEYS: &[&str] = &[
    "timestamp",
    "occurred_at",
    "occurredAt",
    "time",
    "event_time",
    "eventTime",
];
const CREATED_KEYS: &[&str] = &["created_at", "createdAt"];
const PREVIOUS_KEYS: &[&str] = &["previous_task_data", "previousTaskData", "previous", "old"];
const RULE_KEYS: &[&str] = &[
    "recurrence",
    "recurring_pattern",
    "recurrence_rule",
    "rrule",
    "recurrence_pattern",
    "recurrencePattern",
    "recurrenceRule",
];

/// Entity prefixes of snake-case types, longest first (`task_template_created`
/// is a template event, not a task event).
const ENTITIES: &[&str] = &[
    "task_template",
    "notification",
    "analytics",
    "schedule",
    "deadline",
    "reminder",
    "project",
    "comment",
    "system",
    "task",
    "team",
    "user",
    "tag",
];

/// Analytics events whose names start with another entity's prefix
/// (`task_distribution_viewed` is not a task event).
const ANALYTICS: &[&str] = &[
    "dashboard_viewed",
    "task_distribution_viewed",
    "report_generated",
    "report_downloaded",
    "user_stats_accessed",
    "team_performance_accessed",
    "error_occurred",
];

/// Actions the task-data dialect sends without an entity (`completed`).
const BARE_ACTIONS: &[&str] = &[
    "created",
    "updated",
    "completed",
    "deleted",
    "priority_changed",
    "due_date_set",
    "tags_added",
    "tags_removed",
    "tag_added",
    "tag_removed",
    "status_changed",
    "assigned",
    "unassigned",
    "archived",
    "unarchived",
    "reopened",
    "uncompleted",
    "restored",
];

// ---------------------------------------------------------------- dispatch

/// An event being assembled; [`finish`] fills the id and time fallbacks.
struct Draft {
    event_id: Option<String>,
    kind: String,
    occurred_at: Option<DateTime<Utc>>,
    task_id: Option<String>,
    user_id: Option<String>,
    project_id: Option<String>,
    task: Option<TaskSnapshot>,
    previous: Option<TaskSnapshot>,
    changes: BTreeMap<String, FieldChange>,
    reminder: Option<ReminderRequest>,
    user: Option<UserProfile>,
    context: RequestContext,
    dialect: Dialect,
    cloudevents: bool,
    schema_version: Option<String>,
    attributes: Object,
}

impl Draft {
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
            attributes: Object::new(),
        }
    }
}

/// Recognises the dialect of `obj` and decodes it. `fallback_kind` is a
/// CloudEvents `type` usable when the payload names no type of its own.
fn dispatch(
    mut obj: Object,
    topic: &str,
    depth: u8,
    fallback_kind: Option<String>,
) -> Result<Draft, DecodeError> {
    if obj.contains_key("specversion") {
        return decode_cloudevent(obj, topic, depth);
    }
    if obj.contains_key("type") && obj.contains_key("dialect") && obj.contains_key("event_id") {
        return decode_canonical(obj);
    }
    if let Some(v) = take(&mut obj, "eventType") {
        let raw = event_type(v, "eventType")?;
        let kind = normalize_kind(&raw, None);
        return decode_fields(obj, kind, Dialect::CamelCase, &["payload", "data"]);
    }
    if let Some(v) = take(&mut obj, "event_type") {
        let raw = event_type(v, "event_type")?;
        return if raw.contains('.') {
            let kind = normalize_kind(&raw, None);
            decode_fields(
                obj,
                kind,
                Dialect::Envelope,
                &["data", "task_data", "payload"],
            )
        } else if obj.contains_key("task_data")
            || obj.contains_key("previous_task_data")
            || is_bare_action(&raw)
        {
            let kind = normalize_kind(&raw, Some("task"));
            decode_fields(obj, kind, Dialect::TaskData, &["task_data", "data"])
        } else {
            let kind = normalize_kind(&raw, None);
            decode_fields(obj, kind, Dialect::Standard, &["data", "task_data"])
        };
    }
    if let Some(v) = take(&mut obj, "operation") {
        let raw = event_type(v, "operation")?;
        let kind = normalize_kind(&raw, Some("task"));
        return decode_fields(obj, kind, Dialect::TaskData, &["task_data", "data"]);
    }
    if matches!(obj.get("event_data"), Some(Value::Object(_))) {
        return decode_traced(obj, topic, depth);
    }
    if obj.contains_key("remind_at")
        || obj.contains_key("remindAt")
        || (topic.contains("reminder") && TASK_ID_KEYS.iter().any(|k| obj.contains_key(*k)))
    {
        return decode_reminder(obj);
    }
    if let Some(kind) = fallback_kind {
        return decode_fields(
            obj,
            kind,
            Dialect::Envelope,
            &["data", "task_data", "payload"],
        );
    }
    Err(DecodeError::UnrecognizedShape {
        keys: key_list(&obj, ""),
    })
}

/// The event type as a string; anything else is a producer bug worth naming.
fn event_type(v: Value, key: &'static str) -> Result<String, DecodeError> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s),
        other => Err(invalid(
            Loc::top(key),
            &other,
            "a non-empty event type string",
        )),
    }
}

/// The shared decoder of the envelope, task-data, standard and camel-case
/// dialects: they differ only in key names and in where the payload lives.
///
/// The payload is the first object among `payload_keys`; when there is none,
/// the message is *flat* and its remaining top-level fields are the payload
/// (then a top-level `id` names the entity, not the event).
fn decode_fields(
    mut top: Object,
    kind: String,
    dialect: Dialect,
    payload_keys: &[&'static str],
) -> Result<Draft, DecodeError> {
    let entity = Entity::of(&kind);
    let mut d = Draft::new(kind, dialect);
    let actor_keys = if entity == Entity::User {
        SUBJECT_KEYS
    } else {
        ACTOR_KEYS
    };

    let payload = take_object(&mut top, "", payload_keys, true)?;
    let flat = payload.is_none();
    fill_id(&mut d.event_id, &mut top, "", &["event_id", "eventId"])?;
    if !flat {
        fill_id(&mut d.event_id, &mut top, "", &["id"])?;
    }
    fill(&mut d.occurred_at, &mut top, "", TIME_KEYS, conv_time)?;
    if d.occurred_at.is_none() {
        if flat {
            // The task's own `created_at` stays for the snapshot.
            d.occurred_at = peek_time(&top, CREATED_KEYS)?;
        } else {
            fill(&mut d.occurred_at, &mut top, "", CREATED_KEYS, conv_time)?;
        }
    }
    fill(&mut d.schema_version, &mut top, "", VERSION_KEYS, conv_text)?;
    fill_id(&mut d.user_id, &mut top, "", actor_keys)?;
    fill_id(&mut d.task_id, &mut top, "", TASK_ID_KEYS)?;
    fill_id(&mut d.project_id, &mut top, "", PROJECT_ID_KEYS)?;
    let mut top_assignee = None;
    if entity == Entity::Task {
        fill_id(&mut top_assignee, &mut top, "", ASSIGNEE_KEYS)?;
    }
    take_context(&mut top, "", &mut d.context)?;
    let mut meta_rest = Object::new();
    if let Some((key, mut meta)) = take_object(&mut top, "", &["metadata"], true)? {
        fill(
            &mut d.schema_version,
            &mut meta,
            key,
            VERSION_KEYS,
            conv_text,
        )?;
        take_context(&mut meta, key, &mut d.context)?;
        meta_rest = meta;
    }
    let mut previous = None;
    if entity == Entity::Task {
        previous =
            take_object(&mut top, "", PREVIOUS_KEYS, false)?.map(|(k, m)| (Cow::Borrowed(k), m));
    }

    let (parent, mut body, rest) = match payload {
        Some((key, map)) => (key, map, top),
        None => ("", top, Object::new()),
    };
    fill_id(&mut d.task_id, &mut body, parent, TASK_ID_KEYS)?;
    fill_id(&mut d.user_id, &mut body, parent, actor_keys)?;
    match entity {
        Entity::Task => {
            fill_id(&mut d.task_id, &mut body, parent, &["id"])?;
            fill_id(&mut d.user_id, &mut body, parent, &["created_by_uid"])?;
            let mut snapshot = take_snapshot(&mut body, parent)?;
            if snapshot.assignee_id.is_none() {
                snapshot.assignee_id = top_assignee;
            }
            if d.project_id.is_none() {
                d.project_id.clone_from(&snapshot.project_id);
            }
            if snapshot != TaskSnapshot::default() {
                d.task = Some(snapshot);
            }
            if previous.is_none() {
                previous = take_object(&mut body, parent, PREVIOUS_KEYS, false)?
                    .map(|(k, m)| (Cow::Owned(Loc { parent, key: k }.to_string()), m));
            }
        }
        Entity::User => {
            fill_id(&mut d.user_id, &mut body, parent, &["id"])?;
            fill_id(&mut d.project_id, &mut body, parent, PROJECT_ID_KEYS)?;
            d.user = take_profile(&mut body, parent)?;
        }
        Entity::Other => {
            fill_id(&mut d.project_id, &mut body, parent, PROJECT_ID_KEYS)?;
        }
    }
    d.changes = take_changes(&mut body, parent)?;
    take_context(&mut body, parent, &mut d.context)?;

    if let Some((path, mut prev)) = previous {
        let snapshot = take_snapshot(&mut prev, &path)?;
        if snapshot != TaskSnapshot::default() {
            d.previous = Some(snapshot);
        }
        if !prev.is_empty() {
            // Keep what the snapshot has no field for, under its last key.
            let key = path.rsplit('.').next().unwrap_or_default().to_owned();
            body.entry(key).or_insert(Value::Object(prev));
        }
    }

    d.attributes = body;
    merge(&mut d.attributes, meta_rest);
    merge(&mut d.attributes, rest);
    Ok(d)
}

/// Dialect 5: a reminder request (`remind_at`, no type).
fn decode_reminder(mut obj: Object) -> Result<Draft, DecodeError> {
    let mut d = Draft::new("reminder.requested".to_owned(), Dialect::Reminder);
    fill_id(
        &mut d.event_id,
        &mut obj,
        "",
        &["event_id", "eventId", "id"],
    )?;
    // The request is made when it is created; `created_at` is its time.
    fill(&mut d.occurred_at, &mut obj, "", CREATED_KEYS, conv_time)?;
    fill(&mut d.occurred_at, &mut obj, "", TIME_KEYS, conv_time)?;
    fill_id(&mut d.task_id, &mut obj, "", TASK_ID_KEYS)?;
    fill_id(&mut d.user_id, &mut obj, "", SUBJECT_KEYS)?;
    fill_id(&mut d.project_id, &mut obj, "", PROJECT_ID_KEYS)?;
    fill(&mut d.schema_version, &mut obj, "", VERSION_KEYS, conv_text)?;
    take_context(&mut obj, "", &mut d.context)?;
    d.reminder = Some(take_reminder(&mut obj, "")?);
    d.attributes = obj;
    Ok(d)
}

/// Dialect 6: CloudEvents 1.0 structured JSON, as Dapr publishes it. The
/// payload (`data` object, `data` as a JSON string, or `data_base64`) is any
/// other dialect; CloudEvents attributes fill what the payload lacks.
fn decode_cloudevent(mut ce: Object, topic: &str, depth: u8) -> Result<Draft, DecodeError> {
    if depth >= MAX_NESTING {
        return Err(DecodeError::UnrecognizedShape {
            keys: format!("{} (wrappers nested too deep)", key_list(&ce, "")),
        });
    }
    if let Some(v) = ce.get("specversion") {
        if !v.is_string() {
            return Err(invalid(
                Loc::top("specversion"),
                v,
                "a CloudEvents specversion string",
            ));
        }
    }
    let (inner, within) = match take(&mut ce, "data_base64") {
        Some(Value::String(s)) => match base64_decode(&s) {
            Some(bytes) => (Some(parse_inner(&bytes, "data_base64")?), "data_base64"),
            None => {
                return Err(DecodeError::InvalidField {
                    field: "data_base64".to_owned(),
                    value: snippet(&s),
                    expected: "base64-encoded JSON",
                })
            }
        },
        None | Some(Value::Null) => match take(&mut ce, "data") {
            Some(Value::Object(obj)) => (Some(obj), "data"),
            Some(Value::String(s)) => (Some(parse_inner(s.as_bytes(), "data")?), "data"),
            None | Some(Value::Null) => (None, "data"),
            Some(other) => {
                return Err(invalid(
                    Loc::top("data"),
                    &other,
                    "a JSON object, or a string holding one",
                ))
            }
        },
        Some(other) => return Err(invalid(Loc::top("data_base64"), &other, "a base64 string")),
    };
    let ce_type = match ce.get("type") {
        Some(Value::String(s)) => Some(s.as_str()),
        None | Some(Value::Null) => None,
        Some(other) => return Err(invalid(Loc::top("type"), other, "a string")),
    };
    // `com.dapr.event.sent` (Dapr's default) says nothing about the event.
    let fallback_kind = ce_type
        .filter(|t| is_plain_dotted(t))
        .map(|t| normalize_kind(t, None));
    let hint = match ce.get("topic") {
        Some(Value::String(t)) => t.as_str(),
        _ => topic,
    };
    let mut d = match inner {
        Some(obj) => match dispatch(obj, hint, depth + 1, fallback_kind) {
            Ok(d) => d,
            Err(DecodeError::UnrecognizedShape { keys }) => {
                return Err(DecodeError::UnrecognizedShape {
                    keys: format!("{}; {within}: {keys}", key_list(&ce, "")),
                })
            }
            Err(e) => return Err(e.within(within)),
        },
        None => match fallback_kind {
            Some(kind) => decode_fields(Object::new(), kind, Dialect::Envelope, &[])?,
            None => {
                return Err(DecodeError::MissingField {
                    field: "data".to_owned(),
                })
            }
        },
    };
    if d.event_id.is_none() {
        fill_id(&mut d.event_id, &mut ce, "", &["id"])?;
    }
    if d.occurred_at.is_none() {
        fill(&mut d.occurred_at, &mut ce, "", &["time"], conv_time)?;
    }
    fill(
        &mut d.context.trace_parent,
        &mut ce,
        "",
        &["traceparent", "traceid"],
        conv_text,
    )?;
    d.cloudevents = true;
    Ok(d)
}

/// The inner message of a CloudEvent given as bytes (`data_base64`, or `data`
/// as a string).
fn parse_inner(bytes: &[u8], field: &'static str) -> Result<Object, DecodeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson {
        error: format!("CloudEvents {field}: {e}"),
    })?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(invalid(Loc::top(field), &other, "a JSON object")),
    }
}

/// `{"traceparent": .., "event_data": {..}}`: what a Dapr subscriber hands on
/// (Todo Evolution's tracing example).
fn decode_traced(mut obj: Object, topic: &str, depth: u8) -> Result<Draft, DecodeError> {
    if depth >= MAX_NESTING {
        return Err(DecodeError::UnrecognizedShape {
            keys: format!("{} (wrappers nested too deep)", key_list(&obj, "")),
        });
    }
    let inner = match take(&mut obj, "event_data") {
        Some(Value::Object(inner)) => inner,
        _ => {
            return Err(DecodeError::UnrecognizedShape {
                keys: key_list(&obj, ""),
            })
        }
    };
    let mut d = dispatch(inner, topic, depth + 1, None).map_err(|e| e.within("event_data"))?;
    fill(
        &mut d.context.trace_parent,
        &mut obj,
        "",
        &["traceparent"],
        conv_text,
    )?;
    merge(&mut d.attributes, obj);
    Ok(d)
}

/// Dialect 7: taskstream's own output, so `taskstream decode` output and our
/// own producers' messages decode back to the same event.
fn decode_canonical(mut obj: Object) -> Result<Draft, DecodeError> {
    let raw = event_type(take(&mut obj, "type").unwrap_or(Value::Null), "type")?;
    let dialect = match take(&mut obj, "dialect") {
        Some(Value::String(s)) => parse_dialect(&s).ok_or_else(|| DecodeError::InvalidField {
            field: "dialect".to_owned(),
            value: snippet(&s),
            expected: "one of envelope, task_data, standard, camel_case, reminder, canonical",
        })?,
        other => {
            return Err(invalid(
                Loc::top("dialect"),
                &other.unwrap_or(Value::Null),
                "a dialect name",
            ))
        }
    };
    let mut d = Draft::new(normalize_kind(&raw, None), dialect);
    fill_id(&mut d.event_id, &mut obj, "", &["event_id"])?;
    fill(
        &mut d.occurred_at,
        &mut obj,
        "",
        &["occurred_at"],
        conv_time,
    )?;
    fill_id(&mut d.task_id, &mut obj, "", &["task_id"])?;
    fill_id(&mut d.user_id, &mut obj, "", &["user_id"])?;
    fill_id(&mut d.project_id, &mut obj, "", &["project_id"])?;
    if let Some((key, mut m)) = take_object(&mut obj, "", &["task"], true)? {
        let s = take_snapshot(&mut m, key)?;
        d.task = (s != TaskSnapshot::default()).then_some(s);
    }
    if let Some((key, mut m)) = take_object(&mut obj, "", &["previous"], true)? {
        let s = take_snapshot(&mut m, key)?;
        d.previous = (s != TaskSnapshot::default()).then_some(s);
    }
    d.changes = take_changes(&mut obj, "")?;
    if let Some((key, mut m)) = take_object(&mut obj, "", &["reminder"], true)? {
        d.reminder = Some(take_reminder(&mut m, key)?);
    }
    if let Some((key, mut m)) = take_object(&mut obj, "", &["user"], true)? {
        d.user = take_profile(&mut m, key)?;
    }
    if let Some((key, mut m)) = take_object(&mut obj, "", &["context"], true)? {
        take_context(&mut m, key, &mut d.context)?;
    }
    let mut cloudevents = None;
    fill(&mut cloudevents, &mut obj, "", &["cloudevents"], conv_flag)?;
    d.cloudevents = cloudevents.unwrap_or(false);
    fill(
        &mut d.schema_version,
        &mut obj,
        "",
        &["schema_version"],
        conv_text,
    )?;
    if let Some((_, m)) = take_object(&mut obj, "", &["attributes"], true)? {
        d.attributes = m;
    }
    merge(&mut d.attributes, obj);
    Ok(d)
}

fn parse_dialect(s: &str) -> Option<Dialect> {
    Dialect::ALL.into_iter().find(|d| d.as_str() == s)
}

/// Fills the fallbacks and checks what every event needs.
fn finish(d: Draft, payload: &[u8], ctx: &DecodeContext<'_>) -> Result<TaskEvent, DecodeError> {
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
    let event_id = match d.event_id {
        Some(id) => id,
        None => content_id(payload),
    };
    let context = (d.context != RequestContext::default()).then_some(d.context);
    Ok(TaskEvent {
        event_id,
        kind: d.kind,
        occurred_at,
        task_id: d.task_id,
        user_id: d.user_id,
        project_id: d.project_id,
        task: d.task.map(Box::new),
        previous: d.previous.map(Box::new),
        changes: d.changes,
        reminder: d.reminder,
        user: d.user,
        context,
        dialect: d.dialect,
        cloudevents: d.cloudevents,
        schema_version: d.schema_version,
        attributes: d.attributes,
    })
}

/// `h:` + hex of the first 16 bytes of SHA-256 of the message: stable for a
/// re-sent identical message, so it deduplicates like a producer's id.
fn content_id(payload: &[u8]) -> String {
    let digest = Sha256::digest(payload);
    let mut id = String::with_capacity(34);
    id.push_str("h:");
    id.push_str(&hex::encode(&digest[..16]));
    id
}

// ---------------------------------------------------------------- kinds

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Task,
    User,
    Other,
}

impl Entity {
    fn of(kind: &str) -> Self {
        match kind.split_once('.').map_or(kind, |(e, _)| e) {
            "task" => Entity::Task,
            "user" => Entity::User,
            _ => Entity::Other,
        }
    }
}

/// The dotted, lower-case form of a producer's type. `bare_entity` is the
/// entity of the task-data dialect's bare actions (`completed`).
///
/// An unrecognised snake type still gets a best-effort dotted form (`foo_bar`
/// becomes `foo.bar`): the pipeline counts and skips unknown types, and the
/// metric is more useful with a stable name.
fn normalize_kind(raw: &str, bare_entity: Option<&str>) -> String {
    let raw = raw.trim();
    let lower: Cow<'_, str> = if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        if raw.contains(['_', '.']) {
            Cow::Owned(raw.to_ascii_lowercase())
        } else {
            Cow::Owned(camel_to_snake(raw))
        }
    } else {
        Cow::Borrowed(raw)
    };
    let s: &str = &lower;
    if let Some((entity, action)) = s.split_once('.') {
        return dotted(entity, action);
    }
    if s == "analytics_query" {
        return "analytics.query".to_owned();
    }
    if ANALYTICS.contains(&s) {
        return format!("analytics.{s}");
    }
    if s == "backup_completed" {
        return "system.backup_completed".to_owned();
    }
    if let Some(entity) = bare_entity {
        if is_bare_action(s) {
            return dotted(entity, s);
        }
    }
    for entity in ENTITIES {
        if let Some(action) = s.strip_prefix(entity).and_then(|r| r.strip_prefix('_')) {
            if !action.is_empty() {
                return dotted(entity, action);
            }
        }
    }
    if let Some(entity) = bare_entity {
        return dotted(entity, s);
    }
    match s.split_once('_') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => format!("{a}.{b}"),
        _ => lower.into_owned(),
    }
}

/// `entity.action`, with producers' synonyms folded into taskstream's names.
fn dotted(entity: &str, action: &str) -> String {
    let action = match (entity, action) {
        ("task", "tags_added") => "tag_added",
        ("task", "tags_removed") => "tag_removed",
        ("user", "registered") => "created",
        _ => action,
    };
    format!("{entity}.{action}")
}

/// `TaskUpdated` / `taskUpdated` → `task_updated`.
fn camel_to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut prev_upper = true;
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            if !prev_upper {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_upper = true;
        } else {
            out.push(c);
            prev_upper = false;
        }
    }
    out
}

fn is_bare_action(s: &str) -> bool {
    let s = s.trim();
    BARE_ACTIONS.iter().any(|a| a.eq_ignore_ascii_case(s))
}

/// `entity.action` and nothing more: a usable CloudEvents `type`, unlike
/// reverse-DNS types such as `com.dapr.event.sent`.
fn is_plain_dotted(t: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    matches!(t.split_once('.'), Some((a, b)) if part(a) && part(b))
}

// ---------------------------------------------------------------- fields

/// Removes `key` from a small object. Most lookups are for aliases that are
/// absent; comparing lengths first over the object's few keys rejects those
/// far more cheaply than the map's ordered search, which showed up as a third
/// of all decoding time.
fn take(map: &mut Object, key: &str) -> Option<Value> {
    if map.is_empty() {
        return None;
    }
    if map.keys().any(|k| k.len() == key.len() && k == key) {
        map.remove(key)
    } else {
        None
    }
}

/// Where a field sits, for error messages; formatted only on the error path.
#[derive(Clone, Copy)]
struct Loc<'a> {
    parent: &'a str,
    key: &'a str,
}

impl<'a> Loc<'a> {
    fn top(key: &'a str) -> Self {
        Loc { parent: "", key }
    }
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parent.is_empty() {
            f.write_str(self.key)
        } else {
            write!(f, "{}.{}", self.parent, self.key)
        }
    }
}

fn invalid(loc: Loc<'_>, value: &Value, expected: &'static str) -> DecodeError {
    DecodeError::InvalidField {
        field: loc.to_string(),
        value: snippet(value),
        expected,
    }
}

/// Null and blank strings count as absent; they stay where they are (so they
/// end up in `attributes`, verbatim).
fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// Moves the first usable value among `keys` into an empty `slot`.
fn fill<T>(
    slot: &mut Option<T>,
    map: &mut Object,
    parent: &str,
    keys: &[&str],
    conv: fn(Value, Loc<'_>) -> Result<T, DecodeError>,
) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Ok(());
    }
    for &key in keys {
        let Some(v) = take(map, key) else { continue };
        if is_blank(&v) {
            map.insert(key.to_owned(), v);
            continue;
        }
        *slot = Some(conv(v, Loc { parent, key })?);
        return Ok(());
    }
    Ok(())
}

/// Like [`fill`] for ids, but a repeat of the id already found is dropped
/// (task data often repeats the task id); a *different* id stays in the map.
fn fill_id(
    slot: &mut Option<String>,
    map: &mut Object,
    parent: &str,
    keys: &[&str],
) -> Result<(), DecodeError> {
    for &key in keys {
        let Some(v) = take(map, key) else { continue };
        if is_blank(&v) {
            map.insert(key.to_owned(), v);
            continue;
        }
        match slot {
            None => *slot = Some(conv_id(v, Loc { parent, key })?),
            Some(existing) => {
                if !id_eq(&v, existing) {
                    map.insert(key.to_owned(), v);
                }
            }
        }
    }
    Ok(())
}

fn id_eq(v: &Value, existing: &str) -> bool {
    match v {
        Value::String(s) => s == existing,
        Value::Number(n) => n.to_string() == existing,
        _ => false,
    }
}

/// The first object among `keys`, removed. A non-object there is an error
/// when `strict`, and is left alone otherwise.
fn take_object(
    map: &mut Object,
    parent: &str,
    keys: &[&'static str],
    strict: bool,
) -> Result<Option<(&'static str, Object)>, DecodeError> {
    for &key in keys {
        match take(map, key) {
            None => {}
            Some(Value::Object(obj)) => return Ok(Some((key, obj))),
            Some(other) => {
                if strict && !other.is_null() {
                    return Err(invalid(Loc { parent, key }, &other, "a JSON object"));
                }
                map.insert(key.to_owned(), other);
            }
        }
    }
    Ok(None)
}

fn merge(into: &mut Object, from: Object) {
    for (k, v) in from {
        into.entry(k).or_insert(v);
    }
}

fn conv_id(v: Value, loc: Loc<'_>) -> Result<String, DecodeError> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(invalid(loc, &other, "a string or number id")),
    }
}

fn conv_text(v: Value, loc: Loc<'_>) -> Result<String, DecodeError> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(invalid(loc, &other, "a string")),
    }
}

fn conv_flag(v: Value, loc: Loc<'_>) -> Result<bool, DecodeError> {
    match &v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        _ => Err(invalid(loc, &v, "a boolean")),
    }
}

fn conv_tags(v: Value, loc: Loc<'_>) -> Result<Vec<String>, DecodeError> {
    match v {
        Value::Array(items) => {
            let mut tags = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => tags.push(s),
                    Value::Number(n) => tags.push(n.to_string()),
                    other => return Err(invalid(loc, &other, "an array of strings")),
                }
            }
            Ok(tags)
        }
        // "work, important": some producers join tags.
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        other => Err(invalid(loc, &other, "an array of strings")),
    }
}

fn conv_time(v: Value, loc: Loc<'_>) -> Result<DateTime<Utc>, DecodeError> {
    parse_time(&v, loc)
}

fn conv_method(v: Value, loc: Loc<'_>) -> Result<String, DecodeError> {
    if let Value::String(s) = &v {
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

/// The first usable time among `keys`, parsed but left in the map.
fn peek_time(map: &Object, keys: &[&str]) -> Result<Option<DateTime<Utc>>, DecodeError> {
    for &key in keys {
        match map.get(key) {
            Some(v) if !is_blank(v) => return parse_time(v, Loc::top(key)).map(Some),
            _ => {}
        }
    }
    Ok(None)
}

fn take_context(
    map: &mut Object,
    parent: &str,
    ctx: &mut RequestContext,
) -> Result<(), DecodeError> {
    fill(
        &mut ctx.ip_address,
        map,
        parent,
        &["ip_address", "ipAddress"],
        conv_text,
    )?;
    fill(
        &mut ctx.user_agent,
        map,
        parent,
        &["user_agent", "userAgent"],
        conv_text,
    )?;
    fill(
        &mut ctx.trace_parent,
        map,
        parent,
        &["traceparent", "trace_parent"],
        conv_text,
    )
}

/// The task fields of a payload (`data`, `task_data`, `payload`, a previous
/// state), removed from it. `name` is a title and `pid` a project (SPM).
fn take_snapshot(map: &mut Object, parent: &str) -> Result<TaskSnapshot, DecodeError> {
    let mut s = TaskSnapshot::default();
    fill(&mut s.title, map, parent, &["title", "name"], conv_text)?;
    fill(&mut s.description, map, parent, &["description"], conv_text)?;
    fill(&mut s.status, map, parent, &["status"], conv_text)?;
    fill(
        &mut s.completed,
        map,
        parent,
        &["completed", "is_completed", "isCompleted"],
        conv_flag,
    )?;
    fill(&mut s.priority, map, parent, &["priority"], conv_text)?;
    const DUE_KEYS: &[&str] = &["due_at", "due_date", "dueDate", "dueAt"];
    let zone = peek_zone(map, parent)?;
    let naive = peek_naive(map, DUE_KEYS);
    fill(&mut s.due_at, map, parent, DUE_KEYS, conv_time)?;
    s.due_local = match take_local(map, parent, "due_local")? {
        Some(kept) => Some(kept),
        None => localise(&mut s.due_at, naive, &zone),
    };
    fill(&mut s.tags, map, parent, &["tags"], conv_tags)?;
    s.recurrence = take_recurrence(map, parent)?;
    fill_id(&mut s.assignee_id, map, parent, ASSIGNEE_KEYS)?;
    fill_id(&mut s.project_id, map, parent, SNAPSHOT_PROJECT_KEYS)?;
    fill(
        &mut s.completed_at,
        map,
        parent,
        &["completed_at", "completedAt"],
        conv_time,
    )?;
    fill(&mut s.created_at, map, parent, CREATED_KEYS, conv_time)?;
    Ok(s)
}

/// A recurrence rule, when the payload gives one: a string under one of
/// [`RULE_KEYS`], or an object with `rule`/`rrule`/`pattern`/`frequency`.
/// `is_recurring: false` wins over a stale rule; `is_recurring: true` with no
/// rule (only a `recurring_pattern_id`) leaves everything in `attributes`.
fn take_recurrence(map: &mut Object, parent: &str) -> Result<Option<Recurrence>, DecodeError> {
    let flag_key = ["is_recurring", "isRecurring"]
        .into_iter()
        .find(|k| map.get(*k).is_some_and(|v| !v.is_null()));
    if let Some(key) = flag_key {
        if let Some(v) = map.get(key) {
            if !conv_flag(v.clone(), Loc { parent, key })? {
                return Ok(None);
            }
        }
    }
    let Some(key) = RULE_KEYS.iter().copied().find(|k| match map.get(*k) {
        Some(Value::String(s)) => {
            let s = s.trim();
            !s.is_empty() && !s.eq_ignore_ascii_case("none")
        }
        Some(Value::Null) | None => false,
        Some(_) => true,
    }) else {
        return Ok(None);
    };
    let loc = Loc { parent, key };
    let (rule, mut timezone) = match take(map, key) {
        Some(Value::String(rule)) => (rule, None),
        Some(Value::Object(mut o)) => {
            let mut rule = None;
            fill(
                &mut rule,
                &mut o,
                "",
                &["rule", "rrule", "pattern", "frequency"],
                conv_text,
            )
            .map_err(|e| e.within(&loc.to_string()))?;
            let Some(rule) = rule else {
                let err = invalid(
                    loc,
                    &Value::Object(o),
                    "a recurrence rule or {\"rule\": ..}",
                );
                return Err(err);
            };
            let mut tz = None;
            fill(&mut tz, &mut o, "", &["timezone"], conv_text)
                .map_err(|e| e.within(&loc.to_string()))?;
            if !o.is_empty() {
                map.insert(key.to_owned(), Value::Object(o));
            }
            (rule, tz)
        }
        Some(other) => {
            return Err(invalid(loc, &other, "a recurrence rule string"));
        }
        None => return Ok(None),
    };
    fill(
        &mut timezone,
        map,
        parent,
        &["recurrence_timezone", "timezone"],
        conv_text,
    )?;
    if let Some(key) = flag_key {
        take(map, key);
    }
    Ok(Some(Recurrence { rule, timezone }))
}

/// `changes: {field: {old, new}}`, as the envelope dialect lists them.
fn take_changes(
    map: &mut Object,
    parent: &str,
) -> Result<BTreeMap<String, FieldChange>, DecodeError> {
    let mut out = BTreeMap::new();
    let entries = match take(map, "changes") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(entries)) => entries,
        Some(other) => {
            return Err(invalid(
                Loc {
                    parent,
                    key: "changes",
                },
                &other,
                "an object of {\"old\", \"new\"} pairs",
            ))
        }
    };
    for (field, entry) in entries {
        match entry {
            Value::Object(mut e) if e.contains_key("old") || e.contains_key("new") => {
                let old = take(&mut e, "old").unwrap_or(Value::Null);
                let new = take(&mut e, "new").unwrap_or(Value::Null);
                out.insert(field, FieldChange { old, new });
            }
            other => {
                let changes = Loc {
                    parent,
                    key: "changes",
                };
                return Err(DecodeError::InvalidField {
                    field: format!("{changes}.{}", truncate_chars(&field, 40)),
                    value: snippet(&other),
                    expected: "an {\"old\", \"new\"} object",
                });
            }
        }
    }
    Ok(out)
}

fn take_profile(map: &mut Object, parent: &str) -> Result<Option<UserProfile>, DecodeError> {
    let mut p = UserProfile::default();
    fill(&mut p.email, map, parent, &["email"], conv_text)?;
    fill(
        &mut p.name,
        map,
        parent,
        &[
            "name",
            "full_name",
            "fullName",
            "display_name",
            "displayName",
        ],
        conv_text,
    )?;
    fill(
        &mut p.username,
        map,
        parent,
        &["username", "user_name", "userName"],
        conv_text,
    )?;
    fill(
        &mut p.timezone,
        map,
        parent,
        &["timezone", "time_zone", "timeZone"],
        conv_text,
    )?;
    Ok((p != UserProfile::default()).then_some(p))
}

/// The reminder fields; the method defaults to email (the notification
/// service's default channel) but an unknown one is an error, not a guess.
fn take_reminder(map: &mut Object, parent: &str) -> Result<ReminderRequest, DecodeError> {
    let zone = peek_zone(map, parent)?;
    let naive_remind = peek_naive(map, &["remind_at", "remindAt"]);
    let naive_due = peek_naive(map, &["due_at", "due_date", "dueAt", "dueDate"]);
    let mut remind_at = None;
    fill(
        &mut remind_at,
        map,
        parent,
        &["remind_at", "remindAt"],
        conv_time,
    )?;
    let remind_local = match take_local(map, parent, "remind_local")? {
        Some(kept) => Some(kept),
        None => localise(&mut remind_at, naive_remind, &zone),
    };
    let Some(remind_at) = remind_at else {
        return Err(DecodeError::MissingField {
            field: Loc {
                parent,
                key: "remind_at",
            }
            .to_string(),
        });
    };
    let mut due_at = None;
    fill(
        &mut due_at,
        map,
        parent,
        &["due_at", "due_date", "dueAt", "dueDate"],
        conv_time,
    )?;
    localise(&mut due_at, naive_due, &zone);
    let mut title = None;
    fill(&mut title, map, parent, &["title"], conv_text)?;
    let mut method = None;
    fill(
        &mut method,
        map,
        parent,
        &["notification_method", "method"],
        conv_method,
    )?;
    Ok(ReminderRequest {
        remind_at,
        remind_local,
        due_at,
        title,
        method: method.unwrap_or_else(|| "email".to_owned()),
    })
}

// ---------------------------------------------------------------- times

/// Timestamps as producers write them: RFC 3339 (`Z` or offset, `T` or
/// space), naive ISO 8601 (Python's `utcnow().isoformat()`, read as UTC), a
/// bare date (midnight UTC), or epoch seconds / milliseconds (numbers or
/// digit strings; below 1e11 is seconds).
fn parse_time(v: &Value, loc: Loc<'_>) -> Result<DateTime<Utc>, DecodeError> {
    match v {
        Value::String(s) => {
            parse_time_str(s).ok_or_else(|| invalid(loc, v, "an RFC 3339 timestamp"))
        }
        Value::Number(n) => {
            epoch(n).ok_or_else(|| invalid(loc, v, "an epoch time in seconds or milliseconds"))
        }
        _ => Err(invalid(loc, v, "an RFC 3339 timestamp")),
    }
}

// ---------------------------------------------------------------- local times

/// Keys under which a payload names the zone of its local times.
const ZONE_KEYS: &[&str] = &["timezone", "tz", "time_zone", "timeZone"];

/// The zone `map` names, if any (looked at, not taken: the recurrence and the
/// attributes keep it too). An unknown zone name is an error naming it.
fn peek_zone(map: &Object, parent: &str) -> Result<Option<(String, Tz)>, DecodeError> {
    for &key in ZONE_KEYS {
        match map.get(key) {
            Some(v) if is_blank(v) => continue,
            Some(Value::String(name)) => {
                return match local_time::parse_zone(name) {
                    Some(tz) => Ok(Some((name.trim().to_owned(), tz))),
                    None => Err(invalid(
                        Loc { parent, key },
                        &map[key],
                        "an IANA time zone such as Europe/Berlin",
                    )),
                };
            }
            Some(other) => {
                return Err(invalid(
                    Loc { parent, key },
                    other,
                    "an IANA time zone such as Europe/Berlin",
                ))
            }
            None => continue,
        }
    }
    Ok(None)
}

/// The first usable value among `keys`, when it is a wall-clock reading
/// without offset.
fn peek_naive(map: &Object, keys: &[&str]) -> Option<NaiveDateTime> {
    let v = keys
        .iter()
        .filter_map(|k| map.get(*k))
        .find(|v| !is_blank(v))?;
    let s = v.as_str()?.trim();
    if offset_time_str(s).is_some() {
        return None;
    }
    naive_time_str(s)
}

/// A local time already in canonical form (`{"local", "timezone"}`), as our
/// own output carries it.
fn take_local(
    map: &mut Object,
    parent: &str,
    key: &'static str,
) -> Result<Option<LocalTime>, DecodeError> {
    let Some(v) = take(map, key) else {
        return Ok(None);
    };
    match serde_json::from_value::<LocalTime>(v.clone()) {
        Ok(t)
            if t.timezone
                .as_deref()
                .is_none_or(|z| local_time::parse_zone(z).is_some()) =>
        {
            Ok(Some(t))
        }
        _ => Err(invalid(
            Loc { parent, key },
            &v,
            "{\"local\": \"YYYY-MM-DDTHH:MM:SS\", \"timezone\": an IANA zone}",
        )),
    }
}

/// Re-reads a time in the message's zone: a naive reading with a zone is
/// that wall time there; an absolute time with a zone gains its local
/// reading; a naive reading without a zone stays UTC but keeps its local form.
fn localise(
    instant: &mut Option<DateTime<Utc>>,
    naive: Option<NaiveDateTime>,
    zone: &Option<(String, Tz)>,
) -> Option<LocalTime> {
    let at = (*instant)?;
    match (naive, zone) {
        (Some(local), Some((name, tz))) => {
            *instant = Some(local_time::resolve(local, *tz));
            Some(LocalTime {
                local,
                timezone: Some(name.clone()),
            })
        }
        (Some(local), None) => Some(LocalTime {
            local,
            timezone: None,
        }),
        (None, Some((name, tz))) => Some(LocalTime {
            local: local_time::to_local(at, *tz),
            timezone: Some(name.clone()),
        }),
        (None, None) => None,
    }
}

/// Below this an epoch number is seconds (year 5138), above it milliseconds.
const EPOCH_SECONDS_LIMIT: i64 = 100_000_000_000;

// ---------------------------------------------------------------- text

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON text of `v`, cut to about [`SNIPPET_CHARS`] characters. Stops
/// serializing once it has enough, so a huge value costs no more than a small one.
fn snippet<T: Serialize + ?Sized>(v: &T) -> String {
    struct Capped(Vec<u8>);
    impl io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = (SNIPPET_CHARS * 4 + 4).saturating_sub(self.0.len());
            let (head, tail) = buf.split_at(room.min(buf.len()));
            self.0.extend_from_slice(head);
            if tail.is_empty() {
                Ok(buf.len())
            } else {
                Err(io::Error::other("snippet is long enough"))
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::new());
    let complete = serde_json::to_writer(&mut out, v).is_ok();
    let text = match std::str::from_utf8(&out.0) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(out.0.get(..e.valid_up_to()).unwrap_or_default())
            .unwrap_or_default(),
    };
    let mut s = truncate_chars(text, SNIPPET_CHARS).into_owned();
    if !complete && !s.ends_with('…') {
        s.push('…');
    }
    s
}

fn truncate_chars(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", s.get(..end).unwrap_or_default())),
    }
}

/// The keys of `obj`, comma-separated, cut after about [`SNIPPET_CHARS`] characters.
fn key_list(obj: &Object, prefix: &str) -> String {
    let mut out = String::new();
    for (i, key) in obj.keys().enumerate() {
        if out.len() >= SNIPPET_CHARS {
            let _ = write!(out, ", … ({} more)", obj.len().saturating_sub(i));
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(prefix);
        out.push_str(&truncate_chars(key, 40));
    }
    out
}

/// Standard or URL-safe base64, padding optional, line breaks ignored.
/// (CloudEvents `data_base64`; small enough not to need a crate.)
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    let mut padding = 0usize;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        if padding > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 || padding > 2 {
        return None;
    }
    Some(out)
}
