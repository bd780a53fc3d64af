//! Lag in messages, and data loss, from a committed offset and watermarks.
//!
//! Values a dashboard can trust: never negative, never -1 as a stand-in for
//! "unknown" (a partition without a commit has no lag at all, see
//! [`PartitionLag`]), never above what is actually left to read.

/// The lag of one committed partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// Records still to read: high watermark minus the position the group will
    /// read from (its committed offset, or the low watermark when retention
    /// deleted records it never read). 0 when at or within `allowed_lag` of the end.
    pub messages: u64,
    /// Records deleted by retention before the group read them: low watermark
    /// minus committed offset, when positive.
    pub data_loss: u64,
}

/// Computes the lag of a group committed at `committed` on a partition whose
/// watermarks are `low`..`high`. A committed offset beyond `high` (read
/// between two requests, or a truncated log) is caught up, not negative.
pub fn partition_lag(committed: i64, low: i64, high: i64, allowed_lag: u64) -> PartitionLag {
    let low = low.max(0);
    let high = high.max(low);
    let data_loss = (low - committed).max(0) as u64;
    let position = committed.max(low);
    let raw = (high - position).max(0) as u64;
    PartitionLag {
        messages: if raw <= allowed_lag { 0 } else { raw },
        data_loss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_high_watermark_minus_committed() {
        assert_eq!(
            partition_lag(40, 0, 100, 0),
            PartitionLag {
                messages: 60,
                data_loss: 0
            }
        );
    }

    #[test]
    fn committed_beyond_the_high_watermark_is_zero_not_negative() {
        assert_eq!(partition_lag(105, 0, 100, 0).messages, 0);
    }

    #[test]
    fn lag_within_allowed_lag_is_caught_up() {
        // A transaction's commit marker leaves committed one short of high.
        assert_eq!(partition_lag(99, 0, 100, 1).messages, 0);
        assert_eq!(partition_lag(98, 0, 100, 1).messages, 2);
    }

    #[test]
    fn committed_below_the_low_watermark_is_data_loss() {
        let l = partition_lag(10, 50, 80, 0);
        assert_eq!(l.data_loss, 40);
        // What is left to read starts at the low watermark.
        assert_eq!(l.messages, 30);
    }

    #[test]
    fn an_empty_partition_has_no_lag() {
        assert_eq!(partition_lag(0, 0, 0, 0).messages, 0);
        // Broken watermarks (unknown = -1) never produce a negative lag.
        assert_eq!(partition_lag(5, -1, -1, 0).messages, 0);
    }
}
