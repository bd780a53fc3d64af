//! Which crossings a task's due time has, given now and the thresholds: pure
//! functions, tested with times passed in.
//!
//! A *crossing* is one (task, threshold, due time) to announce: an
//! `approaching` per threshold, and `overdue` at the due time. Rules:
//! - a threshold still ahead is announced when it is reached;
//! - a task already overdue when indexed gets one `overdue`, at once, and
//!   nothing else;
//! - a task indexed after one or more thresholds passed (but before its due
//!   time) gets the most recent of them at once, never a stale earlier one
//!   (indexed 30 minutes before the due time: `1h` now, not `3d` too);
//! - a crossing already announced for this very due time (a task reopened
//!   with its due time unchanged) is not announced again.
//!
//! Moving the due time plans afresh for the new one: every crossing of the
//! old due time is dropped and the new ones carry the new due time in their
//! ids, so the thresholds are re-armed.

use super::threshold::{Threshold, OVERDUE};

/// One planned announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// A threshold's label, or [`OVERDUE`].
    pub threshold: String,
    /// When it should be announced, ms since the epoch: the crossing time, or
    /// now for one already passed.
    pub at_ms: i64,
}

impl Crossing {
    /// The sorted-set member of this crossing of `task`'s `due_ms`.
    pub fn member(&self, task: &str, due_ms: i64) -> String {
        member(task, &self.threshold, due_ms)
    }
}

/// `task|threshold|due_ms`: the pending-crossing member (and, with the due
/// time as RFC 3339, the cause of its event id).
pub fn member(task: &str, threshold: &str, due_ms: i64) -> String {
    format!("{task}|{threshold}|{due_ms}")
}

/// A pending-crossing member read back: task id (which may itself contain
/// `|`), threshold label, due time in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub task: &'a str,
    pub threshold: &'a str,
    pub due_ms: i64,
}

/// Parses a member written by [`member`]; `None` for anything else.
pub fn parse_member(m: &str) -> Option<Member<'_>> {
    let mut parts = m.rsplitn(3, '|');
    let due_ms = parts.next()?.parse().ok()?;
    let threshold = parts.next()?;
    let task = parts.next()?;
    (!task.is_empty() && !threshold.is_empty()).then_some(Member {
        task,
        threshold,
        due_ms,
    })
}

/// The crossings of a task due at `due_ms`, indexed at `now_ms`, with
/// `thresholds` longest first; `sent(label)` says whether that crossing of
/// this due time was already announced.
pub fn plan(
    due_ms: i64,
    now_ms: i64,
    thresholds: &[Threshold],
    sent: impl Fn(&str) -> bool,
) -> Vec<Crossing> {
    let mut out = Vec::with_capacity(thresholds.len() + 1);
    if due_ms <= now_ms {
        if !sent(OVERDUE) {
            out.push(Crossing {
                threshold: OVERDUE.into(),
                at_ms: now_ms,
            });
        }
        return out;
    }
    // The most recent threshold already passed, if any: announced now.
    let passed = thresholds
        .iter()
        .filter(|t| due_ms - t.millis() <= now_ms)
        .min_by_key(|t| t.duration);
    if let Some(t) = passed {
        if !sent(&t.label) {
            out.push(Crossing {
                threshold: t.label.clone(),
                at_ms: now_ms,
            });
        }
    }
    for t in thresholds {
        let at_ms = due_ms - t.millis();
        if at_ms > now_ms && !sent(&t.label) {
            out.push(Crossing {
                threshold: t.label.clone(),
                at_ms,
            });
        }
    }
    if !sent(OVERDUE) {
        out.push(Crossing {
            threshold: OVERDUE.into(),
            at_ms: due_ms,
        });
    }
    out.sort_by_key(|c| c.at_ms);
    out
}

