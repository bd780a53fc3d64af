//! The envelope, task-data, standard and camel-case dialects: one event type
//! key (`event_type`, `eventType`, `operation`), ids and a time at the top,
//! and the entity's fields either in a payload object or flat beside them.

use super::fields::keys;
use std::borrow::Cow;

use super::error::DecodeError;
use super::fields::{
    conv_text, conv_time, fill, fill_id, take_object, Keys, ACTOR_KEYS, ASSIGNEE_KEYS,
    CREATED_KEYS, PREVIOUS_KEYS, PROJECT_ID_KEYS, SUBJECT_KEYS, TASK_ID_KEYS, TIME_KEYS,
    VERSION_KEYS,
};
use super::json::{Node, Obj};
use super::kinds::Entity;
use super::parts::{take_changes, take_context, take_profile, take_snapshot};
use super::time::peek_time;
use super::Draft;
use crate::event::model::{Dialect, TaskSnapshot};

use super::error::Loc;

/// The shared decoder of the envelope, task-data, standard and camel-case
/// dialects: they differ only in key names and in where the payload lives.
///
/// The payload is the first object among `payload_keys`; when there is none,
/// the message is *flat* and its remaining top-level fields are the payload
/// (then a top-level `id` names the entity, not the event).
pub(super) fn decode_fields<'a>(
    mut top: Obj<'a>,
    kind: String,
    dialect: Dialect,
    payload_keys: &Keys,
) -> Result<Draft<'a>, DecodeError> {
    let entity = Entity::of(&kind);
    let mut d = Draft::new(kind, dialect);
    let actor_keys = if entity == Entity::User {
        SUBJECT_KEYS
    } else {
        ACTOR_KEYS
    };

    let payload = take_object(&mut top, "", payload_keys, true)?;
    let flat = payload.is_none();
    fill_id(&mut d.event_id, &mut top, "", keys!["event_id", "eventId"])?;
    if !flat {
        fill_id(&mut d.event_id, &mut top, "", keys!["id"])?;
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
    let mut meta_rest = Obj::new();
    if let Some((key, mut meta)) = take_object(&mut top, "", keys!["metadata"], true)? {
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
        None => ("", top, Obj::new()),
    };
    fill_id(&mut d.task_id, &mut body, parent, TASK_ID_KEYS)?;
    fill_id(&mut d.user_id, &mut body, parent, actor_keys)?;
    match entity {
        Entity::Task => {
            fill_id(&mut d.task_id, &mut body, parent, keys!["id"])?;
            fill_id(&mut d.user_id, &mut body, parent, keys!["created_by_uid"])?;
            let mut snapshot = take_snapshot(&mut body, parent)?;
            if snapshot.assignee_id.is_none() {
                snapshot.assignee_id = top_assignee;
            }
            if d.project_id.is_none() {
                d.project_id.clone_from(&snapshot.project_id);
            }
            if snapshot != TaskSnapshot::default() {
                d.task = Some(Box::new(snapshot));
            }
            if previous.is_none() {
                previous = take_object(&mut body, parent, PREVIOUS_KEYS, false)?
                    .map(|(k, m)| (Cow::Owned(Loc { parent, key: k }.to_string()), m));
            }
        }
        Entity::User => {
            fill_id(&mut d.user_id, &mut body, parent, keys!["id"])?;
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
            d.previous = Some(Box::new(snapshot));
        }
        if !prev.is_empty() {
            // Keep what the snapshot has no field for, under its last key.
            let key = path.rsplit('.').next().unwrap_or_default();
            if !body.contains_key(key) {
                body.insert(Cow::Owned(key.to_owned()), Node::Obj(prev));
            }
        }
    }

    d.attributes = body;
    d.attributes.merge(meta_rest);
    d.attributes.merge(rest);
    Ok(d)
}

#[cfg(test)]
mod tests {
    use crate::event::decode::tests::*;

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
        let mut e = dec(SEED_000_STANDARD);
        assert_eq!((e.entity(), e.action()), ("task", "created"));
        e.kind = "heartbeat".into();
        assert_eq!((e.entity(), e.action()), ("heartbeat", ""));
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
}
