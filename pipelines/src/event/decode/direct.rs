//! The envelope and standard dialects' plain task events read in one pass,
//! without the [`Node`] tree: the first steps towards a decoder that reads
//! every dialect once (see the README's benchmark section: reading into the tree and
//! moving fields between objects is about two thirds of decoding).
//!
//! [`envelope`] takes only what it is sure of: a top level of `event_id`,
//! `event_type` (a dotted task type, or a snake one: the standard dialect),
//! `timestamp`, `version`, `user_id`, a `metadata` object (`version` and
//! keys no rule reads) and a `data` object whose keys are the snapshot
//! fields below or keys no rule of the tree decoder reads
//! ([`READ_BY_RULES`]), with plain values (strings without
//! escapes, integers, booleans, null). Anything else (another key, a repeat,
//! a blank or mistyped field, nesting, an escape, an error) returns `None`
//! and the tree decoder reads the message, so the result is always the tree
//! decoder's: the equivalence tests compare both on every message.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::fields::number_text;
use super::json::{Node, Obj, Scanner};
use super::kinds::{is_bare_action, normalize_kind, Entity};
use super::time::parse_time_str;
use super::{finish, DecodeContext, Draft};
use crate::event::model::{Dialect, TaskEvent, TaskSnapshot};

/// The message decoded, or `None` when it is not one [`envelope`] takes.
/// `text` is the message (`payload`) checked as UTF-8.
pub(super) fn envelope(text: &str, payload: &[u8], ctx: &DecodeContext<'_>) -> Option<TaskEvent> {
    let mut c = Scanner::new(text);
    let mut top = Top::default();
    object(&mut c, |c, key| top.field(c, key))?;
    if !c.at_end() {
        return None;
    }

    // As the tree's dispatch: a dotted type is the envelope dialect, a
    // snake one the standard dialect (`task_status_changed`), a bare
    // action (`updated`) the task-data dialect, which is the tree's.
    let raw = top.event_type?;
    let dialect = if raw.contains('.') {
        Dialect::Envelope
    } else if !is_bare_action(raw) {
        Dialect::Standard
    } else {
        return None;
    };
    let kind = normalize_kind(raw, None);
    if Entity::of(&kind) != Entity::Task {
        return None;
    }
    let (data, meta) = (top.data, top.metadata);
    // A field given twice (at the top and in `data`, or at the top and in
    // `metadata`) is the tree's to settle.
    if (top.user_id.is_some() && data.user_id.is_some())
        || (top.version.is_some() && meta.version.is_some())
    {
        return None;
    }
    let mut d = Draft::new(kind, dialect);
    d.event_id = top.event_id;
    d.occurred_at = top.timestamp;
    d.schema_version = top.version.or(meta.version);
    d.task_id = data.task_id;
    d.user_id = top.user_id.or(data.user_id);
    if data.snapshot != TaskSnapshot::default() {
        d.task = Some(data.snapshot);
    }
    d.attributes = data.rest;
    d.attributes.merge(meta.rest);
    finish(d, payload, ctx).ok()
}

/// The top level, as read so far.
#[derive(Default)]
struct Top<'a> {
    seen: u16,
    event_id: Option<String>,
    event_type: Option<&'a str>,
    timestamp: Option<DateTime<Utc>>,
    version: Option<String>,
    user_id: Option<String>,
    data: Data<'a>,
    metadata: Meta<'a>,
}

impl<'a> Top<'a> {
    fn field(&mut self, c: &mut Scanner<'a>, key: &'a str) -> Option<()> {
        let bit = match key {
            "event_id" => {
                self.event_id = Some(text(c.scalar()?)?);
                1
            }
            "event_type" => {
                let Node::Str(Cow::Borrowed(s)) = c.scalar()? else {
                    return None;
                };
                self.event_type = Some(s).filter(|s| !s.trim().is_empty());
                self.event_type?;
                2
            }
            "timestamp" => {
                self.timestamp = Some(time(c.scalar()?)?);
                4
            }
            "version" => {
                self.version = Some(text(c.scalar()?)?);
                8
            }
            "data" => {
                let data = &mut self.data;
                object(c, |c, key| data.field(c, key))?;
                16
            }
            "user_id" => {
                self.user_id = Some(text(c.scalar()?)?);
                32
            }
            "metadata" => {
                let meta = &mut self.metadata;
                object(c, |c, key| meta.field(c, key))?;
                64
            }
            _ => return None,
        };
        once(&mut self.seen, bit)
    }
}

/// The `metadata` object, as read so far: its `version`, and keys no rule
/// reads (`source`), which join the event's `attributes` after `data`'s.
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
            self.version = Some(text(c.scalar()?)?);
            return Some(());
        }
        attribute(&mut self.rest, c, key)
    }
}

/// The `data` object, as read so far.
#[derive(Default)]
struct Data<'a> {
    seen: u16,
    task_id: Option<String>,
    user_id: Option<String>,
    snapshot: TaskSnapshot,
    /// Keys no rule reads: the event's `attributes`.
    rest: Obj<'a>,
}

impl<'a> Data<'a> {
    fn field(&mut self, c: &mut Scanner<'a>, key: &'a str) -> Option<()> {
        let s = &mut self.snapshot;
        let bit = match key {
            "task_id" => {
                self.task_id = Some(text(c.scalar()?)?);
                1
            }
            "user_id" => {
                self.user_id = Some(text(c.scalar()?)?);
                2
            }
            "title" => {
                s.title = Some(text(c.scalar()?)?);
                4
            }
            "description" => {
                s.description = Some(text(c.scalar()?)?);
                8
            }
            "status" => {
                s.status = Some(text(c.scalar()?)?);
                16
            }
            "priority" => {
                s.priority = Some(text(c.scalar()?)?);
                32
            }
            "completed" => {
                let Node::Bool(b) = c.scalar()? else {
                    return None;
                };
                s.completed = Some(b);
                64
            }
            "completed_at" => {
                s.completed_at = Some(time(c.scalar()?)?);
                128
            }
            "created_at" => {
                s.created_at = Some(time(c.scalar()?)?);
                256
            }
            _ => return attribute(&mut self.rest, c, key),
        };
        once(&mut self.seen, bit)
    }
}

/// A key no rule reads, with a plain value, into `rest`; `None` for a key
/// some rule reads or one already there.
fn attribute<'a>(rest: &mut Obj<'a>, c: &mut Scanner<'a>, key: &'a str) -> Option<()> {
    if READ_BY_RULES.binary_search(&key).is_ok() || rest.contains_key(key) {
        return None;
    }
    let value = c.scalar()?;
    rest.insert(Cow::Borrowed(key), value);
    Some(())
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
        Node::Str(s) if plain_start(&s) => parse_time_str(&s),
        _ => None,
    }
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
    use crate::event::decode::decode_tree;

    const CTX: DecodeContext<'static> = DecodeContext {
        topic: "task-events",
        kafka_timestamp_ms: Some(1_764_000_000_000),
    };

    fn direct(msg: &str) -> Option<TaskEvent> {
        envelope(msg, msg.as_bytes(), &CTX)
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
    }

    #[test]
    fn anything_doubtful_is_left_to_the_tree_decoder() {
        for msg in [
            // Other dialects and entities.
            r#"{"event_type": "updated", "task_id": 1, "task_data": {}}"#,
            r#"{"eventType": "task.created", "taskId": 1}"#,
            r#"{"event_type": "completed", "data": {"task_id": 1}}"#,
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
                .filter(|l| !l.trim_start().starts_with("//"))
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
