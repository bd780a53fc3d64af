//! Event-time progress: each partition's watermark, and the worker's.
//!
//! A partition's watermark is the newest event time it has delivered minus
//! the allowed lateness: the partition promises (within that lateness) no
//! older events. The worker's watermark, which closes windows, is the
//! minimum over its partitions, because a window holds events of every
//! partition. A partition that has delivered nothing for `idle_timeout` of
//! processing time is left out (Flink's idle sources), so one quiet
//! partition cannot stall every window; when every partition is idle, the
//! most advanced one decides. A partition's idle clock restarts when it is
//! assigned (its mark says "nothing yet" if it was never read), so a new
//! owner's backlog is read before windows close; a partition of the input
//! topics with no mark at all (its owner has not started it yet) counts as
//! "nothing yet" too, idle `idle_timeout` after the closer first missed it. So `idle_timeout` must be
//! longer than the longest stall of a partition that has events waiting
//! (a Redis outage, a rebalance): a partition stalled longer is taken for
//! idle, windows may close without it, and its events then count as late
//! (never twice, never silently).
//!
//! The marks live in one Redis hash shared by every replica, each written
//! by the partition's owner in the same transaction as the counters it
//! moved, so a mark never runs ahead of the counts it covers.

/// What one partition has delivered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMark {
    /// Newest event time seen, ms since the epoch.
    pub max_event_ms: i64,
    /// Processing time of its last event, ms since the epoch.
    pub seen_ms: i64,
}

impl PartitionMark {
    /// Its value in the marks hash: `max_event_ms:seen_ms`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.max_event_ms, self.seen_ms)
    }

    pub fn decode(value: &[u8]) -> Option<PartitionMark> {
        let s = std::str::from_utf8(value).ok()?;
        let (max, seen) = s.split_once(':')?;
        Some(PartitionMark {
            max_event_ms: max.parse().ok()?,
            seen_ms: seen.parse().ok()?,
        })
    }

    /// This partition's watermark.
    pub fn watermark(&self, lateness_ms: i64) -> i64 {
        self.max_event_ms.saturating_sub(lateness_ms)
    }

    /// Whether it has been quiet for `idle_ms` at `now_ms`.
    pub fn idle(&self, now_ms: i64, idle_ms: i64) -> bool {
        self.seen_ms.saturating_add(idle_ms) <= now_ms
    }
}

/// The worker's watermark over `marks` at processing time `now_ms`; `None`
/// before any partition delivered an event.
pub fn combined(
    marks: &[PartitionMark],
    now_ms: i64,
    lateness_ms: i64,
    idle_ms: i64,
) -> Option<i64> {
    let active = marks
        .iter()
        .filter(|m| !m.idle(now_ms, idle_ms))
        .map(|m| m.watermark(lateness_ms))
        .min();
    active.or_else(|| marks.iter().map(|m| m.watermark(lateness_ms)).max())
}

/// When the combined watermark may next move without a new event: the
/// first time an active partition turns idle (`None`: none is active).
pub fn next_idle_at(marks: &[PartitionMark], now_ms: i64, idle_ms: i64) -> Option<i64> {
    marks
        .iter()
        .filter(|m| !m.idle(now_ms, idle_ms))
        .map(|m| m.seen_ms.saturating_add(idle_ms))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATE: i64 = 60_000;
    const IDLE: i64 = 60_000;

    fn mark(max_event_ms: i64, seen_ms: i64) -> PartitionMark {
        PartitionMark {
            max_event_ms,
            seen_ms,
        }
    }

    #[test]
    fn the_watermark_is_the_slowest_active_partition_minus_the_lateness() {
        let now = 1_000_000;
        let marks = [mark(500_000, now - 1000), mark(300_000, now - 2000)];
        assert_eq!(combined(&marks, now, LATE, IDLE), Some(240_000));
        assert_eq!(combined(&[], now, LATE, IDLE), None);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back() {
        let now = 1_000_000;
        // The slow partition last delivered exactly idle_timeout ago.
        let marks = [mark(500_000, now - 1000), mark(300_000, now - IDLE)];
        assert_eq!(combined(&marks, now, LATE, IDLE), Some(440_000));
        assert_eq!(next_idle_at(&marks, now, IDLE), Some(now - 1000 + IDLE));
        // A millisecond earlier it still held it back.
        assert_eq!(combined(&marks, now - 1, LATE, IDLE), Some(240_000));
    }

    #[test]
    fn when_every_partition_is_idle_the_most_advanced_decides() {
        let now = 10_000_000;
        let marks = [mark(500_000, 0), mark(300_000, 0)];
        assert_eq!(combined(&marks, now, LATE, IDLE), Some(440_000));
        assert_eq!(next_idle_at(&marks, now, IDLE), None);
    }

    #[test]
    fn marks_round_trip_and_garbage_is_refused() {
        let m = mark(-5, 7);
        assert_eq!(PartitionMark::decode(m.encode().as_bytes()), Some(m));
        assert_eq!(PartitionMark::decode(b"12"), None);
        assert_eq!(PartitionMark::decode(b"a:b"), None);
    }
}
