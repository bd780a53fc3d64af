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
