//! Where keys land on a Redis Cluster: the one place that decides it.
//!
//! Redis Cluster hashes a key to one of 16,384 slots by the text between its
//! first `{` and the next `}` (the hash tag), or by the whole key when it has
//! none; a command, pipeline, `MULTI`/`EXEC` or script that names keys of two
//! slots fails (`CROSSSLOT`). Every multi-key operation of a worker names keys
//! of that worker only, but of many entities and partitions at once (a batch's
//! idempotency claims; `apply_for`, which puts an aggregates window counter or
//! a reminder's schedule entry in one transaction with the event's `done`
//! mark; the leader lease and its fence). So the tag is the **worker**:
//! [`slot_key`]`(worker, key)` = `{worker}key`, and [`Scoped`] applies it to
//! every key a worker's store sees. Each worker's state lives on the master
//! that owns its slot; the cluster spreads the workers over its masters, and a
//! worker's own load is bounded by one master (a finer tag, per partition,
//! would spread one worker too, but its cross-partition transactions would no
//! longer fit in a slot).
//!
//! A new multi-key operation stays correct by taking every key it touches
//! through the worker's store (so they are all scoped), and, in a Lua script,
//! by passing every key in `KEYS[]`, never building a key name inside the
//! script.
//!
//! On a single Redis node nothing is scoped: keys keep the layout they always
//! had (`<key_prefix><key>`), so an upgrade finds its state where it left it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{ScoreRange, Scored, StateError, StateOp, StateStore};

/// `key` in the hash slot of `tag`: `{tag}key`.
pub fn slot_key(tag: &str, key: &str) -> String {
    let mut k = String::with_capacity(tag.len() + key.len() + 2);
    k.push('{');
    k.push_str(tag);
    k.push('}');
    k.push_str(key);
    k
}

/// A store whose every key is [`slot_key`]`(tag, key)`: what one worker sees
/// on a Redis Cluster.
pub struct Scoped {
    inner: Arc<dyn StateStore>,
    tag: String,
}

impl Scoped {
    pub fn new(inner: Arc<dyn StateStore>, tag: &str) -> Self {
        Scoped {
            inner,
            tag: tag.to_string(),
        }
    }

    fn key(&self, key: &str) -> String {
        slot_key(&self.tag, key)
    }

    fn keys(&self, keys: &[String]) -> Vec<String> {
        keys.iter().map(|k| self.key(k)).collect()
    }

    fn op(&self, op: &StateOp) -> StateOp {
        if let StateOp::IfAbsent {
            key,
            then,
            otherwise,
        } = op
        {
            return StateOp::IfAbsent {
                key: slot_key(&self.tag, key),
                then: then.iter().map(|op| self.op(op)).collect(),
                otherwise: otherwise.iter().map(|op| self.op(op)).collect(),
            };
        }
        if let StateOp::MarkOnce {
            into,
            seen,
            fields,
            keys,
            ttl,
        } = op
        {
            return StateOp::MarkOnce {
                into: self.key(into),
                seen: self.keys(seen),
                fields: fields.clone(),
                keys: self.keys(keys),
                ttl: *ttl,
            };
        }
        let mut op = op.clone();
        let key = match &mut op {
            StateOp::Set { key, .. }
            | StateOp::Delete { key }
            | StateOp::IncrBy { key, .. }
            | StateOp::HashSet { key, .. }
            | StateOp::HashIncrBy { key, .. }
            | StateOp::HashIncrByMany { key, .. }
            | StateOp::HashDelete { key, .. }
            | StateOp::ZAdd { key, .. }
            | StateOp::ZAddMany { key, .. }
            | StateOp::ZRem { key, .. }
            | StateOp::DistinctAdd { key, .. }
            | StateOp::Expire { key, .. }
            | StateOp::IfAbsent { key, .. } => key,
            StateOp::MarkOnce { .. } => return op,
        };
        *key = slot_key(&self.tag, key);
        op
    }

    /// Errors name the worker's logical key, not the scoped one.
    fn unscoped(&self, e: StateError) -> StateError {
        match e {
            StateError::Protocol { key, message } => StateError::Protocol {
                key: key
                    .strip_prefix(&format!("{{{}}}", self.tag))
                    .map_or(key.clone(), str::to_string),
                message,
            },
            other => other,
        }
    }
}

/// The store `worker` uses: scoped to its hash tag on a Redis Cluster
/// (`cluster`), the shared store otherwise.
pub fn for_worker(store: &Arc<dyn StateStore>, cluster: bool, worker: &str) -> Arc<dyn StateStore> {
    if cluster {
        Arc::new(Scoped::new(store.clone(), worker))
    } else {
        store.clone()
    }
}

