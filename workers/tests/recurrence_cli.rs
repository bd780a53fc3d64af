//! `taskstream recurrence next`: the contract the issue states (one RFC 3339
//! UTC instant per line; a bad rule or zone is one line naming it, exit 2).

mod common;
use common::taskstream;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = taskstream()
        .args(["recurrence", "next"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn next_prints_one_utc_instant_per_line_across_a_dst_change() {
    let (code, out, err) = run(&[
        "--rule",
        "RRULE:FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
        "--dtstart",
        "2026-03-27T09:00:00",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2026-03-27T12:00:00Z",
        "--count",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "2026-03-28T08:00:00Z\n2026-03-29T07:00:00Z\n2026-03-30T07:00:00Z\n"
    );
}

#[test]
fn next_accepts_cron_and_simple_json_patterns() {
    let (code, out, err) = run(&[
        "--rule",
        "0 9 * * MON",
        "--dtstart",
        "2026-03-23T09:00",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2026-03-23T12:00:00Z",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "2026-03-30T07:00:00Z\n");
    let (code, out, err) = run(&[
        "--rule",
        r#"{"frequency":"monthly","weekday":"fri","week":-1}"#,
        "--dtstart",
        "2026-01-30T17:00",
        "--tz",
        "America/New_York",
        "--after",
        "2026-01-31T00:00:00Z",
        "--count",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "2026-02-27T22:00:00Z\n2026-03-27T21:00:00Z\n");
}

#[test]
fn next_defaults_to_occurrences_after_now() {
    let (code, out, err) = run(&[
        "--rule",
        "daily",
        "--dtstart",
        "2020-01-01T09:00",
        "--tz",
        "UTC",
        "--count",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<chrono::DateTime<chrono::Utc>> =
        out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0] > chrono::Utc::now());
    assert_eq!(lines[1] - lines[0], chrono::Duration::days(1));
}

#[test]
fn a_bad_rule_or_zone_is_one_line_naming_it_and_exit_code_2() {
    for (args, needle) in [
        (
            ["--rule", "0 25 * * *", "--tz", "UTC"],
            "invalid cron expression \"0 25 * * *\"",
        ),
        (
            ["--rule", "FREQ=FORTNIGHTLY", "--tz", "UTC"],
            "invalid RRULE",
        ),
        (
            ["--rule", "daily", "--tz", "Europe/Atlantis"],
            "unknown time zone \"Europe/Atlantis\"",
        ),
        (
            [
                "--rule",
                "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
                "--tz",
                "UTC",
            ],
            "never fires",
        ),
    ] {
        let mut all = args.to_vec();
        all.extend(["--dtstart", "2026-01-01T09:00"]);
        let (code, out, err) = run(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
