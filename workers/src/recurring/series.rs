//! What an event says about a recurring task and its series, read from the
//! canonical snapshot and, for what has no canonical home, from `attributes`.
//!
//! The decoder keeps a rule it recognises in `task.recurrence` (`rule`,
//! `timezone`); a pattern given only by id (`task_data.is_recurring` with a
//! `recurring_pattern_id`) and the extra fields of a simple pattern object
//! (`{"frequency": "weekly", "interval": 2}` decodes to rule `weekly` with
//! `{"interval": 2}` left under `attributes.recurrence`) stay in `attributes`.
//! Occurrences this worker publishes carry their series in `attributes` too
//! (the `ATTR_*` names), so a series continues from any of its tasks.

use chrono::NaiveDateTime;
use pipelines::TaskEvent;
use serde_json::Value;

use super::directory::TaskRecord;
use super::simple::SimplePattern;

/// The series id (the id of the task that started it).
pub const ATTR_SERIES: &str = "recurrence_series_id";
/// The occurrence's number in its series (the first task is 1).
pub const ATTR_OCCURRENCE: &str = "recurrence_occurrence";
/// The occurrence's nominal local time (`YYYY-MM-DDTHH:MM:SS`), which a DST
/// gap may have moved (`due_local` then differs).
pub const ATTR_ANCHOR: &str = "recurrence_anchor";
/// The due time in the task's zone, RFC 3339 with offset.
pub const ATTR_DUE_LOCAL: &str = "due_local";
/// The zone `due_local` is in.
pub const ATTR_DUE_TIMEZONE: &str = "due_timezone";
/// The completed task this occurrence follows.
pub const ATTR_PREVIOUS: &str = "recurrence_previous_task_id";
/// The pattern directory id, as the producers call it.
pub const PATTERN_ID_KEYS: &[&str] = &["recurring_pattern_id", "recurringPatternId", "pattern_id"];
/// Where the decoder leaves the rest of a recurrence object.
const RULE_OBJECT_KEYS: &[&str] = &[
    "recurrence",
    "recurring_pattern",
    "recurrence_rule",
    "rrule",
    "recurrence_pattern",
    "recurrencePattern",
    "recurrenceRule",
];

/// Local-time format of [`ATTR_ANCHOR`].
pub const LOCAL_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `is_recurring: false` (the decoder leaves it in attributes): the producer
/// says the task no longer repeats.
pub fn says_not_recurring(event: &TaskEvent) -> bool {
    ["is_recurring", "isRecurring"]
        .iter()
        .any(|k| event.attributes.get(*k) == Some(&Value::Bool(false)))
}

/// The rule text of the event, with a simple pattern's extra fields folded
/// back in (`weekly` + `{"interval": 2}` -> `{"frequency":"weekly","interval":2}`).
fn rule_of(event: &TaskEvent) -> Option<String> {
    let rule = event
        .task
        .as_ref()?
        .recurrence
        .as_ref()?
        .rule
        .trim()
        .to_string();
    if !SimplePattern::is_word(&rule) {
        return Some(rule);
    }
    let extra = RULE_OBJECT_KEYS
        .iter()
        .find_map(|k| event.attributes.get(*k).and_then(Value::as_object));
    match extra {
        Some(obj) => {
            let mut merged = obj.clone();
            merged.insert("frequency".into(), Value::String(rule));
            Some(Value::Object(merged).to_string())
        }
        None => Some(rule),
    }
}

/// Everything the event says about the task's recurrence and its carried-over
/// fields, as a record (fields it does not mention are `None`).
pub fn record_of(event: &TaskEvent) -> TaskRecord {
    let a = &event.attributes;
    let task = event.task.as_ref();
    TaskRecord {
        series_id: a.get(ATTR_SERIES).and_then(text),
        occurrence: a
            .get(ATTR_OCCURRENCE)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        anchor: a.get(ATTR_ANCHOR).and_then(text),
        rule: rule_of(event),
        timezone: task
            .and_then(|t| t.recurrence.as_ref())
            .and_then(|r| r.timezone.clone()),
        pattern_id: PATTERN_ID_KEYS
            .iter()
            .find_map(|k| a.get(*k).and_then(text)),
        due_at: task.and_then(|t| t.due_at),
        title: task.and_then(|t| t.title.clone()),
        description: task.and_then(|t| t.description.clone()),
        priority: task.and_then(|t| t.priority.clone()),
        tags: task.and_then(|t| t.tags.clone()),
        assignee_id: task.and_then(|t| t.assignee_id.clone()),
        project_id: task
            .and_then(|t| t.project_id.clone())
            .or_else(|| event.project_id.clone()),
    }
}

impl TaskRecord {
    /// Whether the record knows how the task repeats.
    pub fn is_recurring(&self) -> bool {
        self.rule.is_some() || self.pattern_id.is_some()
    }

