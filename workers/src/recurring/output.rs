//! The `task.created` event of a next occurrence, in the canonical shape.
//!
//! Its `event_id` and `task_id` are derived from the series id and the
//! occurrence number only, so whoever publishes occurrence n of a series
//! (a redelivered completion, a second replica during a rebalance, a restart
//! after a crash between publishing and recording it) publishes the same ids:
//! downstream sees a duplicate it can recognise, never a second task.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use pipelines::event::{Dialect, Recurrence, TaskSnapshot};
use pipelines::TaskEvent;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::directory::TaskRecord;
use super::occurrence::Planned;
use super::series::{
    ATTR_ANCHOR, ATTR_DUE_LOCAL, ATTR_DUE_TIMEZONE, ATTR_OCCURRENCE, ATTR_PREVIOUS, ATTR_SERIES,
    LOCAL_FORMAT,
};

fn digest(text: &str) -> String {
    let hash = Sha256::digest(text.as_bytes());
    hex::encode(&hash[..16])
}

/// The task id of occurrence `number` of `series` (32 hex digits).
pub fn occurrence_task_id(series: &str, number: u32) -> String {
    digest(&format!("recurring:{series}:{number}"))
}

/// The event id of the `task.created` of occurrence `number` of `series`.
pub fn occurrence_event_id(series: &str, number: u32) -> String {
    format!(
        "recurring-{}",
        digest(&format!("recurring-event:{series}:{number}"))
    )
}

/// Everything the event is made of.
pub struct NextOccurrence<'a> {
    /// The completion that causes it (actor, time).
    pub completion: &'a TaskEvent,
    /// The completed task as known (carried-over fields).
    pub task: &'a TaskRecord,
    pub series_id: &'a str,
    /// The rule as it will be carried (self-contained text).
    pub rule: &'a str,
    pub zone: Tz,
    pub planned: Planned,
}

impl NextOccurrence<'_> {
    /// The canonical `task.created` event. Its time is the completion's, so a
    /// republished duplicate is byte-for-byte the same event.
    pub fn to_event(&self) -> TaskEvent {
        let p = self.planned;
        let local_due = p.at.with_timezone(&self.zone);
        let mut attributes = Map::new();
        attributes.insert(ATTR_SERIES.into(), Value::String(self.series_id.into()));
        attributes.insert(ATTR_OCCURRENCE.into(), Value::from(p.number));
        attributes.insert(
            ATTR_ANCHOR.into(),
            Value::String(p.local.format(LOCAL_FORMAT).to_string()),
        );
        attributes.insert(
            ATTR_DUE_LOCAL.into(),
            Value::String(local_due.to_rfc3339_opts(SecondsFormat::Secs, false)),
        );
        attributes.insert(
            ATTR_DUE_TIMEZONE.into(),
            Value::String(self.zone.name().into()),
        );
        if let Some(previous) = &self.completion.task_id {
            attributes.insert(ATTR_PREVIOUS.into(), Value::String(previous.clone()));
        }
        if let Some(pattern) = &self.task.pattern_id {
            attributes.insert(
                "recurring_pattern_id".into(),
                Value::String(pattern.clone()),
            );
        }
        let occurred_at: DateTime<Utc> = self.completion.occurred_at;
        let t = self.task;
        TaskEvent {
            event_id: occurrence_event_id(self.series_id, p.number),
            kind: "task.created".into(),
            occurred_at,
            task_id: Some(occurrence_task_id(self.series_id, p.number)),
            user_id: self.completion.user_id.clone(),
            project_id: t.project_id.clone(),
            task: Some(Box::new(TaskSnapshot {
                title: t.title.clone(),
                description: t.description.clone(),
                status: Some("pending".into()),
                completed: Some(false),
                priority: t.priority.clone(),
                due_at: Some(p.at),
                due_local: Some(pipelines::event::LocalTime {
                    local: local_due.naive_local(),
                    timezone: Some(self.zone.name().to_string()),
                }),
                tags: t.tags.clone(),
                recurrence: Some(Recurrence {
                    rule: self.rule.to_string(),
                    timezone: Some(self.zone.name().to_string()),
                }),
                assignee_id: t.assignee_id.clone(),
                project_id: t.project_id.clone(),
                completed_at: None,
                created_at: Some(occurred_at),
            })),
            previous: None,
            changes: Default::default(),
            reminder: None,
            user: None,
            context: None,
            dialect: Dialect::Canonical,
            cloudevents: false,
            schema_version: None,
            attributes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::event::{decode, DecodeContext};

    #[test]
    fn ids_depend_on_series_and_number_only() {
        assert_eq!(occurrence_task_id("42", 2), occurrence_task_id("42", 2));
        assert_ne!(occurrence_task_id("42", 2), occurrence_task_id("42", 3));
        assert_ne!(occurrence_task_id("42", 2), occurrence_task_id("43", 2));
        assert_ne!(occurrence_event_id("42", 2), occurrence_task_id("42", 2));
        assert_eq!(occurrence_task_id("42", 2).len(), 32);
    }

    #[test]
    fn the_event_decodes_back_as_a_canonical_task_created() {
        let completion = decode(
            br#"{"event_id":"c1","event_type":"task.completed","timestamp":"2026-03-28T10:00:00Z","data":{"task_id":42,"user_id":"u1"}}"#,
            &DecodeContext {
                topic: "task-events",
                kafka_timestamp_ms: None,
            },
        )
        .unwrap();
        let record = TaskRecord {
            title: Some("Water plants".into()),
            tags: Some(vec!["home".into()]),
            priority: Some("low".into()),
            ..TaskRecord::default()
        };
        let zone: Tz = "Europe/Berlin".parse().unwrap();
        let local = chrono::NaiveDate::from_ymd_opt(2026, 3, 29)
            .unwrap()
            .and_hms_opt(9, 0, 0)
            .unwrap();
        let next = NextOccurrence {
            completion: &completion,
            task: &record,
            series_id: "42",
            rule: "FREQ=DAILY",
            zone,
            planned: Planned {
                number: 2,
                local,
                at: "2026-03-29T07:00:00Z".parse().unwrap(),
            },
        };
        let event = next.to_event();
        let bytes = serde_json::to_vec(&event).unwrap();
        let back = decode(
            &bytes,
            &DecodeContext {
                topic: "task-events",
                kafka_timestamp_ms: None,
            },
        )
        .unwrap();
        assert_eq!(back, event);
        assert_eq!(back.kind, "task.created");
        assert_eq!(back.dialect, Dialect::Canonical);
        assert_eq!(back.attributes[ATTR_DUE_LOCAL], "2026-03-29T09:00:00+02:00");
        assert_eq!(back.attributes[ATTR_OCCURRENCE], 2);
        assert_eq!(back.task.unwrap().title.as_deref(), Some("Water plants"));
    }
}
