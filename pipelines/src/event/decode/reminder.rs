//! Reminder requests on the `reminders` topic: `remind_at` and no event type.

use super::error::DecodeError;
use super::fields::keys;
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
        keys!["event_id", "eventId", "id"],
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

#[cfg(test)]
mod tests {
    use crate::event::decode::tests::*;

    #[test]
    fn seed_003_reminder_schema_with_placeholder_method_is_an_invalid_field() {
        let err = fail(SEED_003_REMINDER);
        assert_eq!(
            err,
            DecodeError::InvalidField {
                field: "notification_method".into(),
                value: "\"email|push|sms\"".into(),
                expected: "one of \"email\", \"push\", \"sms\", \"webhook\"",
            }
        );
        assert_eq!(err.reason(), "invalid_field");
        assert!(err.to_string().contains("notification_method"), "{err}");
    }

    #[test]
    fn seed_003_reminder_request_decodes_with_email_default() {
        let msg = SEED_003_REMINDER.replace("  \"notification_method\": \"email|push|sms\",\n", "");
        assert!(!msg.contains("notification_method"));
        let e = dec_with(
            &msg,
            &DecodeContext {
                topic: "reminders",
                kafka_timestamp_ms: None,
            },
        );
        assert_eq!(e.kind, "reminder.requested");
        assert!(is_known_type(&e.kind));
        assert_eq!(e.dialect, Dialect::Reminder);
        assert_eq!(e.task_id, some("123"));
        assert_eq!(e.user_id, some("user123"));
        assert_eq!(e.occurred_at, t("2026-01-03T10:00:00Z"), "created_at");
        assert!(e.event_id.starts_with("h:"));
        let r = e.reminder.unwrap();
        assert_eq!(r.method, "email");
        assert_eq!(r.remind_at, t("2026-01-10T08:30:00Z"));
        assert_eq!(r.due_at, Some(t("2026-01-10T09:00:00Z")));
        assert_eq!(r.title, some("Task title"));
        assert_eq!(e.task, None);
        assert!(e.attributes.is_empty(), "{:?}", e.attributes);
    }

    #[test]
    fn seed_003_reminder_request_keeps_each_concrete_method() {
        for method in ["email", "push", "sms", "webhook", "PUSH"] {
            let msg = SEED_003_REMINDER.replace("email|push|sms", method);
            let e = dec(&msg);
            assert_eq!(e.reminder.unwrap().method, method.to_ascii_lowercase());
        }
    }

    #[test]
    fn seed_003_reminders_topic_hint_names_missing_remind_at() {
        let ctx = DecodeContext {
            topic: "reminders",
            kafka_timestamp_ms: None,
        };
        let msg = r#"{"task_id": 123, "user_id": "user123", "title": "Task title", "created_at": "2026-01-03T10:00:00Z"}"#;
        let err = decode(msg.as_bytes(), &ctx).unwrap_err();
        assert_eq!(
            err,
            DecodeError::MissingField {
                field: "remind_at".into()
            }
        );
        // Elsewhere the same shape is simply unrecognised.
        assert_eq!(fail(msg).reason(), "unrecognized_shape");
    }
}
