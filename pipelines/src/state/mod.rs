//! Durable worker state: idempotency keys, schedules, counters.
//!
//! [`StateStore`] is the one interface workers see. [`RedisStore`] is the
//! production implementation; [`MemoryStore`] serves the demo and unit tests.
//! Both run the same conformance suite ([`conformance::run_all`]), so a worker
//! tested against memory behaves the same against Redis.
//!
//! Keys given to a store are logical; the store prepends its configured prefix.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub mod conformance;
mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

use crate::config::RedisConfig;

/// A state store failure. Always *retryable*: the store being away is never the
/// message's fault, so the pipeline waits for it rather than dead-lettering.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store answered unexpectedly for key {key}: {message}")]
    Protocol { key: String, message: String },
}

/// A member of a sorted set with its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub member: String,
    pub score: f64,
}

/// Key-value, counter and sorted-set operations every worker needs. Batch
/// operations are pipelined (one round trip) by the Redis implementation.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// `PING`: is the store reachable?
    async fn ping(&self) -> Result<(), StateError>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError>;
    /// Sets only if absent; true when this call set it.
    async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError>;
    /// Sets `key` to `value` (with `ttl`) only if it currently holds
    /// `expected`; true when this call set it. Atomic.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError>;
    /// Removes keys; returns how many existed.
    async fn delete(&self, keys: &[String]) -> Result<u64, StateError>;
    /// For each key, `SET key value NX PX ttl GET`: sets it when absent and
    /// returns the value that was there (`None` when this call set it).
    async fn set_nx_get_many(
        &self,
        keys: &[String],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, StateError>;
    /// Sets every key to `value` with `ttl`, in one round trip.
    async fn set_many(
        &self,
        keys: &[String],
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StateError>;
    /// Adds `by` to an integer key (created at 0) and returns the new value.
    async fn incr_by(&self, key: &str, by: i64, ttl: Option<Duration>) -> Result<i64, StateError>;
    /// Adds or moves a sorted-set member.
    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<(), StateError>;
    /// Removes a sorted-set member; true when it was there.
    async fn zrem(&self, key: &str, member: &str) -> Result<bool, StateError>;
    /// Members with `min <= score <= max`, lowest score first, at most `limit`.
    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        limit: usize,
    ) -> Result<Vec<Scored>, StateError>;
    /// The lowest-scored member, if any.
    async fn zfirst(&self, key: &str) -> Result<Option<Scored>, StateError>;
}

/// Opens the store a config names: `memory:` or a Redis URL.
pub async fn open(cfg: &RedisConfig) -> Result<Arc<dyn StateStore>, StateError> {
    if cfg.url == "memory:" {
        Ok(Arc::new(MemoryStore::new(&cfg.key_prefix)))
    } else {
        Ok(Arc::new(RedisStore::connect(cfg).await?))
    }
}
