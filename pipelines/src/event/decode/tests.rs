//! Behaviour of the whole decoder, dialect by dialect, on the seed documents'
//! examples and on what producers get wrong.

use super::cloudevents::base64_decode;
use super::kinds::normalize_kind;
use super::*;
use crate::event::model::Dialect;
use serde_json::{json, Value};

const TASK_EVENTS: DecodeContext<'static> = DecodeContext {
    topic: "task-events",
    kafka_timestamp_ms: None,
};

// ------------------------------------------------------------ seed messages
// Copied from /work/shared/seeds; only `/* comments */`, `{...}`, `...` and
// "uuid" placeholders are replaced.

/// 000 "Standard Format".
const SEED_000_STANDARD: &str = include_str!("../fixtures/seeds/000_standard.json");

/// 001 `task.created`.
const SEED_001_CREATED: &str = include_str!("../fixtures/seeds/001_created.json");

/// 001 `task.updated` ("uuid" replaced).
const SEED_001_UPDATED: &str = include_str!("../fixtures/seeds/001_updated.json");

/// 001 `task.completed` ("uuid" replaced).
const SEED_001_COMPLETED: &str = include_str!("../fixtures/seeds/001_completed.json");

/// 001 `task.deleted` ("uuid" replaced).
const SEED_001_DELETED: &str = include_str!("../fixtures/seeds/001_deleted.json");

/// 001 `user.registered` ("uuid" replaced).
const SEED_001_USER_REGISTERED: &str = include_str!("../fixtures/seeds/001_user_registered.json");

/// 001 "Distributed Tracing" (`{...}` replaced by the `task.created` event).
const SEED_001_TRACED: &str = include_str!("../fixtures/seeds/001_traced.json");

/// 001 "Event Schema Versioning" (`...` replaced by the remaining fields).
const SEED_001_VERSIONED: &str = include_str!("../fixtures/seeds/001_versioned.json");

/// 001 `create_task` publishing through Dapr: what the subscriber receives
/// (Dapr's CloudEvent around the dict, `utcnow().isoformat()` timestamp).
const SEED_001_DAPR_PUBLISHED: &str = include_str!("../fixtures/seeds/001_dapr_published.json");

/// 002 `publish_task_created({...})` as the SPM publisher sends it.
const SEED_002_SPM: &str = include_str!("../fixtures/seeds/002_spm.json");

/// 003 task-events "Event Schema" (comment replaced by `{}`).
const SEED_003_TASK_EVENTS: &str = include_str!("../fixtures/seeds/003_task_events.json");

/// 003 reminders "Event Schema", verbatim (its method is a placeholder).
pub(super) const SEED_003_REMINDER: &str = include_str!("../fixtures/seeds/003_reminder.json");

/// 003 task-updates "Event Schema" (comment replaced by `{}`).
const SEED_003_TASK_UPDATES: &str = include_str!("../fixtures/seeds/003_task_updates.json");

/// 003 `publish_task_event('completed', task, user_id)`: `task.dict()` of
/// a recurring task, `utcnow().isoformat()` timestamp.
const SEED_003_PUBLISHED_RECURRING: &str =
    include_str!("../fixtures/seeds/003_published_recurring.json");

/// 004 `user.created`.
const SEED_004_USER_CREATED: &str = include_str!("../fixtures/seeds/004_user_created.json");

/// 004 `task.updated`.
const SEED_004_TASK_UPDATED: &str = include_str!("../fixtures/seeds/004_task_updated.json");

/// 004 `task.completed`.
const SEED_004_TASK_COMPLETED: &str = include_str!("../fixtures/seeds/004_task_completed.json");

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

fn dec(json: &str) -> TaskEvent {
    dec_with(json, &TASK_EVENTS)
}

fn dec_with(json: &str, ctx: &DecodeContext<'_>) -> TaskEvent {
    match decode(json.as_bytes(), ctx) {
        Ok(e) => {
            assert_round_trips(&e);
            e
        }
        Err(err) => panic!("{err}\n  in {json}"),
    }
}

fn fail(json: &str) -> DecodeError {
    fail_bytes(json.as_bytes())
}

