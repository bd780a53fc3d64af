//! Event types: the producers' names (`task_created`, `TaskUpdated`,
//! `completed`, `task.tags_added`) in taskstream's dotted form, and the types
//! workers handle.

use std::borrow::Cow;

/// The event types workers handle. A message that decodes to any other type
/// is counted and skipped rather than dead-lettered, so a producer adding a
/// new type does not flood the dead-letter topic. Sorted (for binary search).
pub const KNOWN_TYPES: &[&str] = &[
    "analytics.dashboard_viewed",
    "analytics.error_occurred",
    "analytics.query",
    "analytics.report_downloaded",
    "analytics.report_generated",
    "analytics.task_distribution_viewed",
    "analytics.team_performance_accessed",
    "analytics.user_stats_accessed",
    "comment.added",
    "comment.deleted",
    "comment.edited",
    "deadline.approaching",
    "deadline.overdue",
    "notification.delivered",
    "notification.failed",
    "notification.missed",
    "notification.sent",
    "project.collaborator_added",
    "project.collaborator_removed",
    "project.created",
    "project.deleted",
    "project.updated",
    "reminder.requested",
    "schedule.created",
    "schedule.deleted",
    "schedule.updated",
    "system.backup_completed",
    "system.error",
    "system.maintenance",
    "tag.created",
    "tag.deleted",
    "tag.updated",
    "task.archived",
    "task.assigned",
    "task.completed",
    "task.created",
    "task.deleted",
    "task.due_date_set",
    "task.priority_changed",
    "task.reopened",
    "task.status_changed",
    "task.tag_added",
    "task.tag_removed",
    "task.updated",
    "task_template.created",
    "task_template.deleted",
    "task_template.updated",
    "team.created",
    "team.deleted",
    "team.updated",
    "user.created",
    "user.deleted",
    "user.updated",
];

/// Whether workers handle `kind`. Decoding an unknown type is not an error
/// (see [`KNOWN_TYPES`]); the pipeline asks this to decide between handling
/// and counting-and-skipping.
pub fn is_known_type(kind: &str) -> bool {
    KNOWN_TYPES.binary_search(&kind).is_ok()
}
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entity {
    Task,
    User,
    Other,
}

impl Entity {
    /// The entity of a dotted type: what comes before its first `.`.
    pub(super) fn of(kind: &str) -> Self {
        // `task` or `task.*` (no search for the dot: this runs per message).
        let is = |entity: &str| {
            kind.strip_prefix(entity)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        if is("task") {
            Entity::Task
        } else if is("user") {
            Entity::User
        } else {
            Entity::Other
        }
    }
}

/// The dotted, lower-case form of a producer's type. `bare_entity` is the
/// entity of the task-data dialect's bare actions (`completed`).
///
/// An unrecognised snake type still gets a best-effort dotted form (`foo_bar`
/// becomes `foo.bar`): the pipeline counts and skips unknown types, and the
/// metric is more useful with a stable name.
pub(super) fn normalize_kind(raw: &str, bare_entity: Option<&str>) -> String {
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
        return join("analytics", s);
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
        Some((a, b)) if !a.is_empty() && !b.is_empty() => join(a, b),
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
    join(entity, action)
}

/// `entity.action`, without the formatting machinery (this is on every message's path).
fn join(entity: &str, action: &str) -> String {
    let mut out = String::with_capacity(entity.len() + 1 + action.len());
    out.push_str(entity);
    out.push('.');
    out.push_str(action);
    out
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

pub(super) fn is_bare_action(s: &str) -> bool {
    let s = s.trim();
    BARE_ACTIONS.iter().any(|a| a.eq_ignore_ascii_case(s))
}

/// `entity.action` and nothing more: a usable CloudEvents `type`, unlike
/// reverse-DNS types such as `com.dapr.event.sent`.
pub(super) fn is_plain_dotted(t: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    matches!(t.split_once('.'), Some((a, b)) if part(a) && part(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode::tests::*;

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
            "notification.missed",
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
}
