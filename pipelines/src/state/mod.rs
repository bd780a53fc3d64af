//! Durable worker state: idempotency keys, schedules, counters.
//!
//! [`StateStore`] is the one interface workers see. [`RedisStore`] is the
//! production implementation; [`MemoryStore`] serves the demo and unit tests.
//! Both run the same conformance suite ([`conformance::run_all`]), so a worker
//! tested against memory behaves the same against Redis.
//!
//! Keys given to a store are logical; the store prepends its configured prefix.
//! On a Redis Cluster each worker's store also puts the worker's hash tag in
//! front ([`slot`]: the one place that decides the key layout).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

#[cfg(feature = "testkit")]
pub mod conformance;
mod memory;
mod ops;
mod redis;
pub mod slot;

pub use self::memory::MemoryStore;
pub use self::ops::{
    merge_hash_sets, merge_sorted_set_adds, merge_writes, ScoreBound, ScoreRange, StateOp,
};
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
    /// Several keys in one command (`MGET`), in order; absent keys are `None`.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError>;
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
    /// Claims fields of hashes in one atomic step (the idempotency guard's
    /// claims, kept in its generation hashes). Each of `fields`, in order,
    /// is looked up in `hashes` (the first holding it wins; a hash that does
    /// not exist costs nothing per field), then, when `keys` is not empty,
    /// in its own string key `keys[i]` (the layout before: a key per field).
    /// The value found, or absent, is compared with `expected[i]` (absent
    /// when `expected` is empty or `expected[i]` is empty: stored values are
    /// never empty): when equal, the field is set to `value` in `hashes[0]`,
    /// whose expiry becomes `ttl`, and the answer is `None`; otherwise the
    /// answer is the value found. A field repeated in the call finds what its
    /// first occurrence left.
    async fn claim_fields(
        &self,
        hashes: &[String],
        keys: &[String],
        fields: &[String],
        expected: &[Vec<u8>],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, StateError>;
    /// Whether some key starts with `prefix`, looking at no more than about
    /// `budget` keys: `None` when it cannot tell (the budget ran out; a
    /// cluster, whose keys are spread over its nodes). `SCAN … MATCH` on
    /// Redis: for a one-time question (are there keys of an older layout?),
    /// never in a hot path.
    async fn any_key_with_prefix(
        &self,
        prefix: &str,
        budget: usize,
    ) -> Result<Option<bool>, StateError>;
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
    /// Members within `range`, lowest score first (ties by member), paged.
    async fn zrange(&self, key: &str, range: ScoreRange) -> Result<Vec<Scored>, StateError>;
    /// Members with `min <= score <= max`, lowest score first, at most `limit`.
    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        limit: usize,
    ) -> Result<Vec<Scored>, StateError> {
        self.zrange(key, ScoreRange::inclusive(min, max, limit))
            .await
    }
    /// The lowest-scored member, if any.
    async fn zfirst(&self, key: &str) -> Result<Option<Scored>, StateError> {
        Ok(self
            .zrange_by_score(key, f64::NEG_INFINITY, f64::INFINITY, 1)
            .await?
            .into_iter()
            .next())
    }
    /// How many members the sorted set has.
    async fn zcard(&self, key: &str) -> Result<u64, StateError>;
    /// A member's score, if it is there.
    async fn zscore(&self, key: &str, member: &str) -> Result<Option<f64>, StateError>;
    /// Claims the due members of a sorted set, atomically: every member with
    /// `score <= due_by` (at most `limit`, lowest first) is re-scored to
    /// `lease_until` and returned with the score it had. A claimer that
    /// finishes removes the member with [`StateStore::zrem_if_score`]; one that
    /// crashes leaves it at `lease_until`, where it becomes due again and is
    /// claimed by whoever runs next. Two claimers never get the same member
    /// within one lease (a Lua script on Redis).
    async fn zclaim_due(
        &self,
        key: &str,
        due_by: f64,
        lease_until: f64,
        limit: usize,
    ) -> Result<Vec<Scored>, StateError>;
    /// Removes `member` only while its score is still `score` (a claim this
    /// caller made, not since rescheduled); true when removed. Atomic.
    async fn zrem_if_score(&self, key: &str, member: &str, score: f64) -> Result<bool, StateError>;
    /// Moves `member` to `score` only while its score is still `expected`
    /// (a claim this caller made and wants to put back or postpone, not
    /// since rescheduled, acked or removed); true when moved. Atomic.
    async fn zmove_if_score(
        &self,
        key: &str,
        member: &str,
        expected: f64,
        score: f64,
    ) -> Result<bool, StateError>;
    /// Deletes `key` only while it holds `expected` (an owner-checked
    /// release); true when deleted. Atomic.
    async fn delete_if_eq(&self, key: &str, expected: &[u8]) -> Result<bool, StateError>;
    /// Applies `ops` in order as one atomic unit (`MULTI`/`EXEC` on Redis): a
    /// crash or a concurrent reader sees all of them or none.
    async fn apply(&self, ops: &[StateOp]) -> Result<(), StateError>;
    /// [`StateStore::apply`], returning for each top-level
    /// [`StateOp::IfAbsent`] of `ops`, in order, whether its key was absent
    /// (its `then` branch ran).
    async fn apply_checked(&self, ops: &[StateOp]) -> Result<Vec<bool>, StateError>;
    /// One field of a hash.
    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Some fields of a hash, in order (`HMGET` on Redis).
    async fn hget_many(
        &self,
        key: &str,
        fields: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let mut all = Vec::with_capacity(fields.len());
        for f in fields {
            all.push(self.hget(key, f).await?);
        }
        Ok(all)
    }
    /// Every field of a hash (empty when absent).
    async fn hget_all(&self, key: &str) -> Result<BTreeMap<String, Vec<u8>>, StateError>;
    /// Every field of each hash, in order (empty when absent): one round
    /// trip on Redis (the `HGETALL`s pipelined).
    async fn hget_all_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<BTreeMap<String, Vec<u8>>>, StateError> {
        let mut all = Vec::with_capacity(keys.len());
        for key in keys {
            all.push(self.hget_all(key).await?);
        }
        Ok(all)
    }
    /// The number of distinct members added (with [`StateOp::DistinctAdd`]) to
    /// the union of `keys`: `PFCOUNT` on Redis (HyperLogLog, about 0.8 %
    /// standard error), exact in memory.
    async fn distinct_count(&self, keys: &[String]) -> Result<u64, StateError>;
    /// Merges distinct counts: `dest` becomes the union of `dest` and `sources`.
    async fn distinct_merge(&self, dest: &str, sources: &[String]) -> Result<(), StateError>;
}

