//! `[lag_monitor]`: what the lag monitor watches and how it judges a group.

use std::time::Duration;

use pipelines::config::ConfigError;
use serde::{Deserialize, Serialize};

/// `[lag_monitor]`. The monitor always watches every worker's consumer group
/// (`kafka.group_prefix` + worker name, or its `workers.<name>.group_id`) on
/// the worker's topics; `groups` adds others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LagMonitorConfig {
    /// How often offsets are read from Kafka. Scrapes never wait for a read:
    /// `/metrics` serves the last completed collection.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How many collections each partition's status is judged over (Burrow's window).
    pub window: usize,
    /// Collections with lag before a partition can be STALLED or WARNING.
    pub min_observations: usize,
    /// A partition whose first unconsumed record has waited this long while the
    /// committed offset did not move is STOPPED.
    #[serde(with = "humantime_serde")]
    pub stopped_after: Duration,
    /// Lag at or below this counts as caught up (1 for transactional topics,
    /// whose commit markers would otherwise leave a lag of 1 forever).
    pub allowed_lag: u64,
    /// Read the first unconsumed record of each lagging partition for an exact
    /// lag in seconds (else it is interpolated from the high-watermark history).
    pub exact_lag_seconds: bool,
    /// First unconsumed records read per collection at most, largest lags
    /// first (each costs a fetch; a record once read is kept while the group
    /// has not moved). The others' lag seconds are interpolated meanwhile.
    pub peek_max_partitions: usize,
    /// Time allowed per collection for reading first unconsumed records.
    #[serde(with = "humantime_serde")]
    pub peek_timeout: Duration,
    /// Timeout of each metadata and offset request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// High-watermark samples kept per partition for interpolation (older ones
    /// are thinned, never dropped wholesale, so old lags stay measurable).
    pub timeline_samples: usize,
    /// Consumer groups watched besides the workers' own.
    pub groups: Vec<WatchedGroup>,
}

/// A consumer group to watch and the topics it reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedGroup {
    pub group: String,
    pub topics: Vec<String>,
}

impl Default for LagMonitorConfig {
    fn default() -> Self {
        LagMonitorConfig {
            interval: Duration::from_secs(10),
            window: 10,
            min_observations: 3,
            stopped_after: Duration::from_secs(300),
            allowed_lag: 0,
            exact_lag_seconds: true,
            peek_max_partitions: 500,
            peek_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            timeline_samples: 60,
            groups: Vec::new(),
        }
    }
}

impl LagMonitorConfig {
    /// Rejects values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::invalid(
                "lag_monitor.interval",
                "0s",
                "a duration above zero, such as 10s",
            ));
        }
        if self.window < 2 {
            return Err(ConfigError::invalid(
                "lag_monitor.window",
                self.window,
                "at least 2 collections",
            ));
        }
        if self.min_observations < 2 || self.min_observations > self.window {
            return Err(ConfigError::invalid(
                "lag_monitor.min_observations",
                self.min_observations,
                format!("between 2 and lag_monitor.window ({})", self.window),
            ));
        }
        if self.timeline_samples < 2 {
            return Err(ConfigError::invalid(
                "lag_monitor.timeline_samples",
                self.timeline_samples,
                "at least 2",
            ));
        }
        for (i, g) in self.groups.iter().enumerate() {
            if g.group.trim().is_empty() {
                return Err(ConfigError::invalid(
                    &format!("lag_monitor.groups[{i}].group"),
                    &g.group,
                    "a consumer group id",
                ));
            }
            if g.topics.is_empty() || g.topics.iter().any(|t| t.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    &format!("lag_monitor.groups[{i}].topics"),
                    format!("{:?}", g.topics),
                    "a non-empty list of topic names",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        LagMonitorConfig::default().validate().unwrap();
    }

    #[test]
    fn a_watched_group_without_topics_is_rejected_with_its_key() {
        let c = LagMonitorConfig {
            groups: vec![WatchedGroup {
                group: "billing".into(),
                topics: vec![],
            }],
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("lag_monitor.groups[0].topics"), "{e}");
    }

    #[test]
    fn min_observations_above_the_window_is_rejected() {
        let c = LagMonitorConfig {
            window: 4,
            min_observations: 5,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("min_observations"));
    }
}
