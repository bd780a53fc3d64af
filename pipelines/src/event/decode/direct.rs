//! Plain task events read in one pass, without the [`Node`] tree: the
//! envelope, standard, task-data and camel-case dialects, bare or wrapped
//! in a CloudEvent (see the README's benchmark section: reading into the
//! tree and moving fields between objects was about two thirds of decoding).
//!
//! [`read`] takes only what it is sure of:
//! - a message of an event type (`event_type` or `eventType`), an id
//!   (`event_id`, `eventId`), `timestamp`, `version`, an actor, a task id,
//!   an assignee, a `metadata` object (`version` and keys no rule reads), a
//!   payload object (`data`, `task_data` or `payload`, as the dialect names
//!   it), a `previous_task_data` object of snapshot fields only, and keys no
//!   rule of the tree decoder reads ([`READ_BY_RULES`]);
//! - in the payload, the task and actor ids, the snapshot fields [`Body`]
//!   names, and keys no rule reads (the event's `attributes`);
//! - or such a message as the `data` of a CloudEvent whose other keys are
//!   plain values;
//! - plain values only: strings without escapes, integers, booleans, null,
//!   and arrays of strings or integers for `tags`.
//!
//! Anything else (another key, a repeat, an alias given twice, a blank or
//! mistyped field, nesting, an escape, an error) returns `None` and the tree
//! decoder reads the message, so the result is always the tree decoder's:
//! the equivalence tests compare both on every message.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::error::Loc;
use super::fields::{conv_tags, number_text};
use super::json::{Node, Obj, Scanner};
use super::kinds::{is_bare_action, normalize_kind, Entity};
use super::time::parse_time_str;
use super::Draft;
use crate::event::model::{Dialect, TaskSnapshot};

/// The message read, for [`finish`], or `None` when it is not one [`read`]
/// takes. `text` is the message checked as UTF-8.
///
/// The event structs are about a kilobyte each: they are read and filled
/// in place (`&mut self`, `take`) rather than moved through the steps,
/// whose copies were an eighth of decoding's time.
pub(super) fn read(text: &str) -> Option<Draft<'_>> {
    let mut c = Scanner::new(text);
    let mut top = Message::default();
    object(&mut c, |c, key| top.field(c, key, false))?;
    if !c.at_end() {
        return None;
    }
    if top.rest.contains_key("specversion") {
        top.cloudevent()
    } else {
        top.event()
    }
}

/// [`read`] and then [`finish`], as [`super::decode`] does them: the event,
/// when the one-pass reader takes the message (for the tests).
#[cfg(test)]
pub(super) fn read_event(
    text: &str,
    ctx: &super::DecodeContext<'_>,
) -> Option<crate::event::model::TaskEvent> {
    super::finish(&mut read(text)?, text.as_bytes(), ctx).ok()
}

// The bits of `Message::seen`: one per slot, so that a key given twice, or
// two aliases of one field, are refused.
const TYPE: u16 = 1;
const ID: u16 = 2;
const TIME: u16 = 4;
const VERSION: u16 = 8;
const ACTOR: u16 = 16;
const TASK: u16 = 32;
const ASSIGNEE: u16 = 64;
const METADATA: u16 = 128;
const PREVIOUS: u16 = 256;
const PAYLOAD: u16 = 512;

/// One message object, as read so far: the top level, or a CloudEvent's
/// `data`.
#[derive(Default)]
struct Message<'a> {
    seen: u16,
    /// The key that named the type (`event_type` or `eventType`) and the type.
    kind: Option<(&'static str, &'a str)>,
    event_id: Option<String>,
    timestamp: Option<DateTime<Utc>>,
    version: Option<String>,
    actor: Option<String>,
    task_id: Option<String>,
    assignee: Option<String>,
    metadata: Meta<'a>,
    /// The payload and the key it was under.
    payload: Option<(&'static str, Body<'a>)>,
    previous: Option<Body<'a>>,
    /// A CloudEvent's `data`: a `data` object that is not a payload.
    inner: Option<Box<Message<'a>>>,
    /// Every other key, with a plain value.
    rest: Obj<'a>,
}

