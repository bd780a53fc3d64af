//! The one clock of the pipeline and its workers.
//!
//! Everything that decides *when* (a reminder's fire time, a deadline
//! threshold, a window close, the idempotency guard's claim age, a timer's
//! next wake) reads [`Clock::now`] and sleeps with [`Clock::sleep_until`],
//! never the wall clock directly, so a test can run a week of reminders in
//! milliseconds with a [`ManualClock`]. Durations measured for metrics
//! (handling latency) may use `Instant` directly: they are not decisions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A source of "now". Cheap to clone.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's wall clock (production).
    #[default]
    System,
    /// Time that moves only when a test says so.
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// A manual clock starting at `start`, and the handle that moves it.
    pub fn manual(start: DateTime<Utc>) -> (Clock, Arc<ManualClock>) {
        let m = Arc::new(ManualClock::new(start));
        (Clock::Manual(m.clone()), m)
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(m) => m.now(),
        }
    }

    /// Milliseconds since the epoch, as scores and claim stamps use them.
    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// Returns once this clock reads `deadline` or later. On the system clock
    /// a long sleep is cut into slices, so a wall-clock jump (NTP, a suspended
    /// VM) is noticed within a minute.
    pub async fn sleep_until(&self, deadline: DateTime<Utc>) {
        match self {
            Clock::System => loop {
                let left = deadline - Utc::now();
                let Ok(left) = left.to_std() else { return };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(Duration::from_secs(60))).await;
            },
            Clock::Manual(m) => m.sleep_until(deadline).await,
        }
    }

    /// Sleeps for `d` of this clock's time.
    pub async fn sleep(&self, d: Duration) {
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let deadline = self
            .now()
            .checked_add_signed(d)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.sleep_until(deadline).await;
    }
}

/// A clock for tests: reads a set time; [`ManualClock::advance`] moves it and
/// wakes every sleeper whose deadline has come.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    moved: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(start),
            moved: watch::Sender::new(start),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
        self.moved.send_replace(*now);
    }

    /// Sets the time (forward only; an earlier time is ignored, as a
    /// monotonic clock would).
    pub fn set(&self, t: DateTime<Utc>) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        if t > *now {
            *now = t;
            self.moved.send_replace(t);
        }
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        let mut rx = self.moved.subscribe();
        loop {
            if *rx.borrow_and_update() >= deadline {
                return;
            }
            if rx.changed().await.is_err() {
                // The clock is gone: nobody can move time any more.
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test]
    async fn manual_sleep_wakes_only_when_time_reaches_the_deadline() {
        let start = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
        let (clock, hand) = Clock::manual(start);
        let c = clock.clone();
        let week = start + chrono::Duration::days(7);
        let sleeper = tokio::spawn(async move {
            c.sleep_until(week).await;
            c.now()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !sleeper.is_finished(),
            "a day short of the deadline it sleeps on"
        );
        hand.advance(Duration::from_secs(6 * 86_400));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished());
        hand.advance(Duration::from_secs(86_400));
        let woke_at = tokio::time::timeout(Duration::from_secs(1), sleeper)
            .await
            .expect("woken within real milliseconds")
            .unwrap();
        assert_eq!(woke_at, week);
    }

    #[tokio::test]
    async fn manual_clock_never_goes_back() {
        let start = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
        let (clock, hand) = Clock::manual(start);
        hand.set(start - chrono::Duration::hours(1));
        assert_eq!(clock.now(), start);
    }

    #[tokio::test]
    async fn system_sleep_until_the_past_returns_at_once() {
        let c = Clock::System;
        tokio::time::timeout(
            Duration::from_millis(100),
            c.sleep_until(Utc::now() - chrono::Duration::seconds(5)),
        )
        .await
        .expect("a past deadline does not sleep");
    }
}
