//! A partition's and a group's status over a sliding window of observations,
//! as Burrow defines them, without Burrow's known false alarms:
//!
//! - **OK**: caught up, or moving along.
//! - **WARNING**: the group commits, but lag grew in every observation of the window.
//! - **STALLED**: lag was non-zero in at least `min_observations` observations
//!   in a row and the committed offset did not move in any of them.
//! - **STOPPED**: the first unconsumed record has waited longer than
//!   `stopped_after` and the committed offset has not moved since it arrived.
//!   (OffsetFetch does not tell when a commit happened, only where it points,
//!   so "no commit" is "the committed offset did not move".) The clock starts
//!   when that record arrived, not at the last commit: a slow, low-traffic
//!   partition whose consumer had nothing to do for an hour and has just
//!   received a message is not STOPPED (Burrow's false alarm).
//! - **REWIND**: the committed offset went back within the window (a reset or
//!   a replay), reported as such instead of as lag trouble.
//!
//! Pure: observations and `now` in, status out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Status of a partition or, the worst of its partitions, a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Rewind,
    Warning,
    Stalled,
    Stopped,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Ok,
        Status::Rewind,
        Status::Warning,
        Status::Stalled,
        Status::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Rewind => "REWIND",
            Status::Warning => "WARNING",
            Status::Stalled => "STALLED",
            Status::Stopped => "STOPPED",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One observation of a committed partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub at: DateTime<Utc>,
    pub committed: i64,
    /// Lag in messages (after `allowed_lag`).
    pub lag: u64,
}

/// The thresholds of the status rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRules {
    pub min_observations: usize,
    pub stopped_after: Duration,
}

/// What is known about a partition beyond its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionHistory {
    /// When the committed offset last moved; `None` when it has not moved
    /// since watching began.
    pub offset_moved_at: Option<DateTime<Utc>>,
    /// When the first unconsumed record was produced (its timestamp, or the
    /// high-watermark history's estimate), if known.
    pub unconsumed_since: Option<DateTime<Utc>>,
}

/// The status of one partition, judged on `window` (oldest first).
pub fn partition_status(
    window: &[Observation],
    history: PartitionHistory,
    now: DateTime<Utc>,
    rules: StatusRules,
) -> Status {
    let Some(last) = window.last() else {
        return Status::Ok;
    };
    // The observations since lag was last zero: only these can show trouble.
    let lagging_from = window.iter().rposition(|o| o.lag == 0).map_or(0, |i| i + 1);
    let lagging = &window[lagging_from..];

    if last.lag > 0 {
        // Since when has the group had something to read without moving?
        let waiting_since = history.unconsumed_since.or_else(|| {
            // Lag was zero earlier in the window: the record came after that.
            (lagging_from > 0).then(|| lagging[0].at)
        });
        let waiting_since = match (waiting_since, history.offset_moved_at) {
            (Some(w), Some(m)) => Some(w.max(m)),
            (Some(w), None) => Some(w),
            (None, Some(m)) => Some(m),
            (None, None) => window.first().map(|o| o.at),
        };
        if let Some(since) = waiting_since {
            let waited = (now - since).to_std().unwrap_or(Duration::ZERO);
            if waited >= rules.stopped_after {
                return Status::Stopped;
            }
        }
    }
    if window.windows(2).any(|w| w[1].committed < w[0].committed) {
        return Status::Rewind;
    }
    if last.lag == 0 {
        return Status::Ok;
    }
    if lagging.len() >= rules.min_observations
        && lagging.iter().all(|o| o.committed == last.committed)
    {
        return Status::Stalled;
    }
    if window.len() >= rules.min_observations
        && window.windows(2).all(|w| w[1].lag > w[0].lag)
        && window[0].committed < last.committed
    {
        return Status::Warning;
    }
    Status::Ok
}

