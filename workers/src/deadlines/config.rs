//! `[deadlines]`: which thresholds announce a deadline, and where to.

use std::time::Duration;

use pipelines::config::ConfigError;
use serde::{Deserialize, Serialize};

use super::threshold::Threshold;

/// `[deadlines]` of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlinesConfig {
    /// How long before the due time each `deadline.approaching` is emitted
    /// (`3d`, `1h`, `90m`); `deadline.overdue` is always emitted at the due
    /// time itself. Each must be above zero and different from the others.
    pub thresholds: Vec<String>,
    /// Topic the `deadline.*` events are published to.
    pub output_topic: String,
    /// How long a claimed crossing stays with its claimer before another may
    /// take it (a claimer that crashed between claiming and acknowledging).
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,
    /// Crossings claimed (and published together) per round of a scan.
    pub scan_batch: usize,
    /// How far ahead of a crossing the scan claims, checks and builds its
    /// announcement, so that at the due time only publishing is left (a
    /// burst due at one instant goes out sooner). A task completed or moved
    /// within this span before its crossing may still be announced. Below
    /// the claim lease; `0s` prepares nothing ahead.
    #[serde(with = "humantime_serde")]
    pub lead: Duration,
}

impl Default for DeadlinesConfig {
    fn default() -> Self {
        DeadlinesConfig {
            thresholds: vec!["3d".into(), "1h".into()],
            output_topic: "schedule-events".into(),
            claim_lease: Duration::from_secs(10),
            scan_batch: 500,
            lead: Duration::from_millis(500),
        }
    }
}

impl DeadlinesConfig {
    /// The thresholds, longest first, or the config error naming the key.
    pub fn parsed_thresholds(&self) -> Result<Vec<Threshold>, ConfigError> {
        let mut out: Vec<Threshold> = Vec::with_capacity(self.thresholds.len());
        for text in &self.thresholds {
            let t = Threshold::parse(text)
                .map_err(|e| ConfigError::invalid("deadlines.thresholds", text, e.to_string()))?;
            if out.iter().any(|o| o.duration == t.duration) {
                return Err(ConfigError::invalid(
                    "deadlines.thresholds",
                    text,
                    "each threshold once (another one names the same duration)",
                ));
            }
            out.push(t);
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.duration));
        Ok(out)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.parsed_thresholds()?;
        if self.output_topic.trim().is_empty() {
            return Err(ConfigError::invalid(
                "deadlines.output_topic",
                "",
                "a Kafka topic name",
            ));
        }
        if self.claim_lease.is_zero() {
            return Err(ConfigError::invalid(
                "deadlines.claim_lease",
                "0s",
                "a duration above zero",
            ));
        }
        if self.lead * 2 > self.claim_lease {
            return Err(ConfigError::invalid(
                "deadlines.lead",
                humantime::format_duration(self.lead),
                "at most half of deadlines.claim_lease (prepared crossings stay claimed until announced)",
            ));
        }
        if self.scan_batch == 0 {
            return Err(ConfigError::invalid(
                "deadlines.scan_batch",
                0,
                "a whole number above zero",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_sorted_longest_first_and_bad_ones_name_the_key() {
        let c = DeadlinesConfig {
            thresholds: vec!["1h".into(), "72h".into(), "15m".into()],
            ..DeadlinesConfig::default()
        };
        let labels: Vec<String> = c
            .parsed_thresholds()
            .unwrap()
            .iter()
            .map(|t| t.label.clone())
            .collect();
        assert_eq!(labels, ["3d", "1h", "15m"]);
        for bad in [
            vec!["soon".to_string()],
            vec!["0s".into()],
            vec!["1h".into(), "60m".into()],
        ] {
            let c = DeadlinesConfig {
                thresholds: bad.clone(),
                ..DeadlinesConfig::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("deadlines.thresholds"), "{bad:?}: {e}");
        }
        assert!(DeadlinesConfig::default().validate().is_ok());
        let long_lead = DeadlinesConfig {
            lead: Duration::from_secs(6),
            ..DeadlinesConfig::default()
        };
        let e = long_lead.validate().unwrap_err().to_string();
        assert!(e.contains("deadlines.lead") && e.contains("6s"), "{e}");
    }
}
