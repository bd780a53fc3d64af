//! The parts of an event that several dialects carry the same way: a task
//! snapshot, its recurrence, listed changes, a user profile, a reminder
//! request and the request context.

use super::fields::keys;
use std::borrow::Cow;
use std::collections::BTreeMap;

use super::error::{invalid, snippet, truncate_chars, DecodeError, Loc};
use super::fields::{
    conv_flag, conv_method, conv_tags, conv_text, conv_time, fill, fill_id, flag, Keys,
    ASSIGNEE_KEYS, CREATED_KEYS, SNAPSHOT_PROJECT_KEYS,
};
use super::json::{Node, Obj};
use super::time::{localise, peek_naive, peek_zone, take_local};
use crate::event::model::{
    FieldChange, Recurrence, ReminderRequest, RequestContext, TaskSnapshot, UserProfile,
};

const RULE_KEYS: &Keys = keys![
    "recurrence",
    "recurring_pattern",
    "recurrence_rule",
    "rrule",
    "recurrence_pattern",
    "recurrencePattern",
    "recurrenceRule",
];

pub(super) fn take_context(
    map: &mut Obj<'_>,
    parent: &str,
    ctx: &mut RequestContext,
) -> Result<(), DecodeError> {
    fill(
        &mut ctx.ip_address,
        map,
        parent,
        keys!["ip_address", "ipAddress"],
        conv_text,
    )?;
    fill(
        &mut ctx.user_agent,
        map,
        parent,
        keys!["user_agent", "userAgent"],
        conv_text,
    )?;
    fill(
        &mut ctx.trace_parent,
        map,
        parent,
        keys!["traceparent", "trace_parent"],
        conv_text,
    )
}

/// The task fields of a payload (`data`, `task_data`, `payload`, a previous
/// state), removed from it. `name` is a title and `pid` a project (SPM).
pub(super) fn take_snapshot(map: &mut Obj<'_>, parent: &str) -> Result<TaskSnapshot, DecodeError> {
    let mut s = TaskSnapshot::default();
    fill(&mut s.title, map, parent, keys!["title", "name"], conv_text)?;
    fill(
        &mut s.description,
        map,
        parent,
        keys!["description"],
        conv_text,
    )?;
    fill(&mut s.status, map, parent, keys!["status"], conv_text)?;
    fill(
        &mut s.completed,
        map,
        parent,
        keys!["completed", "is_completed", "isCompleted"],
        conv_flag,
    )?;
    fill(&mut s.priority, map, parent, keys!["priority"], conv_text)?;
    const DUE_KEYS: &Keys = keys!["due_at", "due_date", "dueDate", "dueAt"];
    let zone = peek_zone(map, parent)?;
    let naive = peek_naive(map, DUE_KEYS);
    fill(&mut s.due_at, map, parent, DUE_KEYS, conv_time)?;
    s.due_local = match take_local(map, parent, "due_local")? {
        Some(kept) => Some(kept),
        None => localise(&mut s.due_at, naive, &zone),
    };
    fill(&mut s.tags, map, parent, keys!["tags"], conv_tags)?;
    s.recurrence = take_recurrence(map, parent)?;
    fill_id(&mut s.assignee_id, map, parent, ASSIGNEE_KEYS)?;
    fill_id(&mut s.project_id, map, parent, SNAPSHOT_PROJECT_KEYS)?;
    fill(
        &mut s.completed_at,
        map,
        parent,
        keys!["completed_at", "completedAt"],
        conv_time,
    )?;
    fill(&mut s.created_at, map, parent, CREATED_KEYS, conv_time)?;
    Ok(s)
}

/// A recurrence rule, when the payload gives one: a string under one of
/// [`RULE_KEYS`], or an object with `rule`/`rrule`/`pattern`/`frequency`.
/// `is_recurring: false` wins over a stale rule; `is_recurring: true` with no
/// rule (only a `recurring_pattern_id`) leaves everything in `attributes`.
pub(super) fn take_recurrence(
    map: &mut Obj<'_>,
    parent: &str,
) -> Result<Option<Recurrence>, DecodeError> {
    const FLAG_KEYS: &Keys = keys!["is_recurring", "isRecurring"];
    if !FLAG_KEYS.maybe_in(map) && !RULE_KEYS.maybe_in(map) {
        return Ok(None);
    }
    let flag_key = FLAG_KEYS
        .names
        .iter()
        .copied()
        .find(|k| map.get(k).is_some_and(|v| !v.is_null()));
    if let Some(key) = flag_key {
        if let Some(v) = map.get(key) {
            if !flag(v, Loc { parent, key })? {
                return Ok(None);
            }
        }
    }
    let Some(key) = RULE_KEYS.names.iter().copied().find(|k| match map.get(k) {
        Some(Node::Str(s)) => {
            let s = s.trim();
            !s.is_empty() && !s.eq_ignore_ascii_case("none")
        }
        Some(Node::Null) | None => false,
        Some(_) => true,
    }) else {
        return Ok(None);
    };
    let loc = Loc { parent, key };
    let (rule, mut timezone) = match map.take(key) {
        Some(Node::Str(rule)) => (rule.into_owned(), None),
        Some(Node::Obj(mut o)) => {
            let mut rule = None;
            fill(
                &mut rule,
                &mut o,
                "",
                keys!["rule", "rrule", "pattern", "frequency"],
                conv_text,
            )
            .map_err(|e| e.within(&loc.to_string()))?;
            let Some(rule) = rule else {
                let err = invalid(loc, &Node::Obj(o), "a recurrence rule or {\"rule\": ..}");
                return Err(err);
            };
            let mut tz = None;
            fill(&mut tz, &mut o, "", keys!["timezone"], conv_text)
                .map_err(|e| e.within(&loc.to_string()))?;
            if !o.is_empty() {
                map.insert(Cow::Borrowed(key), Node::Obj(o));
            }
            (rule, tz)
        }
        Some(other) => {
            return Err(invalid(loc, &other, "a recurrence rule string"));
        }
        None => return Ok(None),
    };
    fill(
        &mut timezone,
        map,
        parent,
        keys!["recurrence_timezone", "timezone"],
        conv_text,
    )?;
    if let Some(key) = flag_key {
        map.take(key);
    }
    Ok(Some(Recurrence { rule, timezone }))
}

