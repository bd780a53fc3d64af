//! taskstream's own output (`taskstream decode`, our own producers): the
//! canonical event read back as written.

use super::detect::event_type;
use super::error::{invalid, snippet, DecodeError, Loc};
use super::fields::keys;
use super::fields::{conv_flag, conv_text, conv_time, fill, fill_id, take_object};
use super::json::{Node, Obj};
use super::kinds::normalize_kind;
use super::parts::{take_changes, take_context, take_profile, take_reminder, take_snapshot};
use super::Draft;
use crate::event::model::{Dialect, TaskSnapshot};

/// Dialect 7: taskstream's own output, so `taskstream decode` output and our
/// own producers' messages decode back to the same event.
pub(super) fn decode_canonical(mut obj: Obj<'_>) -> Result<Draft<'_>, DecodeError> {
    let raw = event_type(obj.take("type").unwrap_or(Node::Null), "type")?;
    let dialect = match obj.take("dialect") {
        Some(Node::Str(s)) => parse_dialect(&s).ok_or_else(|| DecodeError::InvalidField {
            field: "dialect".to_owned(),
            value: snippet(&s),
            expected: "one of envelope, task_data, standard, camel_case, reminder, canonical",
        })?,
        other => {
            return Err(invalid(
                Loc::top("dialect"),
                &other.unwrap_or(Node::Null),
                "a dialect name",
            ))
        }
    };
    let mut d = Draft::new(normalize_kind(&raw, None), dialect);
    fill_id(&mut d.event_id, &mut obj, "", keys!["event_id"])?;
    fill(
        &mut d.occurred_at,
        &mut obj,
        "",
        keys!["occurred_at"],
        conv_time,
    )?;
    fill_id(&mut d.task_id, &mut obj, "", keys!["task_id"])?;
    fill_id(&mut d.user_id, &mut obj, "", keys!["user_id"])?;
    fill_id(&mut d.project_id, &mut obj, "", keys!["project_id"])?;
    if let Some((key, mut m)) = take_object(&mut obj, "", keys!["task"], true)? {
        let s = take_snapshot(&mut m, key)?;
        d.task = (s != TaskSnapshot::default()).then(|| Box::new(s));
    }
    if let Some((key, mut m)) = take_object(&mut obj, "", keys!["previous"], true)? {
        let s = take_snapshot(&mut m, key)?;
        d.previous = (s != TaskSnapshot::default()).then(|| Box::new(s));
    }
    d.changes = take_changes(&mut obj, "")?;
    if let Some((key, mut m)) = take_object(&mut obj, "", keys!["reminder"], true)? {
        d.reminder = Some(take_reminder(&mut m, key)?);
    }
    if let Some((key, mut m)) = take_object(&mut obj, "", keys!["user"], true)? {
        d.user = take_profile(&mut m, key)?;
    }
    if let Some((key, mut m)) = take_object(&mut obj, "", keys!["context"], true)? {
        take_context(&mut m, key, &mut d.context)?;
    }
    let mut cloudevents = None;
    fill(
        &mut cloudevents,
        &mut obj,
        "",
        keys!["cloudevents"],
        conv_flag,
    )?;
    d.cloudevents = cloudevents.unwrap_or(false);
    fill(
        &mut d.schema_version,
        &mut obj,
        "",
        keys!["schema_version"],
        conv_text,
    )?;
    if let Some((_, m)) = take_object(&mut obj, "", keys!["attributes"], true)? {
        d.attributes = m;
    }
    d.attributes.merge(obj);
    Ok(d)
}

fn parse_dialect(s: &str) -> Option<Dialect> {
    Dialect::ALL.into_iter().find(|d| d.as_str() == s)
}

#[cfg(test)]
mod tests {
    use crate::event::decode::tests::*;

    // ------------------------------------------------------------ canonical

    #[test]
    fn canonical_output_round_trips_for_every_seed() {
        for seed in DECODABLE_SEEDS {
            let e = dec(seed);
            let bytes = serde_json::to_vec(&e).unwrap();
            let back = decode(&bytes, &TASK_EVENTS).unwrap();
            assert_eq!(back, e);
            assert_eq!(back.dialect, e.dialect, "dialect preserved as written");
        }
    }

    #[test]
    fn canonical_message_keeps_its_written_dialect_and_fields() {
        let msg = r#"{"event_id":"ts-1","type":"task.completed","occurred_at":"2026-02-08T12:00:00Z","task_id":"1","user_id":"u","task":{"completed":true,"recurrence":{"rule":"daily","timezone":"UTC"}},"reminder":{"remind_at":"2026-02-09T08:00:00Z","method":"push"},"context":{"trace_parent":"00-a-b-01"},"dialect":"canonical","cloudevents":true,"schema_version":"2","attributes":{"k":[1,2]}}"#;
        let e = dec(msg);
        assert_eq!(e.dialect, Dialect::Canonical);
        assert_eq!(e.event_id, "ts-1");
        assert!(e.cloudevents);
        assert_eq!(e.task.unwrap().recurrence.unwrap().rule, "daily");
        assert_eq!(e.reminder.unwrap().method, "push");
        assert_eq!(e.context.unwrap().trace_parent, some("00-a-b-01"));
        assert_eq!(e.attributes["k"], json!([1, 2]));
    }

    #[test]
    fn canonical_with_a_bad_field_names_it() {
        let err = fail(
            r#"{"event_id":"x","type":"task.created","dialect":"xml","occurred_at":"2026-02-08T12:00:00Z","task_id":"1"}"#,
        );
        assert!(
            matches!(&err, DecodeError::InvalidField { field, .. } if field == "dialect"),
            "{err}"
        );
        let err = fail(
            r#"{"event_id":"x","type":"task.created","dialect":"envelope","occurred_at":"yesterday","task_id":"1"}"#,
        );
        assert!(
            matches!(&err, DecodeError::InvalidField { field, .. } if field == "occurred_at"),
            "{err}"
        );
        let err = fail(
            r#"{"event_id":"x","type":"task.created","dialect":"envelope","occurred_at":1,"task_id":"1","task":{"due_at":"?"}}"#,
        );
        assert!(
            matches!(&err, DecodeError::InvalidField { field, .. } if field == "task.due_at"),
            "{err}"
        );
    }
}
