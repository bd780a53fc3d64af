//! `[recurring]`: where next occurrences go and how missed ones are handled.

use pipelines::config::ConfigError;
use serde::{Deserialize, Serialize};

use super::occurrence::CatchUp;

/// `[recurring]` of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecurringConfig {
    /// Topic the `task.created` events of next occurrences are published to.
    pub output_topic: String,
    /// `next_after_now`: the next occurrence is the first one still in the
    /// future (occurrences missed while a task stayed open are skipped).
    /// `every_missed`: each missed occurrence is created too, up to `catch_up_cap`.
    pub catch_up: String,
    /// Most occurrences one completion creates under `every_missed`.
    pub catch_up_cap: usize,
    /// A JSON file of recurring patterns, `{"<pattern id>": {"rule": "...",
    /// "timezone": "..."}}`, for tasks that carry only a `recurring_pattern_id`;
    /// "" = none. Patterns from `task_template.*` events (kept in Redis) win.
    pub pattern_file: String,
}

impl Default for RecurringConfig {
    fn default() -> Self {
        RecurringConfig {
            output_topic: "task-events".into(),
            catch_up: "next_after_now".into(),
            catch_up_cap: 10,
            pattern_file: String::new(),
        }
    }
}

impl RecurringConfig {
    /// The catch-up policy, or the config error naming the key.
    pub fn catch_up_policy(&self) -> Result<CatchUp, ConfigError> {
        match self.catch_up.as_str() {
            "next_after_now" => Ok(CatchUp::NextAfterNow),
            "every_missed" if self.catch_up_cap > 0 => Ok(CatchUp::EveryMissed {
                cap: self.catch_up_cap,
            }),
            "every_missed" => Err(ConfigError::invalid(
                "recurring.catch_up_cap",
                self.catch_up_cap,
                "a whole number above zero",
            )),
            other => Err(ConfigError::invalid(
                "recurring.catch_up",
                other,
                "`next_after_now` or `every_missed`",
            )),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.catch_up_policy()?;
        if self.output_topic.trim().is_empty() {
            return Err(ConfigError::invalid(
                "recurring.output_topic",
                "",
                "a Kafka topic name",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_policy_is_read_and_bad_values_name_the_key() {
        let c = RecurringConfig::default();
        assert_eq!(c.catch_up_policy().unwrap(), CatchUp::NextAfterNow);
        let c = RecurringConfig {
            catch_up: "every_missed".into(),
            catch_up_cap: 3,
            ..RecurringConfig::default()
        };
        assert_eq!(
            c.catch_up_policy().unwrap(),
            CatchUp::EveryMissed { cap: 3 }
        );
        let c = RecurringConfig {
            catch_up: "all".into(),
            ..RecurringConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("recurring.catch_up"));
        let c = RecurringConfig {
            catch_up: "every_missed".into(),
            catch_up_cap: 0,
            ..RecurringConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("recurring.catch_up_cap"));
    }
}
