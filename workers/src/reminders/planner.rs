//! When reminders fire: pure functions from a task event or reminder request,
//! the user's profile and a given `now` to fire times, and from a due
//! reminder and `now` to what happens to it. No clock and no store here, so
//! every time-zone rule is tested with fixed instants.
//!
//! Time-zone rules (the complaints this avoids: "an hour off after DST",
//! "wrong time when travelling"):
//! - an offset (`-30m`, `-1d`) is applied to the due time *as wall-clock time
//!   in the user's zone*: a task due Monday 09:00 Berlin with `-1d` reminds on
//!   Sunday 09:00 Berlin even when DST starts in between (23 real hours);
//! - a wall time that does not exist (the spring-forward gap) is read with the
//!   offset from before the gap, an ambiguous one (the autumn repeat) as its
//!   first instant;
//! - quiet hours are wall-clock hours in the user's zone; a reminder that
//!   comes due inside them is held until they end;
//! - a reminder found due more than `max_lateness` after its time (the
//!   relay or every replica was down) is recorded as missed, never sent
//!   hours late and never dropped silently.

use chrono::{DateTime, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;
pub use pipelines::event::local_time::resolve;
use pipelines::event::local_time::{parse_zone, LocalTime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::parse_offset;
use super::directory::{QuietHours, UserRecord};
use super::notification::Channel;

/// A task's reminder settings could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("task {task_id}: {field} {value}: expected {expected}")]
    Setting {
        task_id: String,
        field: &'static str,
        value: String,
        expected: String,
    },
}

/// How a reminder's fire time follows from the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ReminderRule {
    /// A fixed instant (a reminder request without a due time).
    At { at: DateTime<Utc> },
    /// Milliseconds relative to the due time, in the user's wall-clock time
    /// (negative: before). Moves when the due time moves.
    FromDue { offset_ms: i64 },
}

/// The due time as the user meant it: a wall time in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueWall {
    pub local: NaiveDateTime,
    pub tz: Tz,
}

impl DueWall {
    /// The wall time of the instant `due_at` in `tz`.
    pub fn of(due_at: DateTime<Utc>, tz: Tz) -> Self {
        DueWall {
            local: due_at.with_timezone(&tz).naive_local(),
            tz,
        }
    }

    /// The instant it names.
    pub fn instant(&self) -> DateTime<Utc> {
        resolve(self.local, self.tz)
    }
}

/// The due wall time of a task due at `due_at`: the producer's local reading
/// when the event kept one (in its own zone, or the user's when the producer
/// wrote a naive time), else the instant read in the user's zone.
pub fn due_wall(due_at: DateTime<Utc>, local: Option<&LocalTime>, user_tz: Tz) -> DueWall {
    match local {
        Some(l) => DueWall {
            local: l.local,
            tz: l
                .timezone
                .as_deref()
                .and_then(parse_zone)
                .unwrap_or(user_tz),
        },
        None => DueWall::of(due_at, user_tz),
    }
}

/// A request's `remind_at` and due wall time: a naive reading (no zone
/// anywhere in the message) is re-read in the user's zone, its due time too
/// (the decoder read both as UTC).
pub fn request_times(
    remind_at: DateTime<Utc>,
    remind_local: Option<&LocalTime>,
    due_at: Option<DateTime<Utc>>,
    user_tz: Tz,
) -> (DateTime<Utc>, Option<DueWall>) {
    match remind_local {
        Some(l) if l.timezone.is_none() => (
            resolve(l.local, user_tz),
            due_at.map(|d| DueWall {
                local: d.naive_utc(),
                tz: user_tz,
            }),
        ),
        Some(l) => {
            let tz = l
                .timezone
                .as_deref()
                .and_then(parse_zone)
                .unwrap_or(user_tz);
            (remind_at, due_at.map(|d| DueWall::of(d, tz)))
        }
        None => (remind_at, due_at.map(|d| DueWall::of(d, user_tz))),
    }
}

/// The fire time of `rule` for a task due at `due` (wall time).
pub fn fire_time(rule: ReminderRule, due: Option<DueWall>) -> Option<DateTime<Utc>> {
    match rule {
        ReminderRule::At { at } => Some(at),
        ReminderRule::FromDue { offset_ms } => {
            let due = due?;
            Some(resolve(
                due.local + TimeDelta::milliseconds(offset_ms),
                due.tz,
            ))
        }
    }
}

