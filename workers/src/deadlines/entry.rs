//! What the index keeps per task (a small Redis hash), and what a task
//! event says about it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use pipelines::event::local_time::LocalTime;
use pipelines::TaskEvent;
use serde::{Deserialize, Serialize};

/// What a task event means for the index.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Not about an open task's deadline.
    Ignore,
    /// The task is done with (completed, deleted, archived): nothing more is
    /// announced for it.
    Remove,
    /// The task is open; these fields are new (absent ones are unchanged).
    Upsert(Fields),
}

/// The fields an event carries; `None` = not said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    pub title: Option<String>,
    pub owner: Option<String>,
    pub assignee: Option<String>,
    pub project: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub due_local: Option<LocalTime>,
}

/// Statuses that close a task, whatever the event's type says.
const CLOSED: &[&str] = &[
    "completed",
    "complete",
    "done",
    "archived",
    "deleted",
    "closed",
];

/// Whether `e` can change the index at all: [`change_of`] is
/// [`Change::Ignore`] exactly when this is false. Cheap (copies nothing), for
/// deciding what to claim before reading the event.
pub fn touches_index(e: &TaskEvent) -> bool {
    e.entity() == "task" && (ends_task(e) || e.task.is_some())
}

fn ends_task(e: &TaskEvent) -> bool {
    matches!(e.action(), "completed" | "deleted" | "archived")
}

/// Reads a canonical event.
pub fn change_of(e: &TaskEvent) -> Change {
    if !touches_index(e) {
        return Change::Ignore;
    }
    if ends_task(e) {
        return Change::Remove;
    }
    let Some(t) = &e.task else {
        return Change::Ignore;
    };
    let closed_status = t
        .status
        .as_deref()
        .is_some_and(|s| CLOSED.contains(&s.trim().to_ascii_lowercase().as_str()));
    if t.completed == Some(true) || closed_status {
        return Change::Remove;
    }
    Change::Upsert(Fields {
        title: t.title.clone(),
        // The actor of a creation is the task's owner; later actors are not.
        owner: (e.action() == "created")
            .then(|| e.user_id.clone())
            .flatten(),
        assignee: t.assignee_id.clone(),
        project: t.project_id.clone().or_else(|| e.project_id.clone()),
        due_at: t.due_at,
        due_local: t.due_local.clone(),
    })
}

/// A task as the index holds it (`deadlines:task:<id>`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredTask {
    pub title: Option<String>,
    pub owner: Option<String>,
    pub assignee: Option<String>,
    pub project: Option<String>,
    pub due_ms: Option<i64>,
    /// Local wall time of the due time as the producer wrote it.
    pub due_local: Option<NaiveDateTime>,
    pub due_zone: Option<String>,
    /// `occurred_at` (ms) of the last event applied: an older one is stale.
    pub updated_ms: i64,
    /// The pending-crossing set its crossings are in.
    pub crossings_key: Option<String>,
    /// Open (indexed) or closed (kept a while so a reopen with the same due
    /// time does not announce again what was announced).
    pub open: bool,
    /// `sent:<threshold>:<due_ms>` of every crossing announced.
    pub sent: BTreeSet<String>,
}

/// The hash field that marks a crossing announced.
pub fn sent_field(threshold: &str, due_ms: i64) -> String {
    format!("sent:{threshold}:{due_ms}")
}

/// The record's fields, packed into one hash field ([`RECORD_FIELD`]): one
/// field costs Redis about a third of what eight did (`HSET`, measured with
/// `INFO commandstats` while indexing).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Packed<'a> {
    #[serde(rename = "t", default, borrow, skip_serializing_if = "Option::is_none")]
    title: Option<Cow<'a, str>>,
    #[serde(rename = "o", default, borrow, skip_serializing_if = "Option::is_none")]
    owner: Option<Cow<'a, str>>,
    #[serde(rename = "a", default, borrow, skip_serializing_if = "Option::is_none")]
    assignee: Option<Cow<'a, str>>,
    #[serde(rename = "p", default, borrow, skip_serializing_if = "Option::is_none")]
    project: Option<Cow<'a, str>>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    due_ms: Option<i64>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    due_local: Option<NaiveDateTime>,
    #[serde(rename = "z", default, borrow, skip_serializing_if = "Option::is_none")]
    due_zone: Option<Cow<'a, str>>,
    #[serde(rename = "u", default)]
    updated_ms: i64,
    #[serde(rename = "c", default, borrow, skip_serializing_if = "Option::is_none")]
    crossings_key: Option<Cow<'a, str>>,
    #[serde(rename = "x", default)]
    open: bool,
}

