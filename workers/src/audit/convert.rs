//! Turning a canonical event into an audit record, including the update diff.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use pipelines::event::TaskSnapshot;
use pipelines::Inbound;

use super::record::{AuditRecord, Change, RecordSource};

/// Builds the audit record of one event, received (written) at `now`: the
/// pipeline clock's time, whole microseconds, so a store writes the record
/// as it is (see [`super::record::as_stored`]).
///
/// `changes`: the fields the message lists, when it lists them; otherwise, when
/// the message carries the task before and after, every field present in the
/// *after* snapshot whose value differs from *before*. Fields absent from the
/// after snapshot are not changes: producers send partial snapshots
/// (`{"completed": true}`), and absence means "not mentioned", not "cleared".
pub fn to_record(inbound: &Inbound, now: DateTime<Utc>) -> AuditRecord {
    let e = &inbound.event;
    let changes = if !e.changes.is_empty() {
        e.changes
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    Change {
                        old: c.old.clone(),
                        new: c.new.clone(),
                    },
                )
            })
            .collect()
    } else {
        match (&e.previous, &e.task) {
            (Some(before), Some(after)) => diff(before, after),
            _ => BTreeMap::new(),
        }
    };
    let dialect = if e.cloudevents {
        format!("cloudevents/{}", e.dialect.as_str())
    } else {
        e.dialect.as_str().to_string()
    };
    AuditRecord {
        event_id: e.event_id.clone(),
        event_type: e.kind.clone(),
        operation: e.action().to_string(),
        actor_id: e.user_id.clone(),
        task_id: e.task_id.clone(),
        project_id: e
            .project_id
            .clone()
            .or_else(|| e.task.as_ref().and_then(|t| t.project_id.clone())),
        occurred_at: e.occurred_at.trunc_subsecs(6),
        received_at: now.trunc_subsecs(6),
        changes,
        details: e.task.as_ref().and_then(|t| serde_json::to_value(t).ok()),
        source: RecordSource {
            topic: inbound.source.topic.to_string(),
            partition: inbound.source.partition,
            offset: inbound.source.offset,
            dialect,
        },
        ip_address: e.context.as_ref().and_then(|c| c.ip_address.clone()),
        user_agent: e.context.as_ref().and_then(|c| c.user_agent.clone()),
    }
}

/// Field-by-field difference of two snapshots (see [`to_record`]).
pub fn diff(before: &TaskSnapshot, after: &TaskSnapshot) -> BTreeMap<String, Change> {
    let to_map = |s: &TaskSnapshot| match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let before = to_map(before);
    let after = to_map(after);
    after
        .into_iter()
        .filter_map(|(k, new)| {
            let old = before.get(&k).cloned().unwrap_or(serde_json::Value::Null);
            (old != new).then_some((k, Change { old, new }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_only_changed_fields_of_the_new_snapshot() {
        let before = TaskSnapshot {
            title: Some("a".into()),
            priority: Some("low".into()),
            completed: Some(false),
            ..Default::default()
        };
        let after = TaskSnapshot {
            title: Some("a".into()),
            priority: Some("high".into()),
            ..Default::default()
        };
        let d = diff(&before, &after);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d["priority"].old, "low");
        assert_eq!(d["priority"].new, "high");
    }

    #[test]
    fn field_new_in_the_snapshot_changes_from_null() {
        let after = TaskSnapshot {
            due_at: Some("2026-01-10T09:00:00Z".parse().unwrap()),
            ..Default::default()
        };
        let d = diff(&TaskSnapshot::default(), &after);
        assert_eq!(d["due_at"].old, serde_json::Value::Null);
        assert_eq!(d["due_at"].new, "2026-01-10T09:00:00Z");
    }
}
