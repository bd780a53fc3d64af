//! Local wall-clock times and their zones.
//!
//! A due time written as `2026-03-29T09:00:00` with `"timezone":
//! "Europe/Berlin"` means nine o'clock in Berlin, whatever the UTC offset is
//! that day. Canonical events carry both the UTC instant (what schedules
//! compare) and the local date-time with its IANA zone (what a reminder or
//! the next occurrence of a series must keep across a DST change).
//!
//! Resolution rules (RFC 5545 section 3.3.5): a local time that falls in a DST
//! gap takes the UTC offset from before the gap (02:30 on the spring-forward
//! day becomes 03:30); an ambiguous one (the autumn overlap) is its first
//! instant.

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A local date-time as the producer wrote it, with its zone when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTime {
    /// The wall-clock reading, without offset.
    pub local: NaiveDateTime,
    /// The IANA zone it is in. `None`: the producer wrote a naive time and
    /// named no zone; the instant beside it reads it as UTC, and a worker
    /// that knows the user's zone may re-read it in that zone with
    /// [`resolve`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Parses an IANA zone name (`Europe/Berlin`, `UTC`).
pub fn parse_zone(name: &str) -> Option<Tz> {
    name.trim().parse::<Tz>().ok()
}

/// The UTC instant of `local` in `tz`, by the rules in the module docs.
pub fn resolve(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        chrono::LocalResult::None => {
            // In a gap: use the offset in force before it. Gaps are at most a
            // few hours long, so a day earlier is safely before it.
            let before = local - chrono::Duration::days(1);
            let offset = tz
                .from_local_datetime(&before)
                .earliest()
                .map(|t| t.offset().fix())
                .unwrap_or_else(|| tz.offset_from_utc_datetime(&local).fix());
            (local - chrono::Duration::seconds(i64::from(offset.local_minus_utc()))).and_utc()
        }
    }
}

/// The wall-clock reading of `instant` in `tz`.
pub fn to_local(instant: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    instant.with_timezone(&tz).naive_local()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn an_ordinary_local_time_has_one_instant() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        assert_eq!(
            resolve(at(2026, 1, 10, 9, 0), berlin).to_rfc3339(),
            "2026-01-10T08:00:00+00:00"
        );
        assert_eq!(
            resolve(at(2026, 7, 10, 9, 0), berlin).to_rfc3339(),
            "2026-07-10T07:00:00+00:00",
            "the same wall time in summer is an hour earlier in UTC"
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_takes_the_offset_from_before_it() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        // 2026-03-29 02:30 does not exist in Berlin; 02:30 at +01:00 is 03:30 CEST.
        let t = resolve(at(2026, 3, 29, 2, 30), berlin);
        assert_eq!(t.to_rfc3339(), "2026-03-29T01:30:00+00:00");
        assert_eq!(to_local(t, berlin), at(2026, 3, 29, 3, 30));
        // Lord Howe moves by 30 minutes: 02:15 on its spring day does not exist.
        let lh = parse_zone("Australia/Lord_Howe").unwrap();
        let t = resolve(at(2026, 10, 4, 2, 15), lh);
        assert_eq!(to_local(t, lh), at(2026, 10, 4, 2, 45));
    }

    #[test]
    fn an_ambiguous_time_is_its_first_instant() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        // 2026-10-25 02:30 happens twice; the first is at +02:00.
        assert_eq!(
            resolve(at(2026, 10, 25, 2, 30), berlin).to_rfc3339(),
            "2026-10-25T00:30:00+00:00"
        );
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(parse_zone("Mars/Olympus").is_none());
        assert!(parse_zone("America/Sao_Paulo").is_some());
    }
}