/// The arguments of [`StateStore::claim_fields`] checked, the same for every
/// store: the hash written (`None`: no fields, nothing to do), or an error
/// when fields come with no hash, or `keys` or `expected` are neither empty
/// nor one per field.
pub(crate) fn claim_target<'h>(
    hashes: &'h [String],
    keys: &[String],
    fields: &[String],
    expected: &[Vec<u8>],
) -> Result<Option<&'h String>, StateError> {
    let Some(field) = fields.first() else {
        return Ok(None);
    };
    let bad = |message: String| StateError::Protocol {
        key: field.clone(),
        message,
    };
    for (what, n) in [("keys", keys.len()), ("expected values", expected.len())] {
        if n != 0 && n != fields.len() {
            return Err(bad(format!(
                "claim_fields was given {n} {what} for {} fields",
                fields.len()
            )));
        }
    }
    match hashes.first() {
        Some(into) => Ok(Some(into)),
        None => Err(bad("claim_fields was given no hash to claim in".into())),
    }
}

/// Opens the store a config names: `memory:`, a Redis URL or a Redis Cluster
/// (`redis+cluster://`; give each worker [`slot::for_worker`] of it).
pub async fn open(cfg: &RedisConfig) -> Result<Arc<dyn StateStore>, StateError> {
    if cfg.url == "memory:" {
        Ok(Arc::new(MemoryStore::new(&cfg.key_prefix)))
    } else {
        Ok(Arc::new(RedisStore::connect(cfg).await?))
    }
}
