//! Times as producers write them, and local wall times with their zones.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;

use super::error::{invalid, DecodeError, Loc};
use super::fields::{is_blank, Keys};
use super::json::{Node, Obj};
use crate::event::local_time::{self, LocalTime};

/// Timestamps as producers write them: RFC 3339 (`Z` or offset, `T` or
/// space), naive ISO 8601 (Python's `utcnow().isoformat()`, read as UTC), a
/// bare date (midnight UTC), or epoch seconds / milliseconds (numbers or
/// digit strings; below 1e11 is seconds).
pub(super) fn parse_time(v: &Node<'_>, loc: Loc<'_>) -> Result<DateTime<Utc>, DecodeError> {
    match v {
        Node::Str(s) => parse_time_str(s).ok_or_else(|| invalid(loc, v, "an RFC 3339 timestamp")),
        Node::Num(n) => {
            epoch(n).ok_or_else(|| invalid(loc, v, "an epoch time in seconds or milliseconds"))
        }
        _ => Err(invalid(loc, v, "an RFC 3339 timestamp")),
    }
}

pub(super) fn parse_time_str(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = offset_time_str(s) {
        return Some(t);
    }
    if let Some(t) = naive_time_str(s) {
        return Some(t.and_utc());
    }
    if let Ok(i) = s.parse::<i64>() {
        return epoch_i64(i);
    }
    match s.parse::<f64>() {
        Ok(f)
            if s.bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') =>
        {
            epoch_f64(f)
        }
        _ => None,
    }
}