impl<'a> Message<'a> {
    fn field(&mut self, c: &mut Scanner<'a>, key: &'a str, nested: bool) -> Option<()> {
        let bit = match key {
            "event_type" | "eventType" => {
                let s = c.string_value()?;
                if s.trim().is_empty() {
                    return None;
                }
                let name = if key == "event_type" {
                    "event_type"
                } else {
                    "eventType"
                };
                self.kind = Some((name, s));
                TYPE
            }
            "event_id" | "eventId" => {
                self.event_id = Some(read_text(c)?);
                ID
            }
            "timestamp" => {
                self.timestamp = Some(read_time(c)?);
                TIME
            }
            "version" => {
                self.version = Some(read_text(c)?);
                VERSION
            }
            "actorId" | "actor_id" | "user_id" | "userId" => {
                self.actor = Some(read_text(c)?);
                ACTOR
            }
            "task_id" | "taskId" => {
                self.task_id = Some(read_text(c)?);
                TASK
            }
            "assignee_id" | "assigneeId" => {
                self.assignee = Some(read_text(c)?);
                ASSIGNEE
            }
            "metadata" => {
                let meta = &mut self.metadata;
                object(c, |c, key| meta.field(c, key))?;
                METADATA
            }
            "previous_task_data" => {
                let body = self.previous.insert(Body::default());
                object(c, |c, key| body.field(c, key))?;
                PREVIOUS
            }
            "data" | "task_data" | "payload" => {
                let name = match key {
                    "data" => "data",
                    "task_data" => "task_data",
                    _ => "payload",
                };
                // A payload, or else (at the top, under `data`) the message
                // a CloudEvent wraps: which one the wrapper's `specversion`
                // says, and it may come later.
                let at = c.clone();
                let (_, body) = self.payload.insert((name, Body::default()));
                if object(c, |c, key| body.field(c, key)).is_none() {
                    self.payload = None;
                    if name != "data" || nested {
                        return None;
                    }
                    *c = at;
                    let inner = self.inner.insert(Box::default());
                    object(c, |c, key| inner.field(c, key, true))?;
                }
                PAYLOAD
            }
            _ => return plain(&mut self.rest, c, key),
        };
        once(&mut self.seen, bit)
    }

