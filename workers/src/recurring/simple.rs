//! Simple patterns, as task-management apps send them, turned into RRULEs so
//! they share the RFC 5545 engine (and its oracle test).
//!
//! Accepted: a bare word (`daily`, `weekly`, `monthly`, `yearly`/`annually`,
//! `weekdays`, `biweekly`/`fortnightly`) or a JSON object:
//!
//! ```json
//! {"frequency": "weekly", "interval": 2, "weekdays": ["mon", "fri"]}
//! {"frequency": "monthly", "day_of_month": 31}
//! {"frequency": "monthly", "weekday": "fri", "week": -1}
//! {"frequency": "yearly", "month": 2, "day_of_month": 29, "count": 10}
//! ```
//!
//! What the anchor (the task's due time) does not say comes from it: the time
//! of day always, the weekday of `weekly`, the day of `monthly`, the date of
//! `yearly`. A day of month the month does not have (31, or 29 February)
//! falls on the month's last day, as task apps do: "monthly on the 31st" is
//! the 30th in April and the 28th or 29th in February.

use chrono::{Datelike, NaiveDateTime};
use serde::Deserialize;

use super::rrule::RruleSpec;
use super::rule::RuleError;

/// The JSON form (field names as the apps send them; aliases accepted).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternJson {
    #[serde(alias = "freq", alias = "type", alias = "pattern", alias = "rule")]
    frequency: Option<String>,
    #[serde(alias = "every")]
    interval: Option<u32>,
    #[serde(alias = "days", alias = "days_of_week", alias = "by_weekday")]
    weekdays: Option<Vec<String>>,
    #[serde(alias = "day", alias = "monthday")]
    day_of_month: Option<i32>,
    weekday: Option<String>,
    /// Which `weekday` of the month: 1..=5, or -1 for the last.
    #[serde(alias = "ordinal", alias = "nth", alias = "week_of_month")]
    week: Option<i32>,
    month: Option<u32>,
    #[serde(alias = "occurrences")]
    count: Option<u32>,
    #[serde(alias = "end_date", alias = "ends_on")]
    until: Option<String>,
    /// Carried by some producers next to the pattern; the worker reads it.
    #[serde(alias = "tz")]
    #[allow(dead_code)]
    timezone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frequency {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// A validated simple pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct SimplePattern {
    text: String,
    frequency: Frequency,
    interval: u32,
    weekdays: Vec<&'static str>,
    day_of_month: Option<i32>,
    nth_weekday: Option<(i32, &'static str)>,
    month: Option<u32>,
    count: Option<u32>,
    until: Option<String>,
}

const WORDS: &[&str] = &[
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "annually",
    "weekdays",
    "biweekly",
    "fortnightly",
];

impl SimplePattern {
    /// Whether `text` is one of the bare words.
    pub fn is_word(text: &str) -> bool {
        WORDS.iter().any(|w| w.eq_ignore_ascii_case(text.trim()))
    }

    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let err = |reason: String| RuleError::Simple {
            rule: text.to_string(),
            reason,
        };
        let t = text.trim();
        let json = if t.starts_with('{') {
            serde_json::from_str::<PatternJson>(t).map_err(|e| err(e.to_string()))?
        } else {
            PatternJson {
                frequency: Some(t.to_string()),
                ..PatternJson::default()
            }
        };
        let word = json
            .frequency
            .as_deref()
            .map(|f| f.trim().to_ascii_lowercase())
            .ok_or_else(|| err("no frequency (daily, weekly, monthly or yearly)".into()))?;
        let (frequency, mut interval, mut weekdays) = match word.as_str() {
            "daily" | "day" => (Frequency::Daily, 1, Vec::new()),
            "weekly" | "week" => (Frequency::Weekly, 1, Vec::new()),
            "biweekly" | "fortnightly" => (Frequency::Weekly, 2, Vec::new()),
            "weekdays" => (Frequency::Weekly, 1, vec!["MO", "TU", "WE", "TH", "FR"]),
            "monthly" | "month" => (Frequency::Monthly, 1, Vec::new()),
            "yearly" | "annually" | "year" => (Frequency::Yearly, 1, Vec::new()),
            other => {
                return Err(err(format!(
                    "frequency {other:?}: expected daily, weekly, monthly or yearly"
                )))
            }
        };
        if let Some(i) = json.interval {
            if i == 0 || i > 1000 {
                return Err(err(format!("interval {i}: expected 1 to 1000")));
            }
            interval = i;
        }
        if let Some(days) = &json.weekdays {
            if frequency != Frequency::Weekly {
                return Err(err("weekdays are for weekly patterns".into()));
            }
            weekdays = days
                .iter()
                .map(|d| weekday(d).ok_or_else(|| err(format!("weekday {d:?}"))))
                .collect::<Result<_, _>>()?;
        }
        if let Some(d) = json.day_of_month {
            if !matches!(frequency, Frequency::Monthly | Frequency::Yearly)
                || !(d == -1 || (1..=31).contains(&d))
            {
                return Err(err(format!(
                    "day_of_month {d}: expected 1 to 31 or -1 (last), for monthly or yearly"
                )));
            }
        }
        let nth_weekday = match (&json.weekday, json.week) {
            (Some(day), week) => {
                if frequency != Frequency::Monthly {
                    return Err(err("weekday (with week) is for monthly patterns".into()));
                }
                let week = week.unwrap_or(1);
                if !(week == -1 || (1..=5).contains(&week)) {
                    return Err(err(format!("week {week}: expected 1 to 5 or -1 (last)")));
                }
                let day = weekday(day).ok_or_else(|| err(format!("weekday {day:?}")))?;
                Some((week, day))
            }
            (None, Some(w)) => return Err(err(format!("week {w} without a weekday"))),
            (None, None) => None,
        };
        if nth_weekday.is_some() && json.day_of_month.is_some() {
            return Err(err("give day_of_month or weekday, not both".into()));
        }
        if let Some(m) = json.month {
            if frequency != Frequency::Yearly || !(1..=12).contains(&m) {
                return Err(err(format!("month {m}: expected 1 to 12, for yearly")));
            }
        }
        if json.count == Some(0) {
            return Err(err("count 0: expected at least 1".into()));
        }
        let until = match &json.until {
            Some(u) => Some(ical_until(u).ok_or_else(|| {
                err(format!(
                    "until {u:?}: expected a date (2026-12-31) or RFC 3339 time"
                ))
            })?),
            None => None,
        };
        if until.is_some() && json.count.is_some() {
            return Err(err("give count or until, not both".into()));
        }
        let p = SimplePattern {
            text: text.to_string(),
            frequency,
            interval,
            weekdays,
            day_of_month: json.day_of_month,
            nth_weekday,
            month: json.month,
            count: json.count,
            until,
        };
        // Reject impossible combinations now (31 February) rather than at the
        // first completion.
        if p.month == Some(2) && p.day_of_month.is_some_and(|d| d > 29) {
            return Err(err("February has at most 29 days".into()));
        }
        Ok(p)
    }

    pub fn is_bounded(&self) -> bool {
        self.count.is_some() || self.until.is_some()
    }

    /// The RRULE this pattern means for a series anchored at `anchor`.
    pub fn to_rrule_text(&self, anchor: NaiveDateTime) -> String {
        let mut parts = vec![format!(
            "FREQ={}",
            match self.frequency {
                Frequency::Daily => "DAILY",
                Frequency::Weekly => "WEEKLY",
                Frequency::Monthly => "MONTHLY",
                Frequency::Yearly => "YEARLY",
            }
        )];
        if self.interval > 1 {
            parts.push(format!("INTERVAL={}", self.interval));
        }
        match self.frequency {
            Frequency::Daily => {}
            Frequency::Weekly => {
                if !self.weekdays.is_empty() {
                    parts.push(format!("BYDAY={}", self.weekdays.join(",")));
                }
            }
            Frequency::Monthly => {
                if let Some((week, day)) = self.nth_weekday {
                    parts.push(format!("BYDAY={week}{day}"));
                } else {
                    let day = self.day_of_month.unwrap_or(anchor.day() as i32);
                    parts.push(month_day(day));
                }
            }
            Frequency::Yearly => {
                let month = self.month.unwrap_or(anchor.month());
                let day = self.day_of_month.unwrap_or(anchor.day() as i32);
                parts.push(format!("BYMONTH={month}"));
                parts.push(month_day(day));
            }
        }
        if let Some(c) = self.count {
            parts.push(format!("COUNT={c}"));
        }
        if let Some(u) = &self.until {
            parts.push(format!("UNTIL={u}"));
        }
        parts.join(";")
    }

    pub fn to_rrule(&self, anchor: NaiveDateTime) -> Result<RruleSpec, RuleError> {
        RruleSpec::parse(&self.to_rrule_text(anchor)).map_err(|e| RuleError::Simple {
            rule: self.text.clone(),
            reason: e.to_string(),
        })
    }
}

