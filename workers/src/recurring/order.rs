//! Occurrences in time order, each instant once.
//!
//! Placing wall-clock times in a zone keeps their order, except around a
//! spring-forward gap: with the RFC 5545 rule, 02:45 in a one-hour gap becomes
//! 03:45 and lands after the 03:00 the rule yields next; and a gap time can
//! land on an instant the rule yields anyway (an hourly rule's 02:00 becomes
//! 03:00). A recurrence set is a set ("duplicate instances are ignored"), and
//! "the next occurrence" means the earliest, so the expansion is re-sorted.
//! A gap moves a time by at most its length, so an occurrence is final once
//! one more than [`WINDOW`] later has been seen (a day: the widest gap on
//! record is Samoa's skipped day in 2011).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Duration, Utc};

use super::rule::Occurrence;

const WINDOW: Duration = Duration::hours(25);

/// Sorts a nearly sorted stream of occurrences by instant and drops repeats.
pub struct InstantOrder<I> {
    inner: I,
    pending: BinaryHeap<Reverse<(DateTime<Utc>, chrono::NaiveDateTime)>>,
    latest_seen: Option<DateTime<Utc>>,
    last_emitted: Option<DateTime<Utc>>,
    exhausted: bool,
}

impl<I: Iterator<Item = Occurrence>> InstantOrder<I> {
    pub fn new(inner: I) -> Self {
        InstantOrder {
            inner,
            pending: BinaryHeap::new(),
            latest_seen: None,
            last_emitted: None,
            exhausted: false,
        }
    }
}

impl<I: Iterator<Item = Occurrence>> Iterator for InstantOrder<I> {
    type Item = Occurrence;

    fn next(&mut self) -> Option<Occurrence> {
        loop {
            if let Some(Reverse((at, _))) = self.pending.peek() {
                let settled = self.exhausted || self.latest_seen.is_some_and(|l| l - *at > WINDOW);
                if settled {
                    let Reverse((at, local)) = self.pending.pop()?;
                    if self.last_emitted == Some(at) {
                        continue;
                    }
                    self.last_emitted = Some(at);
                    return Some(Occurrence { local, at });
                }
            } else if self.exhausted {
                return None;
            }
            match self.inner.next() {
                Some(o) => {
                    self.latest_seen = Some(self.latest_seen.map_or(o.at, |l| l.max(o.at)));
                    self.pending.push(Reverse((o.at, o.local)));
                }
                None => self.exhausted = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ(h: i64, m: i64) -> Occurrence {
        let base = chrono::NaiveDate::from_ymd_opt(2026, 3, 29)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let local = base + Duration::hours(h) + Duration::minutes(m);
        Occurrence {
            local,
            at: local.and_utc(),
        }
    }

    #[test]
    fn displaced_occurrences_are_put_back_in_order_and_repeats_dropped() {
        let input = vec![
            occ(1, 0),
            occ(3, 45),
            occ(3, 0),
            occ(3, 0),
            occ(4, 0),
            occ(40, 0),
        ];
        let got: Vec<_> = InstantOrder::new(input.into_iter())
            .map(|o| o.at.format("%H:%M").to_string())
            .collect();
        assert_eq!(got, ["01:00", "03:00", "03:45", "04:00", "16:00"]);
    }

    #[test]
    fn an_unbounded_stream_yields_without_reading_it_all() {
        let mut it = InstantOrder::new((0..).map(|h| occ(h, 0)));
        assert_eq!(it.next().map(|o| o.at), Some(occ(0, 0).at));
        assert_eq!(it.next().map(|o| o.at), Some(occ(1, 0).at));
    }
}
