//! The rule engine against an RFC 5545 reference: python-dateutil's rrule
//! with zoneinfo zones, on a generated set of rules, zones and start times
//! (DST days, month ends, leap days, BYSETPOS, COUNT, UNTIL, EXDATE), and
//! simple patterns against the RRULE the test itself reads them as.
//!
//! dateutil expands on the wall clock and places each local time with
//! `fold=0`, which is RFC 5545 section 3.3.5 exactly: a time in a gap takes
//! the offset from before the gap, an ambiguous one its first instant. Where
//! it departs from RFC 5545, the oracle is corrected, and the case is pinned
//! by a unit test: a gap time moved onto a time the rule yields anyway is one
//! instance ("duplicate instances are ignored"), not two.
//!
//! Needs `python3` with python-dateutil (Debian: `python3-dateutil`, which
//! `.ci/run` installs). Set `TASKSTREAM_ORACLE_PYTHON` to use another
//! interpreter. Without one the test fails and says so: it never passes
//! without having compared anything.

use std::io::Write;
use std::process::{Command, Stdio};

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use taskstream::recurring::RecurrenceRule;

const ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Europe/London",
    "Pacific/Auckland",
    "Asia/Kolkata",
    "UTC",
];

const CASES: usize = 260;
const SIMPLE_CASES: usize = 60;

/// A small deterministic generator (xorshift64*), so every run checks the same cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const DAYS: &[&str] = &["MO", "TU", "WE", "TH", "FR", "SA", "SU"];

#[derive(Debug, Clone)]
struct Case {
    /// The RRULE dateutil expands.
    rule: String,
    /// When set, what we parse instead: a simple pattern meaning `rule`
    /// (the test's own reading of it, written independently of `simple.rs`).
    simple: Option<String>,
    exdates: Vec<NaiveDateTime>,
    zone: &'static str,
    dtstart: NaiveDateTime,
    after: DateTime<Utc>,
    count: usize,
}

fn weekday_set(rng: &mut Rng) -> String {
    let mut days: Vec<&str> = DAYS.iter().copied().filter(|_| rng.below(3) == 0).collect();
    if days.is_empty() {
        days.push(*rng.pick(DAYS));
    }
    days.join(",")
}

/// A start time near a DST change (March/April, September to November) most
/// of the time, at a wall-clock time a change can swallow or repeat.
fn start(rng: &mut Rng) -> NaiveDateTime {
    let year = 2024 + rng.below(4) as i32;
    let month = *rng.pick(&[1, 2, 3, 3, 3, 4, 4, 9, 9, 10, 10, 10, 11, 12]);
    let last = NaiveDate::from_ymd_opt(year, month % 12 + 1, 1)
        .unwrap_or_else(|| NaiveDate::from_ymd_opt(year + 1, 1, 1).unwrap())
        .pred_opt()
        .unwrap();
    let day = if rng.below(5) == 0 {
        *rng.pick(&[29u32, 30, 31])
            .min(&chrono::Datelike::day(&last))
    } else {
        1 + rng.below(chrono::Datelike::day(&last) as u64) as u32
    };
    let (h, m) = *rng.pick(&[
        (0, 30),
        (1, 30),
        (2, 0),
        (2, 15),
        (2, 30),
        (2, 45),
        (3, 0),
        (9, 0),
        (12, 45),
        (23, 30),
    ]);
    NaiveDate::from_ymd_opt(year, month, day)
        .unwrap()
        .and_hms_opt(h, m, 0)
        .unwrap()
}

/// The first quarter hour of each DST change in `zone` from 2024 to 2027 that
/// a change swallows (gap) or repeats (overlap), found by asking chrono-tz
/// about every quarter hour.
fn dst_changes(zone: &str) -> Vec<NaiveDateTime> {
    use chrono::{Datelike, LocalResult, TimeZone};
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let mut out = Vec::new();
    let mut day = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    while day.year() < 2028 {
        for q in 0..96 {
            let t = day.and_hms_opt(q / 4, (q % 4) * 15, 0).unwrap();
            if !matches!(tz.from_local_datetime(&t), LocalResult::Single(_)) {
                out.push(t);
                break;
            }
        }
        day = day.succ_opt().unwrap();
    }
    out
}

