//! The envelope, task-data, standard and camel-case dialects: one event type
//! key (`event_type`, `eventType`, `operation`), ids and a time at the top,
//! and the entity's fields either in a payload object or flat beside them.

use std::borrow::Cow;

use super::error::DecodeError;
use super::fields::{
    conv_text, conv_time, fill, fill_id, take_object, ACTOR_KEYS, ASSIGNEE_KEYS, CREATED_KEYS,
    PREVIOUS_KEYS, PROJECT_ID_KEYS, SUBJECT_KEYS, TASK_ID_KEYS, TIME_KEYS, VERSION_KEYS,
};
use super::json::{Node, Obj};
use super::kinds::Entity;
use super::parts::{take_changes, take_context, take_profile, take_snapshot};
use super::time::peek_time;
use super::Draft;
use crate::event::model::{Dialect, TaskSnapshot};

use super::error::Loc;

/// The shared decoder of the envelope, task-data, standard and camel-case
/// dialects: they differ only in key names and in where the payload lives.
///
/// The payload is the first object among `payload_keys`; when there is none,
/// the message is *flat* and its remaining top-level fields are the payload
/// (then a top-level `id` names the entity, not the event).
pub(super) fn decode_fields<'a>(
    mut top: Obj<'a>,
    kind: String,
    dialect: Dialect,
    payload_keys: &[&'static str],
) -> Result<Draft<'a>, DecodeError> {
    let entity = Entity::of(&kind);
    let mut d = Draft::new(kind, dialect);
    let actor_keys = if entity == Entity::User {
        SUBJECT_KEYS
    } else {
        ACTOR_KEYS
    };

    let payload = take_object(&mut top, "", payload_keys, true)?;
    let flat = payload.is_none();
    fill_id(&mut d.event_id, &mut top, "", &["event_id", "eventId"])?;
    if !flat {
        fill_id(&mut d.event_id, &mut top, "", &["id"])?;
    }
    fill(&mut d.occurred_at, &mut top, "", TIME_KEYS, conv_time)?;
    if d.occurred_at.is_none() {
        if flat {
            // The task's own `created_at` stays for the snapshot.
            d.occurred_at = peek_time(&top, CREATED_KEYS)?;
        } else {
            fill(&mut d.occurred_at, &mut top, "", CREATED_KEYS, conv_time)?;
        }
    }
    fill(&mut d.schema_version, &mut top, "", VERSION_KEYS, conv_text)?;
    fill_id(&mut d.user_id, &mut top, "", actor_keys)?;
    fill_id(&mut d.task_id, &mut top, "", TASK_ID_KEYS)?;
    fill_id(&mut d.project_id, &mut top, "", PROJECT_ID_KEYS)?;
    let mut top_assignee = None;
    if entity == Entity::Task {
        fill_id(&mut top_assignee, &mut top, "", ASSIGNEE_KEYS)?;
    }
    take_context(&mut top, "", &mut d.context)?;
    let mut meta_rest = Obj::new();
    if let Some((key, mut meta)) = take_object(&mut top, "", &["metadata"], true)? {
        fill(
            &mut d.schema_version,
            &mut meta,
            key,
            VERSION_KEYS,
            conv_text,
        )?;
        take_context(&mut meta, key, &mut d.context)?;
        meta_rest = meta;
    }
    let mut previous = None;
    if entity == Entity::Task {
        previous =
            take_object(&mut top, "", PREVIOUS_KEYS, false)?.map(|(k, m)| (Cow::Borrowed(k), m));
    }

    let (parent, mut body, rest) = match payload {
        Some((key, map)) => (key, map, top),
        None => ("", top, Obj::new()),
    };
    fill_id(&mut d.task_id, &mut body, parent, TASK_ID_KEYS)?;
    fill_id(&mut d.user_id, &mut body, parent, actor_keys)?;
    match entity {
        Entity::Task => {
            fill_id(&mut d.task_id, &mut body, parent, &["id"])?;
            fill_id(&mut d.user_id, &mut body, parent, &["created_by_uid"])?;
            let mut snapshot = take_snapshot(&mut body, parent)?;
            if snapshot.assignee_id.is_none() {
                snapshot.assignee_id = top_assignee;
            }
            if d.project_id.is_none() {
                d.project_id.clone_from(&snapshot.project_id);
            }
            if snapshot != TaskSnapshot::default() {
                d.task = Some(snapshot);
            }
            if previous.is_none() {
                previous = take_object(&mut body, parent, PREVIOUS_KEYS, false)?
                    .map(|(k, m)| (Cow::Owned(Loc { parent, key: k }.to_string()), m));
            }
        }
        Entity::User => {
            fill_id(&mut d.user_id, &mut body, parent, &["id"])?;
            fill_id(&mut d.project_id, &mut body, parent, PROJECT_ID_KEYS)?;
            d.user = take_profile(&mut body, parent)?;
        }
        Entity::Other => {
            fill_id(&mut d.project_id, &mut body, parent, PROJECT_ID_KEYS)?;
        }
    }
    d.changes = take_changes(&mut body, parent)?;
    take_context(&mut body, parent, &mut d.context)?;

    if let Some((path, mut prev)) = previous {
        let snapshot = take_snapshot(&mut prev, &path)?;
        if snapshot != TaskSnapshot::default() {
            d.previous = Some(snapshot);
        }
        if !prev.is_empty() {
            // Keep what the snapshot has no field for, under its last key.
            let key = path.rsplit('.').next().unwrap_or_default();
            if !body.contains_key(key) {
                body.insert(Cow::Owned(key.to_owned()), Node::Obj(prev));
            }
        }
    }

    d.attributes = body;
    d.attributes.merge(meta_rest);
    d.attributes.merge(rest);
    Ok(d)
}
