//! Backoff between attempts: exponential, capped, with jitter.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;

/// The wait before attempt `attempt + 1`, after `attempt` failed attempts (1-based).
pub fn backoff(policy: &RetryConfig, attempt: u32) -> Duration {
    let exp = policy
        .multiplier
        .powi(attempt.saturating_sub(1).min(63) as i32);
    let base = policy.initial_backoff.as_secs_f64() * exp;
    let capped = base.min(policy.max_backoff.as_secs_f64());
    let secs = if policy.jitter {
        // "Equal jitter": at least half the backoff, so a retry never comes at once.
        capped / 2.0 + rand::rng().random_range(0.0..=capped / 2.0)
    } else {
        capped
    };
    Duration::from_secs_f64(secs)
}

/// Waits for dependencies that are down (Redis, the store, the broker): grows
/// like [`backoff`] but never gives up, because the message is not at fault.
pub fn outage_backoff(policy: &RetryConfig, attempt: u32) -> Duration {
    backoff(policy, attempt.min(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: bool) -> RetryConfig {
        RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn backoff_grows_exponentially_then_caps() {
        let p = policy(false);
        assert_eq!(backoff(&p, 1), Duration::from_millis(100));
        assert_eq!(backoff(&p, 2), Duration::from_millis(200));
        assert_eq!(backoff(&p, 3), Duration::from_millis(400));
        assert_eq!(backoff(&p, 10), Duration::from_secs(1));
        assert_eq!(backoff(&p, u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_half_and_full_backoff() {
        let p = policy(true);
        for _ in 0..200 {
            let d = backoff(&p, 3);
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
                "{d:?}"
            );
        }
    }
}