fn generate(n: usize) -> Vec<Case> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(n);
    let changes: std::collections::HashMap<&str, Vec<NaiveDateTime>> =
        ZONES.iter().map(|z| (*z, dst_changes(z))).collect();
    let mut on_changes = 0;
    for i in 0..n {
        let zone = *rng.pick(ZONES);
        let mut dtstart = start(&mut rng);
        let interval = *rng.pick(&[1u32, 1, 1, 2, 3, 7]);
        let mut exdates = Vec::new();
        let mut rule = match i % 10 {
            0 => format!("FREQ=DAILY;INTERVAL={interval}"),
            1 => format!(
                "FREQ=WEEKLY;INTERVAL={};BYDAY={}",
                interval.min(3),
                weekday_set(&mut rng)
            ),
            2 => format!(
                "FREQ=MONTHLY;BYMONTHDAY={}",
                rng.pick(&[1, 15, 28, 29, 30, 31, -1, -2])
            ),
            3 => format!(
                "FREQ=MONTHLY;INTERVAL={};BYDAY={}{}",
                interval.min(2),
                rng.pick(&[1, 2, 3, 4, -1]),
                rng.pick(DAYS)
            ),
            4 => format!(
                "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS={}",
                rng.pick(&[1, 2, -1, -2])
            ),
            5 => {
                if rng.below(2) == 0 {
                    // A leap day.
                    dtstart = NaiveDate::from_ymd_opt(2024, 2, 29)
                        .unwrap()
                        .and_time(dtstart.time());
                    "FREQ=YEARLY".to_string()
                } else {
                    format!(
                        "FREQ=YEARLY;BYMONTH={};BYMONTHDAY={}",
                        rng.pick(&[2, 3, 10]),
                        rng.pick(&[1, 28, -1])
                    )
                }
            }
            6 => format!(
                "FREQ=HOURLY;INTERVAL={};BYHOUR=0,1,2,3,4,8,20,23",
                rng.pick(&[1, 2])
            ),
            7 => {
                // EXDATE: the second and fourth occurrence of a daily rule.
                exdates.push(dtstart + Duration::days(interval as i64));
                exdates.push(dtstart + Duration::days(3 * interval as i64));
                format!("FREQ=DAILY;INTERVAL={interval}")
            }
            8 => format!(
                "FREQ=MONTHLY;BYMONTHDAY=28,29,30,31;BYSETPOS=-1;INTERVAL={}",
                interval.min(2)
            ),
            // Odd cases: times a gap moves past later ones (02:45 -> 03:45).
            _ if i % 20 == 9 => "FREQ=DAILY;BYHOUR=0,1,2,3,9,23;BYMINUTE=0,45".to_string(),
            _ => format!(
                "FREQ=WEEKLY;BYDAY={};BYHOUR=2,9;BYMINUTE=30",
                weekday_set(&mut rng)
            ),
        };
        // Ends: COUNT for some, UNTIL (in UTC, as RFC 5545 wants with a zone) for others.
        match rng.below(4) {
            0 => rule.push_str(&format!(";COUNT={}", 2 + rng.below(6))),
            1 => {
                let until = dtstart.and_utc() + Duration::days(20 + rng.below(200) as i64);
                rule.push_str(&format!(";UNTIL={}", until.format("%Y%m%dT%H%M%SZ")));
            }
            _ => {}
        }
        let mut after = dtstart.and_utc() + Duration::hours(rng.below(24 * 40) as i64 - 24);
        // Daily and hourly rules (in zones with DST) start right before a DST
        // change of their zone, at a wall-clock time the change swallows or
        // repeats, so the gap and overlap rules are what is compared.
        let zone_changes = &changes[zone];
        if (matches!(i % 10, 0 | 6 | 7) || i % 20 == 9) && !zone_changes.is_empty() {
            // A quarter hour inside the gap or overlap, not only its start
            // (where "offset before the gap" and "right after it" agree).
            let first = *rng.pick(zone_changes);
            let inside = first + Duration::minutes(15 * (1 + rng.below(3) as i64));
            let tz: chrono_tz::Tz = zone.parse().unwrap();
            let change = if matches!(
                chrono::TimeZone::from_local_datetime(&tz, &inside),
                chrono::LocalResult::Single(_)
            ) {
                first
            } else {
                inside
            };
            dtstart = if i % 10 == 6 || i % 20 == 9 {
                change.date().and_time(chrono::NaiveTime::MIN)
                    - Duration::hours(rng.below(5) as i64)
            } else {
                change - Duration::days((rng.below(3) * interval as u64) as i64)
            };
            if i % 10 == 7 {
                exdates = vec![dtstart + Duration::days(3 * interval as i64)];
            }
            after = dtstart.and_utc() - Duration::hours(15);
            on_changes += 1;
        }
        out.push(Case {
            rule,
            simple: None,
            exdates,
            zone,
            dtstart,
            after,
            count: 6,
        });
    }
    assert!(
        on_changes >= 50,
        "only {on_changes} cases start at a DST change"
    );
    for i in 0..SIMPLE_CASES {
        let zone = *rng.pick(ZONES);
        let mut dtstart = start(&mut rng);
        let interval = *rng.pick(&[1u32, 1, 2, 3]);
        let (simple, rule) = match i % 5 {
            0 => (
                format!(r#"{{"frequency":"daily","interval":{interval}}}"#),
                format!("FREQ=DAILY;INTERVAL={interval}"),
            ),
            1 => {
                let days = weekday_set(&mut rng);
                let names: Vec<String> = days.split(',').map(|d| format!("\"{d}\"")).collect();
                (
                    format!(
                        r#"{{"frequency":"weekly","interval":{interval},"weekdays":[{}]}}"#,
                        names.join(",")
                    ),
                    format!("FREQ=WEEKLY;INTERVAL={interval};BYDAY={days}"),
                )
            }
            2 => (
                // "Monthly on the 31st" is the last day of every month.
                r#"{"frequency":"monthly","day_of_month":31}"#.to_string(),
                "FREQ=MONTHLY;BYMONTHDAY=-1".to_string(),
            ),
            3 => {
                let day = *rng.pick(DAYS);
                let week = *rng.pick(&[1, 2, -1]);
                (
                    format!(r#"{{"frequency":"monthly","weekday":"{day}","week":{week}}}"#),
                    format!("FREQ=MONTHLY;BYDAY={week}{day}"),
                )
            }
            _ => {
                // Yearly from a leap day: the last day of February every year.
                dtstart = NaiveDate::from_ymd_opt(2024, 2, 29)
                    .unwrap()
                    .and_time(dtstart.time());
                (
                    "yearly".to_string(),
                    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=-1".to_string(),
                )
            }
        };
        let after = dtstart.and_utc() + Duration::hours(rng.below(24 * 60) as i64 - 24);
        out.push(Case {
            rule,
            simple: Some(simple),
            exdates: Vec::new(),
            zone,
            dtstart,
            after,
            count: 6,
        });
    }
    out
}

fn ours(c: &Case) -> Result<Vec<String>, String> {
    let mut text = match &c.simple {
        Some(simple) => simple.clone(),
        None => format!("RRULE:{}", c.rule),
    };
    if !c.exdates.is_empty() {
        let list: Vec<String> = c
            .exdates
            .iter()
            .map(|t| t.format("%Y%m%dT%H%M%S").to_string())
            .collect();
        text.push_str(&format!("\nEXDATE;TZID={}:{}", c.zone, list.join(",")));
    }
    let rule = RecurrenceRule::parse(&text, c.zone).map_err(|e| e.to_string())?;
    let got = rule
        .next_after(c.dtstart, c.after, c.count)
        .map_err(|e| e.to_string())?;
    Ok(got
        .into_iter()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect())
}

const ORACLE: &str = r#"
import json, sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo
from dateutil.rrule import rrulestr, rruleset

for line in sys.stdin:
    c = json.loads(line)
    tz = ZoneInfo(c["zone"])
    start = datetime.fromisoformat(c["dtstart"]).replace(tzinfo=tz)
    rs = rruleset()
    rs.rrule(rrulestr(c["rule"], dtstart=start))
    for x in c["exdates"]:
        rs.exdate(datetime.fromisoformat(x).replace(tzinfo=tz))
    after = datetime.fromisoformat(c["after"].replace("Z", "+00:00"))
    # RFC 5545: a set, in time order, "duplicate instances are ignored".
    # dateutil yields in wall-clock order and compares wall-clock values, so
    # 02:45 in a gap (moved to 03:45) comes before 03:00, and 02:00 (moved
    # to 03:00) and 03:00 are two to it: sort and drop repeats, reading on
    # until an instant more than a day past the answer (no gap is longer).
    seen = set()
    for t in rs:
        u = t.astimezone(timezone.utc)
        if u > after:
            seen.add(u)
            if len(seen) >= c["count"] and u > sorted(seen)[c["count"] - 1] + timedelta(hours=25):
                break
    out = [u.strftime("%Y-%m-%dT%H:%M:%SZ") for u in sorted(seen)[: c["count"]]]
    print(json.dumps(out))
"#;

/// An interpreter that has dateutil and zoneinfo: `TASKSTREAM_ORACLE_PYTHON`,
/// else Debian's (where `python3-dateutil` installs), else `python3` on PATH.
fn python() -> String {
    let candidates: Vec<String> = match std::env::var("TASKSTREAM_ORACLE_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["/usr/bin/python3".into(), "python3".into()],
    };
    for p in &candidates {
        let ok = Command::new(p)
            .args(["-c", "import dateutil.rrule, zoneinfo"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p.clone();
        }
    }
    panic!(
        "the recurrence oracle needs python3 with python-dateutil and zoneinfo (tried {candidates:?}); \
         install it with `apt-get install python3-dateutil` (.ci/run does) \
         or point TASKSTREAM_ORACLE_PYTHON at an interpreter that has it"
    );
}

fn oracle(cases: &[Case]) -> Vec<Vec<String>> {
    let mut child = Command::new(python())
        .args(["-c", ORACLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut input = String::new();
    for c in cases {
        let line = serde_json::json!({
            "rule": format!("RRULE:{}", c.rule),
            "exdates": c.exdates.iter().map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string()).collect::<Vec<_>>(),
            "zone": c.zone,
            "dtstart": c.dtstart.format("%Y-%m-%dT%H:%M:%S").to_string(),
            "after": c.after.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "count": c.count,
        });
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python3 runs");
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "the dateutil oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn next_occurrences_equal_python_dateutil_on_generated_rules_zones_and_dates() {
    let cases = generate(CASES);
    assert_eq!(cases.len(), CASES + SIMPLE_CASES);
    let expected = oracle(&cases);
    assert_eq!(expected.len(), cases.len(), "one oracle answer per case");
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for (c, want) in cases.iter().zip(&expected) {
        match ours(c) {
            Ok(got) if &got == want => compared += want.len(),
            Ok(got) => mismatches.push(format!("{c:?}\n  ours:     {got:?}\n  dateutil: {want:?}")),
            Err(e) => mismatches.push(format!("{c:?}\n  ours failed: {e}\n  dateutil: {want:?}")),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from dateutil:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
    // The generated set must actually exercise the engine, not compare empties.
    eprintln!(
        "{compared} occurrences of {} cases equal to dateutil",
        cases.len()
    );
    assert!(
        compared > cases.len() * 3,
        "only {compared} occurrences compared"
    );
}