fn fail_bytes(bytes: &[u8]) -> DecodeError {
    match decode(bytes, &TASK_EVENTS) {
        Ok(e) => panic!("decoded, expected an error: {e:?}"),
        Err(err) => err,
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

/// The canonical JSON of `e` decodes back to `e`.
fn assert_round_trips(e: &TaskEvent) {
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
fn standard(kind: &str) -> String {
    json!({"event_type": kind, "user_id": 1, "timestamp": "2025-09-07T10:30:00Z",
               "data": {"task_id": 9}})
    .to_string()
}

// ------------------------------------------------------------ seed 000

#[test]
fn seed_000_standard_task_created_decodes_actor_snapshot_and_metadata() {
    let e = dec(SEED_000_STANDARD);
    assert_eq!(e.kind, "task.created");
    assert_eq!(e.dialect, Dialect::Standard);
    assert_eq!(e.user_id, some("123"));
    assert_eq!(e.task_id, some("456"));
    assert_eq!(e.occurred_at, t("2025-09-07T10:30:00Z"));
    let task = e.task.unwrap();
    assert_eq!(task.title, some("Implement login"));
    assert_eq!(task.status, some("todo"));
    assert_eq!(task.priority, some("high"));
    assert_eq!(e.schema_version, some("1.0"));
    assert_eq!(e.attributes["action"], "created");
    assert_eq!(e.attributes["source"], "django_backend");
    assert_eq!(e.attributes.len(), 2, "{:?}", e.attributes);
    assert!(e.event_id.starts_with("h:"), "no id in the message: hashed");
    assert!(is_known_type(&e.kind));
}

#[test]
fn seed_000_documented_event_names_map_to_known_dotted_types() {
    let table = [
        ("task_created", "task.created"),
        ("task_updated", "task.updated"),
        ("task_deleted", "task.deleted"),
        ("team_created", "team.created"),
        ("team_updated", "team.updated"),
        ("team_deleted", "team.deleted"),
        ("tag_created", "tag.created"),
        ("tag_updated", "tag.updated"),
        ("tag_deleted", "tag.deleted"),
        ("user_created", "user.created"),
        ("user_updated", "user.updated"),
        ("task_template_created", "task_template.created"),
        ("task_template_updated", "task_template.updated"),
        ("task_template_deleted", "task_template.deleted"),
        ("dashboard_viewed", "analytics.dashboard_viewed"),
        (
            "task_distribution_viewed",
            "analytics.task_distribution_viewed",
        ),
        ("report_generated", "analytics.report_generated"),
        ("report_downloaded", "analytics.report_downloaded"),
        ("analytics_query", "analytics.query"),
        ("user_stats_accessed", "analytics.user_stats_accessed"),
        (
            "team_performance_accessed",
            "analytics.team_performance_accessed",
        ),
        ("error_occurred", "analytics.error_occurred"),
        ("task_status_changed", "task.status_changed"),
        ("task_priority_changed", "task.priority_changed"),
        ("task_assigned", "task.assigned"),
        ("task_due_date_set", "task.due_date_set"),
        ("task_archived", "task.archived"),
        ("task_completed", "task.completed"),
        ("task_tag_added", "task.tag_added"),
        ("task_tag_removed", "task.tag_removed"),
        ("comment_added", "comment.added"),
        ("comment_edited", "comment.edited"),
        ("comment_deleted", "comment.deleted"),
        ("system_error", "system.error"),
        ("system_maintenance", "system.maintenance"),
        ("backup_completed", "system.backup_completed"),
    ];
    for (name, kind) in table {
        let e = dec(&standard(name));
        assert_eq!(e.kind, kind, "{name}");
        assert_eq!(e.dialect, Dialect::Standard, "{name}");
        assert!(is_known_type(&e.kind), "{kind} should be known");
    }
}

#[test]
fn seed_000_analytics_events_are_not_task_user_or_team_events() {
    for name in [
        "task_distribution_viewed",
        "user_stats_accessed",
        "team_performance_accessed",
    ] {
        let msg = json!({"event_type": name, "user_id": 5,
                             "timestamp": "2025-09-07T10:30:00Z",
                             "data": {"team_id": 3, "period": "30d"}})
        .to_string();
        let e = dec(&msg);
        assert_eq!(e.entity(), "analytics", "{name}");
        assert_eq!(e.task, None);
        assert_eq!(e.user, None);
        assert_eq!(e.attributes["team_id"], 3);
    }
}

// ------------------------------------------------------------ seed 001

#[test]
fn seed_001_envelope_task_created_decodes_snapshot() {
    let e = dec(SEED_001_CREATED);
    assert_eq!(e.event_id, "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(e.kind, "task.created");
    assert_eq!(e.dialect, Dialect::Envelope);
    assert_eq!(e.occurred_at, t("2026-02-08T10:30:00Z"));
    assert_eq!(e.task_id, some("123"));
    assert_eq!(e.user_id, some("user-456"));
    assert_eq!(e.schema_version, some("1.0"));
    let task = e.task.unwrap();
    assert_eq!(task.title, some("Buy groceries"));
    assert_eq!(task.description, some("Milk, eggs, bread"));
    assert_eq!(task.completed, Some(false));
    assert_eq!(task.created_at, Some(t("2026-02-08T10:30:00Z")));
    assert!(e.attributes.is_empty(), "{:?}", e.attributes);
    assert!(!e.cloudevents);
}

#[test]
fn seed_001_envelope_task_updated_lists_changes_and_has_no_snapshot() {
    let e = dec(SEED_001_UPDATED);
    assert_eq!(e.event_id, "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b");
    assert_eq!(e.kind, "task.updated");
    assert_eq!(e.occurred_at, t("2026-02-08T11:00:00Z"));
    assert_eq!(e.task_id, some("123"));
    assert_eq!(e.changes.len(), 2);
    assert_eq!(e.changes["title"].old, "Buy groceries");
    assert_eq!(e.changes["title"].new, "Buy groceries and cook dinner");
    assert_eq!(e.changes["description"].new, "Milk, eggs, bread, chicken");
    assert_eq!(e.task, None, "no snapshot field in the message");
    assert_eq!(e.attributes["updated_at"], "2026-02-08T11:00:00Z");
}

#[test]
fn seed_001_envelope_task_completed_keeps_duration_in_attributes() {
    let e = dec(SEED_001_COMPLETED);
    assert_eq!(e.kind, "task.completed");
    assert_eq!(e.occurred_at, t("2026-02-08T12:00:00Z"));
    assert_eq!(e.task_id, some("123"));
    assert_eq!(e.user_id, some("user-456"));
    let task = e.task.unwrap();
    assert_eq!(task.title, some("Buy groceries and cook dinner"));
    assert_eq!(task.completed_at, Some(t("2026-02-08T12:00:00Z")));
    assert_eq!(e.attributes["duration_minutes"], 90);
}

#[test]
fn seed_001_envelope_task_deleted_keeps_reason_and_deleted_at() {
    let e = dec(SEED_001_DELETED);
    assert_eq!(e.kind, "task.deleted");
    assert_eq!(e.event_id, "a3d5f7b9-1c2e-4a6b-8d0f-2e4a6c8e0b1d");
    assert_eq!(e.occurred_at, t("2026-02-08T13:00:00Z"));
    assert_eq!(e.task_id, some("123"));
    assert_eq!(e.attributes["reason"], "user_requested");
    assert_eq!(e.attributes["deleted_at"], "2026-02-08T13:00:00Z");
}

#[test]
fn seed_001_user_registered_becomes_user_created_with_profile() {
    let e = dec(SEED_001_USER_REGISTERED);
    assert_eq!(e.kind, "user.created");
    assert_eq!(e.dialect, Dialect::Envelope);
    assert_eq!(e.occurred_at, t("2026-02-08T09:00:00Z"));
    assert_eq!(e.user_id, some("user-456"));
    assert_eq!(e.task_id, None);
    assert_eq!(e.task, None);
    let user = e.user.unwrap();
    assert_eq!(user.email, some("user@example.com"));
    assert_eq!(user.name, some("John Doe"));
    assert_eq!(e.attributes["source"], "web");
    assert_eq!(e.attributes["registered_at"], "2026-02-08T09:00:00Z");
}

#[test]
fn seed_001_traceparent_wrapper_sets_trace_parent_on_the_inner_event() {
    let e = dec(SEED_001_TRACED);
    assert_eq!(e.kind, "task.created");
    assert_eq!(e.event_id, "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(e.dialect, Dialect::Envelope);
    assert_eq!(e.task_id, some("123"));
    assert_eq!(e.occurred_at, t("2026-02-08T10:30:00Z"));
    assert_eq!(
        e.context.unwrap().trace_parent,
        some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert!(!e.cloudevents, "not a CloudEvent");
}

#[test]
fn seed_001_versioned_envelope_keeps_schema_version() {
    let e = dec(SEED_001_VERSIONED);
    assert_eq!(e.kind, "task.created");
    assert_eq!(e.event_id, "9b2c4d6e-8f0a-4b1c-9d3e-5f7a9b1c3d5e");
    assert_eq!(e.schema_version, some("1.0"));
    assert_eq!(e.task_id, some("123"));
    assert_eq!(e.occurred_at, t("2026-02-08T10:30:00Z"));
}

#[test]
fn seed_001_dapr_published_utcnow_isoformat_is_read_as_utc() {
    let e = dec(SEED_001_DAPR_PUBLISHED);
    assert!(e.cloudevents);
    assert_eq!(e.dialect, Dialect::Envelope);
    assert_eq!(e.kind, "task.created", "from the inner event_type");
    assert_eq!(
        e.event_id, "c0ffee00-1234-4abc-9def-000000000001",
        "inner id wins"
    );
    assert_eq!(e.occurred_at, t("2026-02-08T10:30:00.123456Z"));
    assert_eq!(e.task_id, some("123"));
    assert!(
        !e.attributes.contains_key("id"),
        "repeat of the task id dropped"
    );
    assert_eq!(e.task.unwrap().title, some("Buy groceries"));
    assert!(e
        .context
        .unwrap()
        .trace_parent
        .unwrap()
        .starts_with("00-4bf92f"));
}

// ------------------------------------------------------------ seed 002

#[test]
fn seed_002_spm_task_data_maps_id_name_creator_and_pid() {
    let e = dec(SEED_002_SPM);
    assert_eq!(e.kind, "task.created");
    assert_eq!(e.dialect, Dialect::Standard);
    assert_eq!(e.occurred_at, t("2025-10-01T08:00:00Z"));
    assert_eq!(e.task_id, some("task-123"));
    assert_eq!(e.user_id, some("user-456"), "created_by_uid is the actor");
    assert_eq!(e.project_id, some("project-789"));
    let task = e.task.unwrap();
    assert_eq!(task.title, some("New Task"));
    assert_eq!(task.project_id, some("project-789"));
    assert!(e.attributes.is_empty(), "{:?}", e.attributes);
}

#[test]
fn seed_002_spm_creator_does_not_override_an_explicit_actor() {
    let e = dec(
        r#"{"event_type": "task_assigned", "user_id": "manager-1", "timestamp": "2025-10-01T08:00:00Z", "data": {"id": "task-123", "created_by_uid": "user-456", "assignee_id": "user-789"}}"#,
    );
    assert_eq!(e.kind, "task.assigned");
    assert_eq!(e.user_id, some("manager-1"));
    assert_eq!(e.attributes["created_by_uid"], "user-456");
    assert_eq!(e.task.unwrap().assignee_id, some("user-789"));
}

#[test]
fn seed_002_documented_event_names_map_to_known_dotted_types() {
    let table = [
        ("task_created", "task.created"),
        ("task_updated", "task.updated"),
        ("task_deleted", "task.deleted"),
        ("task_assigned", "task.assigned"),
        ("task_status_changed", "task.status_changed"),
        ("project_created", "project.created"),
        ("project_updated", "project.updated"),
        ("project_deleted", "project.deleted"),
        ("project_collaborator_added", "project.collaborator_added"),
        (
            "project_collaborator_removed",
            "project.collaborator_removed",
        ),
        ("schedule_created", "schedule.created"),
        ("schedule_updated", "schedule.updated"),
        ("schedule_deleted", "schedule.deleted"),
        ("deadline_approaching", "deadline.approaching"),
        ("deadline_overdue", "deadline.overdue"),
        ("notification_sent", "notification.sent"),
        ("notification_delivered", "notification.delivered"),
        ("notification_failed", "notification.failed"),
    ];
    for (name, kind) in table {
        let e = dec(&standard(name));
        assert_eq!(e.kind, kind, "{name}");
        assert!(is_known_type(&e.kind), "{kind} should be known");
    }
}

#[test]
fn seed_002_project_event_takes_project_id_from_pid_free_payload() {
    let e = dec(
        r#"{"event_type": "project_collaborator_added", "user_id": "owner-1", "timestamp": "2025-10-01T08:00:00Z", "data": {"project_id": "project-789", "collaborator_uid": "user-2"}}"#,
    );
    assert_eq!(e.kind, "project.collaborator_added");
    assert_eq!(e.project_id, some("project-789"));
    assert_eq!(e.task, None);
    assert_eq!(e.attributes["collaborator_uid"], "user-2");
}

// ------------------------------------------------------------ seed 003

#[test]
fn seed_003_task_events_schema_with_placeholder_type_decodes_to_an_unknown_type() {
    let e = dec(SEED_003_TASK_EVENTS);
    assert_eq!(e.dialect, Dialect::TaskData);
    assert_eq!(
        e.kind,
        "task.created|updated|completed|deleted|priority_changed|due_date_set|tags_added"
    );
    assert!(!is_known_type(&e.kind), "counted and skipped, not handled");
    assert_eq!(e.task_id, some("123"));
    assert_eq!(e.user_id, some("user123"));
    assert_eq!(e.occurred_at, t("2026-01-03T10:00:00Z"));
    let task = e.task.unwrap();
    assert_eq!(task.title, some("Task title"));
    assert_eq!(task.description, some("Task description"));
    assert_eq!(task.completed, Some(false));
    assert_eq!(task.priority, some("medium"));
    assert_eq!(task.due_at, Some(t("2026-01-10T09:00:00Z")));
    assert_eq!(
        task.tags,
        Some(vec!["work".to_owned(), "important".to_owned()])
    );
    assert_eq!(e.previous, None, "an empty previous state is no snapshot");
}

#[test]
fn seed_003_task_events_each_documented_action_maps_to_a_task_type() {
    let table = [
        ("created", "task.created"),
        ("updated", "task.updated"),
        ("completed", "task.completed"),
        ("deleted", "task.deleted"),
        ("priority_changed", "task.priority_changed"),
        ("due_date_set", "task.due_date_set"),
        ("tags_added", "task.tag_added"),
    ];
    for (action, kind) in table {
        let msg = SEED_003_TASK_EVENTS.replace(
            "created|updated|completed|deleted|priority_changed|due_date_set|tags_added",
            action,
        );
        let e = dec(&msg);
        assert_eq!(e.kind, kind, "{action}");
        assert_eq!(e.dialect, Dialect::TaskData);
        assert!(is_known_type(&e.kind));
    }
}

#[test]
fn seed_003_bare_action_without_task_data_is_still_task_data() {
    let e = dec(
        r#"{"event_type": "deleted", "task_id": 123, "user_id": "user123", "timestamp": "2026-01-03T10:00:00Z"}"#,
    );
    assert_eq!(e.kind, "task.deleted");
    assert_eq!(e.dialect, Dialect::TaskData);
    assert_eq!(e.task, None);
}

#[test]
fn seed_003_reminder_schema_with_placeholder_method_is_an_invalid_field() {
    let err = fail(SEED_003_REMINDER);
    assert_eq!(
        err,
        DecodeError::InvalidField {
            field: "notification_method".into(),
            value: "\"email|push|sms\"".into(),
            expected: "one of \"email\", \"push\", \"sms\"",
        }
    );
    assert_eq!(err.reason(), "invalid_field");
    assert!(err.to_string().contains("notification_method"), "{err}");
}

#[test]
fn seed_003_reminder_request_decodes_with_email_default() {
    let msg = SEED_003_REMINDER.replace("  \"notification_method\": \"email|push|sms\",\n", "");
    assert!(!msg.contains("notification_method"));
    let e = dec_with(
        &msg,
        &DecodeContext {
            topic: "reminders",
            kafka_timestamp_ms: None,
        },
    );
    assert_eq!(e.kind, "reminder.requested");
    assert!(is_known_type(&e.kind));
    assert_eq!(e.dialect, Dialect::Reminder);
    assert_eq!(e.task_id, some("123"));
    assert_eq!(e.user_id, some("user123"));
    assert_eq!(e.occurred_at, t("2026-01-03T10:00:00Z"), "created_at");
    assert!(e.event_id.starts_with("h:"));
    let r = e.reminder.unwrap();
    assert_eq!(r.method, "email");
    assert_eq!(r.remind_at, t("2026-01-10T08:30:00Z"));
    assert_eq!(r.due_at, Some(t("2026-01-10T09:00:00Z")));
    assert_eq!(r.title, some("Task title"));
    assert_eq!(e.task, None);
    assert!(e.attributes.is_empty(), "{:?}", e.attributes);
}

#[test]
fn seed_003_reminder_request_keeps_each_concrete_method() {
    for method in ["email", "push", "sms", "PUSH"] {
        let msg = SEED_003_REMINDER.replace("email|push|sms", method);
        let e = dec(&msg);
        assert_eq!(e.reminder.unwrap().method, method.to_ascii_lowercase());
    }
}

#[test]
fn seed_003_reminders_topic_hint_names_missing_remind_at() {
    let ctx = DecodeContext {
        topic: "reminders",
        kafka_timestamp_ms: None,
    };
    let msg = r#"{"task_id": 123, "user_id": "user123", "title": "Task title", "created_at": "2026-01-03T10:00:00Z"}"#;
    let err = decode(msg.as_bytes(), &ctx).unwrap_err();
    assert_eq!(
        err,
        DecodeError::MissingField {
            field: "remind_at".into()
        }
    );
    // Elsewhere the same shape is simply unrecognised.
    assert_eq!(fail(msg).reason(), "unrecognized_shape");
}

#[test]
fn seed_003_task_updates_schema_with_placeholder_operation_decodes_as_task_data() {
    let e = dec(SEED_003_TASK_UPDATES);
    assert_eq!(e.dialect, Dialect::TaskData);
    assert_eq!(e.kind, "task.created|updated|completed|deleted");
    assert!(!is_known_type(&e.kind));
    assert_eq!(e.task_id, some("123"));
    assert_eq!(e.user_id, some("user123"));
    assert_eq!(e.occurred_at, t("2026-01-03T10:00:00Z"));
    assert_eq!(e.task, None, "empty task_data");
}

#[test]
fn seed_003_task_updates_operation_completed_carries_the_full_task() {
    let msg = SEED_003_TASK_UPDATES
            .replace("created|updated|completed|deleted", "completed")
            .replace(
                "\"task_data\": {}",
                r#""task_data": {"id": 123, "title": "Task title", "completed": true, "priority": 2, "tags": ["work"]}"#,
            );
    let e = dec(&msg);
    assert_eq!(e.kind, "task.completed");
    let task = e.task.unwrap();
    assert_eq!(task.completed, Some(true));
    assert_eq!(task.priority, some("2"), "numeric priority as a string");
    assert!(e.attributes.is_empty(), "{:?}", e.attributes);
}

#[test]
fn local_times_keep_their_zone_through_decoding() {
    // A reminder written in local time on the spring-forward day.
    let e = dec(
        r#"{"task_id": 7, "user_id": "u1", "remind_at": "2026-03-29T02:30:00", "due_at": "2026-03-29T10:00:00", "tz": "Europe/Berlin", "created_at": "2026-03-01T10:00:00Z"}"#,
    );
    let r = e.reminder.clone().expect("a reminder");
    assert_eq!(
        r.remind_at,
        t("2026-03-29T01:30:00Z"),
        "02:30 in the gap is 03:30 CEST"
    );
    assert_eq!(r.due_at, Some(t("2026-03-29T08:00:00Z")), "10:00 CEST");
    let local = r.remind_local.expect("local reading kept");
    assert_eq!(local.local.to_string(), "2026-03-29 02:30:00");
    assert_eq!(local.timezone, some("Europe/Berlin"));
    assert_round_trips(&dec(&serde_json::to_string(&e).unwrap()));

    // An absolute time with a zone gains its local reading, unchanged.
    let e = dec(
        r#"{"event_type":"updated","task_id":1,"timestamp":"2026-01-03T10:00:00Z","task_data":{"due_date":"2026-07-01T07:00:00Z","timezone":"America/New_York"}}"#,
    );
    let task = e.task.unwrap();
    assert_eq!(task.due_at, Some(t("2026-07-01T07:00:00Z")));
    assert_eq!(
        task.due_local.unwrap().local.to_string(),
        "2026-07-01 03:00:00"
    );

    // A naive time and no zone anywhere: UTC, as before, local form kept.
    let e = dec(
        r#"{"event_type":"updated","task_id":1,"timestamp":"2026-01-03T10:00:00Z","task_data":{"due_date":"2026-07-01T07:00:00"}}"#,
    );
    let task = e.task.unwrap();
    assert_eq!(task.due_at, Some(t("2026-07-01T07:00:00Z")));
    assert_eq!(task.due_local.unwrap().timezone, None);
}

#[test]
fn an_unknown_zone_is_an_error_naming_field_and_value() {
    let e = fail(
        r#"{"event_type":"updated","task_id":1,"timestamp":"2026-01-03T10:00:00Z","task_data":{"due_date":"2026-07-01T07:00:00","timezone":"Mars/Olympus"}}"#,
    );
    let msg = e.to_string();
    assert!(
        msg.contains("timezone") && msg.contains("Mars/Olympus"),
        "{msg}"
    );
}

#[test]
fn seed_003_published_recurring_task_decodes_rule_timezone_and_naive_time() {
    let e = dec(SEED_003_PUBLISHED_RECURRING);
    assert_eq!(e.kind, "task.completed");
    assert_eq!(e.dialect, Dialect::TaskData);
    assert_eq!(e.task_id, some("42"));
    assert_eq!(e.occurred_at, t("2026-01-03T10:00:00.123456Z"));
    let task = e.task.unwrap();
    assert_eq!(
        task.due_at,
        Some(t("2026-01-03T08:00:00Z")),
        "a naive due date with a zone is that wall time in the zone"
    );
    let local = task.due_local.expect("the local reading is kept");
    assert_eq!(local.local.to_string(), "2026-01-03 09:00:00");
    assert_eq!(local.timezone, some("Europe/Berlin"));
    assert_eq!(task.tags, Some(vec![]));
    let rec = task.recurrence.unwrap();
    assert_eq!(rec.rule, "FREQ=WEEKLY;BYDAY=SA");
    assert_eq!(rec.timezone, some("Europe/Berlin"));
    // `description: null` is kept verbatim; repeats of the ids are dropped.
    assert_eq!(e.attributes.get("description"), Some(&Value::Null));
    assert!(!e.attributes.contains_key("id"));
    assert!(!e.attributes.contains_key("is_recurring"));
}

#[test]
fn seed_003_recurrence_variants_all_become_a_rule() {
    for (field, value) in [
        ("recurrence", json!("daily")),
        ("recurrence_rule", json!("0 9 * * MON")),
        ("rrule", json!("FREQ=DAILY")),
        ("recurrence", json!({"rule": "weekly", "timezone": "UTC"})),
    ] {
        let msg =
            json!({"event_type": "created", "task_id": 1, "timestamp": "2026-01-03T10:00:00Z",
                             "task_data": {"is_recurring": true, field: value}})
            .to_string();
        let rec = dec(&msg).task.unwrap().recurrence.unwrap();
        assert!(!rec.rule.is_empty(), "{field}");
    }
    // `is_recurring: false` wins over a stale pattern, which is kept verbatim.
    let e = dec(
        r#"{"event_type": "updated", "task_id": 1, "timestamp": "2026-01-03T10:00:00Z", "task_data": {"title": "x", "is_recurring": false, "recurring_pattern": "daily"}}"#,
    );
    assert_eq!(e.task.unwrap().recurrence, None);
    assert_eq!(e.attributes["recurring_pattern"], "daily");
}

#[test]
fn seed_003_recurring_pattern_id_without_a_rule_stays_in_attributes() {
    let e = dec(
        r#"{"event_type": "completed", "task_id": 42, "user_id": "user123", "timestamp": "2026-01-03T10:00:00Z", "task_data": {"completed": true, "is_recurring": true, "recurring_pattern_id": 7}}"#,
    );
    assert_eq!(e.task.unwrap().recurrence, None);
    assert_eq!(e.attributes["is_recurring"], true);
    assert_eq!(e.attributes["recurring_pattern_id"], 7);
}

#[test]
fn seed_003_audit_fields_go_to_context_and_previous_state_to_previous() {
    let e = dec(
        r#"{"event_type": "priority_changed", "task_id": 124, "user_id": "user123", "timestamp": "2026-01-03T11:00:00Z", "task_data": {"title": "T", "priority": "high"}, "previous_task_data": {"title": "T", "priority": "medium", "legacy_flag": 1}, "ip_address": "203.0.113.7", "user_agent": "cli/1"}"#,
    );
    assert_eq!(e.kind, "task.priority_changed");
    let ctx = e.context.unwrap();
    assert_eq!(ctx.ip_address, some("203.0.113.7"));
    assert_eq!(ctx.user_agent, some("cli/1"));
    assert_eq!(e.task.unwrap().priority, some("high"));
    assert_eq!(e.previous.unwrap().priority, some("medium"));
    assert_eq!(
        e.attributes["previous_task_data"],
        json!({"legacy_flag": 1})
    );
}

// ------------------------------------------------------------ seed 004

#[test]
fn seed_004_camel_user_created_decodes_subject_and_profile() {
    let e = dec(SEED_004_USER_CREATED);
    assert_eq!(e.kind, "user.created");
    assert_eq!(e.dialect, Dialect::CamelCase);
    assert_eq!(e.user_id, some("7"));
    assert_eq!(e.occurred_at, t("2025-08-25T22:30:57.123Z"));
    let user = e.user.unwrap();
    assert_eq!(user.email, some("user@example.com"));
    assert_eq!(user.username, some("newuser"));
    assert!(e.event_id.starts_with("h:"));
}

#[test]
fn seed_004_camel_task_updated_decodes_actor_assignee_and_team() {
    let e = dec(SEED_004_TASK_UPDATED);
    assert_eq!(e.kind, "task.updated");
    assert_eq!(e.dialect, Dialect::CamelCase);
    assert_eq!(e.task_id, some("1"));
    assert_eq!(e.user_id, some("1"), "actorId is the actor");
    assert_eq!(e.occurred_at, t("2025-08-25T22:41:54.574Z"));
    let task = e.task.unwrap();
    assert_eq!(task.title, some("Updated Task Title"));
    assert_eq!(task.completed, Some(false));
    assert_eq!(task.assignee_id, some("2"));
    assert_eq!(e.attributes["teamId"], 1);
    assert_eq!(e.attributes["creatorId"], 1);
    assert_eq!(e.attributes.len(), 2, "{:?}", e.attributes);
}

#[test]
fn seed_004_camel_task_completed_decodes_partial_payload() {
    let e = dec(SEED_004_TASK_COMPLETED);
    assert_eq!(e.kind, "task.completed");
    assert_eq!(e.task_id, some("1"));
    assert_eq!(e.occurred_at, t("2025-08-25T22:50:15.123Z"));
    let task = e.task.unwrap();
    assert_eq!(task.completed, Some(true));
    assert_eq!(task.assignee_id, some("2"));
    assert_eq!(task.title, None);
}

#[test]
fn seed_004_go_time_now_offset_and_null_assignee_decode() {
    let e = dec(
        r#"{"eventType":"task.updated","taskId":1,"teamId":1,"actorId":3,"creatorId":1,"assigneeId":null,"timestamp":"2025-08-25T22:41:54.574123456+02:00","payload":{"title":"Unassigned"}}"#,
    );
    assert_eq!(e.occurred_at, t("2025-08-25T20:41:54.574123456Z"));
    assert_eq!(e.user_id, some("3"));
    assert_eq!(e.task.unwrap().assignee_id, None);
    assert_eq!(
        e.attributes.get("assigneeId"),
        Some(&Value::Null),
        "kept verbatim"
    );
}

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
    let err =
        fail(r#"{"specversion":"1.0","id":"x","type":"task.created","data_base64":"not base64!"}"#);
    assert!(
        matches!(&err, DecodeError::InvalidField { field, .. } if field == "data_base64"),
        "{err}"
    );
    let err = fail(r#"{"specversion":"1.0","id":"x","type":"task.created","data":"{not json"}"#);
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

// ------------------------------------------------------------ times

#[test]
fn naive_iso_timestamps_are_read_as_utc() {
    for (ts, expected) in [
        ("2026-02-08T10:30:00.123456", "2026-02-08T10:30:00.123456Z"),
        ("2026-02-08T10:30:00", "2026-02-08T10:30:00Z"),
        ("2026-02-08 10:30:00", "2026-02-08T10:30:00Z"),
        ("2026-02-08 10:30:00.5", "2026-02-08T10:30:00.5Z"),
        ("2026-02-08T10:30", "2026-02-08T10:30:00Z"),
    ] {
        let msg = SEED_001_CREATED.replace(
            "\"timestamp\": \"2026-02-08T10:30:00Z\"",
            &format!("\"timestamp\": \"{ts}\""),
        );
        assert_eq!(dec(&msg).occurred_at, t(expected), "{ts}");
    }
}

#[test]
fn offsets_are_converted_to_utc() {
    for (ts, expected) in [
        ("2026-02-08T12:30:00+02:00", "2026-02-08T10:30:00Z"),
        ("2026-02-08T12:30:00+0200", "2026-02-08T10:30:00Z"),
        ("2026-02-08 05:30:00-05:00", "2026-02-08T10:30:00Z"),
        ("2026-02-08t10:30:00z", "2026-02-08T10:30:00Z"),
    ] {
        let msg = SEED_001_CREATED.replace(
            "\"timestamp\": \"2026-02-08T10:30:00Z\"",
            &format!("\"timestamp\": \"{ts}\""),
        );
        assert_eq!(dec(&msg).occurred_at, t(expected), "{ts}");
    }
}

#[test]
fn epoch_seconds_and_milliseconds_are_both_accepted() {
    for (ts, expected) in [
        ("1770546600", "2026-02-08T10:30:00Z"),
        ("1770546600123", "2026-02-08T10:30:00.123Z"),
        ("1770546600.5", "2026-02-08T10:30:00.5Z"),
        ("\"1770546600\"", "2026-02-08T10:30:00Z"),
        ("0", "1970-01-01T00:00:00Z"),
    ] {
        let msg = SEED_001_CREATED.replace(
            "\"timestamp\": \"2026-02-08T10:30:00Z\"",
            &format!("\"timestamp\": {ts}"),
        );
        assert_eq!(dec(&msg).occurred_at, t(expected), "{ts}");
    }
    let err = fail(&SEED_001_CREATED.replace(
        "\"timestamp\": \"2026-02-08T10:30:00Z\"",
        "\"timestamp\": 1e300",
    ));
    assert!(
        matches!(&err, DecodeError::InvalidField { field, .. } if field == "timestamp"),
        "{err}"
    );
}

#[test]
fn date_only_due_dates_are_midnight_utc() {
    let e = dec(
        r#"{"event_type": "due_date_set", "task_id": 1, "timestamp": "2026-01-03T10:00:00Z", "task_data": {"due_date": "2026-01-10"}}"#,
    );
    assert_eq!(e.kind, "task.due_date_set");
    assert_eq!(e.task.unwrap().due_at, Some(t("2026-01-10T00:00:00Z")));
}

#[test]
fn kafka_timestamp_is_used_when_the_message_has_none() {
    let ctx = DecodeContext {
        topic: "task-events",
        kafka_timestamp_ms: Some(1_767_000_000_123),
    };
    let e = dec_with(
        SEED_002_SPM
            .replace(r#""timestamp": "2025-10-01T08:00:00Z", "#, "")
            .as_str(),
        &ctx,
    );
    assert_eq!(
        e.occurred_at,
        DateTime::from_timestamp_millis(1_767_000_000_123).unwrap()
    );
    // A timestamp in the message wins over Kafka's.
    assert_eq!(
        dec_with(SEED_002_SPM, &ctx).occurred_at,
        t("2025-10-01T08:00:00Z")
    );
}

#[test]
fn missing_timestamp_without_a_kafka_timestamp_is_missing_field() {
    let err = fail(&SEED_002_SPM.replace(r#""timestamp": "2025-10-01T08:00:00Z", "#, ""));
    assert_eq!(
        err,
        DecodeError::MissingField {
            field: "timestamp".into()
        }
    );
    assert_eq!(err.to_string(), r#"missing field "timestamp""#);
}

#[test]
fn unparseable_timestamp_names_the_field_path_and_value() {
    let err = fail(
        r#"{"event_id": "e", "event_type": "task.created", "timestamp": "2026-02-08T10:30:00Z", "data": {"task_id": 1, "due_date": "tomorrow-ish"}}"#,
    );
    assert_eq!(
        err.to_string(),
        r#"field "data.due_date" has value "tomorrow-ish": expected an RFC 3339 timestamp"#
    );
    let err =
        fail(r#"{"event_type": "task.created", "timestamp": "soon", "data": {"task_id": 1}}"#);
    assert_eq!(
        err,
        DecodeError::InvalidField {
            field: "timestamp".into(),
            value: "\"soon\"".into(),
            expected: "an RFC 3339 timestamp",
        }
    );
}

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

// ------------------------------------------------------------ kinds

#[test]
fn snake_types_map_to_dotted_by_longest_entity_prefix() {
    for (raw, kind) in [
        ("task_template_created", "task_template.created"),
        ("task_status_changed", "task.status_changed"),
        ("task_due_date_set", "task.due_date_set"),
        ("task_tag_added", "task.tag_added"),
        ("comment_added", "comment.added"),
        ("deadline_approaching", "deadline.approaching"),
        ("Task_Created", "task.created"),
        ("TaskUpdated", "task.updated"),
        ("user.Registered", "user.created"),
        ("task.tags_added", "task.tag_added"),
    ] {
        assert_eq!(normalize_kind(raw, None), kind, "{raw}");
    }
    assert_eq!(normalize_kind("tag_added", Some("task")), "task.tag_added");
    assert_eq!(normalize_kind("tags_added", Some("task")), "task.tag_added");
    assert_eq!(normalize_kind("user_created", Some("task")), "user.created");
}

#[test]
fn unknown_snake_type_decodes_with_a_best_effort_kind_and_is_not_known() {
    let e = dec(&standard("foo_bar"));
    assert_eq!(e.kind, "foo.bar");
    assert!(!is_known_type(&e.kind));
    assert_eq!(dec(&standard("heartbeat")).kind, "heartbeat");
    let e = dec(r#"{"eventType": "com.example.thing", "timestamp": 1}"#);
    assert_eq!(e.kind, "com.example.thing");
    assert!(!is_known_type(&e.kind));
}

#[test]
fn known_types_are_sorted_unique_and_complete() {
    assert!(
        KNOWN_TYPES.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    for kind in [
        "task.created",
        "task.updated",
        "task.completed",
        "task.deleted",
        "task.status_changed",
        "task.priority_changed",
        "task.assigned",
        "task.due_date_set",
        "task.archived",
        "task.tag_added",
        "task.tag_removed",
        "task.reopened",
        "comment.added",
        "comment.edited",
        "comment.deleted",
        "user.created",
        "user.updated",
        "user.deleted",
        "team.created",
        "team.updated",
        "team.deleted",
        "tag.created",
        "tag.updated",
        "tag.deleted",
        "task_template.created",
        "task_template.updated",
        "task_template.deleted",
        "project.created",
        "project.updated",
        "project.deleted",
        "project.collaborator_added",
        "project.collaborator_removed",
        "schedule.created",
        "schedule.updated",
        "schedule.deleted",
        "deadline.approaching",
        "deadline.overdue",
        "reminder.requested",
        "notification.sent",
        "notification.delivered",
        "notification.failed",
        "system.error",
        "system.maintenance",
        "system.backup_completed",
        "analytics.dashboard_viewed",
        "analytics.task_distribution_viewed",
        "analytics.report_generated",
        "analytics.report_downloaded",
        "analytics.query",
        "analytics.user_stats_accessed",
        "analytics.team_performance_accessed",
        "analytics.error_occurred",
    ] {
        assert!(is_known_type(kind), "{kind}");
    }
    assert!(!is_known_type("task"));
    assert!(!is_known_type("Task.Created"));
}

// ------------------------------------------------------------ canonical

#[test]
fn canonical_output_round_trips_for_every_seed() {
    for seed in DECODABLE_SEEDS {
        let e = dec(seed);
        let bytes = serde_json::to_vec(&e).unwrap();
        let back = decode(&bytes, &TASK_EVENTS).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.dialect, e.dialect, "dialect preserved as written");
    }
}

#[test]
fn canonical_message_keeps_its_written_dialect_and_fields() {
    let msg = r#"{"event_id":"ts-1","type":"task.completed","occurred_at":"2026-02-08T12:00:00Z","task_id":"1","user_id":"u","task":{"completed":true,"recurrence":{"rule":"daily","timezone":"UTC"}},"reminder":{"remind_at":"2026-02-09T08:00:00Z","method":"push"},"context":{"trace_parent":"00-a-b-01"},"dialect":"canonical","cloudevents":true,"schema_version":"2","attributes":{"k":[1,2]}}"#;
    let e = dec(msg);
    assert_eq!(e.dialect, Dialect::Canonical);
    assert_eq!(e.event_id, "ts-1");
    assert!(e.cloudevents);
    assert_eq!(e.task.unwrap().recurrence.unwrap().rule, "daily");
    assert_eq!(e.reminder.unwrap().method, "push");
    assert_eq!(e.context.unwrap().trace_parent, some("00-a-b-01"));
    assert_eq!(e.attributes["k"], json!([1, 2]));
}

#[test]
fn canonical_with_a_bad_field_names_it() {
    let err = fail(
        r#"{"event_id":"x","type":"task.created","dialect":"xml","occurred_at":"2026-02-08T12:00:00Z","task_id":"1"}"#,
    );
    assert!(
        matches!(&err, DecodeError::InvalidField { field, .. } if field == "dialect"),
        "{err}"
    );
    let err = fail(
        r#"{"event_id":"x","type":"task.created","dialect":"envelope","occurred_at":"yesterday","task_id":"1"}"#,
    );
    assert!(
        matches!(&err, DecodeError::InvalidField { field, .. } if field == "occurred_at"),
        "{err}"
    );
    let err = fail(
        r#"{"event_id":"x","type":"task.created","dialect":"envelope","occurred_at":1,"task_id":"1","task":{"due_at":"?"}}"#,
    );
    assert!(
        matches!(&err, DecodeError::InvalidField { field, .. } if field == "task.due_at"),
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
