//! The binary's whole configuration: the pipeline's shared sections plus each
//! worker's own section. See `config/taskstream.toml` for every key and default.

use std::path::Path;
use std::time::Duration;

use pipelines::config::{ConfigError, PipelineConfig};
use serde::{Deserialize, Serialize};

/// Everything `taskstream` reads from its config file and environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub pipeline: PipelineConfig,
    pub audit: AuditConfig,
    pub reminders: crate::reminders::config::RemindersConfig,
    pub recurring: crate::recurring::RecurringConfig,
    pub lag_monitor: crate::lagmon::LagMonitorConfig,
    pub aggregates: crate::aggregates::AggregatesConfig,
    pub deadlines: crate::deadlines::DeadlinesConfig,
}

/// `[audit]`: where the audit trail is kept and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// `file` (JSON-lines, the embedded default), `postgres` (needs
    /// `database.url`), or `auto`: postgres when `database.url` is set, else file.
    pub store: String,
    /// Directory of the file store (one `audit-YYYY-MM-DD.jsonl` per day).
    pub dir: String,
    /// PostgreSQL schema of the audit tables (created if missing).
    pub schema: String,
    /// Records older than this are deleted, whole days or monthly partitions at
    /// a time; `0s` keeps everything.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often retention is enforced.
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Duration,
    /// PostgreSQL connections the store keeps.
    pub pool_size: usize,
    /// Longest a PostgreSQL connection may take to open (TCP, TLS, startup).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest one store operation (a batch's transaction, a readiness ping,
    /// a query) may wait for PostgreSQL, measured by the worker: past it the
    /// store is unavailable (not ready, retried) and the connection closed.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Gate writes with the Redis idempotency guard too. Both stores skip
    /// redeliveries (by source offset) by themselves; the guard also catches
    /// a producer's re-send of an event id at a new offset, at the cost of
    /// two Redis round trips per batch.
    pub idempotency_guard: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            store: "auto".into(),
            dir: "audit-log".into(),
            schema: "public".into(),
            retention: Duration::from_secs(365 * 24 * 3600),
            retention_check_interval: Duration::from_secs(3600),
            pool_size: 4,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            idempotency_guard: true,
        }
    }
}

impl Config {
    /// Loads defaults, then the file (`path` or `TASKSTREAM_CONFIG`), then the
    /// environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let figment = pipelines::config::layered::<Config>(path)?;
        let c = Config {
            pipeline: pipelines::config::extract(&figment, None)?,
            audit: pipelines::config::extract(&figment, Some("audit"))?,
            reminders: pipelines::config::extract(&figment, Some("reminders"))?,
            recurring: pipelines::config::extract(&figment, Some("recurring"))?,
            lag_monitor: pipelines::config::extract(&figment, Some("lag_monitor"))?,
            aggregates: pipelines::config::extract(&figment, Some("aggregates"))?,
            deadlines: pipelines::config::extract(&figment, Some("deadlines"))?,
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pipeline.validate()?;
        self.reminders.validate(&self.pipeline.smtp.url)?;
        self.lag_monitor.validate()?;
        self.aggregates.validate()?;
        self.deadlines.validate()?;
        let a = &self.audit;
        if !matches!(a.store.as_str(), "auto" | "file" | "postgres") {
            return Err(ConfigError::invalid(
                "audit.store",
                &a.store,
                "`auto`, `file` or `postgres`",
            ));
        }
        if a.store == "postgres" && self.pipeline.database.url.is_empty() {
            return Err(ConfigError::invalid(
                "database.url",
                "",
                "a postgres:// URL (audit.store = \"postgres\" needs one; or set DATABASE_URL)",
            ));
        }
        if a.store != "postgres" && a.dir.trim().is_empty() {
            return Err(ConfigError::invalid("audit.dir", "", "a directory path"));
        }
        if !crate::audit::pg_store::is_plain_identifier(&a.schema) {
            return Err(ConfigError::invalid(
                "audit.schema",
                &a.schema,
                "a PostgreSQL identifier: lower-case letters, digits and _, not starting with a digit",
            ));
        }
        self.recurring.validate()?;
        if a.pool_size == 0 {
            return Err(ConfigError::invalid(
                "audit.pool_size",
                0,
                "a whole number above zero",
            ));
        }
        for (field, value) in [
            ("audit.connect_timeout", a.connect_timeout),
            ("audit.statement_timeout", a.statement_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(
                    field,
                    "0s",
                    "a duration above zero, such as 10s",
                ));
            }
        }
        Ok(())
    }

    /// A copy safe to print: secrets masked.
    pub fn redacted(&self) -> Self {
        Config {
            pipeline: self.pipeline.redacted(),
            audit: self.audit.clone(),
            reminders: self.reminders.redacted(),
            recurring: self.recurring.clone(),
            lag_monitor: self.lag_monitor.clone(),
            aggregates: self.aggregates.clone(),
            deadlines: self.deadlines.clone(),
        }
    }

    /// The effective audit store kind: `file` or `postgres`.
    pub fn audit_store_kind(&self) -> &str {
        match self.audit.store.as_str() {
            "auto" if self.pipeline.database.url.is_empty() => "file",
            "auto" => "postgres",
            other => other,
        }
    }
}
