//! Decoding errors, and the field paths and value snippets they carry.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io;

use serde::Serialize;

use super::json::{Node, Obj};

/// Values and key lists in error messages are cut to about this many characters.
const SNIPPET_CHARS: usize = 80;

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
    pub(super) fn within(self, prefix: &str) -> Self {
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

/// Where a field sits, for error messages; formatted only on the error path.
#[derive(Clone, Copy)]
pub(super) struct Loc<'a> {
    pub(super) parent: &'a str,
    pub(super) key: &'a str,
}

impl<'a> Loc<'a> {
    pub(super) fn top(key: &'a str) -> Self {
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

pub(super) fn invalid(loc: Loc<'_>, value: &Node<'_>, expected: &'static str) -> DecodeError {
    DecodeError::InvalidField {
        field: loc.to_string(),
        value: snippet(value),
        expected,
    }
}

pub(super) fn json_kind(v: &Node<'_>) -> &'static str {
    match v {
        Node::Null => "null",
        Node::Bool(_) => "a boolean",
        Node::Num(_) => "a number",
        Node::Str(_) => "a string",
        Node::Arr(_) => "an array",
        Node::Obj(_) => "an object",
    }
}

/// The JSON text of `v`, cut to about [`SNIPPET_CHARS`] characters. Stops
/// serializing once it has enough, so a huge value costs no more than a small one.
pub(super) fn snippet<T: Serialize + ?Sized>(v: &T) -> String {
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

pub(super) fn truncate_chars(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", s.get(..end).unwrap_or_default())),
    }
}

/// The keys of `obj`, comma-separated, cut after about [`SNIPPET_CHARS`] characters.
pub(super) fn key_list(obj: &Obj<'_>, prefix: &str) -> String {
    let mut out = String::new();
    for (i, key) in obj.sorted_keys().into_iter().enumerate() {
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

#[cfg(test)]
mod tests {
    use crate::event::decode::tests::*;

    // ------------------------------------------------------------ errors

    #[test]
    fn empty_payload_is_empty() {
        assert_eq!(fail_bytes(b""), DecodeError::Empty);
        assert_eq!(fail_bytes(b" \n\t"), DecodeError::Empty);
        assert_eq!(DecodeError::Empty.to_string(), "empty message");
    }

    #[test]
    fn invalid_json_is_not_json_with_line_and_column() {
        let err = fail("{\"event_type\": \"task.cr");
        assert_eq!(err.reason(), "not_json");
        let text = err.to_string();
        assert!(
            text.starts_with("not JSON: ") && text.contains("line 1 column"),
            "{text}"
        );
        let err = fail("{\n  \"a\": 1,\n  oops\n}");
        assert!(err.to_string().contains("line 3 column"), "{err}");
    }

    #[test]
    fn json_that_is_not_an_object_is_not_an_object() {
        for (json, found) in [
            ("[]", "an array"),
            ("\"x\"", "a string"),
            ("5", "a number"),
            ("null", "null"),
            ("true", "a boolean"),
        ] {
            let err = fail(json);
            assert_eq!(err, DecodeError::NotAnObject { found }, "{json}");
            assert_eq!(err.reason(), "not_an_object");
        }
        assert_eq!(
            fail("[]").to_string(),
            "expected a JSON object, found an array"
        );
    }

    #[test]
    fn unrecognized_shape_lists_the_keys_truncated() {
        let err = fail(r#"{"task_id": 1, "title": "x"}"#);
        assert_eq!(
            err,
            DecodeError::UnrecognizedShape {
                keys: "task_id, title".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unrecognized message shape: no event type among keys [task_id, title]"
        );
        let many: serde_json::Map<String, Value> = (0..50)
            .map(|i| (format!("field_{i:02}"), json!(i)))
            .collect();
        let err = fail(&Value::Object(many).to_string());
        let DecodeError::UnrecognizedShape { keys } = &err else {
            panic!("{err:?}")
        };
        assert!(keys.starts_with("field_00, field_01"), "{keys}");
        assert!(keys.contains("more)") && keys.len() < 120, "{keys}");
        assert_eq!(
            fail("{}"),
            DecodeError::UnrecognizedShape {
                keys: String::new()
            }
        );
    }

    #[test]
    fn task_event_without_task_id_is_missing_field() {
        let err = fail(
            r#"{"event_id": "e", "event_type": "task.completed", "timestamp": "2026-02-08T12:00:00Z", "data": {"user_id": "u"}}"#,
        );
        assert_eq!(
            err,
            DecodeError::MissingField {
                field: "task_id".into()
            }
        );
        assert_eq!(err.to_string(), r#"missing field "task_id""#);
        assert_eq!(err.reason(), "missing_field");
        // Other entities do not need one.
        assert_eq!(dec(r#"{"event_type": "team_created", "user_id": 1, "timestamp": "2025-09-07T10:30:00Z", "data": {"id": 3, "name": "Core"}}"#).kind, "team.created");
    }

    #[test]
    fn event_type_that_is_not_a_string_is_invalid_field() {
        let err = fail(r#"{"event_type": 5}"#);
        assert_eq!(
            err,
            DecodeError::InvalidField {
                field: "event_type".into(),
                value: "5".into(),
                expected: "a non-empty event type string",
            }
        );
        assert_eq!(fail(r#"{"eventType": ""}"#).reason(), "invalid_field");
        assert_eq!(fail(r#"{"operation": null}"#).reason(), "invalid_field");
    }

    #[test]
    fn long_values_in_errors_are_truncated() {
        let long = "x".repeat(5000);
        let msg = json!({"event_type": "task.created", "timestamp": "2026-02-08T10:30:00Z",
                             "data": {"task_id": 1, "due_date": long}})
        .to_string();
        let DecodeError::InvalidField { value, .. } = fail(&msg) else {
            panic!()
        };
        assert!(value.starts_with("\"xxx"), "{value}");
        assert!(value.ends_with('…'), "{value}");
        assert!(value.chars().count() <= 80 + 1, "{}", value.len());
        // Multi-byte characters are cut on a character boundary.
        let wide = json!({"event_type": "task.created", "timestamp": "2026-02-08T10:30:00Z",
                              "data": {"task_id": 1, "due_date": "é".repeat(500)}})
        .to_string();
        let DecodeError::InvalidField { value, .. } = fail(&wide) else {
            panic!()
        };
        assert!(value.ends_with('…') && value.contains('é'), "{value}");
    }

    #[test]
    fn malformed_fields_name_their_path() {
        let cases = [
            (
                r#"{"event_type": "task.updated", "timestamp": 1, "data": {"task_id": 1, "changes": [1]}}"#,
                "data.changes",
            ),
            (
                r#"{"event_type": "task.updated", "timestamp": 1, "data": {"task_id": 1, "changes": {"title": "new"}}}"#,
                "data.changes.title",
            ),
            (
                r#"{"event_type": "task.created", "timestamp": 1, "data": {"task_id": 1, "tags": [{}]}}"#,
                "data.tags",
            ),
            (
                r#"{"event_type": "task.created", "timestamp": 1, "data": {"task_id": 1, "completed": "maybe"}}"#,
                "data.completed",
            ),
            (
                r#"{"event_type": "task.created", "timestamp": 1, "data": {"task_id": 1, "title": ["a"]}}"#,
                "data.title",
            ),
            (
                r#"{"event_type": "task.created", "timestamp": 1, "data": "oops"}"#,
                "data",
            ),
            (
                r#"{"event_type": "task_created", "timestamp": 1, "data": {"task_id": 1}, "metadata": 3}"#,
                "metadata",
            ),
            (
                r#"{"event_type": "created", "task_id": 1, "timestamp": 1, "task_data": {"recurrence": 5}}"#,
                "task_data.recurrence",
            ),
            (
                r#"{"event_type": "created", "task_id": 1, "timestamp": 1, "task_data": {"recurrence": {"every": 2}}}"#,
                "task_data.recurrence",
            ),
            (
                r#"{"event_type": "created", "task_id": 1, "timestamp": 1, "task_data": {"is_recurring": "often", "rrule": "x"}}"#,
                "task_data.is_recurring",
            ),
            (
                r#"{"event_type": "user.created", "timestamp": 1, "data": {"user_id": 1, "email": {}}}"#,
                "data.email",
            ),
            (r#"{"task_id": 1, "remind_at": "later"}"#, "remind_at"),
            (
                r#"{"task_id": 1, "remind_at": 1, "notification_method": 3}"#,
                "notification_method",
            ),
        ];
        for (json, field) in cases {
            match fail(json) {
                DecodeError::InvalidField { field: f, .. } => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_error_variant_has_its_reason_label() {
        let cases: [(DecodeError, &str); 6] = [
            (DecodeError::Empty, "empty"),
            (DecodeError::NotJson { error: "x".into() }, "not_json"),
            (
                DecodeError::NotAnObject { found: "an array" },
                "not_an_object",
            ),
            (
                DecodeError::UnrecognizedShape { keys: "a".into() },
                "unrecognized_shape",
            ),
            (
                DecodeError::MissingField { field: "f".into() },
                "missing_field",
            ),
            (
                DecodeError::InvalidField {
                    field: "f".into(),
                    value: "1".into(),
                    expected: "x",
                },
                "invalid_field",
            ),
        ];
        for (err, reason) in cases {
            assert_eq!(err.reason(), reason);
        }
    }
}
