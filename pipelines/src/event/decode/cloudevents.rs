//! Wrapped messages: CloudEvents 1.0 structured JSON (as Dapr publishes it)
//! and the `{"traceparent", "event_data"}` wrapper of Dapr subscribers. The
//! wrapped message is any other dialect.

use super::detect::{dispatch, MAX_NESTING};
use super::error::{invalid, key_list, snippet, DecodeError, Loc};
use super::event_dialects::decode_fields;
use super::fields::{conv_text, conv_time, fill, fill_id};
use super::json::{self, Node, Obj};
use super::kinds::{is_plain_dotted, normalize_kind};
use super::Draft;
use crate::event::model::Dialect;

/// Dialect 6: CloudEvents 1.0 structured JSON, as Dapr publishes it. The
/// payload (`data` object, `data` as a JSON string, or `data_base64`) is any
/// other dialect; CloudEvents attributes fill what the payload lacks.
pub(super) fn decode_cloudevent<'a>(
    mut ce: Obj<'a>,
    topic: &str,
    depth: u8,
) -> Result<Draft<'a>, DecodeError> {
    if depth >= MAX_NESTING {
        return Err(DecodeError::UnrecognizedShape {
            keys: format!("{} (wrappers nested too deep)", key_list(&ce, "")),
        });
    }
    if let Some(v) = ce.get("specversion") {
        if v.as_str().is_none() {
            return Err(invalid(
                Loc::top("specversion"),
                v,
                "a CloudEvents specversion string",
            ));
        }
    }
    let (inner, within): (Option<Obj<'a>>, _) = match ce.take("data_base64") {
        Some(Node::Str(s)) => match base64_decode(&s) {
            Some(bytes) => (Some(parse_inner(&bytes, "data_base64")?), "data_base64"),
            None => {
                return Err(DecodeError::InvalidField {
                    field: "data_base64".to_owned(),
                    value: snippet(&s),
                    expected: "base64-encoded JSON",
                })
            }
        },
        None | Some(Node::Null) => match ce.take("data") {
            Some(Node::Obj(obj)) => (Some(obj), "data"),
            Some(Node::Str(s)) => (Some(parse_inner(s.as_bytes(), "data")?), "data"),
            None | Some(Node::Null) => (None, "data"),
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
        Some(Node::Str(s)) => Some(s.as_ref()),
        None | Some(Node::Null) => None,
        Some(other) => return Err(invalid(Loc::top("type"), other, "a string")),
    };
    // `com.dapr.event.sent` (Dapr's default) says nothing about the event.
    let fallback_kind = ce_type
        .filter(|t| is_plain_dotted(t))
        .map(|t| normalize_kind(t, None));
    let hint = match ce.get("topic") {
        Some(Node::Str(t)) => t.as_ref(),
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
            Some(kind) => decode_fields(Obj::new(), kind, Dialect::Envelope, &[])?,
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
fn parse_inner(bytes: &[u8], field: &'static str) -> Result<Obj<'static>, DecodeError> {
    let value = json::parse_owned(bytes).map_err(|e| DecodeError::NotJson {
        error: format!("CloudEvents {field}: {e}"),
    })?;
    match value {
        Node::Obj(obj) => Ok(obj),
        other => Err(invalid(Loc::top(field), &other, "a JSON object")),
    }
}

/// `{"traceparent": .., "event_data": {..}}`: what a Dapr subscriber hands on
/// (Todo Evolution's tracing example).
pub(super) fn decode_traced<'a>(
    mut obj: Obj<'a>,
    topic: &str,
    depth: u8,
) -> Result<Draft<'a>, DecodeError> {
    if depth >= MAX_NESTING {
        return Err(DecodeError::UnrecognizedShape {
            keys: format!("{} (wrappers nested too deep)", key_list(&obj, "")),
        });
    }
    let inner = match obj.take("event_data") {
        Some(Node::Obj(inner)) => inner,
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
    d.attributes.merge(obj);
    Ok(d)
}

/// Standard or URL-safe base64, padding optional, line breaks ignored.
/// (CloudEvents `data_base64`; small enough not to need a crate.)
pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
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
