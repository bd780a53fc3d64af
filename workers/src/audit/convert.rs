//! Turning a canonical event into an audit record, including the update diff.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use pipelines::event::{Dialect, TaskSnapshot};
use pipelines::Inbound;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::record::{serialize_time, AuditRecord, Change, RawJson, RecordSource};

/// Calls `$each!(name, kind)` for every field of [`TaskSnapshot`] (`time`
/// for a `DateTime<Utc>`, `value` for the rest), in the order of
/// their names: the order of a `serde_json::Value` object's keys, which is
/// how records have always written snapshots (the hash chain covers those
/// bytes). A field added to the snapshot must be added here:
/// `a_snapshot_is_written_as_its_value_tree_writes_it` fails until it is.
macro_rules! snapshot_fields_sorted {
    ($each:ident) => {
        $each!(assignee_id, value);
        $each!(completed, value);
        $each!(completed_at, time);
        $each!(created_at, time);
        $each!(description, value);
        $each!(due_at, time);
        $each!(due_local, value);
        $each!(priority, value);
        $each!(project_id, value);
        $each!(recurrence, value);
        $each!(status, value);
        $each!(tags, value);
        $each!(title, value);
    };
}

/// A snapshot as the JSON object `serde_json::to_value(snapshot)` writes,
/// byte for byte (keys sorted, absent fields left out), without building
/// the value tree.
struct SortedSnapshot<'a>(&'a TaskSnapshot);

impl Serialize for SortedSnapshot<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut map = s.serialize_map(None)?;
        macro_rules! field {
            ($f:ident, value) => {
                if let Some(v) = &t.$f {
                    map.serialize_entry(stringify!($f), v)?;
                }
            };
            ($f:ident, time) => {
                if let Some(v) = &t.$f {
                    map.serialize_entry(stringify!($f), &Time(v))?;
                }
            };
        }
        snapshot_fields_sorted!(field);
        map.end()
    }
}

/// A time as chrono writes it, by [`serialize_time`] (without `fmt`).
struct Time<'a>(&'a DateTime<Utc>);

impl Serialize for Time<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_time(self.0, s)
    }
}

/// The record's `details`: the snapshot's JSON text.
fn details_of(t: &TaskSnapshot) -> Option<RawJson> {
    RawJson::of(&SortedSnapshot(t)).ok()
}

/// Builds the audit record of one event, received (written) at `now`: the
/// pipeline clock's time, whole microseconds, so a store writes the record
/// as it is (see [`super::record::as_stored`]).
///
/// `changes`: the fields the message lists, when it lists them; otherwise, when
/// the message carries the task before and after, every field present in the
/// *after* snapshot whose value differs from *before*. Fields absent from the
/// after snapshot are not changes: producers send partial snapshots
/// (`{"completed": true}`), and absence means "not mentioned", not "cleared".
pub fn to_record(inbound: &Inbound, now: DateTime<Utc>) -> AuditRecord<'_> {
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
    let dialect = Cow::Borrowed(dialect_name(e.dialect, e.cloudevents));
    AuditRecord {
        event_id: Cow::Borrowed(&e.event_id),
        event_type: Cow::Borrowed(&e.kind),
        operation: Cow::Borrowed(e.action()),
        actor_id: text(&e.user_id),
        task_id: text(&e.task_id),
        project_id: text(&e.project_id)
            .or_else(|| e.task.as_ref().and_then(|t| text(&t.project_id))),
        occurred_at: e.occurred_at.trunc_subsecs(6),
        received_at: now.trunc_subsecs(6),
        changes,
        details: e.task.as_deref().and_then(details_of),
        source: RecordSource {
            topic: Cow::Borrowed(&inbound.source.topic),
            partition: inbound.source.partition,
            offset: inbound.source.offset,
            dialect,
        },
        ip_address: e.context.as_ref().and_then(|c| text(&c.ip_address)),
        user_agent: e.context.as_ref().and_then(|c| text(&c.user_agent)),
    }
}

/// The record's `dialect`: the message's, `cloudevents/`-prefixed when it
/// came wrapped in a CloudEvent (a constant: no text made per record).
fn dialect_name(dialect: Dialect, cloudevent: bool) -> &'static str {
    match (cloudevent, dialect) {
        (false, d) => d.as_str(),
        (true, Dialect::Envelope) => "cloudevents/envelope",
        (true, Dialect::TaskData) => "cloudevents/task_data",
        (true, Dialect::Standard) => "cloudevents/standard",
        (true, Dialect::CamelCase) => "cloudevents/camel_case",
        (true, Dialect::Reminder) => "cloudevents/reminder",
        (true, Dialect::Canonical) => "cloudevents/canonical",
    }
}

/// An optional text of the event, borrowed.
fn text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

