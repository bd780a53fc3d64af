//! Configuration shared by every worker: Kafka, Redis, pipeline tuning, retry,
//! metrics, logging and topic names.
//!
//! Layering, lowest to highest precedence:
//! 1. the defaults written on each struct below (and documented, key by key, in
//!    `config/taskstream.toml`; a test keeps the two in step);
//! 2. a TOML file (`--config FILE` or `TASKSTREAM_CONFIG`);
//! 3. the well-known variables `KAFKA_BOOTSTRAP_SERVERS`, `REDIS_URL`, `SMTP_URL`,
//!    `DATABASE_URL`, `TASKSTREAM_METRICS_ADDR`;
//! 4. `TASKSTREAM_<SECTION>__<KEY>` for any other key (`TASKSTREAM_PIPELINE__MAX_BATCH=200`).
//!    Under `kafka.properties`, underscores become dots, since librdkafka property
//!    names never contain underscores: `TASKSTREAM_KAFKA__PROPERTIES__SASL_PASSWORD`
//!    sets `sasl.password`.
//!
//! A worker crate composes its own sections with [`PipelineConfig`] (flattened)
//! and loads the whole with [`load`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A configuration value that was rejected, naming the key, the value and what
/// was expected, so the operator can fix it without reading code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config key `{key}` has value {value:?}: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Parse(String),
}

impl ConfigError {
    pub fn invalid(key: &str, value: impl ToString, expected: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Sections every worker shares. Flatten it into the binary's own config type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
    pub pipeline: PipelineTuning,
    pub retry: RetryConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub topics: Topics,
    pub database: DatabaseConfig,
    pub smtp: SmtpConfig,
    /// Per-worker overrides, keyed by worker name (`[workers.audit]`).
    pub workers: BTreeMap<String, WorkerOverrides>,
}

/// How to reach Kafka, and consumer/producer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list (env `KAFKA_BOOTSTRAP_SERVERS`).
    pub bootstrap_servers: String,
    /// Consumer group id of a worker is `<group_prefix>-<worker>` unless the
    /// worker's `group_id` override says otherwise.
    pub group_prefix: String,
    pub client_id: String,
    /// Where a new consumer group starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How often stored offsets are committed (they are also committed on
    /// revoke and on shutdown).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// librdkafka statistics interval; consumer lag metrics refresh at this pace.
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
    /// Any librdkafka property, passed through verbatim to consumers and
    /// producers (SASL/TLS: `security.protocol`, `sasl.mechanisms`,
    /// `sasl.username`, `sasl.password`, `ssl.ca.location`, ...). Values whose key
    /// names a password or secret are masked wherever the config is printed.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "localhost:9092".into(),
            group_prefix: "taskstream".into(),
            client_id: "taskstream".into(),
            auto_offset_reset: "earliest".into(),
            session_timeout: Duration::from_secs(45),
            commit_interval: Duration::from_secs(1),
            statistics_interval: Duration::from_secs(5),
            properties: BTreeMap::new(),
        }
    }
}

/// The Redis that holds idempotency keys and worker state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (env `REDIS_URL`), a Redis
    /// Cluster as `redis+cluster://[user:password@]host:port,host:port,...`
    /// (`rediss+cluster://` for TLS), or `memory:` for the in-process store
    /// (demo and tests only: nothing survives a restart).
    pub url: String,
    /// Prepended to every key. On a Redis Cluster each worker's keys also
    /// carry the worker's hash tag (`state::slot`); leave braces out of the
    /// prefix there, or every key lands in the prefix's one slot.
    pub key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
}

impl RedisConfig {
    /// The seed nodes of a `redis+cluster://` (or `rediss+cluster://`) URL, one
    /// plain `redis://` URL each (credentials, path and `#insecure` copied to
    /// every node); `Ok(None)` for a single-node URL or `memory:`.
    pub fn cluster_nodes(&self) -> Result<Option<Vec<String>>, ConfigError> {
        let url = self.url.as_str();
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            ("rediss", rest)
        } else {
            return Ok(None);
        };
        let bad = |why: &str| ConfigError::invalid("redis.url", mask_url(url), why);
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let mut nodes = Vec::new();
        for host in hosts.split(',') {
            let valid = host
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid {
                return Err(bad(&format!(
                    "host:port for every cluster node, comma-separated (not {host:?})"
                )));
            }
            nodes.push(format!("{scheme}://{userinfo}{host}{tail}"));
        }
        Ok(Some(nodes))
    }

    /// True for a `redis+cluster://` URL: keys get per-worker hash tags.
    pub fn is_cluster(&self) -> bool {
        self.url.starts_with("redis+cluster://") || self.url.starts_with("rediss+cluster://")
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "taskstream:".into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
        }
    }
}

