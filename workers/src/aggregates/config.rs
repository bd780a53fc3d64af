//! `[aggregates]`: which windows, how late an event may be, when a quiet
//! partition stops holding windows open.

use std::time::Duration;

use pipelines::config::ConfigError;
use serde::{Deserialize, Serialize};

use super::window::WindowSpec;

/// `[aggregates]` of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatesConfig {
    /// Tumbling window sizes, by event time (`occurred_at`), aligned to the
    /// Unix epoch (so `1d` windows are UTC days). Each name is also the
    /// `window` label of the metrics and the `window` field of results.
    pub windows: Vec<String>,
    /// How far behind its partition's newest event an event may be and still
    /// count: a partition's watermark is its newest event time minus this.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// A partition with no event for this long (processing time) stops
    /// holding the worker's watermark back, as Flink's idle sources do.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest a partition timer sleeps while windows are open (they are
    /// normally closed as soon as a watermark or an idle partition allows).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// A replica that claimed a window's close and did not finish within this
    /// time (it crashed) is taken over; the result keeps its event id.
    #[serde(with = "humantime_serde")]
    pub close_lease: Duration,
    /// How long a window's counters and its closed mark are kept after the
    /// window's own length (late events are recognised for this long).
    #[serde(with = "humantime_serde")]
    pub state_ttl: Duration,
    /// Per window and dimension, how many keys (projects, in practice) get
    /// their own result; the others are folded into one with key `(other)`.
    pub max_keys: usize,
    /// Projects that get their own `project` label on the Prometheus
    /// metrics; every other project is `other` (labels stay bounded).
    pub projects: Vec<String>,
}

impl Default for AggregatesConfig {
    fn default() -> Self {
        AggregatesConfig {
            windows: vec!["1m".into(), "1h".into(), "1d".into()],
            allowed_lateness: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            check_interval: Duration::from_secs(10),
            close_lease: Duration::from_secs(30),
            state_ttl: Duration::from_secs(7 * 24 * 3600),
            max_keys: 100,
            projects: Vec::new(),
        }
    }
}

impl AggregatesConfig {
    /// The configured windows, parsed, shortest first; or the error naming
    /// the bad one.
    pub fn window_specs(&self) -> Result<Vec<WindowSpec>, ConfigError> {
        if self.windows.is_empty() {
            return Err(ConfigError::invalid(
                "aggregates.windows",
                "[]",
                "at least one window size, e.g. [\"1m\", \"1h\"]",
            ));
        }
        let mut specs = Vec::with_capacity(self.windows.len());
        for w in &self.windows {
            let size = humantime::parse_duration(w)
                .ok()
                .filter(|d| d.as_millis() >= 1000 && d.subsec_millis() == 0)
                .ok_or_else(|| {
                    ConfigError::invalid(
                        "aggregates.windows",
                        w,
                        "durations of whole seconds, at least 1s (\"1m\", \"1h\", \"1d\")",
                    )
                })?;
            if specs.iter().any(|s: &WindowSpec| *s.name == **w) {
                return Err(ConfigError::invalid(
                    "aggregates.windows",
                    w,
                    "each window size once",
                ));
            }
            specs.push(WindowSpec::new(w, size));
        }
        specs.sort_by_key(|s| s.size_ms);
        Ok(specs)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.window_specs()?;
        if self.max_keys == 0 {
            return Err(ConfigError::invalid(
                "aggregates.max_keys",
                "0",
                "a whole number above zero",
            ));
        }
        for (key, d) in [
            ("aggregates.idle_timeout", self.idle_timeout),
            ("aggregates.check_interval", self.check_interval),
            ("aggregates.close_lease", self.close_lease),
            ("aggregates.state_ttl", self.state_ttl),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(key, "0s", "a duration above zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_windows_parse_shortest_first() {
        let specs = AggregatesConfig::default().window_specs().unwrap();
        let sizes: Vec<i64> = specs.iter().map(|s| s.size_ms).collect();
        assert_eq!(sizes, vec![60_000, 3_600_000, 86_400_000]);
        assert_eq!(specs[0].name.as_ref(), "1m");
    }

    #[test]
    fn a_bad_window_size_names_the_key_and_value() {
        let c = AggregatesConfig {
            windows: vec!["1m".into(), "soon".into()],
            ..AggregatesConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("aggregates.windows") && e.contains("soon"),
            "{e}"
        );
        let c = AggregatesConfig {
            windows: vec!["1m".into(), "1m".into()],
            ..AggregatesConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
