//! `taskstream recurrence next`: the worker's engine on the command line, so a
//! user can check a rule before saving it.

use chrono::{DateTime, SecondsFormat, Utc};

use super::rule::{parse_local, RecurrenceRule, RuleError};

/// Why `recurrence next` cannot answer; printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum NextError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(
        "invalid --after {value:?}: expected an RFC 3339 instant such as 2026-03-30T07:00:00Z"
    )]
    After { value: String },
    #[error("invalid --count 0: expected at least 1")]
    Count,
}

/// The next `count` occurrences after `after` (default `now`) of `rule` in
/// zone `tz`, for a series starting at the local time `dtstart`, as RFC 3339
/// UTC instants (`2026-03-30T07:00:00Z`). Fewer when the rule ends.
pub fn next(
    rule: &str,
    dtstart: &str,
    tz: &str,
    after: Option<&str>,
    count: usize,
    now: DateTime<Utc>,
) -> Result<Vec<String>, NextError> {
    if count == 0 {
        return Err(NextError::Count);
    }
    let rule = RecurrenceRule::parse(rule, tz)?;
    let dtstart = parse_local(dtstart)?;
    let after = match after {
        Some(a) => DateTime::parse_from_rfc3339(a.trim())
            .map_err(|_| NextError::After { value: a.into() })?
            .with_timezone(&Utc),
        None => now,
    };
    Ok(rule
        .next_after(dtstart, after, count)?
        .into_iter()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_utc_instants_after_the_given_time() {
        let now = "2030-01-01T00:00:00Z".parse().unwrap();
        let got = next(
            "RRULE:FREQ=DAILY",
            "2026-03-28T09:00",
            "Europe/Berlin",
            Some("2026-03-28T09:00:00Z"),
            2,
            now,
        )
        .unwrap();
        assert_eq!(got, ["2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"]);
        let got = next("daily", "2026-03-28T09:00", "UTC", None, 1, now).unwrap();
        assert_eq!(got, ["2030-01-01T09:00:00Z"], "after defaults to now");
    }

    #[test]
    fn bad_input_names_what_is_wrong() {
        let now = Utc::now();
        let e = next("daily", "2026-03-28T09:00", "Nowhere/City", None, 1, now).unwrap_err();
        assert!(e.to_string().contains("Nowhere/City"));
        let e = next("daily", "tomorrow", "UTC", None, 1, now).unwrap_err();
        assert!(e.to_string().contains("tomorrow"));
        let e = next("daily", "2026-03-28T09:00", "UTC", Some("soon"), 1, now).unwrap_err();
        assert!(e.to_string().contains("--after"));
    }
}
