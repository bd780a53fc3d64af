//! The canonical event every worker receives, whatever dialect the producer spoke.
//!
//! Producers are other teams' services and do not agree on a format (see the
//! README's "Event contract"). The decoders in [`super::decode`] turn each dialect
//! into one [`TaskEvent`]; workers only ever see this type.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::local_time::LocalTime;

/// One decoded event, in the canonical shape.
///
/// Promises:
/// - `event_id` is the producer's id when the message carries one, otherwise a
///   stable hash of the message bytes, so a re-sent message gets the same id.
/// - `kind` is dotted and lower-case: `<entity>.<action>` (`task.completed`).
/// - `occurred_at` is UTC; naive timestamps are read as UTC, unless the
///   message names a zone (`timezone`/`tz`): then due and reminder times are
///   read in that zone and also kept as local wall time (`due_local`).
/// - ids are strings, whatever JSON type the producer used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The actor: the user who performed the action (or the subject of a user event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The task as the message describes it after the change. Boxed, as is
    /// `previous`: a snapshot is about 350 bytes, and an event is moved
    /// several times on its way (decoder, pipeline, worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Box<TaskSnapshot>>,
    /// The task before the change, when the message carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<TaskSnapshot>>,
    /// Field changes the message lists explicitly (`{"title": {"old": .., "new": ..}}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, FieldChange>,
    /// Set for `reminder.requested` events (the `reminders` topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<ReminderRequest>,
    /// Set for `user.*` events that describe the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserProfile>,
    /// Request context (`ip_address`, `user_agent`) when the producer sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<RequestContext>,
    /// Which dialect the message was written in.
    pub dialect: Dialect,
    /// True when the message came wrapped in a CloudEvents 1.0 envelope (as Dapr publishes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cloudevents: bool,
    /// The producer's schema version (`version`, `metadata.version`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    /// Fields of the message's payload that have no canonical home, kept verbatim
    /// (`duration_minutes`, `reason`, `team_id`, ...), so nothing the producer said is lost.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// A task's state as carried by a message. Every field is optional: producers
/// send partial snapshots (`{"completed": true}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    /// The due time as the producer wrote it, in local wall time, when it
    /// was local: with the message's zone (`timezone`/`tz`), or naive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_local: Option<LocalTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// How a task repeats, as the producer wrote it. The rule is kept as text
/// (`daily`, `0 9 * * MON`, `FREQ=WEEKLY;BYDAY=MO`); interpreting it is the
/// recurring worker's job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recurrence {
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// One field's change, as listed by the producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub old: serde_json::Value,
    pub new: serde_json::Value,
}

/// A request to remind a user about a task (the `reminders` topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReminderRequest {
    pub remind_at: DateTime<Utc>,
    /// `remind_at` in local wall time, when the producer wrote it so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_local: Option<LocalTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `email`, `push` or `sms`; `email` when the producer did not say.
    pub method: String,
}

/// What a user event says about the user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Where a request came from, for the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
}

/// The message formats taskstream accepts. See the README's "Event contract".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// `{"event_id", "event_type": "task.created", "timestamp", "version", "data": {..}}`.
    Envelope,
    /// `{"event_type": "created", "task_id", "user_id", "timestamp", "task_data", "previous_task_data"}`.
    TaskData,
    /// `{"event_type": "task_created", "user_id", "timestamp", "data": {..}, "metadata": {..}}`.
    Standard,
    /// `{"eventType": "task.updated", "taskId", "actorId", "timestamp", "payload": {..}}`.
    CamelCase,
    /// A reminder request on the `reminders` topic: `{"task_id", "user_id", "remind_at", ..}`.
    Reminder,
    /// Already canonical: the output of `taskstream decode` (and of our own producers).
    Canonical,
}

impl Dialect {
    /// Every dialect.
    pub const ALL: [Dialect; 6] = [
        Dialect::Envelope,
        Dialect::TaskData,
        Dialect::Standard,
        Dialect::CamelCase,
        Dialect::Reminder,
        Dialect::Canonical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Envelope => "envelope",
            Dialect::TaskData => "task_data",
            Dialect::Standard => "standard",
            Dialect::CamelCase => "camel_case",
            Dialect::Reminder => "reminder",
            Dialect::Canonical => "canonical",
        }
    }
}

impl TaskEvent {
    /// The entity part of the dotted type (`task` for `task.completed`).
    pub fn entity(&self) -> &str {
        self.dot().map_or(self.kind.as_str(), |at| &self.kind[..at])
    }

    /// The action part of the dotted type (`completed` for `task.completed`).
    pub fn action(&self) -> &str {
        self.dot().map_or("", |at| &self.kind[at + 1..])
    }

    /// Where the type's first `.` is: a byte loop, which for a type's dozen
    /// bytes costs less than `str::split_once`'s searcher.
    fn dot(&self) -> Option<usize> {
        self.kind.bytes().position(|b| b == b'.')
    }
}
