//! RFC 5545 `RRULE` (with `COUNT`, `UNTIL`, `BYSETPOS`, ...) and `EXDATE`,
//! expanded by the `rrule` crate in floating time.
//!
//! The crate is a port of python-dateutil's rrule and agrees with it on the
//! calendar arithmetic. Its handling of zones is where it goes wrong (open bug:
//! duplicated and missing occurrences at DST boundaries), so it never sees a
//! zone: it expands from the anchor as if the wall clock were UTC, and
//! [`super::zone`] places each local occurrence with the RFC 5545 rule. `UNTIL`
//! and `EXDATE` are applied here, after that step, on instants (a UTC value)
//! or on wall-clock times (a local value), as RFC 5545 reads them.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use rrule::{RRule, RRuleSet, Unvalidated};

use super::order::InstantOrder;
use super::rule::{Occurrence, RuleError};
use super::zone::{self, GapRule};

/// An `UNTIL` or `EXDATE` value: an instant (`...Z`) or a wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcalTime {
    Utc(DateTime<Utc>),
    Local(NaiveDateTime),
}

/// A parsed `RRULE` plus its `EXDATE`s.
#[derive(Debug, Clone)]
pub struct RruleSpec {
    text: String,
    /// The rule without `UNTIL` (applied here, not by the crate).
    rule: RRule<Unvalidated>,
    count: Option<u32>,
    until: Option<IcalTime>,
    exdates: Vec<IcalTime>,
}

