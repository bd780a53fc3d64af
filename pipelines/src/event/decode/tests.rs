//! Behaviour of the whole decoder, dialect by dialect, on the seed documents'
//! examples and on what producers get wrong.
//!
//! This module also holds what the tests next to each part of the decoder
//! share: the seed examples (fixture files in `../fixtures/seeds/`) and the
//! decoding helpers.

pub(super) use super::{decode, is_known_type, DecodeContext, DecodeError};
pub(super) use crate::event::model::{Dialect, TaskEvent};
pub(super) use chrono::{DateTime, Utc};
pub(super) use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub(super) const TASK_EVENTS: DecodeContext<'static> = DecodeContext {
    topic: "task-events",
    kafka_timestamp_ms: None,
};

// ------------------------------------------------------------ seed messages
// Copied from /work/shared/seeds; only `/* comments */`, `{...}`, `...` and
// "uuid" placeholders are replaced.

/// 000 "Standard Format".
pub(super) const SEED_000_STANDARD: &str = include_str!("../fixtures/seeds/000_standard.json");

/// 001 `task.created`.
pub(super) const SEED_001_CREATED: &str = include_str!("../fixtures/seeds/001_created.json");

/// 001 `task.updated` ("uuid" replaced).
pub(super) const SEED_001_UPDATED: &str = include_str!("../fixtures/seeds/001_updated.json");

/// 001 `task.completed` ("uuid" replaced).
pub(super) const SEED_001_COMPLETED: &str = include_str!("../fixtures/seeds/001_completed.json");

/// 001 `task.deleted` ("uuid" replaced).
pub(super) const SEED_001_DELETED: &str = include_str!("../fixtures/seeds/001_deleted.json");

/// 001 `user.registered` ("uuid" replaced).
pub(super) const SEED_001_USER_REGISTERED: &str =
    include_str!("../fixtures/seeds/001_user_registered.json");

/// 001 "Distributed Tracing" (`{...}` replaced by the `task.created` event).
pub(super) const SEED_001_TRACED: &str = include_str!("../fixtures/seeds/001_traced.json");

/// 001 "Event Schema Versioning" (`...` replaced by the remaining fields).
pub(super) const SEED_001_VERSIONED: &str = include_str!("../fixtures/seeds/001_versioned.json");

/// 001 `create_task` publishing through Dapr: what the subscriber receives
/// (Dapr's CloudEvent around the dict, `utcnow().isoformat()` timestamp).
pub(super) const SEED_001_DAPR_PUBLISHED: &str =
    include_str!("../fixtures/seeds/001_dapr_published.json");

/// 002 `publish_task_created({...})` as the SPM publisher sends it.
pub(super) const SEED_002_SPM: &str = include_str!("../fixtures/seeds/002_spm.json");

/// 003 task-events "Event Schema" (comment replaced by `{}`).
pub(super) const SEED_003_TASK_EVENTS: &str =
    include_str!("../fixtures/seeds/003_task_events.json");

/// 003 reminders "Event Schema", verbatim (its method is a placeholder).
pub(super) const SEED_003_REMINDER: &str = include_str!("../fixtures/seeds/003_reminder.json");

/// 003 task-updates "Event Schema" (comment replaced by `{}`).
pub(super) const SEED_003_TASK_UPDATES: &str =
    include_str!("../fixtures/seeds/003_task_updates.json");

/// 003 `publish_task_event('completed', task, user_id)`: `task.dict()` of
/// a recurring task, `utcnow().isoformat()` timestamp.
pub(super) const SEED_003_PUBLISHED_RECURRING: &str =
    include_str!("../fixtures/seeds/003_published_recurring.json");

/// 004 `user.created`.
pub(super) const SEED_004_USER_CREATED: &str =
    include_str!("../fixtures/seeds/004_user_created.json");

/// 004 `task.updated`.
pub(super) const SEED_004_TASK_UPDATED: &str =
    include_str!("../fixtures/seeds/004_task_updated.json");

/// 004 `task.completed`.
pub(super) const SEED_004_TASK_COMPLETED: &str =
    include_str!("../fixtures/seeds/004_task_completed.json");

/// Every seed message that decodes (for round trips and fuzzing).
pub(super) const DECODABLE_SEEDS: &[&str] = &[
    SEED_000_STANDARD,
    SEED_001_CREATED,
    SEED_001_UPDATED,
    SEED_001_COMPLETED,
    SEED_001_DELETED,
    SEED_001_USER_REGISTERED,
    SEED_001_TRACED,
    SEED_001_VERSIONED,
    SEED_001_DAPR_PUBLISHED,
    SEED_002_SPM,
    SEED_003_TASK_EVENTS,
    SEED_003_TASK_UPDATES,
    SEED_003_PUBLISHED_RECURRING,
    SEED_004_USER_CREATED,
    SEED_004_TASK_UPDATED,
    SEED_004_TASK_COMPLETED,
];