/// Throughput and ordering knobs of the consumer pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineTuning {
    /// Partitions handled at the same time, per worker. Messages of one
    /// partition (and so of one key) are always handled in order.
    pub concurrency: usize,
    /// Most messages handed to a worker in one batch.
    pub max_batch: usize,
    /// Batches buffered per partition before that partition is paused
    /// (backpressure: nothing is dropped, fetching just stops).
    pub partition_queue: usize,
    /// How long an event id is remembered as handled.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How long a claim on an event id protects it while being handled; a
    /// worker that crashed mid-event is retried by another after this.
    #[serde(with = "humantime_serde")]
    pub idempotency_lease: Duration,
    /// Dead letters of topic `T` go to `T<dlq_suffix>`.
    pub dlq_suffix: String,
    /// Longest wait for in-flight work on shutdown or revoke.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The lease of a leader-scoped timer: a killed leader is replaced within
    /// about this plus a third of it; a leader that cannot renew stops its
    /// timed work after two thirds of it.
    #[serde(with = "humantime_serde")]
    pub leader_lease: Duration,
}

impl Default for PipelineTuning {
    fn default() -> Self {
        PipelineTuning {
            concurrency: 8,
            max_batch: 500,
            partition_queue: 4,
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            idempotency_lease: Duration::from_secs(30),
            dlq_suffix: ".dlq".into(),
            drain_timeout: Duration::from_secs(30),
            leader_lease: Duration::from_secs(6),
        }
    }
}

/// Exponential backoff with full jitter for handler failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all (1 = no retry) before a message goes to the dead-letter topic.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// Randomise each wait in [backoff/2, backoff] so that retrying workers do
    /// not hammer a recovering dependency in step.
    pub jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: true,
        }
    }
}

/// The process's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address (env `TASKSTREAM_METRICS_ADDR`); empty disables the server.
    pub addr: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            addr: "0.0.0.0:9464".into(),
        }
    }
}

/// Logging: `text` for people, `json` for log pipelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: String,
    /// A `tracing` filter (`info`, `taskstream=debug,rdkafka=warn`); `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Topic names, as the producing teams named them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    pub task_events: String,
    pub user_events: String,
    pub project_events: String,
    pub reminders: String,
    pub schedule_events: String,
    pub notification_events: String,
    pub analytics_events: String,
    pub task_metrics: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            task_events: "task-events".into(),
            user_events: "user-events".into(),
            project_events: "project-events".into(),
            reminders: "reminders".into(),
            schedule_events: "schedule-events".into(),
            notification_events: "notification-events".into(),
            analytics_events: "analytics-events".into(),
            task_metrics: "task-metrics".into(),
        }
    }
}

/// PostgreSQL, for the audit store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db` (env `DATABASE_URL`); empty means
    /// "no database": workers use their embedded stores.
    pub url: String,
}

/// The SMTP relay for reminder email.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://user:password@host:port` (env `SMTP_URL`); empty means write mail to files.
    pub url: String,
}

/// What one worker may override. Unset fields fall back to the shared sections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerOverrides {
    pub group_id: Option<String>,
    pub topics: Option<Vec<String>>,
    pub concurrency: Option<usize>,
    pub max_batch: Option<usize>,
    pub retry: Option<RetryConfig>,
}