/// A group's status: the worst of its partitions' (OK without any).
pub fn group_status(partitions: impl IntoIterator<Item = Status>) -> Status {
    partitions.into_iter().max().unwrap_or(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn rules() -> StatusRules {
        StatusRules {
            min_observations: 3,
            stopped_after: Duration::from_secs(300),
        }
    }

    /// Observations every 10 s from t(0): (committed, lag).
    fn window(points: &[(i64, u64)]) -> Vec<Observation> {
        points
            .iter()
            .enumerate()
            .map(|(i, &(committed, lag))| Observation {
                at: t(i as i64 * 10),
                committed,
                lag,
            })
            .collect()
    }

    fn status(points: &[(i64, u64)], history: PartitionHistory) -> Status {
        let w = window(points);
        let now = w.last().unwrap().at;
        partition_status(&w, history, now, rules())
    }

    #[test]
    fn caught_up_is_ok() {
        assert_eq!(
            status(&[(10, 0), (20, 0), (30, 0)], Default::default()),
            Status::Ok
        );
    }

    #[test]
    fn moving_with_steady_lag_is_ok() {
        assert_eq!(
            status(&[(10, 5), (20, 5), (30, 5), (40, 4)], Default::default()),
            Status::Ok
        );
    }

    #[test]
    fn lag_growing_in_every_observation_while_committing_is_warning() {
        assert_eq!(
            status(&[(10, 5), (20, 8), (30, 12), (40, 20)], Default::default()),
            Status::Warning
        );
    }

    #[test]
    fn lag_growing_but_not_every_time_is_ok() {
        assert_eq!(
            status(&[(10, 5), (20, 8), (30, 7), (40, 20)], Default::default()),
            Status::Ok
        );
    }

    #[test]
    fn offset_not_moving_with_lag_is_stalled() {
        assert_eq!(
            status(&[(10, 5), (10, 6), (10, 9)], Default::default()),
            Status::Stalled
        );
    }

    #[test]
    fn too_few_lagging_observations_are_not_stalled() {
        // Lag appeared only in the last two observations.
        assert_eq!(
            status(&[(10, 0), (10, 0), (10, 1), (10, 1)], Default::default()),
            Status::Ok
        );
    }

    #[test]
    fn no_movement_since_the_record_arrived_long_ago_is_stopped() {
        let history = PartitionHistory {
            offset_moved_at: Some(t(-1000)),
            unconsumed_since: Some(t(-600)),
        };
        assert_eq!(
            status(&[(10, 5), (10, 5), (10, 5)], history),
            Status::Stopped
        );
    }

    #[test]
    fn a_slow_low_traffic_partition_with_a_fresh_message_is_not_stopped() {
        // The group caught up an hour ago and had nothing to do since; a record
        // arrived 5 seconds ago. Burrow would call this STOPPED.
        let history = PartitionHistory {
            offset_moved_at: Some(t(-3600)),
            unconsumed_since: Some(t(15)),
        };
        assert_eq!(status(&[(10, 0), (10, 0), (10, 1)], history), Status::Ok);
    }

    #[test]
    fn without_a_record_time_stopped_counts_from_when_lag_appeared() {
        let w = window(&[(10, 0), (10, 1), (10, 1), (10, 1)]);
        let history = PartitionHistory {
            offset_moved_at: Some(t(-3600)),
            unconsumed_since: None,
        };
        // Lag appeared at t(10): 290 s later it is not yet stopped, 300 s later it is.
        assert_eq!(
            partition_status(&w, history, t(300), rules()),
            Status::Stalled
        );
        assert_eq!(
            partition_status(&w, history, t(310), rules()),
            Status::Stopped
        );
    }

    #[test]
    fn a_group_consuming_a_large_backlog_is_not_stopped() {
        // The oldest unconsumed record is an hour old, but the offset moves.
        let history = PartitionHistory {
            offset_moved_at: Some(t(20)),
            unconsumed_since: Some(t(-3600)),
        };
        assert_eq!(
            status(&[(100, 5000), (200, 4900), (300, 4800)], history),
            Status::Ok
        );
    }

    #[test]
    fn offset_going_back_is_rewind() {
        assert_eq!(
            status(&[(100, 0), (50, 50), (60, 40)], Default::default()),
            Status::Rewind
        );
    }

    #[test]
    fn an_empty_window_is_ok() {
        assert_eq!(
            partition_status(&[], Default::default(), t(0), rules()),
            Status::Ok
        );
    }

    #[test]
    fn group_status_is_the_worst_partition() {
        assert_eq!(
            group_status([Status::Ok, Status::Stalled, Status::Warning]),
            Status::Stalled
        );
        assert_eq!(group_status([]), Status::Ok);
        assert!(Status::Stopped > Status::Stalled && Status::Rewind > Status::Ok);
    }
}