/// A timestamp with an offset (`Z`, `+02:00`).
pub(super) fn offset_time_str(s: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = utc_seconds(s) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if !s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-')
    {
        return None;
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form most producers write, read without
/// chrono's general parser (to the same instant). Anything else, including
/// an impossible date or a leap second, is left to [`offset_time_str`]'s
/// other readings.
fn utc_seconds(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| {
        b[from..to].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    let time = date.and_hms_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?)?;
    Some(time.and_utc())
}

/// A wall-clock reading without offset (a bare date is its midnight).
pub(super) fn naive_time_str(s: &str) -> Option<NaiveDateTime> {
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

// ---------------------------------------------------------------- local times

/// Keys under which a payload names the zone of its local times.
const ZONE_KEYS: &[&str] = &["timezone", "tz", "time_zone", "timeZone"];

/// The zone `map` names, if any (looked at, not taken: the recurrence and the
/// attributes keep it too). An unknown zone name is an error naming it.
pub(super) fn peek_zone(map: &Obj<'_>, parent: &str) -> Result<Option<(String, Tz)>, DecodeError> {
    for &key in ZONE_KEYS {
        match map.get(key) {
            Some(v) if is_blank(v) => continue,
            Some(v @ Node::Str(name)) => {
                return match local_time::parse_zone(name) {
                    Some(tz) => Ok(Some((name.trim().to_owned(), tz))),
                    None => Err(invalid(
                        Loc { parent, key },
                        v,
                        "an IANA time zone such as Europe/Berlin",
                    )),
                };
            }
            Some(other) => {
                return Err(invalid(
                    Loc { parent, key },
                    other,
                    "an IANA time zone such as Europe/Berlin",
                ))
            }
            None => continue,
        }
    }
    Ok(None)
}

/// The first usable value among `keys`, when it is a wall-clock reading
/// without offset.
pub(super) fn peek_naive(map: &Obj<'_>, keys: &Keys) -> Option<NaiveDateTime> {
    let v = keys
        .names
        .iter()
        .filter_map(|k| map.get(k))
        .find(|v| !is_blank(v))?;
    let s = v.as_str()?.trim();
    // A reading ending in `Z` is never naive (and is parsed when taken).
    if s.ends_with(['Z', 'z']) || offset_time_str(s).is_some() {
        return None;
    }
    naive_time_str(s)
}

/// A local time already in canonical form (`{"local", "timezone"}`), as our
/// own output carries it.
pub(super) fn take_local(
    map: &mut Obj<'_>,
    parent: &str,
    key: &'static str,
) -> Result<Option<LocalTime>, DecodeError> {
    let Some(v) = map.take(key) else {
        return Ok(None);
    };
    match serde_json::from_value::<LocalTime>(v.clone().into_value()) {
        Ok(t)
            if t.timezone
                .as_deref()
                .is_none_or(|z| local_time::parse_zone(z).is_some()) =>
        {
            Ok(Some(t))
        }
        _ => Err(invalid(
            Loc { parent, key },
            &v,
            "{\"local\": \"YYYY-MM-DDTHH:MM:SS\", \"timezone\": an IANA zone}",
        )),
    }
}

/// Re-reads a time in the message's zone: a naive reading with a zone is
/// that wall time there; an absolute time with a zone gains its local
/// reading; a naive reading without a zone stays UTC but keeps its local form.
pub(super) fn localise(
    instant: &mut Option<DateTime<Utc>>,
    naive: Option<NaiveDateTime>,
    zone: &Option<(String, Tz)>,
) -> Option<LocalTime> {
    let at = (*instant)?;
    match (naive, zone) {
        (Some(local), Some((name, tz))) => {
            *instant = Some(local_time::resolve(local, *tz));
            Some(LocalTime {
                local,
                timezone: Some(name.clone()),
            })
        }
        (Some(local), None) => Some(LocalTime {
            local,
            timezone: None,
        }),
        (None, Some((name, tz))) => Some(LocalTime {
            local: local_time::to_local(at, *tz),
            timezone: Some(name.clone()),
        }),
        (None, None) => None,
    }
}

/// Below this an epoch number is seconds (year 5138), above it milliseconds.
const EPOCH_SECONDS_LIMIT: i64 = 100_000_000_000;

pub(super) fn epoch(n: &serde_json::Number) -> Option<DateTime<Utc>> {
    match n.as_i64() {
        Some(i) => epoch_i64(i),
        None => epoch_f64(n.as_f64()?),
    }
}

fn epoch_i64(i: i64) -> Option<DateTime<Utc>> {
    if (-EPOCH_SECONDS_LIMIT..EPOCH_SECONDS_LIMIT).contains(&i) {
        DateTime::from_timestamp(i, 0)
    } else {
        DateTime::from_timestamp_millis(i)
    }
}

fn epoch_f64(f: f64) -> Option<DateTime<Utc>> {
    if !f.is_finite() {
        return None;
    }
    let secs = if f.abs() < EPOCH_SECONDS_LIMIT as f64 {
        f
    } else {
        f / 1000.0
    };
    // Beyond chrono's range either way; keeps the casts below exact.
    if secs.abs() > 1e14 {
        return None;
    }
    let whole = secs.floor();
    // Microsecond precision: an f64 holds no more for present-day times.
    let micros = ((secs - whole) * 1e6).round();
    let (whole, micros) = if micros >= 1e6 {
        (whole + 1.0, 0.0)
    } else {
        (whole, micros)
    };
    DateTime::from_timestamp(whole as i64, (micros as u32) * 1000)
}

/// The first usable time among `keys`, parsed but left in the map.
pub(super) fn peek_time(map: &Obj<'_>, keys: &Keys) -> Result<Option<DateTime<Utc>>, DecodeError> {
    for &key in keys.names {
        match map.get(key) {
            Some(v) if !is_blank(v) => return parse_time(v, Loc::top(key)).map(Some),
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use crate::event::decode::tests::*;

    // ------------------------------------------------------------ times

    #[test]
    fn the_utc_seconds_shortcut_reads_what_chrono_reads() {
        for s in [
            "2026-02-08T10:30:00Z",
            "1970-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2024-02-29T12:00:00Z",
            "2026-02-29T12:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T23:60:00Z",
            "2024-12-31T23:59:60Z",
            "2026-01-01t00:00:00Z",
            "2026-01-01T00:00:00z",
            "+026-01-01T00:00:00Z",
            "2026-01-01T00:0a:00Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc));
            if let Some(fast) = super::utc_seconds(s) {
                assert_eq!(Some(fast), chrono, "{s}");
            }
        }
        assert!(super::utc_seconds("2026-02-08T10:30:00Z").is_some());
    }

    #[test]
    fn naive_iso_timestamps_are_read_as_utc() {
        for (ts, expected) in [
            ("2026-02-08T10:30:00.123456", "2026-02-08T10:30:00.123456Z"),
            ("2026-02-08T10:30:00", "2026-02-08T10:30:00Z"),
            ("2026-02-08 10:30:00", "2026-02-08T10:30:00Z"),
            ("2026-02-08 10:30:00.5", "2026-02-08T10:30:00.5Z"),
            ("2026-02-08T10:30", "2026-02-08T10:30:00Z"),
        ] {
            let msg = SEED_001_CREATED.replace(
                "\"timestamp\": \"2026-02-08T10:30:00Z\"",
                &format!("\"timestamp\": \"{ts}\""),
            );
            assert_eq!(dec(&msg).occurred_at, t(expected), "{ts}");
        }
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        for (ts, expected) in [
            ("2026-02-08T12:30:00+02:00", "2026-02-08T10:30:00Z"),
            ("2026-02-08T12:30:00+0200", "2026-02-08T10:30:00Z"),
            ("2026-02-08 05:30:00-05:00", "2026-02-08T10:30:00Z"),
            ("2026-02-08t10:30:00z", "2026-02-08T10:30:00Z"),
        ] {
            let msg = SEED_001_CREATED.replace(
                "\"timestamp\": \"2026-02-08T10:30:00Z\"",
                &format!("\"timestamp\": \"{ts}\""),
            );
            assert_eq!(dec(&msg).occurred_at, t(expected), "{ts}");
        }
    }

    #[test]
    fn epoch_seconds_and_milliseconds_are_both_accepted() {
        for (ts, expected) in [
            ("1770546600", "2026-02-08T10:30:00Z"),
            ("1770546600123", "2026-02-08T10:30:00.123Z"),
            ("1770546600.5", "2026-02-08T10:30:00.5Z"),
            ("\"1770546600\"", "2026-02-08T10:30:00Z"),
            ("0", "1970-01-01T00:00:00Z"),
        ] {
            let msg = SEED_001_CREATED.replace(
                "\"timestamp\": \"2026-02-08T10:30:00Z\"",
                &format!("\"timestamp\": {ts}"),
            );
            assert_eq!(dec(&msg).occurred_at, t(expected), "{ts}");
        }
        let err = fail(&SEED_001_CREATED.replace(
            "\"timestamp\": \"2026-02-08T10:30:00Z\"",
            "\"timestamp\": 1e300",
        ));
        assert!(
            matches!(&err, DecodeError::InvalidField { field, .. } if field == "timestamp"),
            "{err}"
        );
    }

    #[test]
    fn date_only_due_dates_are_midnight_utc() {
        let e = dec(
            r#"{"event_type": "due_date_set", "task_id": 1, "timestamp": "2026-01-03T10:00:00Z", "task_data": {"due_date": "2026-01-10"}}"#,
        );
        assert_eq!(e.kind, "task.due_date_set");
        assert_eq!(e.task.unwrap().due_at, Some(t("2026-01-10T00:00:00Z")));
    }

    #[test]
    fn kafka_timestamp_is_used_when_the_message_has_none() {
        let ctx = DecodeContext {
            topic: "task-events",
            kafka_timestamp_ms: Some(1_767_000_000_123),
        };
        let e = dec_with(
            SEED_002_SPM
                .replace(r#""timestamp": "2025-10-01T08:00:00Z", "#, "")
                .as_str(),
            &ctx,
        );
        assert_eq!(
            e.occurred_at,
            DateTime::from_timestamp_millis(1_767_000_000_123).unwrap()
        );
        // A timestamp in the message wins over Kafka's.
        assert_eq!(
            dec_with(SEED_002_SPM, &ctx).occurred_at,
            t("2025-10-01T08:00:00Z")
        );
    }

    #[test]
    fn missing_timestamp_without_a_kafka_timestamp_is_missing_field() {
        let err = fail(&SEED_002_SPM.replace(r#""timestamp": "2025-10-01T08:00:00Z", "#, ""));
        assert_eq!(
            err,
            DecodeError::MissingField {
                field: "timestamp".into()
            }
        );
        assert_eq!(err.to_string(), r#"missing field "timestamp""#);
    }

    #[test]
    fn unparseable_timestamp_names_the_field_path_and_value() {
        let err = fail(
            r#"{"event_id": "e", "event_type": "task.created", "timestamp": "2026-02-08T10:30:00Z", "data": {"task_id": 1, "due_date": "tomorrow-ish"}}"#,
        );
        assert_eq!(
            err.to_string(),
            r#"field "data.due_date" has value "tomorrow-ish": expected an RFC 3339 timestamp"#
        );
        let err =
            fail(r#"{"event_type": "task.created", "timestamp": "soon", "data": {"task_id": 1}}"#);
        assert_eq!(
            err,
            DecodeError::InvalidField {
                field: "timestamp".into(),
                value: "\"soon\"".into(),
                expected: "an RFC 3339 timestamp",
            }
        );
    }
}
