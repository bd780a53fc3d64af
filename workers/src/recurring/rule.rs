//! One recurrence rule, whatever format the producer wrote it in.
//!
//! Three formats are accepted, told apart by shape:
//! - RFC 5545 `RRULE` (`FREQ=WEEKLY;BYDAY=SA`, `RRULE:...`, optionally with
//!   `EXDATE` lines): [`super::rrule`];
//! - cron, five fields or six with seconds (`0 9 * * MON`): [`super::cron`];
//! - simple patterns as task apps send them (`daily`, or JSON such as
//!   `{"frequency":"monthly","weekday":"fri","week":-1}`): [`super::simple`],
//!   which turns them into RRULEs.
//!
//! Every rule is expanded in floating local time from a local start (the
//! series anchor) and each local occurrence is placed in the rule's zone by
//! [`super::zone`]; so all formats share one DST policy per kind.

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

use super::cron::CronSpec;
use super::rrule::RruleSpec;
use super::simple::SimplePattern;
use super::zone;

/// Why a rule cannot be used. Each variant names the rule (or zone) and what
/// is wrong with it, for the dead-letter reason and the CLI's one-line error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("empty recurrence rule")]
    Empty,
    #[error("unknown time zone {zone:?}: expected an IANA name such as Europe/Berlin")]
    UnknownZone { zone: String },
    #[error("invalid RRULE {rule:?}: {reason}")]
    Rrule { rule: String, reason: String },
    #[error("invalid cron expression {rule:?}: {reason}")]
    Cron { rule: String, reason: String },
    #[error("invalid simple recurrence pattern {rule:?}: {reason}")]
    Simple { rule: String, reason: String },
    #[error("recurrence rule {rule:?} never fires")]
    NeverFires { rule: String },
    #[error("invalid start time {value:?}: {reason}")]
    Start { value: String, reason: String },
}

/// The rule's format: the bounded `kind` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Rrule,
    Cron,
    Simple,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Rrule => "rrule",
            RuleKind::Cron => "cron",
            RuleKind::Simple => "simple",
        }
    }

    /// The format a rule text appears to be in, for labelling a rejection.
    pub fn guess(text: &str) -> RuleKind {
        let t = text.trim();
        let upper = t.to_ascii_uppercase();
        if t.starts_with('{') || SimplePattern::is_word(t) {
            RuleKind::Simple
        } else if upper.contains("FREQ=") || upper.starts_with("RRULE") {
            RuleKind::Rrule
        } else {
            RuleKind::Cron
        }
    }
}

/// One occurrence: its nominal wall-clock time (what the rule says) and the
/// instant it lands on after the zone's DST rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub local: NaiveDateTime,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
enum Spec {
    Rrule(RruleSpec),
    Cron(CronSpec),
    Simple(SimplePattern),
}

/// A parsed rule in its zone.
#[derive(Debug, Clone)]
pub struct RecurrenceRule {
    text: String,
    zone: Tz,
    spec: Spec,
}

impl RecurrenceRule {
    /// Parses `text` (any accepted format) for the IANA zone `zone`.
    pub fn parse(text: &str, zone: &str) -> Result<Self, RuleError> {
        let zone = zone::parse_zone(zone)?;
        let t = text.trim();
        if t.is_empty() {
            return Err(RuleError::Empty);
        }
        let spec = match RuleKind::guess(t) {
            RuleKind::Simple => Spec::Simple(SimplePattern::parse(t)?),
            RuleKind::Rrule => Spec::Rrule(RruleSpec::parse(t)?),
            RuleKind::Cron => Spec::Cron(CronSpec::parse(t)?),
        };
        Ok(RecurrenceRule {
            text: t.to_string(),
            zone,
            spec,
        })
    }

    pub fn kind(&self) -> RuleKind {
        match self.spec {
            Spec::Rrule(_) => RuleKind::Rrule,
            Spec::Cron(_) => RuleKind::Cron,
            Spec::Simple(_) => RuleKind::Simple,
        }
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the rule itself ends (`COUNT`/`UNTIL`); an unbounded rule that
    /// yields nothing never fires.
    pub fn is_bounded(&self) -> bool {
        match &self.spec {
            Spec::Rrule(r) => r.is_bounded(),
            Spec::Simple(s) => s.is_bounded(),
            Spec::Cron(_) => false,
        }
    }

    /// The occurrences of the series that starts at the local time `anchor`,
    /// in order, from the anchor itself when it matches the rule. `consumed`
    /// occurrences of the series came before the anchor: a `COUNT` rule has
    /// that many fewer left (this lets a series be continued from any of its
    /// occurrences without replaying it from the first).
    pub fn occurrences(
        &self,
        anchor: NaiveDateTime,
        consumed: u32,
    ) -> Result<Box<dyn Iterator<Item = Occurrence> + Send + '_>, RuleError> {
        let zone = self.zone;
        match &self.spec {
            Spec::Rrule(r) => Ok(Box::new(r.expand(zone, anchor, consumed)?)),
            Spec::Simple(s) => {
                let r = s.to_rrule(anchor)?;
                Ok(Box::new(r.expand(zone, anchor, consumed)?))
            }
            Spec::Cron(c) => Ok(Box::new(c.expand(zone, anchor))),
        }
    }