/// The hash field holding the packed record; the `sent:*` marks are fields
/// of their own (an acknowledgement sets one without reading the record).
pub const RECORD_FIELD: &str = "r";

impl StoredTask {
    /// Reads a record: the packed field, or (written before it existed) one
    /// field per value.
    pub fn from_hash(h: &BTreeMap<String, Vec<u8>>) -> Option<StoredTask> {
        if h.is_empty() {
            return None;
        }
        let sent = h
            .keys()
            .filter(|k| k.starts_with("sent:"))
            .cloned()
            .collect();
        if let Some(p) = h
            .get(RECORD_FIELD)
            .and_then(|v| serde_json::from_slice::<Packed<'_>>(v).ok())
        {
            let own = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned).filter(|v| !v.is_empty());
            return Some(StoredTask {
                title: own(p.title),
                owner: own(p.owner),
                assignee: own(p.assignee),
                project: own(p.project),
                due_ms: p.due_ms,
                due_local: p.due_local,
                due_zone: own(p.due_zone),
                updated_ms: p.updated_ms,
                crossings_key: own(p.crossings_key),
                open: p.open,
                sent,
            });
        }
        let s = |k: &str| {
            h.get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .filter(|v| !v.is_empty())
        };
        Some(StoredTask {
            title: s("title"),
            owner: s("owner"),
            assignee: s("assignee"),
            project: s("project"),
            due_ms: s("due_ms").and_then(|v| v.parse().ok()),
            due_local: s("due_local").and_then(|v| v.parse().ok()),
            due_zone: s("due_zone"),
            updated_ms: s("updated_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
            crossings_key: s("crossings"),
            open: s("open").as_deref() == Some("1"),
            sent,
        })
    }

    /// Every field, for a full rewrite of the hash: the packed record and
    /// the `sent:*` marks.
    pub fn to_fields(&self) -> Vec<(String, Vec<u8>)> {
        fn b(v: &Option<String>) -> Option<Cow<'_, str>> {
            v.as_deref().map(Cow::Borrowed)
        }
        let packed = Packed {
            title: b(&self.title),
            owner: b(&self.owner),
            assignee: b(&self.assignee),
            project: b(&self.project),
            due_ms: self.due_ms,
            due_local: self.due_local,
            due_zone: b(&self.due_zone),
            updated_ms: self.updated_ms,
            crossings_key: b(&self.crossings_key),
            open: self.open,
        };
        let mut out = Vec::with_capacity(1 + self.sent.len());
        out.push((
            RECORD_FIELD.to_string(),
            serde_json::to_vec(&packed).unwrap_or_default(),
        ));
        for s in &self.sent {
            out.push((s.clone(), b"1".to_vec()));
        }
        out
    }

    /// This record with `f`'s fields over it. A new due time without a local
    /// reading drops the old reading (it described the old due time).
    pub fn with(mut self, f: &Fields) -> StoredTask {
        fn over(old: &mut Option<String>, new: &Option<String>) {
            if new.is_some() {
                old.clone_from(new);
            }
        }
        over(&mut self.title, &f.title);
        over(&mut self.owner, &f.owner);
        over(&mut self.assignee, &f.assignee);
        over(&mut self.project, &f.project);
        if let Some(due) = f.due_at {
            let due_ms = due.timestamp_millis();
            if self.due_ms != Some(due_ms) || f.due_local.is_some() {
                self.due_local = f.due_local.as_ref().map(|l| l.local);
                self.due_zone = f.due_local.as_ref().and_then(|l| l.timezone.clone());
            }
            self.due_ms = Some(due_ms);
        }
        self
    }