    /// The message as a task event, in the dialect its type key and type
    /// name (as the tree's `dispatch`).
    fn event(&mut self) -> Option<Draft<'a>> {
        let (type_key, raw) = self.kind?;
        let (payload_key, body) = self.payload.as_mut()?;
        let payload_key: &str = payload_key;
        if self.inner.is_some() || self.rest.keys().any(read_by_rules) {
            return None;
        }
        let (dialect, kind, payload_keys): (_, _, &[&str]) = if type_key == "eventType" {
            (
                Dialect::CamelCase,
                normalize_kind(raw, None),
                &["payload", "data"],
            )
        } else if raw.contains('.') {
            let keys = &["data", "task_data", "payload"];
            (Dialect::Envelope, normalize_kind(raw, None), keys)
        } else if payload_key == "task_data" || self.previous.is_some() || is_bare_action(raw) {
            let kind = normalize_kind(raw, Some("task"));
            (Dialect::TaskData, kind, &["task_data", "data"])
        } else {
            (
                Dialect::Standard,
                normalize_kind(raw, None),
                &["data", "task_data"],
            )
        };
        if !payload_keys.contains(&payload_key) || Entity::of(&kind) != Entity::Task {
            return None;
        }
        // A field given at two levels is the tree's to settle.
        let meta = &mut self.metadata;
        if (self.actor.is_some() && body.actor.is_some())
            || (self.task_id.is_some() && body.task_id.is_some())
            || (self.version.is_some() && meta.version.is_some())
        {
            return None;
        }
        let previous = match &mut self.previous {
            Some(p) if p.actor.is_some() || p.task_id.is_some() || !p.rest.is_empty() => {
                return None
            }
            Some(p) => p.snapshot.take(),
            None => None,
        };
        if let Some(assignee) = self.assignee.take() {
            body.snapshot().assignee_id = Some(assignee);
        }
        let task = body.snapshot.take();
        let mut attributes = std::mem::take(&mut body.rest);
        attributes.merge(std::mem::take(&mut meta.rest));
        attributes.merge(std::mem::take(&mut self.rest));
        // Written out, not `Draft::new` and then each field (nor
        // `..Draft::new(..)`, 2-3% slower here): made where it is returned
        // to, without a kilobyte's temporary.
        Some(Draft {
            event_id: self.event_id.take(),
            kind,
            occurred_at: self.timestamp,
            task_id: self.task_id.take().or(body.task_id.take()),
            user_id: self.actor.take().or(body.actor.take()),
            project_id: None,
            task,
            previous,
            changes: Default::default(),
            reminder: None,
            user: None,
            context: Default::default(),
            dialect,
            cloudevents: false,
            schema_version: self.version.take().or(meta.version.take()),
            attributes,
        })
    }

    /// The message as a CloudEvent wrapping a task event in its `data`
    /// object: the wrapper's `id` and `time` fill what the event lacks, its
    /// `traceparent` is the trace, and its other keys are dropped (as the
    /// tree's `decode_cloudevent`).
    fn cloudevent(&mut self) -> Option<Draft<'a>> {
        // Event keys beside the wrapper's are the tree's.
        if self.seen != PAYLOAD {
            return None;
        }
        let inner = self.inner.as_mut()?;
        let rest = &mut self.rest;
        if !matches!(rest.get("specversion"), Some(Node::Str(_)))
            || !matches!(rest.get("type"), None | Some(Node::Null | Node::Str(_)))
            || rest.contains_key("data_base64")
            || rest.contains_key("traceid")
        {
            return None;
        }
        let mut d = inner.event()?;
        if d.event_id.is_none() {
            if let Some(id) = rest.take("id") {
                d.event_id = Some(text(id)?);
            }
        }
        if d.occurred_at.is_none() {
            if let Some(t) = rest.take("time") {
                d.occurred_at = Some(time(t)?);
            }
        }
        if let Some(trace) = rest.take("traceparent") {
            d.context.trace_parent = Some(text(trace)?);
        }
        d.cloudevents = true;
        Some(d)
    }
}

/// The `metadata` object, as read so far: its `version`, and keys no rule
/// reads (`source`), which join the event's `attributes` after the payload's.
#[derive(Default)]
struct Meta<'a> {
    version: Option<String>,
    rest: Obj<'a>,
}

impl<'a> Meta<'a> {
    fn field(&mut self, c: &mut Scanner<'a>, key: &'a str) -> Option<()> {
        if key == "version" {
            if self.version.is_some() {
                return None;
            }
            self.version = Some(read_text(c)?);
            return Some(());
        }
        attribute(&mut self.rest, c, key)
    }
}

/// A payload object (or a previous state), as read so far.
#[derive(Default)]
struct Body<'a> {
    seen: u16,
    task_id: Option<String>,
    actor: Option<String>,
    /// Made at the first snapshot field, where the event keeps it (a
    /// snapshot is some 350 bytes: not built here and then moved).
    snapshot: Option<Box<TaskSnapshot>>,
    /// Keys no rule reads: the event's `attributes`.
    rest: Obj<'a>,
}

impl<'a> Body<'a> {
    /// The snapshot, made empty if there is none yet.
    fn snapshot(&mut self) -> &mut TaskSnapshot {
        self.snapshot.get_or_insert_with(Box::default)
    }

