//! Tumbling event-time windows: which window an instant falls in, and how a
//! window is named in Redis and in results.
//!
//! Windows are aligned to the Unix epoch (`[k·size, (k+1)·size)`), so every
//! replica, a restart and `taskstream` on another machine agree on them
//! without coordination; a `1d` window is a UTC day.

use std::sync::Arc;
use std::time::Duration;

/// One configured window size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// As configured (`1m`): the `window` label and the result's `window`.
    pub name: Arc<str>,
    pub size_ms: i64,
}

impl WindowSpec {
    pub fn new(name: &str, size: Duration) -> Self {
        WindowSpec {
            name: Arc::from(name),
            size_ms: i64::try_from(size.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The start of the window holding `t_ms`.
    pub fn start_of(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.size_ms) * self.size_ms
    }

    /// The window holding the instant `t_ms` (milliseconds since the epoch;
    /// before 1970 too: the start is rounded down, not towards zero).
    pub fn window_of(&self, t_ms: i64) -> WindowId {
        let start_ms = self.start_of(t_ms);
        WindowId {
            name: self.name.clone(),
            start_ms,
            end_ms: start_ms.saturating_add(self.size_ms),
        }
    }
}

/// One window: `[start_ms, end_ms)` of the window size `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowId {
    pub name: Arc<str>,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl WindowId {
    /// Its member in the open-windows set: `name|start|end`.
    pub fn member(&self) -> String {
        format!("{}|{}|{}", self.name, self.start_ms, self.end_ms)
    }

    /// Reads a member written by [`WindowId::member`].
    pub fn from_member(member: &str) -> Option<WindowId> {
        let mut parts = member.rsplitn(3, '|');
        let end_ms = parts.next()?.parse().ok()?;
        let start_ms = parts.next()?.parse().ok()?;
        let name = parts.next()?;
        (start_ms < end_ms).then(|| WindowId {
            name: Arc::from(name),
            start_ms,
            end_ms,
        })
    }

    /// Close order: earlier ends first; of windows ending together, the
    /// shorter first (a minute closes before the hour it ends).
    pub fn close_order(&self, other: &WindowId) -> std::cmp::Ordering {
        (self.end_ms, self.end_ms - self.start_ms, &self.name).cmp(&(
            other.end_ms,
            other.end_ms - other.start_ms,
            &other.name,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute() -> WindowSpec {
        WindowSpec::new("1m", Duration::from_secs(60))
    }

    #[test]
    fn an_instant_falls_in_the_window_that_starts_at_or_before_it() {
        let w = minute().window_of(125_000);
        assert_eq!((w.start_ms, w.end_ms), (120_000, 180_000));
        let w = minute().window_of(120_000);
        assert_eq!(w.start_ms, 120_000, "a start belongs to its window");
        let w = minute().window_of(179_999);
        assert_eq!(w.end_ms, 180_000, "the end does not");
        let w = minute().window_of(-1);
        assert_eq!((w.start_ms, w.end_ms), (-60_000, 0), "before the epoch");
    }

    #[test]
    fn a_day_window_is_a_utc_day() {
        let day = WindowSpec::new("1d", Duration::from_secs(86_400));
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-29T23:30:00+02:00")
            .unwrap()
            .timestamp_millis();
        let w = day.window_of(t);
        let start = chrono::DateTime::from_timestamp_millis(w.start_ms).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-03-29T00:00:00+00:00");
    }

    #[test]
    fn members_round_trip_and_close_order_puts_shorter_windows_first() {
        let m = minute().window_of(3_600_000 - 1);
        let h = WindowSpec::new("1h", Duration::from_secs(3600)).window_of(0);
        assert_eq!(WindowId::from_member(&m.member()), Some(m.clone()));
        assert_eq!(WindowId::from_member("x|5|3"), None);
        assert_eq!(WindowId::from_member("garbage"), None);
        assert_eq!(m.close_order(&h), std::cmp::Ordering::Less);
        let earlier = minute().window_of(0);
        assert_eq!(h.close_order(&earlier), std::cmp::Ordering::Greater);
    }
}
