//! Which occurrences a completion creates: the next one after the completed
//! occurrence's due time (not after the completion time), with the catch-up
//! policy deciding what happens to occurrences already in the past.
//!
//! Pure: `now` is a parameter, so tests pass times in.

use chrono::{DateTime, NaiveDateTime, Utc};

use super::rule::{RecurrenceRule, RuleError};

/// What to do with occurrences that are already past when a task is completed
/// late (a daily task completed three days after it was due).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Skip them: the next occurrence is the first one still in the future.
    NextAfterNow,
    /// Create each of them (they are overdue tasks) and the first future one,
    /// at most `cap` in all; the series continues from the last one created.
    EveryMissed { cap: usize },
}

/// The occurrence that was completed, and where it sits in its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// Its nominal wall-clock time (what the rule said, before any DST shift):
    /// the series continues from here.
    pub local: NaiveDateTime,
    /// When it was due.
    pub due_at: DateTime<Utc>,
    /// Its number in the series; the task that started the series is 1.
    pub number: u32,
}

/// One occurrence to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub number: u32,
    pub local: NaiveDateTime,
    pub at: DateTime<Utc>,
}

/// The decision for one completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Create these occurrences, in order (never empty).
    Create(Vec<Planned>),
    /// The series is over (`COUNT` used up, `UNTIL` passed).
    Ended,
}

/// How many occurrences are walked at most to find the next one (a
/// minutely cron left open for two years); past that the completion is
/// treated as ended rather than stalling the partition.
const MAX_WALK: usize = 2_000_000;

/// Plans the occurrences after `completed` at time `now`.
///
/// Numbering: each occurrence of the rule after the completed one takes the
/// next number, skipped ones included, so an occurrence's number (and so its
/// derived id) is the same whoever computes it and whenever.
pub fn plan(
    rule: &RecurrenceRule,
    completed: &Completed,
    now: DateTime<Utc>,
    policy: CatchUp,
) -> Result<Plan, RuleError> {
    let consumed = completed.number.saturating_sub(1);
    let mut out = Vec::new();
    let mut number = completed.number;
    let mut fired = false;
    for (walked, occ) in rule.occurrences(completed.local, consumed)?.enumerate() {
        if walked >= MAX_WALK {
            break;
        }
        if occ.local == completed.local {
            // The completed occurrence itself (the anchor matches the rule).
            continue;
        }
        fired = true;
        number = number.saturating_add(1);
        if occ.at <= completed.due_at {
            continue;
        }
        let planned = Planned {
            number,
            local: occ.local,
            at: occ.at,
        };
        if occ.at <= now {
            match policy {
                CatchUp::NextAfterNow => continue,
                CatchUp::EveryMissed { cap } => {
                    out.push(planned);
                    if out.len() >= cap {
                        break;
                    }
                    continue;
                }
            }
        }
        out.push(planned);
        break;
    }
    if !out.is_empty() {
        return Ok(Plan::Create(out));
    }
    if !fired && !rule.is_bounded() {
        return Err(RuleError::NeverFires {
            rule: rule.text().to_string(),
        });
    }
    Ok(Plan::Ended)
}

#[cfg(test)]
mod tests {
    use super::super::rule::parse_local;
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn completed(rule: &RecurrenceRule, local: &str, number: u32) -> Completed {
        let local = parse_local(local).unwrap();
        let due_at = super::super::zone::to_instant(
            rule.zone(),
            local,
            super::super::zone::GapRule::OffsetBeforeGap,
        )
        .unwrap();
        Completed {
            local,
            due_at,
            number,
        }
    }

    fn planned(p: Plan) -> Vec<(u32, String)> {
        match p {
            Plan::Create(v) => v
                .into_iter()
                .map(|p| (p.number, p.at.format("%Y-%m-%dT%H:%MZ").to_string()))
                .collect(),
            Plan::Ended => Vec::new(),
        }
    }