    /// The next `count` occurrences strictly after `after`, of the series
    /// starting at the local time `dtstart`. An empty result for an unbounded
    /// rule means the rule never fires, which is an error.
    pub fn next_after(
        &self,
        dtstart: NaiveDateTime,
        after: DateTime<Utc>,
        count: usize,
    ) -> Result<Vec<DateTime<Utc>>, RuleError> {
        let mut fired = false;
        let mut out = Vec::with_capacity(count.min(1024));
        for occ in self.occurrences(dtstart, 0)? {
            fired = true;
            if out.len() >= count {
                break;
            }
            if occ.at > after {
                out.push(occ.at);
            }
        }
        if !fired && !self.is_bounded() {
            return Err(RuleError::NeverFires {
                rule: self.text.clone(),
            });
        }
        Ok(out)
    }
}

/// Parses a local date-time as users type it: `2026-03-30T09:00`,
/// `2026-03-30T09:00:00`, `2026-03-30 09:00:00`, or a date (midnight).
pub fn parse_local(value: &str) -> Result<NaiveDateTime, RuleError> {
    let v = value.trim();
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, fmt) {
            return Ok(t);
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN));
    }
    Err(RuleError::Start {
        value: value.to_string(),
        reason: "expected a local date-time such as 2026-03-30T09:00:00 (no offset)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> NaiveDateTime {
        parse_local(s).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn next(rule: &str, zone: &str, dtstart: &str, after: &str, n: usize) -> Vec<String> {
        RecurrenceRule::parse(rule, zone)
            .unwrap()
            .next_after(local(dtstart), utc(after), n)
            .unwrap()
            .into_iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect()
    }

    #[test]
    fn each_format_is_recognised_by_shape() {
        for (text, kind) in [
            ("FREQ=DAILY", RuleKind::Rrule),
            ("RRULE:FREQ=WEEKLY;BYDAY=MO", RuleKind::Rrule),
            ("0 9 * * MON", RuleKind::Cron),
            ("0 0 9 * * *", RuleKind::Cron),
            ("daily", RuleKind::Simple),
            (
                r#"{"frequency":"weekly","weekdays":["mon"]}"#,
                RuleKind::Simple,
            ),
        ] {
            let r = RecurrenceRule::parse(text, "UTC").unwrap();
            assert_eq!(r.kind(), kind, "{text}");
        }
    }

    #[test]
    fn berlin_nine_o_clock_stays_nine_across_both_dst_changes_in_every_format() {
        for rule in [
            "FREQ=DAILY",
            "0 9 * * *",
            "daily",
            r#"{"frequency":"daily","interval":1}"#,
        ] {
            let got = next(
                rule,
                "Europe/Berlin",
                "2026-03-28T09:00:00",
                "2026-03-27T00:00:00Z",
                3,
            );
            assert_eq!(
                got,
                [
                    "2026-03-28T08:00:00Z",
                    "2026-03-29T07:00:00Z",
                    "2026-03-30T07:00:00Z"
                ],
                "{rule}"
            );
            let got = next(
                rule,
                "Europe/Berlin",
                "2026-10-24T09:00:00",
                "2026-10-24T00:00:00Z",
                2,
            );
            assert_eq!(
                got,
                ["2026-10-24T07:00:00Z", "2026-10-25T08:00:00Z"],
                "{rule}"
            );
        }
    }

    #[test]
    fn rrule_in_the_spring_gap_moves_by_the_gap_and_in_the_overlap_takes_the_first_instant() {
        // Pinned against RFC 5545 3.3.5 (the `rrule` crate expanding in the
        // zone itself gets this day wrong; we expand floating and place it here).
        let got = next(
            "FREQ=DAILY;BYHOUR=2;BYMINUTE=30",
            "Europe/Berlin",
            "2026-03-28T02:30:00",
            "2026-03-01T00:00:00Z",
            3,
        );
        assert_eq!(
            got,
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:30:00Z", // 03:30 CEST: offset from before the gap
                "2026-03-30T00:30:00Z",
            ]
        );
        let got = next(
            "FREQ=DAILY",
            "Europe/Berlin",
            "2026-10-24T02:30:00",
            "2026-10-01T00:00:00Z",
            3,
        );
        assert_eq!(
            got,
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z", // once, 02:30 CEST (the first instant)
                "2026-10-26T01:30:00Z",
            ]
        );
    }

    #[test]
    fn cron_in_the_gap_runs_once_right_after_it_and_once_in_the_overlap() {
        let got = next(
            "*/30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T00:00:00",
            "2026-03-28T00:00:00Z",
            5,
        );
        assert_eq!(
            got,
            [
                "2026-03-28T01:00:00Z",
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z", // 02:00 and 02:30 both: once, at 03:00 CEST
                "2026-03-30T00:00:00Z",
                "2026-03-30T00:30:00Z",
            ]
        );
        let got = next(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T00:00:00",
            "2026-10-24T00:00:00Z",
            3,
        );
        assert_eq!(
            got,
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z"
            ]
        );
    }

    #[test]
    fn southern_hemisphere_dst_is_the_other_way_round() {
        // Sydney: DST ends 2026-04-05 (03:00 -> 02:00), starts 2026-10-04 (02:00 -> 03:00).
        let got = next(
            "FREQ=WEEKLY;BYDAY=SU",
            "Australia/Sydney",
            "2026-03-29T09:00:00",
            "2026-03-01T00:00:00Z",
            2,
        );
        assert_eq!(got, ["2026-03-28T22:00:00Z", "2026-04-04T23:00:00Z"]);
        let got = next(
            "0 9 * * SUN",
            "America/Santiago",
            "2026-09-01T00:00:00",
            "2026-09-01T00:00:00Z",
            3,
        );
        // Chile: -04 until 2026-09-06 00:00, then -03.
        assert_eq!(
            got,
            [
                "2026-09-06T12:00:00Z",
                "2026-09-13T12:00:00Z",
                "2026-09-20T12:00:00Z"
            ]
        );
        let got = next(
            "0 9 * * SAT",
            "America/Santiago",
            "2026-09-01T00:00:00",
            "2026-09-01T00:00:00Z",
            1,
        );
        assert_eq!(got, ["2026-09-05T13:00:00Z"]);
    }

    #[test]
    fn lord_howe_half_hour_shift_keeps_the_wall_clock_and_moves_gap_times_by_thirty_minutes() {
        // Lord Howe: +10:30 standard, +11 summer; 2026-10-04 02:00 -> 02:30.
        let got = next(
            "FREQ=DAILY",
            "Australia/Lord_Howe",
            "2026-10-03T09:00:00",
            "2026-10-01T00:00:00Z",
            2,
        );
        assert_eq!(got, ["2026-10-02T22:30:00Z", "2026-10-03T22:00:00Z"]);
        let got = next(
            "FREQ=DAILY",
            "Australia/Lord_Howe",
            "2026-10-03T02:15:00",
            "2026-10-01T00:00:00Z",
            3,
        );
        assert_eq!(
            got,
            [
                "2026-10-02T15:45:00Z",
                "2026-10-03T15:45:00Z", // 02:45 (+11): moved by the 30-minute gap
                "2026-10-04T15:15:00Z",
            ]
        );
    }

    #[test]
    fn unknown_zone_and_garbage_rules_are_rejected_with_the_reason() {
        let e = RecurrenceRule::parse("daily", "Europe/Nowhere").unwrap_err();
        assert!(matches!(e, RuleError::UnknownZone { .. }), "{e}");
        let e = RecurrenceRule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(matches!(e, RuleError::Cron { .. }), "{e}");
        let e = RecurrenceRule::parse("FREQ=SOMETIMES", "UTC").unwrap_err();
        assert!(matches!(e, RuleError::Rrule { .. }), "{e}");
        let e = RecurrenceRule::parse(r#"{"frequency":"hourlyish"}"#, "UTC").unwrap_err();
        assert!(matches!(e, RuleError::Simple { .. }), "{e}");
        assert_eq!(
            RecurrenceRule::parse("  ", "UTC").unwrap_err(),
            RuleError::Empty
        );
    }

    #[test]
    fn a_rule_that_never_fires_is_an_error() {
        for rule in ["FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "0 0 30 2 *"] {
            let r = RecurrenceRule::parse(rule, "UTC").unwrap();
            let e = r
                .next_after(local("2026-01-01T00:00:00"), utc("2026-01-01T00:00:00Z"), 1)
                .unwrap_err();
            assert!(matches!(e, RuleError::NeverFires { .. }), "{rule}: {e}");
        }
    }
}