impl RruleSpec {
    /// Parses `FREQ=...`, `RRULE:FREQ=...`, or several content lines
    /// (`RRULE:...` and `EXDATE[;TZID=..]:v1,v2`, newline-separated; a
    /// `DTSTART` line is ignored: the series anchor is the task's due time).
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let err = |reason: String| RuleError::Rrule {
            rule: text.to_string(),
            reason,
        };
        let mut rule_line = None;
        let mut exdates = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("EXDATE") {
                let (_, values) = line
                    .split_once(':')
                    .ok_or_else(|| err(format!("EXDATE line {line:?} has no value")))?;
                for v in values.split(',') {
                    exdates.push(parse_ical_time(v).map_err(|r| err(format!("EXDATE {r}")))?);
                }
            } else if upper.starts_with("DTSTART") {
                continue;
            } else if rule_line.is_some() {
                return Err(err("more than one RRULE line".into()));
            } else {
                let body = if upper.starts_with("RRULE:") {
                    &line[6..]
                } else {
                    line
                };
                rule_line = Some(body.to_string());
            }
        }
        let body = rule_line.ok_or_else(|| err("no RRULE line".into()))?;
        let mut until = None;
        let mut count = None;
        let mut parts = Vec::new();
        for part in body.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err(format!("{part:?} is not KEY=VALUE")))?;
            match key.trim().to_ascii_uppercase().as_str() {
                "UNTIL" => {
                    until = Some(parse_ical_time(value).map_err(|r| err(format!("UNTIL {r}")))?)
                }
                "COUNT" => {
                    let n: u32 = value
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            err(format!("COUNT={value} is not a whole number above zero"))
                        })?;
                    count = Some(n);
                    parts.push(part.to_string());
                }
                // RFC 5545 forbids these zeros; the crate would read them
                // as something else (INTERVAL=0 never advances).
                k @ ("INTERVAL" | "BYMONTHDAY" | "BYYEARDAY" | "BYWEEKNO" | "BYSETPOS")
                    if value
                        .split(',')
                        .any(|v| v.trim().trim_start_matches(['+', '-']) == "0") =>
                {
                    return Err(err(format!("{k}={value}: 0 is not allowed")));
                }
                _ => parts.push(part.to_string()),
            }
        }
        if until.is_some() && count.is_some() {
            return Err(err("COUNT and UNTIL must not both be given".into()));
        }
        let rule: RRule<Unvalidated> = parts
            .join(";")
            .parse()
            .map_err(|e: rrule::RRuleError| err(e.to_string()))?;
        let spec = RruleSpec {
            text: text.to_string(),
            rule,
            count,
            until,
            exdates,
        };
        // Validate once against a neutral start, so a broken rule is rejected
        // when it is parsed rather than at its first expansion.
        let probe = NaiveDate::from_ymd_opt(2000, 1, 1)
            .map(|d| d.and_time(NaiveTime::MIN))
            .ok_or_else(|| err("internal: no probe date".into()))?;
        spec.validated(probe, 0)?;
        Ok(spec)
    }

    pub fn is_bounded(&self) -> bool {
        self.count.is_some() || self.until.is_some()
    }

    /// The crate's rule, validated for a floating start at `anchor`, with
    /// `consumed` fewer `COUNT`. `None`: the count is used up.
    fn validated(
        &self,
        anchor: NaiveDateTime,
        consumed: u32,
    ) -> Result<Option<RRuleSet>, RuleError> {
        let start = rrule::Tz::UTC.from_utc_datetime(&anchor);
        let mut rule = self.rule.clone();
        if let Some(count) = self.count {
            match count.checked_sub(consumed) {
                Some(left) if left > 0 => rule = rule.count(left),
                _ => return Ok(None),
            }
        }
        let rule = rule.validate(start).map_err(|e| RuleError::Rrule {
            rule: self.text.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(RRuleSet::new(start).rrule(rule).limit()))
    }

    /// Expands from the local `anchor` (see [`super::rule::RecurrenceRule::occurrences`]).
    /// The iterator owns what it needs, so rules built on the fly (simple
    /// patterns) can be expanded too.
    pub fn expand(
        &self,
        zone: Tz,
        anchor: NaiveDateTime,
        consumed: u32,
    ) -> Result<impl Iterator<Item = Occurrence> + Send + 'static, RuleError> {
        let set = self.validated(anchor, consumed)?;
        let until = self.until;
        let exdates = self.exdates.clone();
        let floating = set.as_ref().map(|s| s.into_iter());
        // A local UNTIL bounds the wall clock (in generation order); a UTC one
        // bounds instants (after they are sorted).
        let placed = floating
            .into_iter()
            .flatten()
            .map(|t| t.naive_utc())
            .take_while(move |local| match until {
                Some(IcalTime::Local(u)) => *local <= u,
                _ => true,
            })
            .filter_map(move |local| {
                let at = zone::to_instant(zone, local, GapRule::OffsetBeforeGap)?;
                Some(Occurrence { local, at })
            });
        Ok(InstantOrder::new(placed)
            .take_while(move |o| match until {
                Some(IcalTime::Utc(u)) => o.at <= u,
                _ => true,
            })
            .filter(move |o| {
                !exdates.iter().any(|x| match x {
                    IcalTime::Utc(u) => o.at == *u,
                    IcalTime::Local(l) => o.local == *l,
                })
            }))
    }
}

/// `YYYYMMDD`, `YYYYMMDDTHHMMSS` or `YYYYMMDDTHHMMSSZ`. A date alone means the
/// end of that local day (an `UNTIL` date includes the whole day).
fn parse_ical_time(v: &str) -> Result<IcalTime, String> {
    let v = v.trim();
    if let Some(utc) = v.strip_suffix('Z').or_else(|| v.strip_suffix('z')) {
        return NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
            .map(|t| IcalTime::Utc(t.and_utc()))
            .map_err(|_| format!("{v:?} is not YYYYMMDDTHHMMSSZ"));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S") {
        return Ok(IcalTime::Local(t));
    }
    NaiveDate::parse_from_str(v, "%Y%m%d")
        .ok()
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map(IcalTime::Local)
        .ok_or_else(|| format!("{v:?} is not YYYYMMDD[THHMMSS[Z]]"))
}

#[cfg(test)]
mod tests {
    use super::super::rule::{parse_local, RecurrenceRule};
    use super::*;