/// `BYMONTHDAY` for "day `d`, or the month's last day when it has fewer":
/// days 29 to 31 become "the last of 28..=d".
fn month_day(d: i32) -> String {
    if d >= 29 {
        let days: Vec<String> = (28..=d).map(|x| x.to_string()).collect();
        format!("BYMONTHDAY={};BYSETPOS=-1", days.join(","))
    } else {
        format!("BYMONTHDAY={d}")
    }
}

fn weekday(name: &str) -> Option<&'static str> {
    let n = name.trim().to_ascii_lowercase();
    let code = match n.get(..2)? {
        "mo" => "MO",
        "tu" => "TU",
        "we" => "WE",
        "th" => "TH",
        "fr" => "FR",
        "sa" => "SA",
        "su" => "SU",
        _ => return None,
    };
    let full = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let ok = n.len() == 2 || full.iter().any(|f| f.starts_with(&n));
    ok.then_some(code)
}

/// An `until` as an RRULE `UNTIL`: a date stays a (local, whole-day) date; an
/// RFC 3339 time becomes UTC.
fn ical_until(v: &str) -> Option<String> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d") {
        return Some(d.format("%Y%m%d").to_string());
    }
    chrono::DateTime::parse_from_rfc3339(v.trim())
        .ok()
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y%m%dT%H%M%SZ")
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::super::rule::{parse_local, RecurrenceRule};
    use super::*;

    fn rrule(text: &str, anchor: &str) -> String {
        SimplePattern::parse(text)
            .unwrap()
            .to_rrule_text(parse_local(anchor).unwrap())
    }

    fn next(rule: &str, dtstart: &str, n: usize) -> Vec<String> {
        RecurrenceRule::parse(rule, "UTC")
            .unwrap()
            .next_after(
                parse_local(dtstart).unwrap(),
                "2000-01-01T00:00:00Z".parse().unwrap(),
                n,
            )
            .unwrap()
            .into_iter()
            .map(|t| t.format("%Y-%m-%d").to_string())
            .collect()
    }

    #[test]
    fn words_and_json_become_rrules() {
        assert_eq!(rrule("daily", "2026-01-01T09:00"), "FREQ=DAILY");
        assert_eq!(
            rrule("Weekdays", "2026-01-01T09:00"),
            "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
        );
        assert_eq!(
            rrule(
                r#"{"frequency":"weekly","interval":2,"weekdays":["mon","Friday"]}"#,
                "2026-01-01T09:00"
            ),
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR"
        );
        assert_eq!(
            rrule(
                r#"{"frequency":"monthly","weekday":"fri","week":-1}"#,
                "2026-01-01T09:00"
            ),
            "FREQ=MONTHLY;BYDAY=-1FR"
        );
        assert_eq!(
            rrule(r#"{"freq":"monthly","count":3}"#, "2026-01-15T09:00"),
            "FREQ=MONTHLY;BYMONTHDAY=15;COUNT=3"
        );
    }

    #[test]
    fn monthly_on_the_31st_falls_on_the_last_day_of_shorter_months() {
        assert_eq!(
            next(
                r#"{"frequency":"monthly","day_of_month":31}"#,
                "2026-01-31T09:00",
                4
            ),
            ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]
        );
        assert_eq!(
            next("monthly", "2028-01-30T09:00", 2),
            ["2028-01-30", "2028-02-29"]
        );
    }

    #[test]
    fn yearly_on_the_29th_of_february_is_the_28th_in_common_years() {
        assert_eq!(
            next("yearly", "2024-02-29T09:00", 5),
            [
                "2024-02-29",
                "2025-02-28",
                "2026-02-28",
                "2027-02-28",
                "2028-02-29"
            ]
        );
    }

    #[test]
    fn last_friday_and_intervals() {
        assert_eq!(
            next(
                r#"{"frequency":"monthly","weekday":"friday","week":-1,"interval":2}"#,
                "2026-01-30T09:00",
                3
            ),
            ["2026-01-30", "2026-03-27", "2026-05-29"]
        );
        assert_eq!(
            next(
                r#"{"frequency":"daily","every":10,"until":"2026-01-25"}"#,
                "2026-01-01T09:00",
                9
            ),
            ["2026-01-01", "2026-01-11", "2026-01-21"]
        );
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (text, needle) in [
            ("hourly", "frequency"),
            (r#"{"frequency":"weekly","weekdays":["funday"]}"#, "funday"),
            (
                r#"{"frequency":"monthly","day_of_month":32}"#,
                "day_of_month 32",
            ),
            (r#"{"frequency":"daily","interval":0}"#, "interval 0"),
            (
                r#"{"frequency":"yearly","month":2,"day_of_month":30}"#,
                "February",
            ),
            (r#"{"frequency":"daily","colour":"red"}"#, "colour"),
        ] {
            let e = SimplePattern::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