impl PipelineConfig {
    /// Rejects values that parse but make no sense, naming key, value and expectation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrap_servers",
                &self.kafka.bootstrap_servers,
                "a comma-separated list of host:port",
            ));
        }
        for server in self.kafka.bootstrap_servers.split(',') {
            let server = server.trim();
            let ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(ConfigError::invalid(
                    "kafka.bootstrap_servers",
                    server,
                    "host:port (for example kafka:9092)",
                ));
            }
        }
        if !matches!(self.kafka.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(ConfigError::invalid(
                "kafka.auto_offset_reset",
                &self.kafka.auto_offset_reset,
                "`earliest` or `latest`",
            ));
        }
        if self.kafka.group_prefix.is_empty() {
            return Err(ConfigError::invalid(
                "kafka.group_prefix",
                "",
                "a non-empty consumer group prefix",
            ));
        }
        if !(self.redis.url.starts_with("redis://")
            || self.redis.url.starts_with("rediss://")
            || self.redis.url.starts_with("unix://")
            || self.redis.is_cluster()
            || self.redis.url == "memory:")
        {
            return Err(ConfigError::invalid(
                "redis.url",
                mask_url(&self.redis.url),
                "a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL, or `memory:`",
            ));
        }
        self.redis.cluster_nodes()?;
        check_positive("pipeline.concurrency", self.pipeline.concurrency)?;
        check_positive("pipeline.max_batch", self.pipeline.max_batch)?;
        check_positive("pipeline.partition_queue", self.pipeline.partition_queue)?;
        if self.pipeline.idempotency_lease.is_zero() {
            return Err(ConfigError::invalid(
                "pipeline.idempotency_lease",
                "0s",
                "a duration above zero, such as 30s",
            ));
        }
        if self.pipeline.dlq_suffix.is_empty() {
            return Err(ConfigError::invalid(
                "pipeline.dlq_suffix",
                "",
                "a non-empty suffix such as .dlq",
            ));
        }
        self.retry.validate("retry")?;
        if !self.metrics.addr.is_empty() && self.metrics.addr.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "metrics.addr",
                &self.metrics.addr,
                "ip:port such as 0.0.0.0:9464, or empty to disable",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::invalid(
                "log.format",
                &self.log.format,
                "`text` or `json`",
            ));
        }
        let db = &self.database.url;
        let db_ok = db.is_empty()
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://")
            || db.contains("host=");
        if !db_ok {
            return Err(ConfigError::invalid(
                "database.url",
                mask_url(&self.database.url),
                "a postgres:// URL or a key=value connection string",
            ));
        }
        for (name, o) in &self.workers {
            if let Some(c) = o.concurrency {
                check_positive(&format!("workers.{name}.concurrency"), c)?;
            }
            if let Some(b) = o.max_batch {
                check_positive(&format!("workers.{name}.max_batch"), b)?;
            }
            if let Some(r) = &o.retry {
                r.validate(&format!("workers.{name}.retry"))?;
            }
            if let Some(topics) = &o.topics {
                if topics.is_empty() || topics.iter().any(|t| t.trim().is_empty()) {
                    return Err(ConfigError::invalid(
                        &format!("workers.{name}.topics"),
                        format!("{topics:?}"),
                        "a non-empty list of topic names",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The consumer group of a worker.
    pub fn group_id(&self, worker: &str) -> String {
        self.workers
            .get(worker)
            .and_then(|o| o.group_id.clone())
            .unwrap_or_else(|| format!("{}-{}", self.kafka.group_prefix, worker))
    }

    /// The retry policy of a worker: its override, or the shared one.
    pub fn retry_for(&self, worker: &str) -> RetryConfig {
        self.workers
            .get(worker)
            .and_then(|o| o.retry.clone())
            .unwrap_or_else(|| self.retry.clone())
    }

    /// The pipeline tuning of a worker, with its overrides applied.
    pub fn tuning_for(&self, worker: &str) -> PipelineTuning {
        let mut t = self.pipeline.clone();
        if let Some(o) = self.workers.get(worker) {
            if let Some(c) = o.concurrency {
                t.concurrency = c;
            }
            if let Some(b) = o.max_batch {
                t.max_batch = b;
            }
        }
        t
    }

    /// [`Self::tuning_for`], with the concurrency capped at what the worker
    /// can use (`max_concurrency`) unless `workers.<name>.concurrency` is
    /// set, and the batch size the worker prefers (`preferred_max_batch`)
    /// unless `workers.<name>.max_batch` is.
    pub fn tuning_for_worker(
        &self,
        worker: &str,
        max_concurrency: Option<usize>,
        preferred_max_batch: Option<usize>,
    ) -> PipelineTuning {
        let mut t = self.tuning_for(worker);
        let overrides = self.workers.get(worker);
        if let (Some(max), false) = (
            max_concurrency,
            overrides.is_some_and(|o| o.concurrency.is_some()),
        ) {
            t.concurrency = t.concurrency.min(max.max(1));
        }
        if let (Some(batch), false) = (
            preferred_max_batch,
            overrides.is_some_and(|o| o.max_batch.is_some()),
        ) {
            t.max_batch = batch.max(1);
        }
        t
    }

    /// The topics a worker reads: its override, or the worker's own default.
    pub fn topics_for(&self, worker: &str, default: Vec<String>) -> Vec<String> {
        self.workers
            .get(worker)
            .and_then(|o| o.topics.clone())
            .unwrap_or(default)
    }

    /// A copy that is safe to print or log: passwords and secrets are masked.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        for (k, v) in c.kafka.properties.iter_mut() {
            if is_secret_key(k) {
                *v = MASK.into();
            }
        }
        c.redis.url = mask_url(&c.redis.url);
        c.database.url = mask_url(&c.database.url);
        c.smtp.url = mask_url(&c.smtp.url);
        c
    }
}

impl RetryConfig {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                &format!("{section}.max_attempts"),
                0,
                "at least 1 (1 means no retry)",
            ));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(ConfigError::invalid(
                &format!("{section}.multiplier"),
                self.multiplier,
                "a number >= 1.0",
            ));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(ConfigError::invalid(
                &format!("{section}.max_backoff"),
                humantime::format_duration(self.max_backoff),
                format!(
                    "at least initial_backoff ({})",
                    humantime::format_duration(self.initial_backoff)
                ),
            ));
        }
        Ok(())
    }
}

