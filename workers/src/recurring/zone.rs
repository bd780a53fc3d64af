//! Wall-clock time in an IANA zone, and the two rules for local times that a
//! DST change makes impossible or ambiguous.
//!
//! Every rule is expanded in *floating* local time (no zone, no DST), then each
//! local occurrence is placed on the UTC time line here. Doing the zone step
//! ourselves, once, is what keeps a 09:00 task at 09:00 across DST changes and
//! what sidesteps the `rrule` crate's DST bugs (duplicated and missing
//! occurrences when it expands in a zone).

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::rule::RuleError;

/// What to do with a local time that falls into a DST gap (does not exist).
/// An ambiguous time (in the overlap when clocks go back) always takes its
/// first instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapRule {
    /// RFC 5545 section 3.3.5: interpret the time with the UTC offset from
    /// before the gap, so 02:30 on a spring-forward day in Berlin becomes 03:30.
    /// A 30-minute gap (Australia/Lord_Howe) moves it by 30 minutes.
    OffsetBeforeGap,
    /// cron: the run happens right after the gap, at the first minute that
    /// exists (03:00 in Berlin). Several times in one gap collapse into that one run.
    RightAfterGap,
}

/// Parses an IANA zone name (`Europe/Berlin`, `UTC`).
pub fn parse_zone(name: &str) -> Result<Tz, RuleError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| RuleError::UnknownZone {
            zone: name.to_string(),
        })
}

/// The wall-clock time of `at` in `zone`.
pub fn to_local(zone: Tz, at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(&zone).naive_local()
}

/// The instant of the wall-clock time `local` in `zone`. `None` only for a
/// date at the very edge of the representable range.
pub fn to_instant(zone: Tz, local: NaiveDateTime, gap: GapRule) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => match gap {
            GapRule::OffsetBeforeGap => {
                let offset = offset_before_gap(zone, local)?;
                Some(local.and_utc() - offset)
            }
            GapRule::RightAfterGap => first_existing_minute_after(zone, local),
        },
    }
}

/// The UTC offset in force just before the gap that swallowed `local`: the
/// offset of the last wall-clock time before it that exists. Gaps are at most
/// a few hours long, so the walk back is short.
fn offset_before_gap(zone: Tz, local: NaiveDateTime) -> Option<Duration> {
    let mut probe = local;
    for _ in 0..(24 * 4) {
        probe -= Duration::minutes(15);
        if let Some(t) = zone.from_local_datetime(&probe).earliest() {
            let offset = t.naive_local() - t.naive_utc();
            return Some(offset);
        }
    }
    None
}

/// The first whole minute after `local` that exists in `zone` (gaps start and
/// end on whole minutes).
fn first_existing_minute_after(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut probe = local.with_second(0)?.with_nanosecond(0)?;
    for _ in 0..(24 * 60) {
        probe += Duration::minutes(1);
        if let Some(t) = zone.from_local_datetime(&probe).earliest() {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn gap_time_takes_the_offset_from_before_the_gap() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        // 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist.
        let at = to_instant(
            berlin,
            local("2026-03-29T02:30:00"),
            GapRule::OffsetBeforeGap,
        );
        assert_eq!(at, Some(utc("2026-03-29T01:30:00Z")), "03:30 CEST");
        let lord_howe = parse_zone("Australia/Lord_Howe").unwrap();
        // 2026-10-04: 02:00 (+10:30) -> 02:30 (+11); 02:15 becomes 02:45.
        let at = to_instant(
            lord_howe,
            local("2026-10-04T02:15:00"),
            GapRule::OffsetBeforeGap,
        );
        assert_eq!(at, Some(utc("2026-10-03T15:45:00Z")));
        assert_eq!(
            to_local(lord_howe, at.unwrap()),
            local("2026-10-04T02:45:00")
        );
    }

    #[test]
    fn gap_time_for_cron_runs_right_after_the_gap() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        let at = to_instant(berlin, local("2026-03-29T02:30:45"), GapRule::RightAfterGap);
        assert_eq!(at, Some(utc("2026-03-29T01:00:00Z")), "03:00 CEST");
    }

    #[test]
    fn ambiguous_time_takes_its_first_instant() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        // 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
        for gap in [GapRule::OffsetBeforeGap, GapRule::RightAfterGap] {
            let at = to_instant(berlin, local("2026-10-25T02:30:00"), gap);
            assert_eq!(at, Some(utc("2026-10-25T00:30:00Z")), "02:30 CEST");
        }
        let sydney = parse_zone("Australia/Sydney").unwrap();
        // 2026-04-05: 03:00 AEDT -> 02:00 AEST.
        let at = to_instant(
            sydney,
            local("2026-04-05T02:30:00"),
            GapRule::OffsetBeforeGap,
        );
        assert_eq!(at, Some(utc("2026-04-04T15:30:00Z")), "02:30 AEDT");
    }

    #[test]
    fn unknown_zone_is_an_error_naming_it() {
        let e = parse_zone("Mars/Olympus").unwrap_err();
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
    }
}