/// The rule of an explicit `remind_at`: relative to the due time (in wall
/// time) when there is one, so it moves with it; else fixed.
pub fn rule_for_request(remind_at: DateTime<Utc>, due: Option<DueWall>) -> ReminderRule {
    match due {
        Some(d) => {
            let remind_wall = remind_at.with_timezone(&d.tz).naive_local();
            ReminderRule::FromDue {
                offset_ms: (remind_wall - d.local).num_milliseconds(),
            }
        }
        None => ReminderRule::At { at: remind_at },
    }
}

/// Stable id of one reminder: task, nominal fire time and channel. The
/// sent mark, the `Message-ID` and the outcome events derive from it, so a
/// re-planned or redelivered reminder is the same reminder.
pub fn reminder_id(task_id: &str, nominal_at: DateTime<Utc>, channel: Channel) -> String {
    pipelines::derive_event_id(&[
        "reminder",
        task_id,
        &nominal_at.timestamp_millis().to_string(),
        channel.as_str(),
    ])
}

/// A task's own reminder settings, from its event's attributes:
/// `remind_at` (an instant) and `reminder_offsets` / `reminders` (a list of
/// offsets such as `"-30m"`). `None` fields = the task says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskReminderSettings {
    pub remind_at: Option<DateTime<Utc>>,
    pub offsets: Option<Vec<TimeDelta>>,
}

impl TaskReminderSettings {
    pub fn from_attributes(task_id: &str, attrs: &Map<String, Value>) -> Result<Self, PlanError> {
        let bad = |field: &'static str, value: &Value, expected: &str| PlanError::Setting {
            task_id: task_id.to_owned(),
            field,
            value: value.to_string(),
            expected: expected.to_owned(),
        };
        let mut s = TaskReminderSettings::default();
        if let Some(v) = attrs.get("remind_at").filter(|v| !v.is_null()) {
            let at = v
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .ok_or_else(|| bad("remind_at", v, "an RFC 3339 time with its offset"))?;
            s.remind_at = Some(at.with_timezone(&Utc));
        }
        if let Some(v) = ["reminder_offsets", "reminders"]
            .iter()
            .find_map(|k| attrs.get(*k))
            .filter(|v| !v.is_null())
        {
            let list = v
                .as_array()
                .ok_or_else(|| bad("reminder_offsets", v, "a list such as [\"-30m\", \"-1d\"]"))?;
            let mut offsets = Vec::with_capacity(list.len());
            for o in list {
                let text = o
                    .as_str()
                    .ok_or_else(|| bad("reminder_offsets", o, "an offset string"))?;
                offsets.push(
                    parse_offset(text).map_err(|expected| bad("reminder_offsets", o, &expected))?,
                );
            }
            s.offsets = Some(offsets);
        }
        Ok(s)
    }
}

/// One reminder to schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub reminder_id: String,
    pub rule: ReminderRule,
    /// When it fires.
    pub fire_at: DateTime<Utc>,
    pub channel: Channel,
}

/// The email reminders of a task due at `due`: its own `remind_at` and
/// offsets, or else the user's default offsets, or else `config_defaults`.
/// Reminders whose time is not after `since` (the event's time: the task
/// did not have this due date then) are not planned.
pub fn plan_task(
    task_id: &str,
    due: DueWall,
    settings: &TaskReminderSettings,
    user: &UserRecord,
    config_defaults: &[String],
    since: DateTime<Utc>,
) -> Vec<Planned> {
    let mut rules = Vec::new();
    if let Some(at) = settings.remind_at {
        rules.push(rule_for_request(at, Some(due)));
    }
    let offsets: Vec<TimeDelta> = match &settings.offsets {
        Some(o) => o.clone(),
        None if settings.remind_at.is_some() => Vec::new(),
        None => {
            let texts = if user.default_offsets.is_empty() {
                config_defaults
            } else {
                &user.default_offsets
            };
            texts.iter().filter_map(|t| parse_offset(t).ok()).collect()
        }
    };
    rules.extend(offsets.into_iter().map(|o| ReminderRule::FromDue {
        offset_ms: o.num_milliseconds(),
    }));
    let mut out: Vec<Planned> = Vec::new();
    for rule in rules {
        let Some(fire_at) = fire_time(rule, Some(due)) else {
            continue;
        };
        if fire_at <= since {
            continue;
        }
        let id = reminder_id(task_id, fire_at, Channel::Email);
        if out.iter().any(|p| p.reminder_id == id) {
            continue;
        }
        out.push(Planned {
            reminder_id: id,
            rule,
            fire_at,
            channel: Channel::Email,
        });
    }
    out
}

