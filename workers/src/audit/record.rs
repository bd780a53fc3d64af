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
pub struct RecordSource<'a> {
    pub topic: Cow<'a, str>,
    pub partition: i32,
    pub offset: i64,
    /// The producer dialect (`envelope`, `task_data`, `standard`, `camel_case`,
    /// `reminder`, `canonical`), prefixed `cloudevents/` when wrapped.
    pub dialect: Cow<'a, str>,
}

/// The audit trail's unit. Append-only: never updated after it is written.
///
/// The worker's records borrow their text from the events they describe
/// (`'a`): a batch's records are written and dropped before its events,
/// and a string copied and freed per field was a tenth of the audit
/// worker's own work. Records read back from a store own theirs
/// (`AuditRecord<'static>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord<'a> {
    pub event_id: Cow<'a, str>,
    /// Canonical dotted type, e.g. `task.updated`.
    pub event_type: Cow<'a, str>,
    /// The action part of the type (`updated`), what compliance reports count.
    pub operation: Cow<'a, str>,
    /// The user who acted, if the event says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Cow<'a, str>>,
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
    pub source: RecordSource<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Cow<'a, str>>,
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
pub fn as_stored<'r, 'a>(r: &'r AuditRecord<'a>, now: DateTime<Utc>) -> Cow<'r, AuditRecord<'a>> {
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

/// Where [`AuditRecord::write_json`] put the record's `changes` and
/// `details` in its output: byte ranges, absent when the record has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonSpans {
    pub changes: Option<std::ops::Range<usize>>,
    pub details: Option<std::ops::Range<usize>>,
}

impl AuditRecord<'_> {
    /// The record with its own copy of every text.
    pub fn into_owned(self) -> AuditRecord<'static> {
        let own = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        AuditRecord {
            event_id: own(self.event_id),
            event_type: own(self.event_type),
            operation: own(self.operation),
            actor_id: self.actor_id.map(own),
            task_id: self.task_id.map(own),
            project_id: self.project_id.map(own),
            occurred_at: self.occurred_at,
            received_at: self.received_at,
            changes: self.changes,
            details: self.details,
            source: RecordSource {
                topic: own(self.source.topic),
                partition: self.source.partition,
                offset: self.source.offset,
                dialect: own(self.source.dialect),
            },
            ip_address: self.ip_address.map(own),
            user_agent: self.user_agent.map(own),
        }
    }

    /// Appends the record's JSON to `out`, byte for byte what
    /// `serde_json::to_writer(out, self)` writes (the hash chain covers
    /// those bytes: `record_json_is_written_as_serde_json_writes_it`), and
    /// tells where its `changes` and `details` are, so a store can write
    /// those columns from the same bytes. Strings that need no escape are
    /// copied whole, where serde_json looks at each byte in turn: writing
    /// the record was the largest part of a PostgreSQL batch's work in the
    /// bench process.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<JsonSpans, serde_json::Error> {
        let mut spans = JsonSpans::default();
        out.extend_from_slice(b"{\"event_id\":");
        json_str(out, &self.event_id)?;
        out.extend_from_slice(b",\"event_type\":");
        json_str(out, &self.event_type)?;
        out.extend_from_slice(b",\"operation\":");
        json_str(out, &self.operation)?;
        for (key, value) in [
            (&b",\"actor_id\":"[..], &self.actor_id),
            (b",\"task_id\":", &self.task_id),
            (b",\"project_id\":", &self.project_id),
        ] {
            if let Some(v) = value {
                out.extend_from_slice(key);
                json_str(out, v)?;
            }
        }
        out.extend_from_slice(b",\"occurred_at\":");
        serialize_time(
            &self.occurred_at,
            &mut serde_json::Serializer::new(&mut *out),
        )?;
        out.extend_from_slice(b",\"received_at\":");
        serialize_time(
            &self.received_at,
            &mut serde_json::Serializer::new(&mut *out),
        )?;
        if !self.changes.is_empty() {
            out.extend_from_slice(b",\"changes\":");
            let start = out.len();
            serde_json::to_writer(&mut *out, &self.changes)?;
            spans.changes = Some(start..out.len());
        }
        if let Some(details) = &self.details {
            out.extend_from_slice(b",\"details\":");
            let start = out.len();
            out.extend_from_slice(details.get().as_bytes());
            spans.details = Some(start..out.len());
        }
        out.extend_from_slice(b",\"source\":{\"topic\":");
        json_str(out, &self.source.topic)?;
        out.extend_from_slice(b",\"partition\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.source.partition).as_bytes());
        out.extend_from_slice(b",\"offset\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.source.offset).as_bytes());
        out.extend_from_slice(b",\"dialect\":");
        json_str(out, &self.source.dialect)?;
        out.push(b'}');
        for (key, value) in [
            (&b",\"ip_address\":"[..], &self.ip_address),
            (b",\"user_agent\":", &self.user_agent),
        ] {
            if let Some(v) = value {
                out.extend_from_slice(key);
                json_str(out, v)?;
            }
        }
        out.push(b'}');
        Ok(spans)
    }
}