fn check_positive(key: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        Err(ConfigError::invalid(key, 0, "a whole number above zero"))
    } else {
        Ok(())
    }
}

/// What a masked secret prints as.
pub const MASK: &str = "********";

/// Whether a librdkafka property (or any key) holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "ssl.key.pem",
        "private",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Masks the password of a URL (`redis://:pw@host` → `redis://:********@host`).
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None => userinfo.to_string(),
    };
    format!("{}{}{}", &url[..scheme_end + 3], masked, &rest[at..])
}

/// Environment variables with a fixed name, and the key each one sets.
pub const WELL_KNOWN_ENV: &[(&str, &str)] = &[
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
    ("REDIS_URL", "redis.url"),
    ("SMTP_URL", "smtp.url"),
    ("DATABASE_URL", "database.url"),
    ("TASKSTREAM_METRICS_ADDR", "metrics.addr"),
];

/// Loads a config of type `T` (the binary's composed config): defaults, then the
/// file, then the environment. `path` falls back to `TASKSTREAM_CONFIG`.
pub fn load<T>(path: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    extract(&layered::<T>(path)?, None)
}

/// Extracts `T` from the whole config (`section` None) or from one section.
/// Extract sections one by one rather than through `#[serde(flatten)]`: serde
/// loses the key of a bad value inside a flattened struct.
pub fn extract<T: DeserializeOwned>(
    figment: &Figment,
    section: Option<&str>,
) -> Result<T, ConfigError> {
    match section {
        None => figment.extract::<T>(),
        Some(s) => figment.extract_inner::<T>(s),
    }
    .map_err(|e| describe_figment_error(e, section))
}

