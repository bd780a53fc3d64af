//! taskstream's own output (`taskstream decode`, our own producers): the
//! canonical event read back as written.

use super::detect::event_type;
use super::error::{invalid, snippet, DecodeError, Loc};
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
    fill_id(&mut d.event_id, &mut obj, "", &["event_id"])?;
    fill(
        &mut d.occurred_at,
        &mut obj,
        "",
        &["occurred_at"],
        conv_time,
    )?;
    fill_id(&mut d.task_id, &mut obj, "", &["task_id"])?;
    fill_id(&mut d.user_id, &mut obj, "", &["user_id"])?;
    fill_id(&mut d.project_id, &mut obj, "", &["project_id"])?;
    if let Some((key, mut m)) = take_object(&mut obj, "", &["task"], true)? {
        let s = take_snapshot(&mut m, key)?;
        d.task = (s != TaskSnapshot::default()).then_some(s);
    }
    if let Some((key, mut m)) = take_object(&mut obj, "", &["previous"], true)? {
        let s = take_snapshot(&mut m, key)?;
        d.previous = (s != TaskSnapshot::default()).then_some(s);
    }
    d.changes = take_changes(&mut obj, "")?;
    if let Some((key, mut m)) = take_object(&mut obj, "", &["reminder"], true)? {
        d.reminder = Some(take_reminder(&mut m, key)?);
    }
    if let Some((key, mut m)) = take_object(&mut obj, "", &["user"], true)? {
        d.user = take_profile(&mut m, key)?;
    }
    if let Some((key, mut m)) = take_object(&mut obj, "", &["context"], true)? {
        take_context(&mut m, key, &mut d.context)?;
    }
    let mut cloudevents = None;
    fill(&mut cloudevents, &mut obj, "", &["cloudevents"], conv_flag)?;
    d.cloudevents = cloudevents.unwrap_or(false);
    fill(
        &mut d.schema_version,
        &mut obj,
        "",
        &["schema_version"],
        conv_text,
    )?;
    if let Some((_, m)) = take_object(&mut obj, "", &["attributes"], true)? {
        d.attributes = m;
    }
    d.attributes.merge(obj);
    Ok(d)
}

fn parse_dialect(s: &str) -> Option<Dialect> {
    [
        Dialect::Envelope,
        Dialect::TaskData,
        Dialect::Standard,
        Dialect::CamelCase,
        Dialect::Reminder,
        Dialect::Canonical,
    ]
    .into_iter()
    .find(|d| d.as_str() == s)
}