    fn next(rule: &str, zone: &str, dtstart: &str, after: &str, n: usize) -> Vec<String> {
        RecurrenceRule::parse(rule, zone)
            .unwrap()
            .next_after(parse_local(dtstart).unwrap(), after.parse().unwrap(), n)
            .unwrap()
            .into_iter()
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .collect()
    }

    const T0: &str = "2000-01-01T00:00:00Z";

    /// The `rrule` crate expanding in the zone itself (as its docs suggest)
    /// gives 03:00 CEST twice on the spring-forward day: 02:00 does not exist
    /// and is moved onto 03:00, which the rule yields too. A recurrence set has
    /// each instant once (RFC 5545; dateutil's rruleset agrees), and so do we.
    #[test]
    fn hourly_across_spring_forward_has_each_instant_once_where_the_crate_in_zone_repeats_one() {
        use chrono::TimeZone;
        let berlin = rrule::Tz::Tz(chrono_tz::Europe::Berlin);
        let start = berlin.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap();
        let in_zone: Vec<String> = "FREQ=HOURLY;COUNT=5"
            .parse::<RRule<Unvalidated>>()
            .unwrap()
            .build(start)
            .unwrap()
            .all(10)
            .dates
            .iter()
            .map(|d| d.with_timezone(&Utc).format("%Y-%m-%d %H:%M").to_string())
            .collect();
        let ours = next(
            "FREQ=HOURLY;COUNT=5",
            "Europe/Berlin",
            "2026-03-29T00:00",
            T0,
            10,
        );
        assert_eq!(
            ours,
            [
                "2026-03-28 23:00",
                "2026-03-29 00:00",
                "2026-03-29 01:00", // 02:00 (gap) and 03:00 local: one instant
                "2026-03-29 02:00",
            ]
        );
        assert_ne!(
            in_zone, ours,
            "the crate in the zone repeats 01:00Z; if it no longer does, it was fixed upstream"
        );
    }

    /// dateutil yields 02:45 (moved to 03:45 by the gap) before 03:00; the
    /// next occurrence is the earliest, so we yield them in time order.
    #[test]
    fn gap_times_moved_past_later_ones_come_out_in_time_order_once() {
        assert_eq!(
            next(
                "FREQ=DAILY;BYHOUR=2,3;BYMINUTE=0,45",
                "Europe/Berlin",
                "2026-03-28T02:00",
                "2026-03-28T12:00:00Z",
                6
            ),
            [
                "2026-03-29 01:00", // 02:00 and 03:00 local: 03:00 CEST
                "2026-03-29 01:45", // 02:45 and 03:45 local: 03:45 CEST
                "2026-03-30 00:00",
                "2026-03-30 00:45",
                "2026-03-30 01:00",
                "2026-03-30 01:45",
            ]
        );
    }

    #[test]
    fn interval_counts_periods_from_the_anchor() {
        assert_eq!(
            next(
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR",
                "UTC",
                "2026-01-05T08:00",
                T0,
                5
            ),
            [
                "2026-01-05 08:00",
                "2026-01-09 08:00",
                "2026-01-19 08:00",
                "2026-01-23 08:00",
                "2026-02-02 08:00"
            ]
        );
        assert_eq!(
            next("FREQ=DAILY;INTERVAL=3", "UTC", "2026-02-27T07:30", T0, 3),
            ["2026-02-27 07:30", "2026-03-02 07:30", "2026-03-05 07:30"]
        );
    }

    #[test]
    fn month_ends_skip_short_months_and_bysetpos_picks_the_last_day() {
        // RFC 5545: BYMONTHDAY=31 skips months without a 31st.
        assert_eq!(
            next(
                "FREQ=MONTHLY;BYMONTHDAY=31",
                "UTC",
                "2026-01-31T09:00",
                T0,
                3
            ),
            ["2026-01-31 09:00", "2026-03-31 09:00", "2026-05-31 09:00"]
        );
        assert_eq!(
            next(
                "FREQ=MONTHLY;BYMONTHDAY=-1",
                "UTC",
                "2026-01-31T09:00",
                T0,
                3
            ),
            ["2026-01-31 09:00", "2026-02-28 09:00", "2026-03-31 09:00"]
        );
        // Last working day of the month.
        assert_eq!(
            next(
                "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
                "UTC",
                "2026-01-30T17:00",
                T0,
                3
            ),
            ["2026-01-30 17:00", "2026-02-27 17:00", "2026-03-31 17:00"]
        );
        // Second Tuesday.
        assert_eq!(
            next(
                "FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2",
                "UTC",
                "2026-01-13T10:00",
                T0,
                2
            ),
            ["2026-01-13 10:00", "2026-02-10 10:00"]
        );
    }

