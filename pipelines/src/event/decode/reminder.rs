//! Reminder requests on the `reminders` topic: `remind_at` and no event type.

use super::error::DecodeError;
use super::fields::{
    conv_text, conv_time, fill, fill_id, CREATED_KEYS, PROJECT_ID_KEYS, SUBJECT_KEYS, TASK_ID_KEYS,
    TIME_KEYS, VERSION_KEYS,
};
use super::json::Obj;
use super::parts::{take_context, take_reminder};
use super::Draft;
use crate::event::model::Dialect;

/// Dialect 5: a reminder request (`remind_at`, no type).
pub(super) fn decode_reminder(mut obj: Obj<'_>) -> Result<Draft<'_>, DecodeError> {
    let mut d = Draft::new("reminder.requested".to_owned(), Dialect::Reminder);
    fill_id(
        &mut d.event_id,
        &mut obj,
        "",
        &["event_id", "eventId", "id"],
    )?;
    // The request is made when it is created; `created_at` is its time.
    fill(&mut d.occurred_at, &mut obj, "", CREATED_KEYS, conv_time)?;
    fill(&mut d.occurred_at, &mut obj, "", TIME_KEYS, conv_time)?;
    fill_id(&mut d.task_id, &mut obj, "", TASK_ID_KEYS)?;
    fill_id(&mut d.user_id, &mut obj, "", SUBJECT_KEYS)?;
    fill_id(&mut d.project_id, &mut obj, "", PROJECT_ID_KEYS)?;
    fill(&mut d.schema_version, &mut obj, "", VERSION_KEYS, conv_text)?;
    take_context(&mut obj, "", &mut d.context)?;
    d.reminder = Some(take_reminder(&mut obj, "")?);
    d.attributes = obj;
    Ok(d)
}