/// What to do with a reminder that came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firing {
    /// Deliver now; it is `lateness` past its time.
    Send { lateness: TimeDelta },
    /// Inside the user's quiet hours: due again at `until`.
    Hold { until: DateTime<Utc> },
    /// More than `max_lateness` late: record as missed.
    Missed { lateness: TimeDelta },
}

/// Decides the fate of a reminder scheduled for `scheduled_at`, at `now`.
pub fn at_fire_time(
    now: DateTime<Utc>,
    scheduled_at: DateTime<Utc>,
    user: &UserRecord,
    max_lateness: TimeDelta,
) -> Firing {
    let lateness = (now - scheduled_at).max(TimeDelta::zero());
    if lateness > max_lateness {
        return Firing::Missed { lateness };
    }
    if let Some(q) = user.quiet_hours {
        if let Some(until) = quiet_hours_end(now, user.tz(), q) {
            return Firing::Hold { until };
        }
    }
    Firing::Send { lateness }
}

/// If `at` lies within the quiet hours (wall time in `tz`, `start` inclusive,
/// `end` exclusive, possibly across midnight), the instant they end.
pub fn quiet_hours_end(at: DateTime<Utc>, tz: Tz, q: QuietHours) -> Option<DateTime<Utc>> {
    let local = at.with_timezone(&tz).naive_local();
    let t: NaiveTime = local.time();
    let date = local.date();
    let end_on = |d: chrono::NaiveDate| resolve(d.and_time(q.end), tz);
    if q.start < q.end {
        (t >= q.start && t < q.end).then(|| end_on(date))
    } else if t >= q.start {
        date.succ_opt().map(end_on)
    } else if t < q.end {
        Some(end_on(date))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Europe::Berlin};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn wall(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn user(tz: &str) -> UserRecord {
        let mut u = UserRecord::unknown("u1");
        u.time_zone = Some(tz.into());
        u
    }

    fn settings(offsets: &[&str]) -> TaskReminderSettings {
        TaskReminderSettings {
            remind_at: None,
            offsets: Some(offsets.iter().map(|o| parse_offset(o).unwrap()).collect()),
        }
    }

    #[test]
    fn offsets_apply_before_the_due_time() {
        let due = DueWall::of(utc("2026-06-10T09:00:00Z"), Tz::UTC);
        let p = plan_task(
            "t1",
            due,
            &settings(&["-30m", "-1d"]),
            &user("UTC"),
            &[],
            utc("2026-06-01T00:00:00Z"),
        );
        let times: Vec<_> = p.iter().map(|p| p.fire_at).collect();
        assert_eq!(
            times,
            vec![utc("2026-06-10T08:30:00Z"), utc("2026-06-09T09:00:00Z")]
        );
        assert_ne!(p[0].reminder_id, p[1].reminder_id);
    }

    #[test]
    fn one_day_before_across_spring_forward_in_berlin_keeps_wall_time() {
        // DST starts in Berlin on 2026-03-29 at 02:00 (+01:00 -> +02:00).
        let due_at = resolve(wall("2026-03-30 09:00"), Berlin);
        assert_eq!(due_at, utc("2026-03-30T07:00:00Z"));
        let p = plan_task(
            "t1",
            DueWall::of(due_at, Berlin),
            &settings(&["-1d"]),
            &user("Europe/Berlin"),
            &[],
            utc("2026-03-01T00:00:00Z"),
        );
        // Sunday 09:00 Berlin (already CEST): 07:00 UTC.
        assert_eq!(p[0].fire_at, utc("2026-03-29T07:00:00Z"));
        let p = plan_task(
            "t1",
            DueWall::of(due_at, Berlin),
            &settings(&["-2d"]),
            &user("Europe/Berlin"),
            &[],
            utc("2026-03-01T00:00:00Z"),
        );
        // Saturday 09:00 Berlin is CET: 08:00 UTC, 47 real hours before the
        // due time, not 48.
        assert_eq!(p[0].fire_at, utc("2026-03-28T08:00:00Z"), "09:00 CET");
    }

    #[test]
    fn one_week_before_across_fall_back_in_new_york_keeps_wall_time() {
        // DST ends in New York on 2026-11-01 at 02:00 (-04:00 -> -05:00).
        let due_at = resolve(wall("2026-11-05 09:00"), New_York);
        assert_eq!(due_at, utc("2026-11-05T14:00:00Z"));
        let p = plan_task(
            "t1",
            DueWall::of(due_at, New_York),
            &settings(&["-1w"]),
            &user("America/New_York"),
            &[],
            utc("2026-10-01T00:00:00Z"),
        );
        assert_eq!(p[0].fire_at, utc("2026-10-29T13:00:00Z"), "09:00 EDT");
    }

    #[test]
    fn gap_and_ambiguous_wall_times_resolve_as_documented() {
        // 02:30 does not exist in Berlin on 2026-03-29: offset from before (+01:00).
        assert_eq!(
            resolve(wall("2026-03-29 02:30"), Berlin),
            utc("2026-03-29T01:30:00Z")
        );
        // 01:30 happens twice in New York on 2026-11-01: the first (-04:00).
        assert_eq!(
            resolve(wall("2026-11-01 01:30"), New_York),
            utc("2026-11-01T05:30:00Z")
        );
    }

    #[test]
    fn requested_time_moves_with_the_due_date_in_wall_time() {
        let due = DueWall::of(utc("2026-03-27T08:00:00Z"), Berlin); // Fri 09:00 CET
        let rule = rule_for_request(utc("2026-03-27T07:30:00Z"), Some(due)); // 08:30 CET
        assert_eq!(
            rule,
            ReminderRule::FromDue {
                offset_ms: -1_800_000
            }
        );
        // Moved to Monday 09:00 CEST: the reminder is Monday 08:30 CEST.
        let moved = DueWall::of(utc("2026-03-30T07:00:00Z"), Berlin);
        assert_eq!(
            fire_time(rule, Some(moved)),
            Some(utc("2026-03-30T06:30:00Z"))
        );
        assert_eq!(
            rule_for_request(utc("2026-03-27T07:30:00Z"), None),
            ReminderRule::At {
                at: utc("2026-03-27T07:30:00Z")
            }
        );
    }

    #[test]
    fn user_defaults_then_config_defaults_when_the_task_says_nothing() {
        let due = DueWall::of(utc("2026-06-10T09:00:00Z"), Tz::UTC);
        let since = utc("2026-06-01T00:00:00Z");
        let none = TaskReminderSettings::default();
        let mut u = user("UTC");
        let p = plan_task("t1", due, &none, &u, &["-30m".into()], since);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].fire_at, utc("2026-06-10T08:30:00Z"));
        u.default_offsets = vec!["-2h".into(), "-1d".into()];
        let p = plan_task("t1", due, &none, &u, &["-30m".into()], since);
        let times: Vec<_> = p.iter().map(|p| p.fire_at).collect();
        assert_eq!(
            times,
            vec![utc("2026-06-10T07:00:00Z"), utc("2026-06-09T09:00:00Z")]
        );
    }

    #[test]
    fn reminders_already_past_when_the_task_got_its_due_date_are_not_planned() {
        let due = DueWall::of(utc("2026-06-10T09:00:00Z"), Tz::UTC);
        let p = plan_task(
            "t1",
            due,
            &settings(&["-1d", "-30m"]),
            &user("UTC"),
            &[],
            utc("2026-06-10T00:00:00Z"),
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].fire_at, utc("2026-06-10T08:30:00Z"));
    }

    #[test]
    fn quiet_hours_hold_until_they_end_in_the_users_zone() {
        let mut u = user("Europe/Berlin");
        u.quiet_hours = Some(QuietHours {
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
        });
        let max = TimeDelta::hours(1);
        // 23:15 Berlin (CEST) -> held to 07:00 Berlin next morning.
        let at = utc("2026-06-10T21:15:00Z");
        assert_eq!(
            at_fire_time(at, at, &u, max),
            Firing::Hold {
                until: utc("2026-06-11T05:00:00Z")
            }
        );
        // 05:00 Berlin -> held to 07:00 the same morning.
        let at = utc("2026-06-11T03:00:00Z");
        assert_eq!(
            at_fire_time(at, at, &u, max),
            Firing::Hold {
                until: utc("2026-06-11T05:00:00Z")
            }
        );
        // 07:00 Berlin exactly: sent.
        let at = utc("2026-06-11T05:00:00Z");
        assert_eq!(
            at_fire_time(at, at, &u, max),
            Firing::Send {
                lateness: TimeDelta::zero()
            }
        );
        // Daytime quiet hours (13:00-14:00) do not wrap.
        u.quiet_hours = Some(QuietHours {
            start: NaiveTime::from_hms_opt(13, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(14, 0, 0).unwrap(),
        });
        let at = utc("2026-06-11T11:30:00Z"); // 13:30 CEST
        assert_eq!(
            at_fire_time(at, at, &u, max),
            Firing::Hold {
                until: utc("2026-06-11T12:00:00Z")
            }
        );
        let at = utc("2026-06-11T20:30:00Z");
        assert!(matches!(at_fire_time(at, at, &u, max), Firing::Send { .. }));
    }

    #[test]
    fn a_naive_local_due_time_is_read_in_the_users_zone() {
        let naive = LocalTime {
            local: wall("2026-03-30 09:00"),
            timezone: None,
        };
        // The decoder read it as 09:00 UTC; the user lives in Berlin.
        let d = due_wall(utc("2026-03-30T09:00:00Z"), Some(&naive), Berlin);
        assert_eq!(resolve(d.local, d.tz), utc("2026-03-30T07:00:00Z"));
        let zoned = LocalTime {
            local: wall("2026-03-30 09:00"),
            timezone: Some("America/New_York".into()),
        };
        let d = due_wall(utc("2026-03-30T13:00:00Z"), Some(&zoned), Berlin);
        assert_eq!(d.tz, New_York, "the producer's zone wins");
        let (at, due) = request_times(
            utc("2026-03-30T08:30:00Z"),
            Some(&LocalTime {
                local: wall("2026-03-30 08:30"),
                timezone: None,
            }),
            Some(utc("2026-03-30T09:00:00Z")),
            Berlin,
        );
        assert_eq!(at, utc("2026-03-30T06:30:00Z"));
        assert_eq!(due.unwrap().local, wall("2026-03-30 09:00"));
    }

    #[test]
    fn max_lateness_separates_late_from_missed() {
        let u = user("UTC");
        let max = TimeDelta::hours(1);
        let scheduled = utc("2026-06-10T09:00:00Z");
        assert_eq!(
            at_fire_time(utc("2026-06-10T09:59:59Z"), scheduled, &u, max),
            Firing::Send {
                lateness: TimeDelta::seconds(3599)
            }
        );
        assert_eq!(
            at_fire_time(utc("2026-06-10T10:00:01Z"), scheduled, &u, max),
            Firing::Missed {
                lateness: TimeDelta::seconds(3601)
            }
        );
        // Early (a clock step back) counts as on time.
        assert_eq!(
            at_fire_time(utc("2026-06-10T08:59:00Z"), scheduled, &u, max),
            Firing::Send {
                lateness: TimeDelta::zero()
            }
        );
    }

    #[test]
    fn task_settings_read_offsets_and_remind_at() {
        let attrs: Map<String, Value> = serde_json::from_str(
            r#"{"remind_at":"2026-06-10T08:00:00Z","reminder_offsets":["-1h"]}"#,
        )
        .unwrap();
        let s = TaskReminderSettings::from_attributes("t1", &attrs).unwrap();
        assert_eq!(s.remind_at, Some(utc("2026-06-10T08:00:00Z")));
        assert_eq!(s.offsets, Some(vec![TimeDelta::hours(-1)]));
        let attrs: Map<String, Value> =
            serde_json::from_str(r#"{"reminder_offsets":["soon"]}"#).unwrap();
        let e = TaskReminderSettings::from_attributes("t1", &attrs).unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }
}