/// `s` as a JSON string, as serde_json writes it: copied whole when no byte
/// needs an escape (a control character, `"` or `\\`), else by serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    // Without an early exit, so that it is compiled to a vector loop.
    let plain = !s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
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

    /// The record's JSON is what the hash chain covers: the fast writer
    /// must write exactly what serde_json writes, for every shape of record.
    #[test]
    fn record_json_is_written_as_serde_json_writes_it() {
        // A linear congruential walk: a number below `n`.
        fn next(x: &mut u64, n: u64) -> u64 {
            *x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*x >> 33) % n
        }
        fn text(x: &mut u64) -> String {
            const PIECES: [&str; 12] = [
                "",
                "a",
                "task-events",
                "Buy groceries 17",
                "quote \" inside",
                "back\\slash",
                "line\nbreak",
                "tab\t",
                "\u{1}\u{1f}\u{7f}",
                "é ü 日本 🦀",
                "</script>",
                "\r\u{8}\u{c}",
            ];
            (0..next(x, 4))
                .map(|_| PIECES[next(x, 12) as usize])
                .collect()
        }
        fn opt(x: &mut u64) -> Option<Cow<'static, str>> {
            (next(x, 3) > 0).then(|| text(x).into())
        }
        fn value(x: &mut u64) -> serde_json::Value {
            match next(x, 7) {
                0 => serde_json::Value::Null,
                1 => serde_json::json!(next(x, 1000) as i64 - 500),
                2 => serde_json::json!(next(x, 1000) as f64 / 7.0),
                3 => serde_json::json!(next(x, 2) == 1),
                4 => serde_json::json!([text(x), 1, null]),
                5 => serde_json::json!({ "k": text(x), "z": [] }),
                _ => serde_json::Value::String(text(x)),
            }
        }
        let base = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let times = [
            base,
            base + chrono::Duration::microseconds(1_234_567),
            base + chrono::Duration::milliseconds(5),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 0, 0, 0).unwrap(),
        ];
        let x = &mut 99u64;
        for _ in 0..20_000 {
            let mut changes = BTreeMap::new();
            for _ in 0..next(x, 4) {
                let (old, new) = (value(x), value(x));
                changes.insert(text(x), Change { old, new });
            }
            let details = match next(x, 3) {
                0 => None,
                1 => Some(RawJson::of(&serde_json::json!({ "title": text(x) })).unwrap()),
                _ => Some(RawJson::of(&text(x)).unwrap()),
            };
            let r = AuditRecord {
                event_id: text(x).into(),
                event_type: text(x).into(),
                operation: text(x).into(),
                actor_id: opt(x),
                task_id: opt(x),
                project_id: opt(x),
                occurred_at: times[next(x, 5) as usize],
                received_at: times[next(x, 5) as usize],
                changes,
                details,
                source: RecordSource {
                    topic: text(x).into(),
                    partition: next(x, 1 << 31) as i32 - (1 << 30),
                    offset: next(x, 1 << 40) as i64 - (1 << 39),
                    dialect: text(x).into(),
                },
                ip_address: opt(x),
                user_agent: opt(x),
            };
            let mut out = b"prefix".to_vec();
            let spans = r.write_json(&mut out).unwrap();
            let want = serde_json::to_vec(&r).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out[6..]),
                String::from_utf8_lossy(&want),
                "{r:?}"
            );
            let changes = spans.changes.map(|s| out[s].to_vec());
            let want_changes =
                (!r.changes.is_empty()).then(|| serde_json::to_vec(&r.changes).unwrap());
            assert_eq!(changes, want_changes);
            let details = spans.details.map(|s| out[s].to_vec());
            assert_eq!(details, r.details.map(|d| d.get().as_bytes().to_vec()));
        }
    }

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