/// `changes: {field: {old, new}}`, as the envelope dialect lists them.
pub(super) fn take_changes(
    map: &mut Obj<'_>,
    parent: &str,
) -> Result<BTreeMap<String, FieldChange>, DecodeError> {
    let mut out = BTreeMap::new();
    let entries = match map.take("changes") {
        None | Some(Node::Null) => return Ok(out),
        Some(Node::Obj(entries)) => entries,
        Some(other) => {
            return Err(invalid(
                Loc {
                    parent,
                    key: "changes",
                },
                &other,
                "an object of {\"old\", \"new\"} pairs",
            ))
        }
    };
    for (field, entry) in entries {
        match entry {
            Node::Obj(mut e) if e.contains_key("old") || e.contains_key("new") => {
                let old = e
                    .take("old")
                    .map_or(serde_json::Value::Null, Node::into_value);
                let new = e
                    .take("new")
                    .map_or(serde_json::Value::Null, Node::into_value);
                out.insert(field.into_owned(), FieldChange { old, new });
            }
            other => {
                let changes = Loc {
                    parent,
                    key: "changes",
                };
                return Err(DecodeError::InvalidField {
                    field: format!("{changes}.{}", truncate_chars(&field, 40)),
                    value: snippet(&other),
                    expected: "an {\"old\", \"new\"} object",
                });
            }
        }
    }
    Ok(out)
}

pub(super) fn take_profile(
    map: &mut Obj<'_>,
    parent: &str,
) -> Result<Option<UserProfile>, DecodeError> {
    let mut p = UserProfile::default();
    fill(&mut p.email, map, parent, keys!["email"], conv_text)?;
    fill(
        &mut p.name,
        map,
        parent,
        keys![
            "name",
            "full_name",
            "fullName",
            "display_name",
            "displayName",
        ],
        conv_text,
    )?;
    fill(
        &mut p.username,
        map,
        parent,
        keys!["username", "user_name", "userName"],
        conv_text,
    )?;
    fill(
        &mut p.timezone,
        map,
        parent,
        keys!["timezone", "time_zone", "timeZone"],
        conv_text,
    )?;
    Ok((p != UserProfile::default()).then_some(p))
}

/// The reminder fields; the method defaults to email (the notification
/// service's default channel) but an unknown one is an error, not a guess.
pub(super) fn take_reminder(
    map: &mut Obj<'_>,
    parent: &str,
) -> Result<ReminderRequest, DecodeError> {
    let zone = peek_zone(map, parent)?;
    let naive_remind = peek_naive(map, keys!["remind_at", "remindAt"]);
    let naive_due = peek_naive(map, keys!["due_at", "due_date", "dueAt", "dueDate"]);
    let mut remind_at = None;
    fill(
        &mut remind_at,
        map,
        parent,
        keys!["remind_at", "remindAt"],
        conv_time,
    )?;
    let remind_local = match take_local(map, parent, "remind_local")? {
        Some(kept) => Some(kept),
        None => localise(&mut remind_at, naive_remind, &zone),
    };
    let Some(remind_at) = remind_at else {
        return Err(DecodeError::MissingField {
            field: Loc {
                parent,
                key: "remind_at",
            }
            .to_string(),
        });
    };
    let mut due_at = None;
    fill(
        &mut due_at,
        map,
        parent,
        keys!["due_at", "due_date", "dueAt", "dueDate"],
        conv_time,
    )?;
    localise(&mut due_at, naive_due, &zone);
    let mut title = None;
    fill(&mut title, map, parent, keys!["title"], conv_text)?;
    let mut method = None;
    fill(
        &mut method,
        map,
        parent,
        keys!["notification_method", "method"],
        conv_method,
    )?;
    Ok(ReminderRequest {
        remind_at,
        remind_local,
        due_at,
        title,
        method: method.unwrap_or_else(|| "email".to_owned()),
    })
}