    #[test]
    fn leap_day_recurs_only_in_leap_years() {
        assert_eq!(
            next("FREQ=YEARLY", "UTC", "2024-02-29T12:00", T0, 3),
            ["2024-02-29 12:00", "2028-02-29 12:00", "2032-02-29 12:00"]
        );
        assert_eq!(
            next(
                "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=-1",
                "UTC",
                "2027-02-28T12:00",
                T0,
                2
            ),
            ["2027-02-28 12:00", "2028-02-29 12:00"]
        );
    }

    #[test]
    fn count_and_until_end_the_series() {
        assert_eq!(
            next("FREQ=DAILY;COUNT=3", "UTC", "2026-01-01T09:00", T0, 10),
            ["2026-01-01 09:00", "2026-01-02 09:00", "2026-01-03 09:00"]
        );
        // UNTIL in UTC is an instant: 09:00 Berlin on the 3rd is 08:00Z, included.
        assert_eq!(
            next(
                "FREQ=DAILY;UNTIL=20260103T080000Z",
                "Europe/Berlin",
                "2026-01-01T09:00",
                T0,
                10
            ),
            ["2026-01-01 08:00", "2026-01-02 08:00", "2026-01-03 08:00"]
        );
        // A date UNTIL includes that whole local day.
        assert_eq!(
            next(
                "FREQ=DAILY;UNTIL=20260102",
                "UTC",
                "2026-01-01T09:00",
                T0,
                10
            ),
            ["2026-01-01 09:00", "2026-01-02 09:00"]
        );
        for zero in ["FREQ=MINUTELY;INTERVAL=0", "FREQ=MONTHLY;BYMONTHDAY=0"] {
            let e = RecurrenceRule::parse(zero, "UTC").unwrap_err();
            assert!(e.to_string().contains("0 is not allowed"), "{e}");
        }
        let e = RecurrenceRule::parse("FREQ=DAILY;COUNT=2;UNTIL=20260102", "UTC").unwrap_err();
        assert!(e.to_string().contains("COUNT and UNTIL"), "{e}");
    }

    #[test]
    fn consumed_occurrences_shorten_a_count_rule() {
        let r = RecurrenceRule::parse("FREQ=DAILY;COUNT=3", "UTC").unwrap();
        let from_second: Vec<_> = r
            .occurrences(parse_local("2026-01-02T09:00").unwrap(), 1)
            .unwrap()
            .map(|o| o.local.to_string())
            .collect();
        assert_eq!(from_second, ["2026-01-02 09:00:00", "2026-01-03 09:00:00"]);
        assert_eq!(
            r.occurrences(parse_local("2026-01-04T09:00").unwrap(), 3)
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn exdate_removes_local_and_utc_occurrences() {
        let rule = "RRULE:FREQ=DAILY;COUNT=5\nEXDATE:20260102T090000,20260104T080000Z";
        assert_eq!(
            next(rule, "Europe/Berlin", "2026-01-01T09:00", T0, 10),
            ["2026-01-01 08:00", "2026-01-03 08:00", "2026-01-05 08:00"]
        );
        let rule = "RRULE:FREQ=WEEKLY\nEXDATE;TZID=Europe/Berlin:20260108T090000";
        assert_eq!(
            next(rule, "Europe/Berlin", "2026-01-01T09:00", T0, 2),
            ["2026-01-01 08:00", "2026-01-15 08:00"]
        );
    }
}