/// The layered config (defaults of `T` < file < environment), not yet
/// extracted. `path` falls back to `TASKSTREAM_CONFIG`.
pub fn layered<T>(path: Option<&Path>) -> Result<Figment, ConfigError>
where
    T: Serialize + Default,
{
    let env_path = std::env::var_os("TASKSTREAM_CONFIG").map(PathBuf::from);
    let path = path.map(Path::to_path_buf).or(env_path);
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = &path {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Parse once here to report syntax errors with the file's name and line,
        // and top-level keys nobody reads (a typo must not pass silently).
        let table = toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if let Ok(toml::Value::Table(known)) = toml::Value::try_from(T::default()) {
            for key in table.keys() {
                if !known.contains_key(key) && key != "workers" {
                    let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
                    names.sort_unstable();
                    return Err(ConfigError::invalid(
                        key,
                        format!("[{key}]"),
                        format!("a known section: {}", names.join(", ")),
                    ));
                }
            }
        }
        figment = figment.merge(Toml::string(&text));
    }
    let names: Vec<&str> = WELL_KNOWN_ENV.iter().map(|(n, _)| *n).collect();
    figment = figment
        .merge(
            Env::prefixed("TASKSTREAM_")
                .ignore(&["CONFIG", "METRICS_ADDR"])
                .filter(|k| {
                    !k.as_str()
                        .to_ascii_lowercase()
                        .starts_with("kafka__properties__")
                })
                .map(|k| k.as_str().to_ascii_lowercase().replace("__", ".").into()),
        )
        // librdkafka property names contain dots, which figment would nest:
        // merge them as one map instead.
        .merge(Serialized::default(
            "kafka.properties",
            kafka_properties_from_env(),
        ))
        .merge(Env::raw().only(&names).map(|k| {
            WELL_KNOWN_ENV
                .iter()
                .find(|(n, _)| k.as_str().eq_ignore_ascii_case(n))
                .map(|(_, key)| (*key).into())
                .unwrap_or_else(|| k.into())
        }));
    Ok(figment)
}

/// `TASKSTREAM_KAFKA__PROPERTIES__SASL_PASSWORD=x` → `sasl.password = "x"`.
fn kafka_properties_from_env() -> BTreeMap<String, String> {
    const PREFIX: &str = "taskstream_kafka__properties__";
    std::env::vars()
        .filter_map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            let prop = lower.strip_prefix(PREFIX)?;
            (!prop.is_empty()).then(|| (prop.replace('_', "."), v))
        })
        .collect()
}

