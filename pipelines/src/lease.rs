//! A leader lease in the state store: at most one holder at a time, per name.
//!
//! The runtime hands it the worker's store, scoped to the worker's hash slot on
//! a Redis Cluster ([`crate::state::slot`]): the lease and its fence share it.
//!
//! Protocol (key `lease:<name>`, value the holder's random id):
//! - **acquire**: `SET key id NX PX ttl`; the winner then takes a *fencing
//!   token* with `INCR lease:<name>:fence`, so every new leader holds a larger
//!   token than any before it (a store that records the last token seen can
//!   refuse a deposed leader's late write);
//! - **renew**: compare-and-set of the key to the same id with a fresh ttl;
//!   `false` means the lease was lost (expired and taken by someone else);
//! - **release**: delete only while the key still holds our id.
//!
//! The holder must stop its work before the ttl runs out when it cannot
//! renew: [`crate::timer`] stops a leader's timer once two thirds of the ttl
//! have passed since the last successful renewal. Lease timing is real time
//! (tokio's clock), because the expiry it races is the store's own.

use std::sync::Arc;
use std::time::Duration;

use crate::state::{StateError, StateStore};

/// One candidate's handle on a named lease.
#[derive(Clone)]
pub struct LeaderLease {
    store: Arc<dyn StateStore>,
    key: String,
    fence_key: String,
    holder: String,
    ttl: Duration,
}

impl std::fmt::Debug for LeaderLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderLease")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl LeaderLease {
    /// A candidate for lease `name` with a fresh random holder id.
    pub fn new(store: Arc<dyn StateStore>, name: &str, ttl: Duration) -> Self {
        LeaderLease {
            store,
            key: format!("lease:{name}"),
            fence_key: format!("lease:{name}:fence"),
            holder: format!("{:016x}", rand::random::<u64>()),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease if nobody holds it; returns the fencing token.
    pub async fn try_acquire(&self) -> Result<Option<u64>, StateError> {
        if !self
            .store
            .set_nx(&self.key, self.holder.as_bytes(), Some(self.ttl))
            .await?
        {
            return Ok(None);
        }
        let token = self.store.incr_by(&self.fence_key, 1, None).await?;
        Ok(Some(token.max(0) as u64))
    }

    /// Extends the lease; `false` when it is no longer ours.
    pub async fn renew(&self) -> Result<bool, StateError> {
        self.store
            .compare_and_set(
                &self.key,
                self.holder.as_bytes(),
                self.holder.as_bytes(),
                Some(self.ttl),
            )
            .await
    }

    /// Gives the lease back (only if still ours), so a successor need not
    /// wait for it to expire.
    pub async fn release(&self) -> Result<bool, StateError> {
        self.store
            .delete_if_eq(&self.key, self.holder.as_bytes())
            .await
    }

    /// The current holder's id, if any (for tests and diagnostics).
    pub async fn current_holder(&self) -> Result<Option<String>, StateError> {
        Ok(self
            .store
            .get(&self.key)
            .await?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    #[tokio::test]
    async fn one_holder_at_a_time_and_tokens_increase() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("t:"));
        let a = LeaderLease::new(store.clone(), "w", Duration::from_millis(200));
        let b = LeaderLease::new(store.clone(), "w", Duration::from_millis(200));
        let ta = a.try_acquire().await.unwrap().expect("a leads");
        assert_eq!(b.try_acquire().await.unwrap(), None, "b waits");
        assert!(a.renew().await.unwrap());
        assert!(
            !b.renew().await.unwrap(),
            "b cannot renew a lease it does not hold"
        );
        assert!(!b.release().await.unwrap(), "nor release it");
        tokio::time::sleep(Duration::from_millis(300)).await; // a died: no renewal
        let tb = b
            .try_acquire()
            .await
            .unwrap()
            .expect("b takes over after expiry");
        assert!(tb > ta, "fencing token increases with every new leader");
        assert!(
            !a.renew().await.unwrap(),
            "the deposed leader learns it lost the lease"
        );
        assert!(b.release().await.unwrap());
        assert!(a.try_acquire().await.unwrap().unwrap() > tb);
    }
}
