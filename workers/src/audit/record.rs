//! One audit record: who did what to which task, when, and what changed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, SubsecRound, Timelike, Utc};
use serde::{Deserialize, Serialize, Serializer};

/// One field's change, old and new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub old: serde_json::Value,
    pub new: serde_json::Value,
}

/// Where the event was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSource {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The producer dialect (`envelope`, `task_data`, `standard`, `camel_case`,
    /// `reminder`, `canonical`), prefixed `cloudevents/` when wrapped.
    pub dialect: String,
}

/// The audit trail's unit. Append-only: never updated after it is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub event_id: String,
    /// Canonical dotted type, e.g. `task.updated`.
    pub event_type: String,
    /// The action part of the type (`updated`), what compliance reports count.
    pub operation: String,
    /// The user who acted, if the event says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    pub occurred_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_time")]
    pub received_at: DateTime<Utc>,
    /// For updates: the fields that changed, old and new (listed by the message,
    /// or computed from its previous snapshot).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, Change>,
    /// The task snapshot the event carried, if any (a JSON object, as its
    /// text: see [`RawJson`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<RawJson>,
    pub source: RecordSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// A JSON value kept as its text, written exactly as it was made or read.
///
/// A record's snapshot is built once as text ([`super::convert`]) and then
/// hashed, written and read back as those bytes: no `serde_json::Value`
/// tree is built, serialized twice (hash, COPY) and dropped per record.
/// Equal when the texts are equal (stores write them verbatim: PostgreSQL's
/// `json` type and the file store's lines keep the text).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// `value` written as JSON (not parsed again to be checked).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<RawJson, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(RawJson)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value as a tree (for reading fields; not on the write path).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.get() == other.get()
    }
}

/// The record as a store writes it: `received_at` = `now` (the pipeline
/// clock's time of the write, whole microseconds) and `occurred_at` cut to
/// microseconds, as PostgreSQL keeps them, so the hash covers exactly what is
/// stored. Borrowed when the record already is so (the worker builds records
/// that way), copied otherwise.
pub fn as_stored(r: &AuditRecord, now: DateTime<Utc>) -> Cow<'_, AuditRecord> {
    let now = now.trunc_subsecs(6);
    if r.received_at == now && r.occurred_at.nanosecond().is_multiple_of(1000) {
        Cow::Borrowed(r)
    } else {
        let mut r = r.clone();
        r.occurred_at = r.occurred_at.trunc_subsecs(6);
        r.received_at = now;
        Cow::Owned(r)
    }
}

/// `t` exactly as chrono's serde writes it (RFC 3339 with `Z`; a fraction of
/// 3, 6 or 9 digits when not zero), without going through `fmt`: the record's
/// JSON is what the hash chain covers, and chrono's formatting was half the
/// cost of writing it. Years outside 0..=9999 are left to chrono.
pub fn serialize_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t.serialize(s);
    }
    let (mut sec, mut nano) = (t.second(), t.nanosecond());
    if nano >= 1_000_000_000 {
        // A leap second, as chrono writes it.
        sec += 1;
        nano -= 1_000_000_000;
    }
    // Writes `value` as `digits` decimal digits at `b[at..]`.
    fn put(b: &mut [u8], at: usize, value: u32, digits: usize) {
        let mut v = value;
        for slot in b[at..at + digits].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    put(&mut b, 0, year as u32, 4);
    put(&mut b, 5, t.month(), 2);
    put(&mut b, 8, t.day(), 2);
    put(&mut b, 11, t.hour(), 2);
    put(&mut b, 14, t.minute(), 2);
    put(&mut b, 17, sec, 2);
    let mut n = 19;
    if nano != 0 {
        let (value, digits) = if nano % 1_000_000 == 0 {
            (nano / 1_000_000, 3)
        } else if nano % 1_000 == 0 {
            (nano / 1_000, 6)
        } else {
            (nano, 9)
        };
        put(&mut b, 20, value, digits);
        n = 20 + digits;
    }
    b[n] = b'Z';
    n += 1;
    // Only ASCII digits and separators were written.
    s.serialize_str(std::str::from_utf8(&b[..n]).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    /// The written time must be chrono's, byte for byte: stored hashes
    /// cover it.
    #[test]
    fn times_are_written_exactly_as_chrono_writes_them() {
        let with = |t: DateTime<Utc>| {
            #[derive(Serialize)]
            struct W(#[serde(serialize_with = "serialize_time")] DateTime<Utc>);
            serde_json::to_string(&W(t)).unwrap()
        };
        let mut cases: Vec<DateTime<Utc>> = vec![
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            // A leap second.
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                .unwrap()
                .and_utc(),
        ];
        // Fractions of every kind: none, millis, micros, nanos, and times
        // across the years (a linear congruential walk).
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let secs = (x >> 20) as i64 % 320_000_000_000 - 62_000_000_000;
            let nanos = match x % 4 {
                0 => 0,
                1 => (x >> 7) as u32 % 1000 * 1_000_000,
                2 => (x >> 7) as u32 % 1_000_000 * 1000,
                _ => (x >> 7) as u32 % 1_000_000_000,
            };
            if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                cases.push(t);
            }
        }
        for t in cases {
            assert_eq!(with(t), serde_json::to_string(&t).unwrap(), "{t:?}");
        }
    }
}