fn describe_figment_error(e: figment::Error, section: Option<&str>) -> ConfigError {
    let mut messages = Vec::new();
    for err in e {
        let mut key = err.path.join(".");
        if let Some(s) = section {
            if !(key == s || key.starts_with(&format!("{s}."))) {
                key = if key.is_empty() {
                    s.to_string()
                } else {
                    format!("{s}.{key}")
                };
            }
        }
        let source = err
            .metadata
            .as_ref()
            .map(|m| m.name.to_string())
            .unwrap_or_default();
        let what = match &err.kind {
            figment::error::Kind::InvalidType(actual, expected) => {
                format!("has {actual}: expected {expected}")
            }
            figment::error::Kind::InvalidValue(actual, expected) => {
                format!("has {actual}: expected {expected}")
            }
            figment::error::Kind::UnknownField(field, expected) => {
                // figment's path of an unknown field already holds the field
                // (and, for a section extracted alone, the section after it):
                // name it as section, parents, field, each once.
                let mut parts: Vec<&str> = section.into_iter().collect();
                parts.extend(
                    err.path
                        .iter()
                        .map(String::as_str)
                        .filter(|p| *p != field.as_str() && Some(*p) != section),
                );
                parts.push(field);
                let key = parts.join(".");
                messages.push(format!(
                    "config key `{key}` is not a known setting (expected one of: {})",
                    expected.join(", ")
                ));
                continue;
            }
            other => other.to_string(),
        };
        let from = if source.is_empty() {
            String::new()
        } else {
            format!(" (from {source})")
        };
        messages.push(format!("config key `{key}` {what}{from}"));
    }
    ConfigError::Parse(messages.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_seed_node() {
        let mut r = RedisConfig {
            url: "rediss+cluster://app:s3cret@a:7000,b:7001/#insecure".into(),
            ..RedisConfig::default()
        };
        assert!(r.is_cluster());
        assert_eq!(
            r.cluster_nodes().unwrap().unwrap(),
            vec![
                "rediss://app:s3cret@a:7000/#insecure",
                "rediss://app:s3cret@b:7001/#insecure"
            ]
        );
        r.url = "redis://a:6379".into();
        assert_eq!(r.cluster_nodes().unwrap(), None);
        r.url = "redis+cluster://:s3cret@a:7000,b".into();
        let e = r.cluster_nodes().unwrap_err().to_string();
        assert!(e.contains("redis.url") && e.contains("\"b\""), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url("redis://:s3cret@cache:6379/0"),
            "redis://:********@cache:6379/0"
        );
        assert_eq!(
            mask_url("postgres://app:pw@db/audit?sslmode=require"),
            "postgres://app:********@db/audit?sslmode=require"
        );
        assert_eq!(mask_url("redis://cache:6379"), "redis://cache:6379");
    }

    #[test]
    fn secret_property_keys_are_recognised() {
        assert!(is_secret_key("sasl.password"));
        assert!(is_secret_key("ssl.key.password"));
        assert!(is_secret_key("sasl.oauthbearer.client.secret"));
        assert!(!is_secret_key("sasl.username"));
        assert!(!is_secret_key("security.protocol"));
    }

    #[test]
    fn zero_concurrency_is_rejected_with_key_and_value() {
        let mut c = PipelineConfig::default();
        c.pipeline.concurrency = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("pipeline.concurrency"), "{err}");
        assert!(err.contains("\"0\""), "{err}");
    }

    #[test]
    fn bad_bootstrap_server_is_rejected() {
        let mut c = PipelineConfig::default();
        c.kafka.bootstrap_servers = "kafka:port".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.bootstrap_servers"), "{err}");
        assert!(err.contains("kafka:port"), "{err}");
    }

    #[test]
    fn worker_overrides_fall_back_to_shared_sections() {
        let mut c = PipelineConfig::default();
        assert_eq!(c.group_id("audit"), "taskstream-audit");
        c.workers.insert(
            "audit".into(),
            WorkerOverrides {
                group_id: Some("compliance".into()),
                max_batch: Some(2000),
                ..Default::default()
            },
        );
        assert_eq!(c.group_id("audit"), "compliance");
        assert_eq!(c.tuning_for("audit").max_batch, 2000);
        assert_eq!(c.tuning_for("audit").concurrency, 8);
    }

    #[test]
    fn a_worker_cap_lowers_concurrency_unless_the_config_sets_it() {
        let mut c = PipelineConfig::default();
        assert_eq!(c.tuning_for_worker("audit", Some(2), None).concurrency, 2);
        assert_eq!(c.tuning_for_worker("audit", Some(20), None).concurrency, 8);
        assert_eq!(c.tuning_for_worker("audit", None, None).concurrency, 8);
        c.workers.insert(
            "audit".into(),
            WorkerOverrides {
                concurrency: Some(6),
                ..WorkerOverrides::default()
            },
        );
        assert_eq!(c.tuning_for_worker("audit", Some(2), None).concurrency, 6);
    }

    #[test]
    fn a_worker_preferred_batch_size_applies_unless_the_config_sets_one() {
        let mut c = PipelineConfig::default();
        assert_eq!(c.tuning_for_worker("audit", None, None).max_batch, 500);
        assert_eq!(
            c.tuning_for_worker("audit", None, Some(1000)).max_batch,
            1000
        );
        c.workers.insert(
            "audit".into(),
            WorkerOverrides {
                max_batch: Some(200),
                ..WorkerOverrides::default()
            },
        );
        assert_eq!(
            c.tuning_for_worker("audit", None, Some(1000)).max_batch,
            200
        );
    }
}

#[cfg(test)]
mod unknown_key_tests {
    use super::*;
    use figment::providers::{Format, Toml};

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Probe {
        pipeline: PipelineTuning,
    }

    #[test]
    fn an_unknown_key_is_named_once_with_its_section() {
        let figment = Figment::from(Serialized::defaults(Probe::default()))
            .merge(Toml::string("[pipeline]\nbogus_key = 3\n"));
        let whole = extract::<Probe>(&figment, None).unwrap_err().to_string();
        assert!(
            whole.contains("config key `pipeline.bogus_key` is not a known setting"),
            "{whole}"
        );
        let inner = extract::<PipelineTuning>(&figment, Some("pipeline"))
            .unwrap_err()
            .to_string();
        assert!(
            inner.contains("config key `pipeline.bogus_key` is not a known setting"),
            "{inner}"
        );
    }
}
