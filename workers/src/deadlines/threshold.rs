//! A threshold: how long before a due time a deadline counts as approaching.
//!
//! Its label goes into event ids (`derive_event_id(&[task, label, due])`), so
//! it is normalised: `72h`, `3days` and `3d` are the same threshold, `3d`,
//! and a config that spells it differently after a restart does not re-emit.

use std::time::Duration;

/// The label of the crossing at the due time itself.
pub const OVERDUE: &str = "overdue";

/// One configured threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    /// Normalised: the largest unit (`d`, `h`, `m`, `s`) that divides it.
    pub label: String,
    pub duration: Duration,
}

/// Why a threshold cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("{text:?} is not a duration (expected e.g. `3d`, `1h`, `90m`)")]
    NotADuration { text: String },
    #[error("{text:?} must be a whole number of seconds above zero")]
    NotPositive { text: String },
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Threshold, ThresholdError> {
        let duration =
            humantime::parse_duration(text.trim()).map_err(|_| ThresholdError::NotADuration {
                text: text.to_string(),
            })?;
        if duration.as_secs() == 0 || duration.subsec_nanos() != 0 {
            return Err(ThresholdError::NotPositive {
                text: text.to_string(),
            });
        }
        Ok(Threshold {
            label: label_of(duration.as_secs()),
            duration,
        })
    }

    pub fn millis(&self) -> i64 {
        self.duration.as_millis() as i64
    }
}

fn label_of(secs: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_normalised_so_event_ids_survive_a_respelled_config() {
        for (text, label) in [
            ("3d", "3d"),
            ("72h", "3d"),
            ("3days", "3d"),
            ("1h", "1h"),
            ("90m", "90m"),
            ("1h 30m", "90m"),
            ("45s", "45s"),
        ] {
            assert_eq!(Threshold::parse(text).unwrap().label, label, "{text}");
        }
        assert!(matches!(
            Threshold::parse("soon"),
            Err(ThresholdError::NotADuration { .. })
        ));
        assert!(matches!(
            Threshold::parse("0s"),
            Err(ThresholdError::NotPositive { .. })
        ));
        assert!(matches!(
            Threshold::parse("1500ms"),
            Err(ThresholdError::NotPositive { .. })
        ));
    }
}
