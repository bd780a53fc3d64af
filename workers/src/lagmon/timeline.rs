//! When was offset N produced? A per-partition table of (high watermark,
//! observed time) samples, as kafka-lag-exporter keeps, to estimate a record's
//! age when it cannot be read (the fallback of exact lag seconds).
//!
//! Each sample keeps the first and the last time its high watermark was seen,
//! so an idle stretch is not mistaken for a slow one: records after offset H
//! were produced after the *last* time H was still the high watermark.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    high: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
}

/// The high-watermark history of one partition, oldest first.
#[derive(Debug, Clone)]
pub struct Timeline {
    samples: Vec<Sample>,
    capacity: usize,
}

impl Timeline {
    /// Keeps at most `capacity` (at least 2) samples.
    pub fn new(capacity: usize) -> Self {
        Timeline {
            samples: Vec::new(),
            capacity: capacity.max(2),
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Records that the high watermark was `high` at `at`. A high watermark
    /// that went back (topic recreated, log truncated) starts a new history.
    pub fn record(&mut self, high: i64, at: DateTime<Utc>) {
        match self.samples.last_mut() {
            Some(last) if last.high == high => {
                last.last_seen = last.last_seen.max(at);
                return;
            }
            Some(last) if high < last.high => self.samples.clear(),
            _ => {}
        }
        self.samples.push(Sample {
            high,
            first_seen: at,
            last_seen: at,
        });
        if self.samples.len() > self.capacity {
            self.thin();
        }
    }

    /// Drops the inner sample whose neighbours are closest in time, so the
    /// table keeps its oldest point (old lags stay measurable) and spreads its
    /// resolution over the whole history.
    fn thin(&mut self) {
        let n = self.samples.len();
        if n < 3 {
            return;
        }
        let victim = (1..n - 1)
            .min_by_key(|&i| self.samples[i + 1].first_seen - self.samples[i - 1].last_seen)
            .unwrap_or(1);
        self.samples.remove(victim);
    }

    /// When the record at `offset` was produced, estimated by linear
    /// interpolation between the samples around it. `None` when the table has
    /// not seen it produced yet (`offset` at or past the latest high
    /// watermark). For an offset older than the table, the oldest sample's
    /// time: a lower bound of its age, never a guess beyond what was seen.
    pub fn produced_at(&self, offset: i64) -> Option<DateTime<Utc>> {
        let last = self.samples.last()?;
        if offset >= last.high {
            return None;
        }
        let i = match self.samples.iter().rposition(|s| s.high <= offset) {
            Some(i) => i,
            None => return Some(self.samples[0].first_seen),
        };
        let before = self.samples[i];
        let after = self.samples[i + 1];
        let produced = (after.high - before.high) as f64;
        let nth = (offset - before.high + 1) as f64;
        let span = (after.first_seen - before.last_seen).num_milliseconds() as f64;
        let ms = (span * nth / produced).round() as i64;
        Some(before.last_seen + chrono::Duration::milliseconds(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn interpolates_linearly_between_samples() {
        let mut tl = Timeline::new(10);
        tl.record(100, t(0));
        tl.record(200, t(100));
        // Records 100..=199 were produced in (0, 100]: record 149 at 50.
        assert_eq!(tl.produced_at(149), Some(t(50)));
        assert_eq!(tl.produced_at(199), Some(t(100)));
    }

    #[test]
    fn an_idle_stretch_does_not_age_a_fresh_record() {
        let mut tl = Timeline::new(10);
        tl.record(100, t(0));
        tl.record(100, t(3600)); // idle for an hour
        tl.record(101, t(3610));
        // Record 100 arrived after 3600, not at 0.
        let at = tl.produced_at(100).unwrap();
        assert!(at > t(3600) && at <= t(3610), "{at}");
    }

    #[test]
    fn offsets_not_yet_produced_have_no_time() {
        let mut tl = Timeline::new(10);
        tl.record(100, t(0));
        assert_eq!(tl.produced_at(100), None);
        assert_eq!(Timeline::new(10).produced_at(0), None);
    }

    #[test]
    fn an_offset_older_than_the_table_gets_the_oldest_time_as_a_lower_bound() {
        let mut tl = Timeline::new(10);
        tl.record(100, t(10));
        tl.record(150, t(20));
        assert_eq!(tl.produced_at(5), Some(t(10)));
    }

    #[test]
    fn a_full_table_keeps_its_oldest_and_newest_samples() {
        let mut tl = Timeline::new(5);
        for i in 0..50 {
            tl.record(i * 10, t(i));
        }
        assert_eq!(tl.len(), 5);
        // The oldest sample stays: record 3 is dated after t(0), never before.
        let at = tl.produced_at(3).unwrap();
        assert!(at > t(0) && at <= t(49), "{at}");
        // The newest stay exact: record 485 came between t(48) and t(49).
        let at = tl.produced_at(485).unwrap();
        assert!(at > t(48) && at <= t(49), "{at}");
        assert_eq!(tl.produced_at(490), None);
    }

    #[test]
    fn a_high_watermark_going_back_restarts_the_history() {
        let mut tl = Timeline::new(10);
        tl.record(100, t(0));
        tl.record(5, t(10));
        assert_eq!(tl.len(), 1);
        assert_eq!(tl.produced_at(2), Some(t(10)));
    }
}