    fn field(&mut self, c: &mut Scanner<'a>, key: &'a str) -> Option<()> {
        let bit = match key {
            "task_id" | "taskId" => {
                self.task_id = Some(read_text(c)?);
                1
            }
            "actorId" | "actor_id" | "user_id" | "userId" => {
                self.actor = Some(read_text(c)?);
                2
            }
            "title" => {
                self.snapshot().title = Some(read_text(c)?);
                4
            }
            "description" => {
                self.snapshot().description = Some(read_text(c)?);
                8
            }
            "status" => {
                self.snapshot().status = Some(read_text(c)?);
                16
            }
            "priority" => {
                self.snapshot().priority = Some(read_text(c)?);
                32
            }
            "completed" => {
                self.snapshot().completed = Some(c.bool_value()?);
                64
            }
            "completed_at" => {
                self.snapshot().completed_at = Some(read_time(c)?);
                128
            }
            "created_at" => {
                self.snapshot().created_at = Some(read_time(c)?);
                256
            }
            "due_date" => {
                // With a `Z`, never a wall-clock reading to localise (zone
                // keys are the tree's).
                let t = c.string_value()?;
                if !t.ends_with('Z') {
                    return None;
                }
                self.snapshot().due_at = Some(time_text(t)?);
                512
            }
            "tags" => {
                // A list, read as the tree reads it (a string of joined
                // tags is the tree's).
                if c.next_token()? != b'[' {
                    return None;
                }
                let loc = Loc { parent: "", key };
                self.snapshot().tags = Some(conv_tags(c.value()?, loc).ok()?);
                1024
            }
            _ => return attribute(&mut self.rest, c, key),
        };
        once(&mut self.seen, bit)
    }
}

/// A key no rule reads, with a plain value, into `rest`; `None` for a key
/// some rule reads or one already there.
fn attribute<'a>(rest: &mut Obj<'a>, c: &mut Scanner<'a>, key: &'a str) -> Option<()> {
    if read_by_rules(key) {
        return None;
    }
    plain(rest, c, key)
}

/// `key` with a plain value into `rest`; `None` for a value that is not
/// plain or a key already there.
fn plain<'a>(rest: &mut Obj<'a>, c: &mut Scanner<'a>, key: &'a str) -> Option<()> {
    if rest.contains_key(key) {
        return None;
    }
    // A string (most are) goes in as it is read, not as a returned `Node`.
    let value = match c.next_token()? {
        b'"' => Node::Str(Cow::Borrowed(c.string()?)),
        _ => c.scalar()?,
    };
    rest.insert(Cow::Borrowed(key), value);
    Some(())
}

/// Whether some rule of the tree decoder reads `key`. Most keys asked about
/// are not such keys, and [`RULES_FILTER`] says so without comparing any.
fn read_by_rules(key: &str) -> bool {
    let [a, b] = filter_bits(key);
    RULES_FILTER[a / 64] & (1 << (a % 64)) != 0
        && RULES_FILTER[b / 64] & (1 << (b % 64)) != 0
        && READ_BY_RULES.binary_search(&key).is_ok()
}

/// A Bloom filter of [`READ_BY_RULES`]: two bits of 2,048 per key (about
/// one in thirty other keys gets past it to the binary search).
const RULES_FILTER: [u64; 32] = {
    let mut filter = [0u64; 32];
    let mut i = 0;
    while i < READ_BY_RULES.len() {
        let [a, b] = filter_bits(READ_BY_RULES[i]);
        filter[a / 64] |= 1 << (a % 64);
        filter[b / 64] |= 1 << (b % 64);
        i += 1;
    }
    filter
};

/// The two bits of `key` in [`RULES_FILTER`], from its FNV-1a hash.
const fn filter_bits(key: &str) -> [usize; 2] {
    let bytes = key.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    [(hash & 2047) as usize, ((hash >> 11) & 2047) as usize]
}

/// Sets `bit` in `seen`; `None` when it was set already (a repeated key).
fn once(seen: &mut u16, bit: u16) -> Option<()> {
    let was = *seen;
    *seen |= bit;
    (was & bit == 0).then_some(())
}

/// An id or a text: a non-blank string, or an integer (what the tree
/// decoder's `conv_id` and `conv_text` make of them).
fn text(v: Node<'_>) -> Option<String> {
    match v {
        Node::Str(s) if plain_start(&s) => Some(s.into_owned()),
        Node::Num(n) => Some(number_text(&n)),
        _ => None,
    }
}

