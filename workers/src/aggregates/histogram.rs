//! Completion durations (task created to completed) as a fixed-bucket
//! histogram: mergeable by adding bucket counts, so each event is one
//! `HINCRBY` on its window's hash and any two windows or replicas combine
//! exactly. Quantiles are reported as the upper bound of the bucket that
//! holds them (at most one bucket wide of the true value: coarse on
//! purpose, dashboards read them as "within a quarter of an hour" etc.).

/// Upper bounds of the buckets, in seconds; a last bucket takes the rest.
pub const BOUNDS_SECONDS: &[f64] = &[
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14_400.0,
    28_800.0,
    86_400.0,
    172_800.0,
    604_800.0,
    2_592_000.0,
];

/// How many buckets: one per bound and the open last one.
pub const BUCKETS: usize = 13;
const _: () = assert!(BUCKETS == BOUNDS_SECONDS.len() + 1);

/// Bucket counts of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CompletionHistogram {
    /// One count per bound; the last has no upper bound.
    pub buckets: [u64; BUCKETS],
    pub sum_seconds: f64,
}

/// The bucket a duration falls in.
pub fn bucket_of(seconds: f64) -> usize {
    BOUNDS_SECONDS
        .iter()
        .position(|b| seconds <= *b)
        .unwrap_or(BOUNDS_SECONDS.len())
}

impl CompletionHistogram {
    pub fn new() -> Self {
        CompletionHistogram::default()
    }

    pub fn record(&mut self, seconds: f64) {
        self.add_to_bucket(bucket_of(seconds), 1);
        self.sum_seconds += seconds;
    }

    pub fn add_to_bucket(&mut self, bucket: usize, n: u64) {
        if let Some(b) = self.buckets.get_mut(bucket) {
            *b += n;
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another window's (or replica's) counts to this one.
    pub fn merge(&mut self, other: &CompletionHistogram) {
        for (i, n) in other.buckets.iter().enumerate() {
            self.add_to_bucket(i, *n);
        }
        self.sum_seconds += other.sum_seconds;
    }

    /// The `q` quantile (0..=1) as its bucket's upper bound; the open last
    /// bucket reports the largest bound. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    BOUNDS_SECONDS
                        .get(i)
                        .copied()
                        .unwrap_or_else(|| BOUNDS_SECONDS.last().copied().unwrap_or(0.0)),
                );
            }
        }
        BOUNDS_SECONDS.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_bucket_bounded_above_by_them() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(60.0), 0, "bounds are inclusive");
        assert_eq!(bucket_of(61.0), 1);
        assert_eq!(bucket_of(1e12), BOUNDS_SECONDS.len());
    }

    #[test]
    fn quantiles_are_the_upper_bound_of_their_bucket() {
        let mut h = CompletionHistogram::new();
        for _ in 0..90 {
            h.record(30.0);
        }
        for _ in 0..9 {
            h.record(1000.0);
        }
        h.record(100_000.0);
        assert_eq!(h.quantile(0.5), Some(60.0));
        assert_eq!(h.quantile(0.9), Some(60.0));
        assert_eq!(h.quantile(0.91), Some(1800.0));
        assert_eq!(h.quantile(0.99), Some(1800.0));
        assert_eq!(h.quantile(1.0), Some(172_800.0));
        assert_eq!(CompletionHistogram::new().quantile(0.5), None);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut both) = (
            CompletionHistogram::new(),
            CompletionHistogram::new(),
            CompletionHistogram::new(),
        );
        for s in [5.0, 400.0, 4000.0] {
            a.record(s);
            both.record(s);
        }
        for s in [70.0, 400.0, 9e9] {
            b.record(s);
            both.record(s);
        }
        a.merge(&b);
        assert_eq!(a, both);
        assert_eq!(a.count(), 6);
    }
}
