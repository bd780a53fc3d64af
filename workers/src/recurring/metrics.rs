//! The recurring worker's own metrics (the pipeline's are in `pipelines::metrics`).
//! Labels are bounded: `kind` is `rrule`, `cron` or `simple`; `reason` is a
//! fixed word.

use metrics::counter;

use super::rule::RuleKind;

pub const OCCURRENCES_GENERATED: &str = "taskstream_recurring_occurrences_generated_total";
pub const SERIES_ENDED: &str = "taskstream_recurring_series_ended_total";
pub const RULES_REJECTED: &str = "taskstream_recurring_rules_rejected_total";
pub const DUPLICATES_SUPPRESSED: &str = "taskstream_recurring_duplicates_suppressed_total";

/// `n` next occurrences published.
pub fn generated(kind: RuleKind, n: usize) {
    counter!(OCCURRENCES_GENERATED, "kind" => kind.as_str()).increment(n as u64);
}

/// A series ended: `reason` is `count_or_until` or `deleted`.
pub fn series_ended(kind: &'static str, reason: &'static str) {
    counter!(SERIES_ENDED, "kind" => kind, "reason" => reason).increment(1);
}

/// An event's rule could not be used (dead-lettered).
pub fn rule_rejected(kind: RuleKind) {
    counter!(RULES_REJECTED, "kind" => kind.as_str()).increment(1);
}

/// Occurrences not published again because the series already had them.
pub fn duplicates_suppressed(kind: RuleKind, n: usize) {
    counter!(DUPLICATES_SUPPRESSED, "kind" => kind.as_str()).increment(n as u64);
}