/// A time written as a string, as the tree decoder reads it.
fn time(v: Node<'_>) -> Option<DateTime<Utc>> {
    match v {
        Node::Str(s) => time_text(&s),
        _ => None,
    }
}

/// [`text`] of the value at the scanner, read without a [`Node`]. An
/// integer's text is its JSON text (what [`number_text`] writes of it).
fn read_text(c: &mut Scanner<'_>) -> Option<String> {
    let s = match c.next_token()? {
        b'"' => c.string().filter(|s| plain_start(s))?,
        b'-' | b'0'..=b'9' => c.integer_text()?,
        _ => return None,
    };
    Some(s.to_owned())
}

/// [`time`] of the value at the scanner, read without a [`Node`].
fn read_time(c: &mut Scanner<'_>) -> Option<DateTime<Utc>> {
    time_text(c.string_value()?)
}

/// A time string's value, as the tree decoder reads it.
fn time_text(s: &str) -> Option<DateTime<Utc>> {
    plain_start(s).then(|| parse_time_str(s)).flatten()
}

/// Whether `s` starts with a visible ASCII character. Blank strings count
/// as absent in the tree decoder (they stay in `attributes`): every other
/// start is left to it.
fn plain_start(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_graphic)
}

/// Every key some rule of the tree decoder reads (every string literal of
/// its rules, sorted; `a_rule_key_is_never_an_attribute_here` checks the
/// list against the sources). A key of `data` in this list, other than the
/// ones [`Data::field`] reads itself, sends the message to the tree decoder.
const READ_BY_RULES: &[&str] = &[
    "$serde_json::private::RawValue",
    "actorId",
    "actor_id",
    "analytics",
    "analytics_query",
    "archived",
    "assigned",
    "assigneeId",
    "assignee_id",
    "attributes",
    "backup_completed",
    "changes",
    "cloudevents",
    "comment",
    "completed",
    "completedAt",
    "completed_at",
    "context",
    "created",
    "createdAt",
    "created_at",
    "created_by_uid",
    "dashboard_viewed",
    "data",
    "data_base64",
    "deadline",
    "deleted",
    "description",
    "dialect",
    "displayName",
    "display_name",
    "dueAt",
    "dueDate",
    "due_at",
    "due_date",
    "due_date_set",
    "due_local",
    "email",
    "empty",
    "error_occurred",
    "eventId",
    "eventTime",
    "eventType",
    "event_data",
    "event_id",
    "event_time",
    "event_type",
    "false",
    "frequency",
    "fullName",
    "full_name",
    "id",
    "invalid_field",
    "ipAddress",
    "ip_address",
    "isCompleted",
    "isRecurring",
    "is_completed",
    "is_recurring",
    "local",
    "look",
    "metadata",
    "method",
    "missing_field",
    "name",
    "new",
    "none",
    "not_an_object",
    "not_json",
    "notification",
    "notification_method",
    "null",
    "occurredAt",
    "occurred_at",
    "old",
    "operation",
    "pattern",
    "payload",
    "pid",
    "previous",
    "previousTaskData",
    "previous_task_data",
    "priority",
    "priority_changed",
    "project",
    "projectId",
    "project_id",
    "push",
    "recurrence",
    "recurrencePattern",
    "recurrenceRule",
    "recurrence_pattern",
    "recurrence_rule",
    "recurrence_timezone",
    "recurring_pattern",
    "registered",
    "remindAt",
    "remind_at",
    "remind_local",
    "reminder",
    "reopened",
    "report_downloaded",
    "report_generated",
    "restored",
    "rrule",
    "rule",
    "schedule",
    "schemaVersion",
    "schema_version",
    "sms",
    "specversion",
    "status",
    "status_changed",
    "system",
    "tag",
    "tag_added",
    "tag_removed",
    "tags",
    "tags_added",
    "tags_removed",
    "task",
    "taskId",
    "task_data",
    "task_distribution_viewed",
    "task_id",
    "task_template",
    "team",
    "team_performance_accessed",
    "time",
    "timeZone",
    "time_zone",
    "timestamp",
    "timezone",
    "title",
    "topic",
    "trace_parent",
    "traceid",
    "traceparent",
    "true",
    "type",
    "tz",
    "unarchived",
    "unassigned",
    "uncompleted",
    "unrecognized_shape",
    "updated",
    "user",
    "userAgent",
    "userId",
    "userName",
    "user_agent",
    "user_id",
    "user_name",
    "user_stats_accessed",
    "username",
    "version",
    "webhook",
];

