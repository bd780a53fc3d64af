//! Wrapped messages: CloudEvents 1.0 structured JSON (as Dapr publishes it)
//! and the `{"traceparent", "event_data"}` wrapper of Dapr subscribers. The
//! wrapped message is any other dialect.

use super::detect::{dispatch, MAX_NESTING};
use super::error::{invalid, key_list, snippet, DecodeError, Loc};
use super::event_dialects::decode_fields;
use super::fields::keys;
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
            Some(kind) => decode_fields(Obj::new(), kind, Dialect::Envelope, keys![])?,
            None => {
                return Err(DecodeError::MissingField {
                    field: "data".to_owned(),
                })
            }
        },
    };
    if d.event_id.is_none() {
        fill_id(&mut d.event_id, &mut ce, "", keys!["id"])?;
    }
    if d.occurred_at.is_none() {
        fill(&mut d.occurred_at, &mut ce, "", keys!["time"], conv_time)?;
    }
    fill(
        &mut d.context.trace_parent,
        &mut ce,
        "",
        keys!["traceparent", "traceid"],
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
        keys!["traceparent"],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode::tests::*;

    // ------------------------------------------------------------ CloudEvents

    #[test]
    fn cloudevents_data_object_uses_inner_id_time_and_ce_traceparent() {
        let e = dec(
            r#"{"specversion":"1.0","id":"ce-1","source":"todo-api","type":"com.dapr.event.sent","datacontenttype":"application/json","time":"2026-02-08T12:00:01Z","topic":"task-events","pubsubname":"pubsub","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","data":{"event_id":"evt-9","event_type":"task.completed","timestamp":"2026-02-08T12:00:00Z","version":"1.0","data":{"task_id":123,"user_id":"user-456","completed_at":"2026-02-08T12:00:00Z","duration_minutes":90}}}"#,
        );
        assert!(e.cloudevents);
        assert_eq!(e.dialect, Dialect::Envelope);
        assert_eq!(e.event_id, "evt-9");
        assert_eq!(e.kind, "task.completed");
        assert_eq!(e.occurred_at, t("2026-02-08T12:00:00Z"));
        assert_eq!(
            e.context.unwrap().trace_parent,
            some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(e.attributes["duration_minutes"], 90);
    }

    #[test]
    fn cloudevents_data_as_json_string_wrapping_task_data_decodes() {
        let inner = r#"{"event_type": "completed", "task_id": 7, "user_id": "u1", "timestamp": "2026-01-03T10:00:00Z", "task_data": {"completed": true}}"#;
        let msg = json!({"specversion": "1.0", "id": "ce-2", "source": "chat-api",
                             "type": "com.dapr.event.sent", "datacontenttype": "application/json",
                             "data": inner})
        .to_string();
        let e = dec(&msg);
        assert!(e.cloudevents);
        assert_eq!(e.dialect, Dialect::TaskData);
        assert_eq!(e.kind, "task.completed");
        assert_eq!(e.task_id, some("7"));
        assert_eq!(e.event_id, "ce-2", "inner has no id: the CloudEvents id");
        assert_eq!(e.task.unwrap().completed, Some(true));
    }

    #[test]
    fn cloudevents_data_base64_wrapping_camel_case_decodes() {
        let msg = json!({"specversion": "1.0", "id": "ce-3", "source": "task-service",
                             "type": "com.dapr.event.sent", "time": "2025-08-25T22:50:16Z",
                             "datacontenttype": "application/json",
                             "data_base64": b64(SEED_004_TASK_COMPLETED.as_bytes())})
        .to_string();
        let e = dec(&msg);
        assert!(e.cloudevents);
        assert_eq!(e.dialect, Dialect::CamelCase);
        assert_eq!(e.kind, "task.completed");
        assert_eq!(e.task_id, some("1"));
        assert_eq!(
            e.occurred_at,
            t("2025-08-25T22:50:15.123Z"),
            "inner time wins"
        );
        assert_eq!(e.event_id, "ce-3");
    }

    #[test]
    fn cloudevents_typed_payload_without_inner_type_uses_ce_type_id_and_time() {
        let e = dec(
            r#"{"specversion":"1.0","id":"ce-4","source":"spm","type":"task.created","time":"2025-10-01T08:00:00Z","data":{"id":"task-123","name":"New Task","created_by_uid":"user-456","pid":"project-789"}}"#,
        );
        assert!(e.cloudevents);
        assert_eq!(e.kind, "task.created");
        assert_eq!(e.event_id, "ce-4", "a flat payload's id is the task's");
        assert_eq!(e.task_id, some("task-123"));
        assert_eq!(e.user_id, some("user-456"));
        assert_eq!(e.project_id, some("project-789"));
        assert_eq!(e.occurred_at, t("2025-10-01T08:00:00Z"));
    }

    #[test]
    fn cloudevents_dapr_default_type_without_inner_type_is_unrecognized() {
        let err = fail(
            r#"{"specversion":"1.0","id":"ce-5","source":"x","type":"com.dapr.event.sent","data":{"task_id":1,"title":"t"}}"#,
        );
        assert_eq!(err.reason(), "unrecognized_shape");
        let text = err.to_string();
        assert!(
            text.contains("specversion") && text.contains("task_id"),
            "{text}"
        );
    }

    #[test]
    fn cloudevents_without_data_needs_a_usable_type() {
        let err = fail(r#"{"specversion":"1.0","id":"ce-6","type":"com.dapr.event.sent"}"#);
        assert_eq!(
            err,
            DecodeError::MissingField {
                field: "data".into()
            }
        );
        let e = dec(
            r#"{"specversion":"1.0","id":"ce-7","type":"user.deleted","time":"2025-10-01T08:00:00Z"}"#,
        );
        assert_eq!(e.kind, "user.deleted");
        assert_eq!(e.event_id, "ce-7");
    }

    #[test]
    fn cloudevents_errors_inside_data_name_the_full_path() {
        let err = fail(
            r#"{"specversion":"1.0","id":"ce-8","type":"com.dapr.event.sent","data":{"event_type":"task.created","timestamp":"2026-02-08T10:30:00Z","data":{"task_id":1,"due_date":"tomorrow-ish"}}}"#,
        );
        assert_eq!(
            err.to_string(),
            r#"field "data.data.due_date" has value "tomorrow-ish": expected an RFC 3339 timestamp"#
        );
    }

    #[test]
    fn cloudevents_bad_payload_encodings_are_errors() {
        let err = fail(
            r#"{"specversion":"1.0","id":"x","type":"task.created","data_base64":"not base64!"}"#,
        );
        assert!(
            matches!(&err, DecodeError::InvalidField { field, .. } if field == "data_base64"),
            "{err}"
        );
        let err =
            fail(r#"{"specversion":"1.0","id":"x","type":"task.created","data":"{not json"}"#);
        assert_eq!(err.reason(), "not_json");
        assert!(err.to_string().contains("CloudEvents data"), "{err}");
        let err = fail(r#"{"specversion":"1.0","id":"x","type":"task.created","data":[1]}"#);
        assert!(
            matches!(&err, DecodeError::InvalidField { field, .. } if field == "data"),
            "{err}"
        );
        let err = fail(&json!({"specversion": "1.0", "data_base64": b64(b"[1, 2]")}).to_string());
        assert!(
            matches!(&err, DecodeError::InvalidField { field, .. } if field == "data_base64"),
            "{err}"
        );
    }

    #[test]
    fn cloudevents_reminder_payload_decodes_as_reminder() {
        let inner = SEED_003_REMINDER.replace("email|push|sms", "sms");
        let msg = json!({"specversion": "1.0", "id": "ce-9", "type": "com.dapr.event.sent",
                             "topic": "reminders", "data": inner})
        .to_string();
        let e = dec(&msg);
        assert!(e.cloudevents);
        assert_eq!(e.kind, "reminder.requested");
        assert_eq!(e.event_id, "ce-9");
        assert_eq!(e.reminder.unwrap().method, "sms");
    }

    #[test]
    fn cloudevents_nested_too_deep_is_an_error_not_a_stack_overflow() {
        let mut msg = SEED_001_CREATED.to_owned();
        for i in 0..10 {
            msg = json!({"specversion": "1.0", "id": format!("ce-{i}"), "data": msg}).to_string();
        }
        assert_eq!(fail(&msg).reason(), "unrecognized_shape");
        // Two levels are fine.
        let two = json!({"specversion": "1.0", "id": "outer",
                             "data": {"specversion": "1.0", "id": "inner",
                                      "data": serde_json::from_str::<Value>(SEED_001_CREATED).unwrap()}});
        assert_eq!(dec(&two.to_string()).kind, "task.created");
    }

    #[test]
    fn base64_decoder_handles_padding_alphabets_and_garbage() {
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert_eq!(base64_decode("TQ").unwrap(), b"M");
        assert_eq!(base64_decode("TW\nFu").unwrap(), b"Man");
        assert_eq!(
            base64_decode("-_-_").unwrap(),
            base64_decode("+/+/").unwrap()
        );
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("T"), None);
        assert_eq!(base64_decode("TQ=x"), None);
        assert_eq!(base64_decode("T*Fu"), None);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&b64(&all)).unwrap(), all);
    }
}