    /// `self` (newer) with the gaps filled from `older`. A new rule replaces
    /// the old one together with its zone and pattern.
    pub fn over(mut self, older: TaskRecord) -> TaskRecord {
        if self.rule.is_none() && self.pattern_id.is_none() {
            self.rule = older.rule;
            self.pattern_id = older.pattern_id;
            self.timezone = self.timezone.or(older.timezone);
        }
        self.series_id = self.series_id.or(older.series_id);
        self.occurrence = self.occurrence.or(older.occurrence);
        self.anchor = self.anchor.or(older.anchor);
        self.due_at = self.due_at.or(older.due_at);
        self.title = self.title.or(older.title);
        self.description = self.description.or(older.description);
        self.priority = self.priority.or(older.priority);
        self.tags = self.tags.or(older.tags);
        self.assignee_id = self.assignee_id.or(older.assignee_id);
        self.project_id = self.project_id.or(older.project_id);
        self
    }

    pub fn anchor_local(&self) -> Option<NaiveDateTime> {
        self.anchor
            .as_deref()
            .and_then(|a| NaiveDateTime::parse_from_str(a, LOCAL_FORMAT).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::event::{decode, DecodeContext};

    fn dec(json: &str) -> TaskEvent {
        decode(
            json.as_bytes(),
            &DecodeContext {
                topic: "task-events",
                kafka_timestamp_ms: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn seed_completion_with_is_recurring_carries_rule_zone_and_fields() {
        let e = dec(
            r#"{"event_type": "completed", "task_id": 42, "user_id": "user123", "timestamp": "2026-01-03T10:00:00.123456", "task_data": {"id": 42, "user_id": "user123", "title": "Water plants", "description": null, "completed": true, "priority": "low", "due_date": "2026-01-03T09:00:00", "tags": [], "is_recurring": true, "recurring_pattern": "FREQ=WEEKLY;BYDAY=SA", "timezone": "Europe/Berlin"}}"#,
        );
        let r = record_of(&e);
        assert_eq!(r.rule.as_deref(), Some("FREQ=WEEKLY;BYDAY=SA"));
        assert_eq!(r.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(r.title.as_deref(), Some("Water plants"));
        assert_eq!(r.priority.as_deref(), Some("low"));
        assert!(r.is_recurring());
    }

    #[test]
    fn pattern_id_only_is_recurring_through_the_directory() {
        let e = dec(
            r#"{"event_type": "completed", "task_id": 42, "timestamp": "2026-01-03T10:00:00Z", "task_data": {"completed": true, "is_recurring": true, "recurring_pattern_id": 7}}"#,
        );
        let r = record_of(&e);
        assert_eq!(r.rule, None);
        assert_eq!(r.pattern_id.as_deref(), Some("7"));
        assert!(r.is_recurring());
    }

    #[test]
    fn simple_pattern_object_is_folded_back_into_one_rule() {
        let e = dec(
            r#"{"event_type": "created", "task_id": 1, "timestamp": "2026-01-03T10:00:00Z", "task_data": {"recurrence": {"frequency": "weekly", "interval": 2, "weekdays": ["mo"], "timezone": "Asia/Tokyo"}}}"#,
        );
        let r = record_of(&e);
        let rule: Value = serde_json::from_str(r.rule.as_deref().unwrap()).unwrap();
        assert_eq!(
            rule,
            serde_json::json!({"frequency": "weekly", "interval": 2, "weekdays": ["mo"]})
        );
        assert_eq!(r.timezone.as_deref(), Some("Asia/Tokyo"));
    }

    #[test]
    fn a_new_rule_replaces_the_remembered_one_and_fields_fill_gaps() {
        let old = TaskRecord {
            rule: Some("daily".into()),
            timezone: Some("UTC".into()),
            title: Some("Old".into()),
            series_id: Some("s".into()),
            ..TaskRecord::default()
        };
        let new = TaskRecord {
            rule: Some("weekly".into()),
            ..TaskRecord::default()
        };
        let m = new.over(old.clone());
        assert_eq!(m.rule.as_deref(), Some("weekly"));
        assert_eq!(m.timezone, None, "a new rule brings its own zone");
        assert_eq!(m.title.as_deref(), Some("Old"));
        assert_eq!(m.series_id.as_deref(), Some("s"));
        let m = TaskRecord::default().over(old);
        assert_eq!(m.rule.as_deref(), Some("daily"));
        assert_eq!(m.timezone.as_deref(), Some("UTC"));
    }

    #[test]
    fn is_recurring_false_is_noticed() {
        let e = dec(
            r#"{"event_type": "updated", "task_id": 1, "timestamp": "2026-01-03T10:00:00Z", "task_data": {"title": "x", "is_recurring": false, "recurring_pattern": "daily"}}"#,
        );
        assert!(says_not_recurring(&e));
        assert!(!record_of(&e).is_recurring());
    }
}