/// An object; `field` reads each value after its key.
fn object<'a>(
    c: &mut Scanner<'a>,
    mut field: impl FnMut(&mut Scanner<'a>, &'a str) -> Option<()>,
) -> Option<()> {
    if c.next_token()? != b'{' {
        return None;
    }
    c.advance();
    if c.next_token()? == b'}' {
        c.advance();
        return Some(());
    }
    loop {
        if c.next_token()? != b'"' {
            return None;
        }
        let key = c.string()?;
        if c.next_token()? != b':' {
            return None;
        }
        c.advance();
        field(c, key)?;
        match c.next_token()? {
            b',' => c.advance(),
            b'}' => {
                c.advance();
                return Some(());
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode::{decode_tree, DecodeContext};
    use crate::event::model::TaskEvent;

    const CTX: DecodeContext<'static> = DecodeContext {
        topic: "task-events",
        kafka_timestamp_ms: Some(1_764_000_000_000),
    };

    fn direct(msg: &str) -> Option<TaskEvent> {
        read_event(msg, &CTX)
    }

    /// Taken here, and the same as the tree decoder's.
    fn taken(msg: &str) -> TaskEvent {
        let e = direct(msg).unwrap_or_else(|| panic!("not taken: {msg}"));
        assert_eq!(
            e,
            decode_tree(msg.as_bytes(), Some(msg), &CTX).unwrap(),
            "{msg}"
        );
        e
    }

    #[test]
    fn plain_envelope_task_events_are_read_in_one_pass() {
        let e = taken(crate::event::decode::tests::SEED_001_CREATED);
        assert_eq!(e.dialect, Dialect::Envelope);
        let (_, bench) = crate::bench::sample_event(0);
        let e = taken(&bench);
        assert_eq!(e.task.unwrap().title.as_deref(), Some("Buy groceries 0"));
        // The standard dialect: an actor at the top, `metadata`.
        let (_, bench) = crate::bench::sample_event(2);
        let e = taken(&bench);
        assert_eq!(e.dialect, Dialect::Standard);
        assert_eq!(e.kind, "task.status_changed");
        assert_eq!(e.schema_version.as_deref(), Some("1.0"));
        assert_eq!(e.attributes["source"], "django_backend");
        assert_eq!(e.attributes["action"], "status_changed");
        let e = taken(crate::event::decode::tests::SEED_000_STANDARD);
        assert_eq!(e.user_id.as_deref(), Some("123"));
        // Keys no rule reads are attributes; no id: the content hash.
        let e = taken(
            r#"{"event_type": "task.completed", "data": {"task_id": -7, "reason": "done", "seq": 3, "ok": true, "gone": null, "élève": "x"}}"#,
        );
        assert!(e.event_id.starts_with("h:"));
        assert_eq!(e.attributes.len(), 5);
        taken(r#"{"event_type":"Task.Completed","version":2,"data":{"task_id":"t"}}"#);
        // An integer id's text is its JSON text, as the tree writes the number.
        for id in ["0", "-7", "42", "123456789012345678", "-123456789012345678"] {
            let msg = format!(r#"{{"event_type": "task.created", "data": {{"task_id": {id}}}}}"#);
            assert_eq!(taken(&msg).task_id.as_deref(), Some(id));
        }
        // Integers the scanner does not read are the tree's.
        for id in ["-0", "1234567890123456789", "1.0", "1e3"] {
            let msg = format!(r#"{{"event_type": "task.created", "data": {{"task_id": {id}}}}}"#);
            assert!(direct(&msg).is_none(), "taken: {msg}");
        }
    }

    #[test]
    fn the_task_data_and_camel_case_dialects_and_cloudevents_too() {
        // The bench mix's other three shapes.
        let (_, bench) = crate::bench::sample_event(1);
        let e = taken(&bench);
        assert_eq!(
            (e.dialect, e.kind.as_str()),
            (Dialect::TaskData, "task.updated")
        );
        let task = e.task.unwrap();
        assert_eq!(task.tags, Some(vec!["work".into(), "important".into()]));
        assert!(task.due_at.is_some());
        assert_eq!(e.previous.unwrap().priority.as_deref(), Some("medium"));
        let (_, bench) = crate::bench::sample_event(3);
        let e = taken(&bench);
        assert_eq!(e.dialect, Dialect::CamelCase);
        assert_eq!(e.task.unwrap().assignee_id.as_deref(), Some("2"));
        assert_eq!(e.attributes["teamId"], 1);
        let (_, bench) = crate::bench::sample_event(4);
        let e = taken(&bench);
        assert!(e.cloudevents);
        assert_eq!(e.event_id, "bench-4");
        assert!(e.context.unwrap().trace_parent.is_some());
        // A CloudEvent's id and time fill what its event lacks, whatever
        // the order of its keys (Dapr writes them sorted: `data` first).
        let e = taken(
            r#"{"data": {"eventType": "task.created", "payload": {"taskId": "t", "tags": []}}, "id": 7, "source": "s", "specversion": "1.0", "time": "2026-11-01T10:00:00Z", "type": "com.dapr.event.sent"}"#,
        );
        assert_eq!(e.event_id, "7");
        assert_eq!(e.task.unwrap().tags, Some(vec![]));
        // A bare action with its payload under `data`, an empty previous state.
        taken(r#"{"event_type": "completed", "data": {"task_id": 1}, "previous_task_data": {}}"#);
        taken(r#"{"event_type": "updated", "task_id": 1, "task_data": {}}"#);
    }

    #[test]
    fn anything_doubtful_is_left_to_the_tree_decoder() {
        for msg in [
            // Flat messages, other entities, a payload under another
            // dialect's key, a type twice.
            r#"{"eventType": "task.created", "taskId": 1}"#,
            r#"{"event_type": "task.created", "task_id": 1}"#,
            r#"{"eventType": "task.created", "task_data": {"task_id": 1}}"#,
            r#"{"event_type": "task_created", "payload": {"task_id": 1}}"#,
            r#"{"event_type": "task.created", "eventType": "task.created", "data": {"task_id": 1}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1}, "payload": {}}"#,
            r#"{"operation": "created", "data": {"task_id": 1}}"#,
            // A previous state with more than snapshot fields.
            r#"{"event_type": "updated", "task_id": 1, "task_data": {}, "previous_task_data": {"x": 1}}"#,
            r#"{"event_type": "updated", "task_id": 1, "task_data": {}, "previous_task_data": {"task_id": 1}}"#,
            // CloudEvents: `data` not an event, event keys beside the
            // wrapper's, base64 data, a trace id, a mistyped `type`.
            r#"{"specversion": "1.0", "id": "e", "data": {"task_id": 1}}"#,
            r#"{"specversion": "1.0", "event_type": "task.created", "data": {"event_type": "task.created", "data": {"task_id": 1}}}"#,
            r#"{"specversion": "1.0", "data_base64": "e30=", "data": {"event_type": "task.created", "data": {"task_id": 1}}}"#,
            r#"{"specversion": "1.0", "traceid": "t", "data": {"event_type": "task.created", "data": {"task_id": 1}}}"#,
            r#"{"specversion": "1.0", "type": 1, "data": {"event_type": "task.created", "data": {"task_id": 1}}}"#,
            r#"{"specversion": 1, "data": {"event_type": "task.created", "data": {"task_id": 1}}}"#,
            r#"{"data": {"event_type": "task.created", "data": {"task_id": 1}}}"#,
            r#"{"specversion": "1.0", "data": {"specversion": "1.0", "data": {"event_type": "task.created", "data": {"task_id": 1}}}}"#,
            // Tags and due dates other than plain lists and UTC times.
            r#"{"event_type": "task.created", "data": {"task_id": 1, "tags": "a, b"}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "tags": [true]}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "tags": [["a"]]}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "due_date": "2026-01-01T10:00:00+02:00"}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "due_date": "2026-01-01T10:00:00Z", "timezone": "Europe/Berlin"}}"#,
            r#"{"event_type": "task.created", "task_id": 1, "data": {"task_id": 1}}"#,
            r#"{"eventType": "task.created", "actorId": 1, "payload": {"userId": 1}}"#,
            // Given twice: the tree settles which wins.
            r#"{"event_type": "task_created", "user_id": 1, "data": {"task_id": 1, "user_id": 2}}"#,
            r#"{"event_type": "task_created", "version": "1", "metadata": {"version": "2"}, "data": {"task_id": 1}}"#,
            r#"{"event_type": "task_created", "metadata": {"ip_address": "::1"}, "data": {"task_id": 1}}"#,
            r#"{"event_type": "user.created", "data": {"user_id": 1}}"#,
            // A key some rule reads, a repeat, a blank, a mistyped value.
            r#"{"event_type": "task.created", "data": {"task_id": 1, "due_date": "2026-01-01"}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "name": "n"}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "task_id": 2}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "x": 1, "x": 2}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": " "}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "completed": "true"}}"#,
            r#"{"event_type": "task.created", "timestamp": "yesterday", "data": {"task_id": 1}}"#,
            // Nesting, escapes, fractions, long numbers, errors.
            r#"{"event_type": "task.created", "data": {"task_id": 1, "x": [1]}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "x": "a\"b"}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1, "x": 1.5}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1234567890123456789}}"#,
            r#"{"event_type": "task.created", "data": {}}"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1}} x"#,
            r#"{"event_type": "task.created", "data": {"task_id": 1}"#,
        ] {
            assert!(direct(msg).is_none(), "taken: {msg}");
        }
    }

    /// Every string literal of the tree decoder's rules that could be a key
    /// (no dot: those are event types) is in [`READ_BY_RULES`], so a key some
    /// rule reads never becomes an attribute here.
    #[test]
    fn a_rule_key_is_never_an_attribute_here() {
        let sources = [
            include_str!("canonical.rs"),
            include_str!("cloudevents.rs"),
            include_str!("detect.rs"),
            include_str!("event_dialects.rs"),
            include_str!("fields.rs"),
            include_str!("json.rs"),
            include_str!("kinds.rs"),
            include_str!("parts.rs"),
            include_str!("reminder.rs"),
            include_str!("time.rs"),
            include_str!("mod.rs"),
            include_str!("error.rs"),
        ];
        assert!(READ_BY_RULES.windows(2).all(|w| w[0] < w[1]), "sorted");
        let mut checked = 0;
        for source in sources {
            let rules = source.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let code = rules
                .lines()
                .filter(|l| {
                    let l = l.trim_start();
                    // Comments, and attributes (`cfg(target_arch = ..)`).
                    !l.starts_with("//") && !l.starts_with("#[")
                })
                .map(|l| l.replace("\\\"", "").replace("'\"'", ""))
                .collect::<Vec<_>>()
                .join("\n");
            for literal in code.split('"').skip(1).step_by(2) {
                let key_like = !literal.is_empty()
                    && !literal.contains('.')
                    && literal
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_$:".contains(c));
                if key_like {
                    checked += 1;
                    assert!(
                        READ_BY_RULES.binary_search(&literal).is_ok(),
                        "{literal:?} is read by a rule: add it to READ_BY_RULES"
                    );
                }
            }
        }
        assert!(checked > 150, "{checked} literals checked");
    }
}
