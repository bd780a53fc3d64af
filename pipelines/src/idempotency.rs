//! Makes a worker's side effect happen once per event id, on top of Kafka's
//! at-least-once delivery.
//!
//! Protocol, per worker and event id (key `idem:<worker>:<event_id>`):
//! 1. **claim**: `SET key pending NX PX <lease> GET`, pipelined for the batch.
//!    Absent → claimed, handle it. `done` → a duplicate, skip it. `pending` →
//!    another consumer (or this worker before a crash) holds it: wait and retry
//!    until it completes or the lease expires.
//! 2. **complete** after the side effect: `SET key done PX <ttl>`, pipelined.
//! 3. **release** when handling failed: `DEL key`, so a retry (or a replay from
//!    the dead-letter topic) handles it again.
//!
//! A crash between the side effect and step 2 makes the event run again after
//! the lease: the one window no broker-side protocol can close without the side
//! effect itself being transactional. Stores with a unique key (the audit
//! store's event id) close it themselves.

use std::sync::Arc;
use std::time::Duration;

use crate::state::{StateError, StateStore};

const PENDING: &[u8] = b"pending";
const DONE: &[u8] = b"done";

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the event now: handle it, then complete or release.
    Claimed,
    /// Already handled: skip.
    Duplicate,
    /// Someone else is handling it right now: try again later.
    InProgress,
}

/// The guard of one worker.
#[derive(Clone)]
pub struct IdempotencyGuard {
    store: Arc<dyn StateStore>,
    namespace: String,
    lease: Duration,
    ttl: Duration,
}

impl IdempotencyGuard {
    pub fn new(store: Arc<dyn StateStore>, worker: &str, lease: Duration, ttl: Duration) -> Self {
        IdempotencyGuard {
            store,
            namespace: format!("idem:{worker}:"),
            lease,
            ttl,
        }
    }

    fn keys<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        ids.into_iter()
            .map(|id| {
                let mut k = String::with_capacity(self.namespace.len() + id.len());
                k.push_str(&self.namespace);
                k.push_str(id);
                k
            })
            .collect()
    }

    /// Claims every id in one round trip. Ids repeated within the call: the
    /// first is claimed, the others are duplicates.
    pub async fn claim<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Claim>, StateError> {
        let keys = self.keys(ids);
        let previous = self
            .store
            .set_nx_get_many(&keys, PENDING, self.lease)
            .await?;
        let mut claims: Vec<Claim> = previous
            .into_iter()
            .map(|p| match p.as_deref() {
                None => Claim::Claimed,
                Some(DONE) => Claim::Duplicate,
                Some(_) => Claim::InProgress,
            })
            .collect();
        // A later copy of an id claimed in this same call sees our own `pending`.
        for i in 0..keys.len() {
            if claims[i] == Claim::InProgress && keys[..i].contains(&keys[i]) {
                claims[i] = Claim::Duplicate;
            }
        }
        Ok(claims)
    }

    /// Marks ids handled, for the guard's ttl.
    pub async fn complete<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StateError> {
        let keys = self.keys(ids);
        self.store.set_many(&keys, DONE, self.ttl).await
    }

    /// Gives claims back so the ids can be handled again.
    pub async fn release<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StateError> {
        let keys = self.keys(ids);
        if keys.is_empty() {
            return Ok(());
        }
        self.store.delete(&keys).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    fn guard() -> IdempotencyGuard {
        IdempotencyGuard::new(
            Arc::new(MemoryStore::new("t:")),
            "w",
            Duration::from_millis(100),
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn completed_event_is_a_duplicate_next_time() {
        let g = guard();
        assert_eq!(
            g.claim(["a", "b"]).await.unwrap(),
            vec![Claim::Claimed, Claim::Claimed]
        );
        g.complete(["a"]).await.unwrap();
        g.release(["b"]).await.unwrap();
        assert_eq!(
            g.claim(["a", "b"]).await.unwrap(),
            vec![Claim::Duplicate, Claim::Claimed]
        );
    }

    #[tokio::test]
    async fn repeated_id_in_one_batch_is_claimed_once() {
        let g = guard();
        assert_eq!(
            g.claim(["x", "x", "y"]).await.unwrap(),
            vec![Claim::Claimed, Claim::Duplicate, Claim::Claimed]
        );
    }

    #[tokio::test]
    async fn abandoned_claim_is_reclaimable_after_the_lease() {
        let g = guard();
        assert_eq!(g.claim(["z"]).await.unwrap(), vec![Claim::Claimed]);
        assert_eq!(g.claim(["z"]).await.unwrap(), vec![Claim::InProgress]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(g.claim(["z"]).await.unwrap(), vec![Claim::Claimed]);
    }
}