// ------------------------------------------------------------ helpers

pub(super) fn replacements() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x"),
        json!("2026-13-45T99:99:99Z"),
        json!("task.created"),
        json!("com.dapr.event.sent"),
        json!("email|push|sms"),
        json!("e30="),
        json!("{\"event_type\":\"task.created\"}"),
        json!([]),
        json!({}),
        json!([1, [2, {"a": null}]]),
        json!({"old": 1}),
    ]
}

/// Every variant of `v` with one node replaced by one of `reps` (or removed).
pub(super) fn variants(v: &Value, reps: &[Value], out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut inner = Vec::new();
                variants(child, reps, &mut inner);
                inner.extend(reps.iter().cloned());
                for cv in inner {
                    let mut m2 = m.clone();
                    m2.insert(k.clone(), cv);
                    out.push(Value::Object(m2));
                }
                let mut m3 = m.clone();
                m3.remove(k);
                out.push(Value::Object(m3));
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let mut inner = Vec::new();
                variants(child, reps, &mut inner);
                inner.extend(reps.iter().cloned());
                for cv in inner {
                    let mut a2 = a.clone();
                    a2[i] = cv;
                    out.push(Value::Array(a2));
                }
            }
        }
        _ => {}
    }
}

pub(super) fn dec(json: &str) -> TaskEvent {
    dec_with(json, &TASK_EVENTS)
}

pub(super) fn dec_with(json: &str, ctx: &DecodeContext<'_>) -> TaskEvent {
    match decode(json.as_bytes(), ctx) {
        Ok(e) => {
            assert_round_trips(&e);
            e
        }
        Err(err) => panic!("{err}\n  in {json}"),
    }
}

pub(super) fn fail(json: &str) -> DecodeError {
    fail_bytes(json.as_bytes())
}

pub(super) fn fail_bytes(bytes: &[u8]) -> DecodeError {
    match decode(bytes, &TASK_EVENTS) {
        Ok(e) => panic!("decoded, expected an error: {e:?}"),
        Err(err) => err,
    }
}

pub(super) fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub(super) fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

/// The canonical JSON of `e` decodes back to `e`.
pub(super) fn assert_round_trips(e: &TaskEvent) {
    let bytes = serde_json::to_vec(e).unwrap();
    let back = decode(&bytes, &TASK_EVENTS)
        .unwrap_or_else(|err| panic!("canonical did not decode: {err}\n  {e:?}"));
    assert_eq!(
        &back,
        e,
        "round trip of {}",
        String::from_utf8_lossy(&bytes)
    );
}

pub(super) fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A minimal standard-dialect message of type `kind`.
pub(super) fn standard(kind: &str) -> String {
    json!({"event_type": kind, "user_id": 1, "timestamp": "2025-09-07T10:30:00Z",
               "data": {"task_id": 9}})
    .to_string()
}

// ------------------------------------------------------------ ids

#[test]
fn missing_event_id_is_a_stable_content_hash() {
    let a = dec(SEED_000_STANDARD);
    let b = dec(SEED_000_STANDARD);
    assert_eq!(a.event_id, b.event_id, "same bytes, same id");
    assert!(a.event_id.starts_with("h:"));
    assert_eq!(a.event_id.len(), 2 + 32);
    assert!(a.event_id[2..].bytes().all(|c| c.is_ascii_hexdigit()));
    let expected = hex::encode(&Sha256::digest(SEED_000_STANDARD.as_bytes())[..16]);
    assert_eq!(a.event_id, format!("h:{expected}"));
}

#[test]
fn different_bytes_get_different_hash_ids() {
    let a = dec(SEED_004_TASK_UPDATED);
    let b = dec(&SEED_004_TASK_UPDATED.replace("Updated Task Title", "Other"));
    let c = dec(&SEED_004_TASK_UPDATED.replace("\n", " "));
    assert_ne!(a.event_id, b.event_id);
    assert_ne!(a.event_id, c.event_id, "the hash is of the bytes, as sent");
}

