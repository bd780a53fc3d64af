//! The announcement: a canonical `deadline.approaching` or
//! `deadline.overdue` with an id derived from (task, threshold, due time).
//!
//! Everything in it comes from the crossing and the task's record, and its
//! time is the crossing's nominal time (due time minus threshold), not the
//! time it was sent: announcing it again (a crash before the acknowledgement)
//! yields byte-for-byte the same event.

use chrono::{DateTime, SecondsFormat, Utc};
use pipelines::event::local_time::LocalTime;
use pipelines::event::{Dialect, TaskSnapshot};
use pipelines::{derive_event_id, TaskEvent};

use super::entry::StoredTask;
use super::threshold::OVERDUE;

/// `approaching` or `overdue`: the `kind` label of the metrics.
pub fn kind_of(threshold: &str) -> &'static str {
    if threshold == OVERDUE {
        "overdue"
    } else {
        "approaching"
    }
}

/// The event id of a crossing.
pub fn event_id(task: &str, threshold: &str, due_at: DateTime<Utc>) -> String {
    derive_event_id(&[task, threshold, &rfc3339(due_at)])
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The canonical event announcing `threshold` of `task`'s due time.
pub fn announcement(
    task_id: &str,
    threshold: &str,
    due_at: DateTime<Utc>,
    nominal: DateTime<Utc>,
    task: &StoredTask,
) -> TaskEvent {
    let kind = kind_of(threshold);
    let due_local = task.due_local.map(|local| LocalTime {
        local,
        timezone: task.due_zone.clone(),
    });
    let mut attributes = serde_json::Map::new();
    attributes.insert("kind".into(), kind.into());
    attributes.insert("threshold".into(), threshold.into());
    attributes.insert("due_at".into(), rfc3339(due_at).into());
    if let Some(owner) = &task.owner {
        attributes.insert("owner_id".into(), owner.clone().into());
    }
    if let Some(l) = &due_local {
        attributes.insert(
            "due_local".into(),
            l.local.format("%Y-%m-%dT%H:%M:%S").to_string().into(),
        );
        if let Some(z) = &l.timezone {
            attributes.insert("due_timezone".into(), z.clone().into());
        }
    }
    TaskEvent {
        event_id: event_id(task_id, threshold, due_at),
        kind: format!("deadline.{kind}"),
        occurred_at: nominal,
        task_id: Some(task_id.to_string()),
        user_id: task.owner.clone(),
        project_id: task.project.clone(),
        task: Some(Box::new(TaskSnapshot {
            title: task.title.clone(),
            due_at: Some(due_at),
            due_local,
            assignee_id: task.assignee.clone(),
            project_id: task.project.clone(),
            ..TaskSnapshot::default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::event::{decode, DecodeContext};

    #[test]
    fn announcements_decode_as_canonical_deadline_events_with_stable_ids() {
        let due: DateTime<Utc> = "2026-11-30T08:00:00Z".parse().unwrap();
        let task = StoredTask {
            title: Some("Ship it".into()),
            owner: Some("alice".into()),
            assignee: Some("bob".into()),
            project: Some("p1".into()),
            due_ms: Some(due.timestamp_millis()),
            due_local: Some("2026-11-30T09:00:00".parse().unwrap()),
            due_zone: Some("Europe/Berlin".into()),
            open: true,
            ..StoredTask::default()
        };
        let nominal = due - chrono::Duration::hours(1);
        let e = announcement("7", "1h", due, nominal, &task);
        let bytes = serde_json::to_vec(&e).unwrap();
        let back = decode(
            &bytes,
            &DecodeContext {
                topic: "schedule-events",
                kafka_timestamp_ms: None,
            },
        )
        .unwrap();
        assert_eq!(back.kind, "deadline.approaching");
        assert_eq!(back.dialect, Dialect::Canonical);
        assert_eq!(
            back.event_id,
            derive_event_id(&["7", "1h", "2026-11-30T08:00:00Z"])
        );
        assert_eq!(back.occurred_at, nominal);
        let t = back.task.unwrap();
        assert_eq!(t.title.as_deref(), Some("Ship it"));
        assert_eq!(t.assignee_id.as_deref(), Some("bob"));
        assert_eq!(t.due_at, Some(due));
        assert_eq!(
            t.due_local.unwrap().timezone.as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(back.attributes["threshold"], "1h");
        assert_eq!(back.attributes["owner_id"], "alice");
        let o = announcement("7", OVERDUE, due, due, &task);
        assert_eq!(o.kind, "deadline.overdue");
        assert_ne!(o.event_id, e.event_id);
        assert_eq!(
            serde_json::to_vec(&announcement("7", "1h", due, nominal, &task)).unwrap(),
            bytes,
            "the same crossing, the same bytes"
        );
    }
}
