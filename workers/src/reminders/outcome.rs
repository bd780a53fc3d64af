//! What happened to a reminder, told to the rest of the system:
//! `notification.sent`, `notification.failed` and `notification.missed` on
//! `notification-events`, keyed by task id.
//!
//! The event id is derived from the reminder id and the outcome, so the
//! event published again after a crash (the sent mark is read back and
//! republished) is recognisably the same event.

use pipelines::event::{Dialect, TaskEvent};
use pipelines::{derive_event_id, OutputEvent};
use serde_json::{json, Map, Value};

use super::schedule::FiredRecord;

/// The canonical outcome event of `record`, for `topic`.
pub fn outcome_event(topic: &str, record: &FiredRecord) -> OutputEvent {
    let mut attributes = Map::new();
    attributes.insert("reminder_id".into(), json!(record.reminder_id));
    attributes.insert("channel".into(), json!(record.channel.as_str()));
    attributes.insert("scheduled_at".into(), json!(record.scheduled_at));
    attributes.insert("actual_at".into(), json!(record.at));
    attributes.insert(
        "lateness_ms".into(),
        json!((record.at - record.scheduled_at).num_milliseconds()),
    );
    if let Some(r) = &record.reason {
        attributes.insert("reason".into(), Value::String(r.clone()));
    }
    if let Some(m) = &record.message_id {
        attributes.insert("message_id".into(), Value::String(m.clone()));
    }
    let event = TaskEvent {
        event_id: derive_event_id(&["notification", &record.reminder_id, &record.outcome]),
        kind: format!("notification.{}", record.outcome),
        occurred_at: record.at,
        task_id: Some(record.task_id.clone()),
        user_id: Some(record.user_id.clone()),
        project_id: None,
        task: None,
        previous: None,
        changes: Default::default(),
        reminder: None,
        user: None,
        context: None,
        dialect: Dialect::Canonical,
        cloudevents: false,
        schema_version: None,
        attributes,
    };
    OutputEvent::new(topic, record.task_id.clone(), event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reminders::notification::Channel;
    use chrono::{TimeZone, Utc};

    #[test]
    fn the_same_outcome_of_the_same_reminder_has_the_same_id() {
        let at = Utc.with_ymd_and_hms(2026, 6, 10, 9, 0, 0).unwrap();
        let record = FiredRecord {
            reminder_id: "r1".into(),
            task_id: "t1".into(),
            user_id: "u1".into(),
            channel: Channel::Email,
            outcome: "sent".into(),
            at: at + chrono::TimeDelta::milliseconds(40),
            scheduled_at: at,
            reason: None,
            message_id: Some("<m@x>".into()),
            published: false,
        };
        let a = outcome_event("notification-events", &record);
        let b = outcome_event("notification-events", &record);
        assert_eq!(a.event.event_id, b.event.event_id);
        assert_eq!(a.event.kind, "notification.sent");
        assert_eq!(a.key, "t1");
        assert_eq!(a.event.attributes["lateness_ms"], 40);
        let failed = FiredRecord {
            outcome: "failed".into(),
            ..record
        };
        assert_ne!(
            outcome_event("notification-events", &failed).event.event_id,
            a.event.event_id
        );
    }

    /// Every outcome the worker publishes (`worker.rs`) is a type the other
    /// workers handle: the audit worker skips an unknown type, so it never
    /// reaches the trail (`notification.missed` once did not).
    #[test]
    fn every_outcome_is_a_known_event_type() {
        let at = Utc.with_ymd_and_hms(2026, 6, 10, 9, 0, 0).unwrap();
        for outcome in ["sent", "failed", "missed"] {
            let record = FiredRecord {
                reminder_id: "r1".into(),
                task_id: "t1".into(),
                user_id: "u1".into(),
                channel: Channel::Email,
                outcome: outcome.into(),
                at,
                scheduled_at: at,
                reason: None,
                message_id: None,
                published: false,
            };
            let kind = outcome_event("notification-events", &record).event.kind;
            assert!(pipelines::event::is_known_type(&kind), "{kind}");
        }
    }
}