    #[test]
    fn next_occurrence_follows_the_due_time_not_the_completion_time() {
        let rule = RecurrenceRule::parse("FREQ=WEEKLY;BYDAY=MO", "Europe/Berlin").unwrap();
        let c = completed(&rule, "2026-03-23T09:00", 1);
        // Completed early, on Saturday before it was due: still the next Monday after.
        let p = plan(
            &rule,
            &c,
            utc("2026-03-21T10:00:00Z"),
            CatchUp::NextAfterNow,
        )
        .unwrap();
        assert_eq!(planned(p), [(2, "2026-03-30T07:00Z".to_string())]);
    }

    #[test]
    fn next_after_now_skips_missed_occurrences_but_counts_them() {
        let rule = RecurrenceRule::parse("daily", "UTC").unwrap();
        let c = completed(&rule, "2026-01-01T09:00", 1);
        let p = plan(
            &rule,
            &c,
            utc("2026-01-04T12:00:00Z"),
            CatchUp::NextAfterNow,
        )
        .unwrap();
        assert_eq!(planned(p), [(5, "2026-01-05T09:00Z".to_string())]);
    }

    #[test]
    fn every_missed_creates_each_missed_occurrence_up_to_the_cap() {
        let rule = RecurrenceRule::parse("daily", "UTC").unwrap();
        let c = completed(&rule, "2026-01-01T09:00", 1);
        let now = utc("2026-01-03T12:00:00Z");
        let p = plan(&rule, &c, now, CatchUp::EveryMissed { cap: 10 }).unwrap();
        assert_eq!(
            planned(p),
            [
                (2, "2026-01-02T09:00Z".to_string()),
                (3, "2026-01-03T09:00Z".to_string()),
                (4, "2026-01-04T09:00Z".to_string()),
            ]
        );
        let p = plan(&rule, &c, now, CatchUp::EveryMissed { cap: 2 }).unwrap();
        assert_eq!(planned(p).len(), 2);
    }

    #[test]
    fn count_ends_the_series_counting_the_first_task() {
        let rule = RecurrenceRule::parse("FREQ=DAILY;COUNT=3", "UTC").unwrap();
        let now = utc("2026-01-01T00:00:00Z");
        let c = completed(&rule, "2026-01-02T09:00", 2);
        let p = plan(&rule, &c, now, CatchUp::NextAfterNow).unwrap();
        assert_eq!(planned(p), [(3, "2026-01-03T09:00Z".to_string())]);
        let c = completed(&rule, "2026-01-03T09:00", 3);
        assert_eq!(
            plan(&rule, &c, now, CatchUp::NextAfterNow).unwrap(),
            Plan::Ended
        );
    }

    #[test]
    fn until_ends_the_series() {
        let rule = RecurrenceRule::parse("FREQ=WEEKLY;UNTIL=20260110T000000Z", "UTC").unwrap();
        let c = completed(&rule, "2026-01-08T09:00", 2);
        let p = plan(
            &rule,
            &c,
            utc("2026-01-01T00:00:00Z"),
            CatchUp::NextAfterNow,
        )
        .unwrap();
        assert_eq!(p, Plan::Ended);
    }

    #[test]
    fn the_same_completion_always_plans_the_same_numbers() {
        let rule = RecurrenceRule::parse("0 9 * * MON-FRI", "Australia/Sydney").unwrap();
        let c = completed(&rule, "2026-04-03T09:00", 7);
        let now = utc("2026-04-01T00:00:00Z");
        let a = plan(&rule, &c, now, CatchUp::NextAfterNow).unwrap();
        let b = plan(&rule, &c, now, CatchUp::NextAfterNow).unwrap();
        assert_eq!(a, b);
        // Friday -> Monday, across the end of DST (+11 -> +10).
        assert_eq!(planned(a), [(8, "2026-04-05T23:00Z".to_string())]);
    }
}