#[async_trait]
impl StateStore for Scoped {
    async fn ping(&self) -> Result<(), StateError> {
        self.inner.ping().await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.inner
            .get(&self.key(key))
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.inner
            .get_many(&self.keys(keys))
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        self.inner
            .set(&self.key(key), value, ttl)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        self.inner
            .set_nx(&self.key(key), value, ttl)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        self.inner
            .compare_and_set(&self.key(key), expected, value, ttl)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn delete(&self, keys: &[String]) -> Result<u64, StateError> {
        self.inner
            .delete(&self.keys(keys))
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn any_key_with_prefix(
        &self,
        prefix: &str,
        budget: usize,
    ) -> Result<Option<bool>, StateError> {
        self.inner
            .any_key_with_prefix(&self.key(prefix), budget)
            .await
            .map_err(|e| self.unscoped(e))
    }

    async fn claim_fields(
        &self,
        hashes: &[String],
        keys: &[String],
        fields: &[String],
        expected: &[Vec<u8>],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.inner
            .claim_fields(
                &self.keys(hashes),
                &self.keys(keys),
                fields,
                expected,
                value,
                ttl,
            )
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn set_many(
        &self,
        keys: &[String],
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.inner
            .set_many(&self.keys(keys), value, ttl)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn incr_by(&self, key: &str, by: i64, ttl: Option<Duration>) -> Result<i64, StateError> {
        self.inner
            .incr_by(&self.key(key), by, ttl)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<(), StateError> {
        self.inner
            .zadd(&self.key(key), member, score)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn zrem(&self, key: &str, member: &str) -> Result<bool, StateError> {
        self.inner
            .zrem(&self.key(key), member)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn zmove_if_score(
        &self,
        key: &str,
        member: &str,
        expected: f64,
        score: f64,
    ) -> Result<bool, StateError> {
        self.inner
            .zmove_if_score(&self.key(key), member, expected, score)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn zrange(&self, key: &str, range: ScoreRange) -> Result<Vec<Scored>, StateError> {
        self.inner
            .zrange(&self.key(key), range)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn zcard(&self, key: &str) -> Result<u64, StateError> {
        self.inner
            .zcard(&self.key(key))
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn zscore(&self, key: &str, member: &str) -> Result<Option<f64>, StateError> {
        self.inner
            .zscore(&self.key(key), member)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn zclaim_due(
        &self,
        key: &str,
        due_by: f64,
        lease_until: f64,
        limit: usize,
    ) -> Result<Vec<Scored>, StateError> {
        self.inner
            .zclaim_due(&self.key(key), due_by, lease_until, limit)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn zrem_if_score(&self, key: &str, member: &str, score: f64) -> Result<bool, StateError> {
        self.inner
            .zrem_if_score(&self.key(key), member, score)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn delete_if_eq(&self, key: &str, expected: &[u8]) -> Result<bool, StateError> {
        self.inner
            .delete_if_eq(&self.key(key), expected)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn apply(&self, ops: &[StateOp]) -> Result<(), StateError> {
        let ops: Vec<StateOp> = ops.iter().map(|op| self.op(op)).collect();
        self.inner.apply(&ops).await.map_err(|e| self.unscoped(e))
    }
    async fn apply_checked(&self, ops: &[StateOp]) -> Result<Vec<bool>, StateError> {
        let ops: Vec<StateOp> = ops.iter().map(|op| self.op(op)).collect();
        self.inner
            .apply_checked(&ops)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.inner
            .hget(&self.key(key), field)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn hget_many(
        &self,
        key: &str,
        fields: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.inner
            .hget_many(&self.key(key), fields)
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn hget_all(&self, key: &str) -> Result<BTreeMap<String, Vec<u8>>, StateError> {
        self.inner
            .hget_all(&self.key(key))
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn hget_all_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<BTreeMap<String, Vec<u8>>>, StateError> {
        self.inner
            .hget_all_many(&self.keys(keys))
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn distinct_count(&self, keys: &[String]) -> Result<u64, StateError> {
        self.inner
            .distinct_count(&self.keys(keys))
            .await
            .map_err(|e| self.unscoped(e))
    }
    async fn distinct_merge(&self, dest: &str, sources: &[String]) -> Result<(), StateError> {
        self.inner
            .distinct_merge(&self.key(dest), &self.keys(sources))
            .await
            .map_err(|e| self.unscoped(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    #[test]
    fn keys_of_one_worker_share_a_slot() {
        use redis::cluster_routing::Slot;
        let slot = |k: &str| Slot::for_key(format!("taskstream:{k}"));
        let a = slot_key("reminders", "idem:reminders:e1");
        let b = slot_key("reminders", "reminders:due:t:3");
        assert_eq!(a, "{reminders}idem:reminders:e1");
        assert_eq!(slot(&a), slot(&b));
        assert_eq!(slot(&a), Slot::for_key("reminders"));
        assert_ne!(slot(&a), slot(&slot_key("audit", "idem:reminders:e1")));
    }

    #[tokio::test]
    async fn scoped_store_keeps_every_promise() {
        let store = Scoped::new(Arc::new(MemoryStore::new("t:")), "w");
        crate::state::conformance::run_all(&store).await;
    }
}