#[test]
fn ids_are_strings_whatever_the_json_type() {
    let e = dec(
        r#"{"event_id": 99, "event_type": "task.assigned", "timestamp": "2026-02-08T10:30:00Z", "data": {"task_id": "t-1", "user_id": 7, "project_id": 12345678901234567890, "assignee_id": 8}}"#,
    );
    assert_eq!(e.event_id, "99");
    assert_eq!(e.task_id, some("t-1"));
    assert_eq!(e.user_id, some("7"));
    assert_eq!(
        e.project_id,
        some("12345678901234567890"),
        "the task's project"
    );
    let task = e.task.unwrap();
    assert_eq!(task.project_id, some("12345678901234567890"));
    assert_eq!(task.assignee_id, some("8"));
}

#[test]
fn boolean_or_object_ids_are_invalid_fields() {
    let err = fail(
        r#"{"event_type": "task.created", "timestamp": "2026-02-08T10:30:00Z", "data": {"task_id": true}}"#,
    );
    assert_eq!(
        err,
        DecodeError::InvalidField {
            field: "data.task_id".into(),
            value: "true".into(),
            expected: "a string or number id",
        }
    );
    let err = fail(
        r#"{"eventType": "task.created", "taskId": {"id": 1}, "timestamp": "2026-02-08T10:30:00Z"}"#,
    );
    assert!(
        err.to_string()
            .starts_with(r#"field "taskId" has value {"id":1}"#),
        "{err}"
    );
}

// ------------------------------------------------------------ garbage

#[test]
fn garbage_inputs_are_errors_not_panics() {
    let deep_array = "[".repeat(100_000);
    let deep_object = "{\"a\":".repeat(10_000);
    let mut deep_in_data =
        String::from(r#"{"event_type":"task.created","timestamp":1,"data":{"task_id":1,"x":"#);
    deep_in_data.push_str(&"[".repeat(120));
    deep_in_data.push_str(&"]".repeat(120));
    deep_in_data.push_str("}}");
    let cases: Vec<&[u8]> = vec![
        b"[]",
        b"\"x\"",
        b"{}",
        br#"{"event_type": 5}"#,
        br#"{"event_type": "task.created", "data": {"task_id": 1"#,
        br#"{"event_type": "task.created"}"#,
        br#"{"specversion": 1}"#,
        br#"{"specversion": "1.0", "data": {"specversion": "1.0"}}"#,
        br#"{"event_data": {}}"#,
        br#"{"event_data": {"event_data": {"event_data": {"event_data": {"event_data": {}}}}}}"#,
        br#"{"type": "task.created", "dialect": "canonical", "event_id": null}"#,
        br#"{"remind_at": null}"#,
        deep_array.as_bytes(),
        deep_object.as_bytes(),
        b"{\"event_type\": \"task.created\xff\"}",
        b"\xff\xfe\x00",
        b"\xef\xbb\xbf{}",
        b"{\"a\":1}garbage",
    ];
    for bytes in cases {
        assert!(
            decode(bytes, &TASK_EVENTS).is_err(),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
    // Deep but within serde_json's limit: kept verbatim.
    let e = dec(&deep_in_data);
    assert!(e.attributes["x"].is_array());
}

#[test]
fn every_prefix_of_every_seed_decodes_or_errors_without_panicking() {
    for seed in DECODABLE_SEEDS.iter().chain([&SEED_003_REMINDER]) {
        for end in 0..seed.len() {
            let _ = decode(&seed.as_bytes()[..end], &TASK_EVENTS);
        }
    }
}

/// Every seed with one node replaced (or removed): whatever the result,
/// decoding returns.
#[test]
fn replacing_any_field_of_any_seed_never_panics() {
    let replacements = replacements();
    let mut n = 0;
    for seed in DECODABLE_SEEDS.iter().chain([&SEED_003_REMINDER]) {
        let v: Value = serde_json::from_str(seed).unwrap();
        let mut all = Vec::new();
        variants(&v, &replacements, &mut all);
        for variant in all {
            let bytes = serde_json::to_vec(&variant).unwrap();
            for ctx in [
                TASK_EVENTS,
                DecodeContext {
                    topic: "reminders",
                    kafka_timestamp_ms: Some(i64::MIN),
                },
            ] {
                if let Ok(e) = decode(&bytes, &ctx) {
                    // Whatever decodes is valid canonical output.
                    let again = serde_json::to_vec(&e).unwrap();
                    assert_eq!(decode(&again, &TASK_EVENTS).as_ref(), Ok(&e));
                }
                n += 1;
            }
        }
    }
    assert!(n > 5_000, "{n} variants");
}

#[test]
fn random_bytes_never_panic() {
    let alphabet = b"{}[]\":,0123456789.eE-+ tfnrulsa_\\/\xff\xc3";
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 48) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = decode(&bytes, &TASK_EVENTS);
    }
}