/// Field-by-field difference of two snapshots (see [`to_record`]): the
/// fields present in `after` whose value differs from `before`'s (absent
/// there: `null`), compared as their JSON values are. Only changed fields
/// are turned into JSON values.
pub fn diff(before: &TaskSnapshot, after: &TaskSnapshot) -> BTreeMap<String, Change> {
    fn json<T: Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
    }
    let mut out = BTreeMap::new();
    macro_rules! field {
        ($f:ident, $kind:ident) => {
            if let Some(new) = &after.$f {
                if before.$f.as_ref() != Some(new) {
                    let old = before.$f.as_ref().map_or(serde_json::Value::Null, json);
                    let new = json(new);
                    // Values unequal as types but written alike are no change.
                    if old != new {
                        out.insert(stringify!($f).to_string(), Change { old, new });
                    }
                }
            }
        };
    }
    snapshot_fields_sorted!(field);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloudevents_dialect_is_named_with_its_prefix() {
        for d in Dialect::ALL {
            assert_eq!(dialect_name(d, false), d.as_str());
            assert_eq!(dialect_name(d, true), format!("cloudevents/{}", d.as_str()));
        }
    }

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

    /// Snapshots with every combination of fields over a run of values:
    /// escapes, non-ASCII text, sub-second times, local times with and
    /// without a zone, empty and full lists.
    fn snapshots() -> Vec<TaskSnapshot> {
        use pipelines::event::{LocalTime, Recurrence};
        let texts = [
            "",
            "a",
            "quote \" and \\ back",
            "tab\tnew\nline",
            "ünï ✓ \u{1}",
        ];
        let times: Vec<DateTime<Utc>> = vec![
            "2026-01-10T09:00:00Z".parse().unwrap(),
            "2026-03-29T01:30:00.123Z".parse().unwrap(),
            "1999-12-31T23:59:59.123456789Z".parse().unwrap(),
        ];
        let mut out = Vec::new();
        let mut x: u64 = 7;
        for _ in 0..4000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let bit = |n: u32| (x >> (20 + n)) & 1 == 1;
            let text = |n: u32| texts[((x >> (n * 3)) % texts.len() as u64) as usize].to_string();
            let time = |n: u32| times[((x >> (n * 2)) % times.len() as u64) as usize];
            out.push(TaskSnapshot {
                title: bit(0).then(|| text(0)),
                description: bit(1).then(|| text(1)),
                status: bit(2).then(|| text(2)),
                completed: bit(3).then(|| bit(14)),
                priority: bit(4).then(|| text(4)),
                due_at: bit(5).then(|| time(5)),
                due_local: bit(6).then(|| LocalTime {
                    local: time(6).naive_utc(),
                    timezone: bit(15).then(|| "Europe/Berlin".to_string()),
                }),
                tags: bit(7).then(|| (0..(x >> 40) % 3).map(|i| text(i as u32)).collect()),
                recurrence: bit(8).then(|| Recurrence {
                    rule: text(8),
                    timezone: bit(16).then(|| "America/New_York".to_string()),
                }),
                assignee_id: bit(9).then(|| text(9)),
                project_id: bit(10).then(|| text(10)),
                completed_at: bit(11).then(|| time(11)),
                created_at: bit(12).then(|| time(12)),
            });
        }
        out
    }

    /// The hash chain covers the bytes a snapshot is written as: they must
    /// be those of its value tree, as records were always written.
    #[test]
    fn a_snapshot_is_written_as_its_value_tree_writes_it() {
        for t in snapshots() {
            let tree = serde_json::to_string(&serde_json::to_value(&t).unwrap()).unwrap();
            assert_eq!(details_of(&t).unwrap().get(), tree, "{t:?}");
        }
    }

    /// The typed diff is the diff of the two value trees.
    #[test]
    fn diff_is_the_difference_of_the_value_trees() {
        let tree_diff = |before: &TaskSnapshot, after: &TaskSnapshot| {
            let to_map = |s: &TaskSnapshot| match serde_json::to_value(s).unwrap() {
                serde_json::Value::Object(m) => m,
                _ => unreachable!(),
            };
            let before = to_map(before);
            to_map(after)
                .into_iter()
                .filter_map(|(k, new)| {
                    let old = before.get(&k).cloned().unwrap_or(serde_json::Value::Null);
                    (old != new).then_some((k, Change { old, new }))
                })
                .collect::<BTreeMap<_, _>>()
        };
        let all = snapshots();
        let mut changed = 0;
        for pair in all.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            let d = diff(before, after);
            assert_eq!(d, tree_diff(before, after), "{before:?} -> {after:?}");
            changed += d.len();
            assert!(diff(after, after).is_empty());
        }
        assert!(changed > 10_000, "the cases change fields: {changed}");
    }
}