/// The nominal time of a crossing: the due time minus its threshold (the
/// due time for `overdue`). Deterministic, so a republished event is
/// byte-for-byte the same; `None` for a label that is not a threshold.
pub fn nominal_ms(threshold: &str, due_ms: i64) -> Option<i64> {
    if threshold == OVERDUE {
        return Some(due_ms);
    }
    Threshold::parse(threshold)
        .ok()
        .map(|t| due_ms - t.millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;

    fn thresholds() -> Vec<Threshold> {
        vec![
            Threshold::parse("3d").unwrap(),
            Threshold::parse("1h").unwrap(),
        ]
    }

    fn now() -> i64 {
        Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0)
            .unwrap()
            .timestamp_millis()
    }

    fn labels(c: &[Crossing]) -> Vec<(&str, i64)> {
        c.iter().map(|c| (c.threshold.as_str(), c.at_ms)).collect()
    }

    #[test]
    fn a_task_due_in_a_week_has_every_threshold_and_overdue_at_their_times() {
        let due = now() + 7 * D;
        let p = plan(due, now(), &thresholds(), |_| false);
        assert_eq!(
            labels(&p),
            [("3d", due - 3 * D), ("1h", due - H), (OVERDUE, due)]
        );
    }

    #[test]
    fn a_task_already_overdue_when_first_seen_gets_one_overdue_at_once() {
        let p = plan(now() - 5 * D, now(), &thresholds(), |_| false);
        assert_eq!(labels(&p), [(OVERDUE, now())]);
        // Due exactly now counts as overdue.
        let p = plan(now(), now(), &thresholds(), |_| false);
        assert_eq!(labels(&p), [(OVERDUE, now())]);
    }

    #[test]
    fn a_passed_threshold_is_announced_at_once_and_never_a_stale_earlier_one() {
        // Due in two days: 3d has passed, 1h is ahead.
        let due = now() + 2 * D;
        let p = plan(due, now(), &thresholds(), |_| false);
        assert_eq!(labels(&p), [("3d", now()), ("1h", due - H), (OVERDUE, due)]);
        // Due in 30 minutes: both passed; only 1h, the most recent, now.
        let due = now() + 30 * 60_000;
        let p = plan(due, now(), &thresholds(), |_| false);
        assert_eq!(labels(&p), [("1h", now()), (OVERDUE, due)]);
        // Exactly at a threshold counts as passed.
        let due = now() + H;
        let p = plan(due, now(), &thresholds(), |_| false);
        assert_eq!(labels(&p), [("1h", now()), (OVERDUE, due)]);
    }

    #[test]
    fn crossings_already_sent_for_this_due_time_are_not_planned_again() {
        let due = now() + 30 * 60_000;
        // 1h was sent: no stale 3d replaces it, only overdue is left.
        let p = plan(due, now(), &thresholds(), |l| l == "1h");
        assert_eq!(labels(&p), [(OVERDUE, due)]);
        let p = plan(now() - H, now(), &thresholds(), |l| l == OVERDUE);
        assert!(p.is_empty());
    }

    #[test]
    fn moving_the_due_time_re_arms_with_new_members() {
        let first = now() + 2 * H;
        let moved = now() + 5 * D;
        let a: Vec<String> = plan(first, now(), &thresholds(), |_| false)
            .iter()
            .map(|c| c.member("t1", first))
            .collect();
        let b: Vec<String> = plan(moved, now(), &thresholds(), |_| false)
            .iter()
            .map(|c| c.member("t1", moved))
            .collect();
        assert_eq!(b.len(), 3, "3d, 1h and overdue armed again: {b:?}");
        assert!(
            a.iter().all(|m| !b.contains(m)),
            "new due time, new members"
        );
    }

    #[test]
    fn members_round_trip_even_with_a_separator_in_the_task_id() {
        let m = member("team|42", "3d", 1_700_000_000_000);
        assert_eq!(
            parse_member(&m),
            Some(Member {
                task: "team|42",
                threshold: "3d",
                due_ms: 1_700_000_000_000
            })
        );
        assert_eq!(parse_member("garbage"), None);
        assert_eq!(parse_member("a|b|notanumber"), None);
        assert_eq!(nominal_ms("1h", 10 * H), Some(9 * H));
        assert_eq!(nominal_ms(OVERDUE, 10 * H), Some(10 * H));
        assert_eq!(nominal_ms("bogus", 10 * H), None);
    }
}