    pub fn was_sent(&self, threshold: &str, due_ms: i64) -> bool {
        self.sent.contains(&sent_field(threshold, due_ms))
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
    fn closing_events_remove_and_open_ones_upsert_in_every_dialect() {
        let created = dec(
            r#"{"event_id":"c1","event_type":"task.created","timestamp":"2026-11-26T08:00:00Z","data":{"task_id":7,"user_id":"alice","title":"Ship it","due_date":"2026-11-30T09:00:00","timezone":"Europe/Berlin","assignee_id":"bob","project_id":"p1"}}"#,
        );
        let Change::Upsert(f) = change_of(&created) else {
            panic!("created upserts")
        };
        assert_eq!(f.owner.as_deref(), Some("alice"));
        assert_eq!(f.title.as_deref(), Some("Ship it"));
        assert_eq!(
            f.due_at,
            Some("2026-11-30T08:00:00Z".parse().unwrap()),
            "09:00 in Berlin"
        );
        assert_eq!(
            f.due_local.as_ref().and_then(|l| l.timezone.as_deref()),
            Some("Europe/Berlin")
        );
        assert!(touches_index(&created));
        for closing in [
            r#"{"event_type":"completed","task_id":7,"user_id":"u","timestamp":"2026-11-26T08:00:00Z","task_data":{"completed":true}}"#,
            r#"{"eventType":"task.deleted","taskId":7,"actorId":1,"timestamp":"2026-11-26T08:00:00Z","payload":{}}"#,
            r#"{"event_type":"task_status_changed","user_id":1,"timestamp":"2026-11-26T08:00:00Z","data":{"task_id":7,"status":"done"}}"#,
        ] {
            assert_eq!(change_of(&dec(closing)), Change::Remove, "{closing}");
            assert!(touches_index(&dec(closing)), "{closing}");
        }
        let user = dec(
            r#"{"event_type":"user_updated","user_id":"u9","timestamp":"2026-11-26T08:00:00Z","data":{"timezone":"UTC"}}"#,
        );
        assert_eq!(change_of(&user), Change::Ignore);
        assert!(!touches_index(&user));
    }

    #[test]
    fn stored_task_round_trips_and_merges_only_what_an_event_says() {
        let t = StoredTask {
            title: Some("a".into()),
            owner: Some("o".into()),
            due_ms: Some(1_000),
            due_local: Some("2026-11-30T09:00:00".parse().unwrap()),
            due_zone: Some("Europe/Berlin".into()),
            updated_ms: 5,
            crossings_key: Some("k".into()),
            open: true,
            sent: [sent_field("3d", 1_000)].into(),
            ..StoredTask::default()
        };
        let h: BTreeMap<String, Vec<u8>> = t.to_fields().into_iter().collect();
        assert_eq!(h.len(), 2, "the packed record and one sent mark: {h:?}");
        assert_eq!(StoredTask::from_hash(&h), Some(t.clone()));
        // A record written one field per value (before the packed field)
        // still reads the same.
        let legacy: BTreeMap<String, Vec<u8>> = [
            ("title", "a"),
            ("owner", "o"),
            ("due_ms", "1000"),
            ("due_local", "2026-11-30T09:00:00"),
            ("due_zone", "Europe/Berlin"),
            ("updated_ms", "5"),
            ("crossings", "k"),
            ("open", "1"),
            ("sent:3d:1000", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(StoredTask::from_hash(&legacy), Some(t.clone()));
        assert!(t.was_sent("3d", 1_000) && !t.was_sent("3d", 2_000));
        let merged = t.clone().with(&Fields {
            title: Some("b".into()),
            due_at: DateTime::from_timestamp_millis(2_000),
            ..Fields::default()
        });
        assert_eq!(merged.title.as_deref(), Some("b"));
        assert_eq!(merged.owner.as_deref(), Some("o"));
        assert_eq!(merged.due_ms, Some(2_000));
        assert_eq!(
            merged.due_local, None,
            "the old local reading described the old due time"
        );
    }
}
