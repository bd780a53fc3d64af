//! One audit record: who did what to which task, when, and what changed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// One field's change, old and new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub old: serde_json::Value,
    pub new: serde_json::Value,
}

/// Where the event was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSource {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The producer dialect (`envelope`, `task_data`, `standard`, `camel_case`,
    /// `reminder`, `canonical`), prefixed `cloudevents/` when wrapped.
    pub dialect: String,
}

/// The audit trail's unit. Append-only: never updated after it is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub event_id: String,
    /// Canonical dotted type, e.g. `task.updated`.
    pub event_type: String,
    /// The action part of the type (`updated`), what compliance reports count.
    pub operation: String,
    /// The user who acted, if the event says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// For updates: the fields that changed, old and new (listed by the message,
    /// or computed from its previous snapshot).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, Change>,
    /// The task snapshot the event carried, if any (JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    pub source: RecordSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// The record as a store writes it: `received_at` = `now` (the pipeline
/// clock's time of the write, whole microseconds) and `occurred_at` cut to
/// microseconds, as PostgreSQL keeps them, so the hash covers exactly what is
/// stored. Borrowed when the record already is so (the worker builds records
/// that way), copied otherwise.
pub fn as_stored(r: &AuditRecord, now: DateTime<Utc>) -> Cow<'_, AuditRecord> {
    let now = now.trunc_subsecs(6);
    if r.received_at == now && r.occurred_at.nanosecond().is_multiple_of(1000) {
        Cow::Borrowed(r)
    } else {
        let mut r = r.clone();
        r.occurred_at = r.occurred_at.trunc_subsecs(6);
        r.received_at = now;
        Cow::Owned(r)
    }
}
