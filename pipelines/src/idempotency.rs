//! Makes a worker's side effect happen once per event id, on top of Kafka's
//! at-least-once delivery.
//!
//! An event's claim or mark is field `<event_id>` of its worker's
//! **generation hash** `idem-gen:<worker>:<g>`, where a generation is
//! [`GENERATIONS_PER_TTL`]-th of `idempotency_ttl` (`g` counts them since the
//! epoch). New claims and marks go to the current generation's hash; a
//! lookup asks the current one and the [`GENERATIONS_PER_TTL`] before it (a
//! field written at the end of the oldest is a ttl old at the end of the
//! current), and each hash expires [`GENERATIONS_PER_TTL`] + 1 generations
//! after its last write. So a mark is seen for at least the ttl and kept at
//! most one and a half, and a batch costs Redis a few hash commands instead
//! of a key with an expiry per event.
//!
//! Protocol, per worker and event id:
//! 1. **claim** a batch, one script call ([`StateStore::claim_fields`]): each
//!    id found nowhere is set to `p:<now_ms>:<token>` in the current hash,
//!    where `token` is new for each claim call. The value found decides:
//!    - absent → claimed, handle it;
//!    - `done`, or `p:…:<t>` whose claim `t` is complete (key `idem:<worker>:~<t>`
//!      exists) → a duplicate, skip it;
//!    - `p:<ms>:<t>` not complete and younger than the lease → someone (another
//!      consumer, or this one before a crash) is handling it: wait and retry;
//!    - older than the lease → abandoned: taken over with an atomic
//!      compare-and-set (the same call, given the value it must still find),
//!      then handled.
//! 2. **complete** after the side effect. When every event of a claim call was
//!    handled (the usual case) one key marks the whole claim done:
//!    `SET idem:<worker>:~<token> done PX <ttl>`; otherwise each handled id is
//!    set to `done`.
//! 3. **release** when handling failed for good: the field is removed, so a
//!    replay from the dead-letter topic handles it again.
//!
//! The version before kept a key per event id, `idem:<worker>:<event_id>`,
//! with the same values; a claim still reads those keys (they expire within a
//! ttl of the upgrade) and release removes them, so an event an old pod
//! handled stays handled.
//!
//! A crash between the side effect and step 2 makes the event run again after
//! the lease: the one window no broker-side protocol can close without the side
//! effect itself being transactional. Stores with a unique key (the audit
//! store's event id) close it themselves.
//!
//! On a Redis Cluster the guard is given the worker's scoped store
//! ([`crate::state::slot`]): every key above gets the worker's hash tag, so a
//! batch's claims, the claim-call marker and [`IdempotencyGuard::done_ops`]
//! inside a worker's `apply_for` transaction are all in one slot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::state::{StateError, StateOp, StateStore};

const DONE: &[u8] = b"done";
const DAY: Duration = Duration::from_secs(86_400);
/// Keys looked at, at most, to tell whether a worker's Redis holds keys of
/// the version before generation hashes (once per worker and Redis).
const LAYOUT_SCAN_BUDGET: usize = 2_000_000;

/// Generations of marks per idempotency ttl, for a worker that commits its
/// own marks ([`IdempotencyGuard::mark_once_op`]): more keeps marks closer
/// to the ttl (less memory), fewer costs fewer lookups per event.
pub const GENERATIONS_PER_TTL: u64 = 2;

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

/// A mark as read by [`IdempotencyGuard::read_mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The event was handled.
    Handled,
    /// Claimed by a consumer that may still handle it: wait.
    Held,
    /// Claimed, then given up: the event is free again (remove the claim).
    Abandoned,
}

/// The result of one claim call.
#[derive(Debug, Clone)]
pub struct Claims {
    /// Identifies this call's claims, for [`IdempotencyGuard::complete_claims`].
    pub token: String,
    /// One per id, in order.
    pub claims: Vec<Claim>,
}

/// The guard of one worker.
#[derive(Clone)]
pub struct IdempotencyGuard {
    store: Arc<dyn StateStore>,
    namespace: String,
    lease: Duration,
    ttl: Duration,
    clock: Clock,
    /// [`IdempotencyGuard::keys_of_version_before_until`], once known.
    legacy_until: Arc<tokio::sync::OnceCell<u64>>,
}

/// `p:<ms>:<token>` → (ms, token).
fn parse_pending(v: &[u8]) -> Option<(u64, &str)> {
    let s = std::str::from_utf8(v).ok()?.strip_prefix("p:")?;
    let (ms, token) = s.split_once(':')?;
    Some((ms.parse().ok()?, token))
}

impl IdempotencyGuard {
    pub fn new(store: Arc<dyn StateStore>, worker: &str, lease: Duration, ttl: Duration) -> Self {
        IdempotencyGuard {
            store,
            namespace: format!("idem:{worker}:"),
            lease,
            ttl,
            clock: Clock::System,
            legacy_until: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// The guard reading time (claim ages, leases) from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms().max(0) as u64
    }

    /// The writes that mark `ids` handled, for a worker's atomic update
    /// ([`crate::Ctx::apply_for`]): the update and the marks land together, so
    /// a crash can never leave the effect applied but an event unmarked.
    pub fn done_ops<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> [StateOp; 2] {
        self.write_ops(ids, DONE)
    }

    /// Sets `ids` to `value` in the current generation's hash.
    fn write_ops<'a>(&self, ids: impl IntoIterator<Item = &'a str>, value: &[u8]) -> [StateOp; 2] {
        let key = self.generation_key(self.now_ms() / self.generation_ms());
        [
            StateOp::HashSet {
                key: key.clone(),
                fields: ids
                    .into_iter()
                    .map(|id| (id.to_string(), value.to_vec()))
                    .collect(),
            },
            StateOp::Expire {
                key,
                ttl: self.hash_ttl(),
            },
        ]
    }

    /// How long a generation's hash lives after its last write.
    fn hash_ttl(&self) -> Duration {
        Duration::from_millis(self.generation_ms() * (GENERATIONS_PER_TTL + 1))
    }

    /// The key of `id`'s claim or mark in the version before generation
    /// hashes (read until they expire).
    fn mark_key(&self, id: &str) -> String {
        let mut k = String::with_capacity(self.namespace.len() + id.len());
        k.push_str(&self.namespace);
        k.push_str(id);
        k
    }

    /// Until when (ms since the epoch) claims and marks must also read the
    /// per-event keys of the version before generation hashes. Decided once
    /// per worker and Redis, by the first process of this version, and
    /// recorded in `idem-layout:<worker>` (read once per process): when such
    /// keys exist then (an upgrade), or the store cannot tell (a cluster; a
    /// keyspace of more than [`LAYOUT_SCAN_BUDGET`] keys), that start plus
    /// the ttl (the last of them expires by then) and a day (old pods still
    /// running in the rollout); when none exists (a new install, where none
    /// will ever be written), 0. After a rollback to the version before,
    /// delete the key before upgrading again.
    async fn keys_of_version_before_until(&self) -> Result<u64, StateError> {
        let parse = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX)
        };
        let decide = || async {
            let key = self.layout_key();
            if let Some(v) = self.store.get(&key).await? {
                return Ok(parse(&v));
            }
            let until = match self
                .store
                .any_key_with_prefix(&self.namespace, LAYOUT_SCAN_BUDGET)
                .await?
            {
                Some(false) => 0,
                _ => self.now_ms() + (self.ttl + DAY).as_millis() as u64,
            };
            // Two first processes at once: the first to record decides.
            self.store
                .set_nx(&key, until.to_string().as_bytes(), None)
                .await?;
            Ok(self.store.get(&key).await?.map_or(until, |v| parse(&v)))
        };
        self.legacy_until.get_or_try_init(decide).await.copied()
    }

    /// The per-event keys of the version before to read for `ids`: none
    /// once [`IdempotencyGuard::keys_of_version_before_until`] has passed.
    async fn keys_of_version_before<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, StateError> {
        Ok(
            if self.now_ms() < self.keys_of_version_before_until().await? {
                self.keys(ids)
            } else {
                Vec::new()
            },
        )
    }

    fn layout_key(&self) -> String {
        let worker = &self.namespace["idem:".len()..self.namespace.len() - 1];
        format!("idem-layout:{worker}")
    }

    /// The hash of the claims and marks of generation `g` (periods of
    /// [`GENERATIONS_PER_TTL`]-th of the ttl since the epoch).
    fn generation_key(&self, g: u64) -> String {
        format!("idem-gen:{}{g}", &self.namespace["idem:".len()..])
    }

    /// The hash of processing day `day`'s marks, where the version before
    /// generations wrote them (read until they expire).
    fn day_key(&self, day: u64) -> String {
        format!("idem-days:{}{day}", &self.namespace["idem:".len()..])
    }

    fn generation_ms(&self) -> u64 {
        (self.ttl.as_millis() as u64 / GENERATIONS_PER_TTL).max(1)
    }

    /// The generation hashes a claim or mark may be in: the current one
    /// (the one written) first, then the [`GENERATIONS_PER_TTL`] before it.
    fn generation_hashes(&self, now: u64) -> Vec<String> {
        let current = now / self.generation_ms();
        (0..=GENERATIONS_PER_TTL)
            .map(|n| self.generation_key(current.saturating_sub(n)))
            .collect()
    }

    /// The hashes a mark may be in: the generation hashes, then the day
    /// hashes of the version before them (only a worker that commits its
    /// own marks wrote those).
    fn mark_hashes(&self) -> Vec<String> {
        let now = self.now_ms();
        let today = now / DAY.as_millis() as u64;
        let back = self.ttl.as_millis().div_ceil(DAY.as_millis()) as u64;
        let mut hashes = self.generation_hashes(now);
        hashes.extend((today.saturating_sub(back)..=today).map(|d| self.day_key(d)));
        hashes
    }

    /// For a worker that commits its own marks
    /// ([`crate::Worker::marks_in_update`]): the op that marks `ids`
    /// handled, in the hash of the current generation's marks, unless one
    /// of them is marked already: in a hash of the generations of the last
    /// ttl, or where a version before kept marks (a hash per processing
    /// day; a key per event, the guard's claims and marks, while
    /// [`IdempotencyGuard::keys_of_version_before_until`] says). One write per
    /// update instead of a key per event, and one lookup per event in each
    /// of [`GENERATIONS_PER_TTL`] + 1 hashes. A generation's hash expires
    /// [`GENERATIONS_PER_TTL`] + 1 generations after its last write: when
    /// its newest mark is at least a ttl old, and its oldest less than one
    /// and a half (with two generations per ttl).
    pub async fn mark_once_op<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<StateOp, StateError> {
        let mut seen = self.mark_hashes();
        let into = seen.remove(0);
        Ok(StateOp::MarkOnce {
            into,
            seen,
            fields: ids.clone().into_iter().map(str::to_string).collect(),
            keys: self.keys_of_version_before(ids).await?,
            ttl: self.hash_ttl(),
        })
    }

    /// For a worker that commits its own marks: whether each of `ids` was
    /// handled (after a [`StateOp::MarkOnce`] stopped), giving up abandoned
    /// claims of a version before; an error while one is held.
    pub async fn handled(&self, ids: &[&str]) -> Result<Vec<bool>, StateError> {
        let keys = self.keys_of_version_before(ids.iter().copied()).await?;
        let mut handled = vec![false; ids.len()];
        for (i, value) in self.store.get_many(&keys).await?.into_iter().enumerate() {
            let Some(v) = value else { continue };
            match self.read_mark(&v) {
                Mark::Handled => handled[i] = true,
                Mark::Held => {
                    return Err(StateError::Unavailable(format!(
                        "{} is claimed by another consumer",
                        keys[i]
                    )))
                }
                Mark::Abandoned => {
                    self.store.delete_if_eq(&keys[i], &v).await?;
                }
            }
        }
        let fields: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        for hash in self.mark_hashes() {
            let found = self.store.hget_many(&hash, &fields).await?;
            for (h, f) in handled.iter_mut().zip(found) {
                *h |= f.is_some();
            }
        }
        Ok(handled)
    }

    /// What a mark says to a worker that commits its own marks
    /// ([`crate::Worker::marks_in_update`]): `done` was written with the
    /// effect; a pending claim can only be an older version's (a rolling
    /// upgrade), which writes `done` with its effect too, so its event has
    /// not been handled: it is held while the claim is younger than the
    /// lease, abandoned after.
    fn read_mark(&self, value: &[u8]) -> Mark {
        if value == DONE {
            return Mark::Handled;
        }
        match parse_pending(value) {
            Some((ms, _)) if self.now_ms().saturating_sub(ms) < self.lease.as_millis() as u64 => {
                Mark::Held
            }
            _ => Mark::Abandoned,
        }
    }

    /// Refreshes the age of claims still being handled (a slow side effect),
    /// so the lease does not run out under them and nobody takes them over
    /// mid-effect. Called every third of the lease while a batch runs.
    pub async fn renew<'a>(
        &self,
        token: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StateError> {
        let value = format!("p:{}:{token}", self.now_ms());
        self.write(ids, value.as_bytes()).await
    }

    /// Sets `ids` to `value` in the current generation's hash (nothing for
    /// no ids).
    async fn write<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        value: &[u8],
    ) -> Result<(), StateError> {
        let ids: Vec<&str> = ids.into_iter().collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.store.apply(&self.write_ops(ids, value)).await
    }

    fn keys<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        ids.into_iter().map(|id| self.mark_key(id)).collect()
    }

    fn marker(&self, token: &str) -> String {
        format!("{}~{token}", self.namespace)
    }

    /// Claims every id in one round trip (one more only for ids found
    /// pending). Ids repeated within the call: the first is claimed, the
    /// others are duplicates.
    pub async fn claim<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Claims, StateError> {
        let fields: Vec<String> = ids.into_iter().map(str::to_string).collect();
        let token = format!("{:016x}", rand::random::<u64>());
        let now = self.now_ms();
        let value = format!("p:{now}:{token}");
        let hashes = self.generation_hashes(now);
        let keys = self
            .keys_of_version_before(fields.iter().map(String::as_str))
            .await?;
        let previous = self
            .store
            .claim_fields(
                &hashes,
                &keys,
                &fields,
                &[],
                value.as_bytes(),
                self.hash_ttl(),
            )
            .await?;
        let mut claims = Vec::with_capacity(fields.len());
        // Pending claims of other calls, resolved below: (index, claimed at, token).
        let mut pending: Vec<(usize, u64, &str)> = Vec::new();
        for (i, p) in previous.iter().enumerate() {
            claims.push(match p.as_deref() {
                None => Claim::Claimed,
                Some(DONE) => Claim::Duplicate,
                Some(v) => match parse_pending(v) {
                    // A repeat of an id claimed earlier in this same call.
                    Some((_, t)) if t == token => Claim::Duplicate,
                    Some((ms, t)) => {
                        pending.push((i, ms, t));
                        Claim::InProgress
                    }
                    None => Claim::InProgress,
                },
            });
        }
        if pending.is_empty() {
            return Ok(Claims { token, claims });
        }
        let mut complete: HashMap<&str, bool> = HashMap::new();
        for (_, _, t) in &pending {
            if !complete.contains_key(t) {
                let done = self.store.get(&self.marker(t)).await?.is_some();
                complete.insert(t, done);
            }
        }
        // Abandoned claims, taken over if they are still what was found.
        let lease_ms = self.lease.as_millis() as u64;
        let mut abandoned: Vec<usize> = Vec::new();
        for &(i, ms, t) in &pending {
            if complete[t] {
                claims[i] = Claim::Duplicate;
            } else if now.saturating_sub(ms) >= lease_ms {
                abandoned.push(i);
            }
        }
        if !abandoned.is_empty() {
            let fields: Vec<String> = abandoned.iter().map(|&i| fields[i].clone()).collect();
            let keys: Vec<String> = abandoned
                .iter()
                .filter_map(|&i| keys.get(i).cloned())
                .collect();
            let expected: Vec<Vec<u8>> = abandoned
                .iter()
                .map(|&i| previous[i].clone().unwrap_or_default())
                .collect();
            let taken = self
                .store
                .claim_fields(
                    &hashes,
                    &keys,
                    &fields,
                    &expected,
                    value.as_bytes(),
                    self.hash_ttl(),
                )
                .await?;
            for (&i, t) in abandoned.iter().zip(taken) {
                if t.is_none() {
                    claims[i] = Claim::Claimed;
                }
            }
        }
        Ok(Claims { token, claims })
    }

    /// Marks every id of a claim call handled: use when all of the call's
    /// claimed ids were handled.
    pub async fn complete_claims(&self, token: &str) -> Result<(), StateError> {
        self.store
            .set(&self.marker(token), DONE, Some(self.ttl))
            .await
    }

    /// Marks ids handled one by one.
    pub async fn complete<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StateError> {
        self.write(ids, DONE).await
    }

    /// Gives claims back so the ids can be handled again: removes them from
    /// every generation hash they may be in, and the keys of the version
    /// before.
    pub async fn release<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StateError> {
        let fields: Vec<String> = ids.into_iter().map(str::to_string).collect();
        if fields.is_empty() {
            return Ok(());
        }
        let mut ops: Vec<StateOp> = self
            .generation_hashes(self.now_ms())
            .into_iter()
            .map(|key| StateOp::HashDelete {
                key,
                fields: fields.clone(),
            })
            .collect();
        ops.extend(
            self.keys(fields.iter().map(String::as_str))
                .into_iter()
                .map(|key| StateOp::Delete { key }),
        );
        self.store.apply(&ops).await
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

    /// A guard of worker `w` on `store`: lease 30 s, ttl 10 minutes.
    fn guard_on(store: &Arc<dyn StateStore>) -> IdempotencyGuard {
        IdempotencyGuard::new(
            store.clone(),
            "w",
            Duration::from_secs(30),
            Duration::from_secs(600),
        )
    }

    async fn claim(g: &IdempotencyGuard, ids: &[&str]) -> Vec<Claim> {
        g.claim(ids.iter().copied()).await.unwrap().claims
    }

    #[tokio::test]
    async fn completed_event_is_a_duplicate_next_time() {
        let g = guard();
        assert_eq!(
            claim(&g, &["a", "b"]).await,
            vec![Claim::Claimed, Claim::Claimed]
        );
        g.complete(["a"]).await.unwrap();
        g.release(["b"]).await.unwrap();
        assert_eq!(
            claim(&g, &["a", "b"]).await,
            vec![Claim::Duplicate, Claim::Claimed]
        );
    }

    #[tokio::test]
    async fn completing_a_claim_call_completes_all_its_ids() {
        let g = guard();
        let first = g.claim(["a", "b", "c"]).await.unwrap();
        assert_eq!(first.claims, vec![Claim::Claimed; 3]);
        g.complete_claims(&first.token).await.unwrap();
        assert_eq!(
            claim(&g, &["c", "b", "a", "d"]).await,
            vec![
                Claim::Duplicate,
                Claim::Duplicate,
                Claim::Duplicate,
                Claim::Claimed
            ]
        );
        // Long after the lease, still duplicates: completion is not a lease.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(claim(&g, &["a"]).await, vec![Claim::Duplicate]);
    }

    #[tokio::test]
    async fn repeated_id_in_one_batch_is_claimed_once() {
        let g = guard();
        assert_eq!(
            claim(&g, &["x", "x", "y"]).await,
            vec![Claim::Claimed, Claim::Duplicate, Claim::Claimed]
        );
    }

    /// A large batch is one claim: a repeat far down it is a duplicate, and
    /// completing the claim completes every id (the Redis store sends it
    /// as several script calls: `CLAIM_CALL_FIELDS`).
    #[tokio::test]
    async fn a_large_batch_is_claimed_as_one() {
        let g = guard();
        let mut ids: Vec<String> = (0..1_100).map(|i| format!("e{i}")).collect();
        ids[505] = "e3".into();
        ids.push("e3".into());
        let first = g.claim(ids.iter().map(String::as_str)).await.unwrap();
        let want: Vec<Claim> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                if id == "e3" && i != 3 {
                    Claim::Duplicate
                } else {
                    Claim::Claimed
                }
            })
            .collect();
        assert_eq!(first.claims, want);
        g.complete_claims(&first.token).await.unwrap();
        let again = g.claim(ids.iter().map(String::as_str)).await.unwrap();
        assert!(again.claims.iter().all(|c| *c == Claim::Duplicate));
    }

    #[tokio::test]
    async fn abandoned_claim_is_reclaimable_after_the_lease() {
        let g = guard();
        assert_eq!(claim(&g, &["z"]).await, vec![Claim::Claimed]);
        assert_eq!(claim(&g, &["z"]).await, vec![Claim::InProgress]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(claim(&g, &["z"]).await, vec![Claim::Claimed]);
        // Taken over exactly once.
        assert_eq!(claim(&g, &["z"]).await, vec![Claim::InProgress]);
    }

    #[tokio::test]
    async fn a_renewed_claim_is_not_taken_over_after_the_lease() {
        use chrono::TimeZone;
        let (clock, hand) =
            Clock::manual(chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("t:"));
        let g = IdempotencyGuard::new(
            store,
            "w",
            Duration::from_secs(30),
            Duration::from_secs(600),
        )
        .with_clock(clock);
        let mine = g.claim(["slow", "other"]).await.unwrap();
        assert_eq!(mine.claims, vec![Claim::Claimed; 2]);
        // A slow side effect: renewed at 20 s, still running at 40 s.
        hand.advance(Duration::from_secs(20));
        g.renew(&mine.token, ["slow"]).await.unwrap();
        hand.advance(Duration::from_secs(20));
        assert_eq!(
            claim(&g, &["slow", "other"]).await,
            vec![Claim::InProgress, Claim::Claimed],
            "the renewed claim holds; the unrenewed one is taken over after its lease"
        );
        // Completing the renewed claim call still completes it.
        g.complete_claims(&mine.token).await.unwrap();
        assert_eq!(claim(&g, &["slow"]).await, vec![Claim::Duplicate]);
    }

    #[tokio::test]
    async fn claims_are_seen_across_generations_and_taken_over_once_abandoned() {
        use chrono::TimeZone;
        let ttl = Duration::from_secs(3_600);
        let generation = ttl / GENERATIONS_PER_TTL as u32;
        // A second before a generation ends.
        let start = chrono::Utc.timestamp_millis_opt(0).unwrap()
            + chrono::Duration::milliseconds(100 * generation.as_millis() as i64 - 1_000);
        let (clock, hand) = Clock::manual(start);
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("t:"));
        let g = IdempotencyGuard::new(store.clone(), "w", Duration::from_secs(30), ttl)
            .with_clock(clock);
        let first = g.claim(["held", "done", "lost"]).await.unwrap();
        assert_eq!(first.claims, vec![Claim::Claimed; 3]);
        g.complete(["done"]).await.unwrap();
        // The next generation: the claims of the one before still hold.
        hand.advance(Duration::from_secs(2));
        assert_eq!(
            claim(&g, &["held", "done", "lost"]).await,
            vec![Claim::InProgress, Claim::Duplicate, Claim::InProgress]
        );
        g.renew(&first.token, ["held"]).await.unwrap();
        // After the lease: the renewed one holds, the other is taken over once.
        hand.advance(Duration::from_secs(29));
        let second = g.claim(["held", "lost"]).await.unwrap();
        assert_eq!(second.claims, vec![Claim::InProgress, Claim::Claimed]);
        assert_eq!(
            claim(&g, &["lost"]).await,
            vec![Claim::InProgress],
            "taken over exactly once"
        );
        g.complete_claims(&second.token).await.unwrap();
        assert_eq!(claim(&g, &["lost"]).await, vec![Claim::Duplicate]);
        // Released: free again, whichever generation held it.
        g.release(["held"]).await.unwrap();
        assert_eq!(claim(&g, &["held"]).await, vec![Claim::Claimed]);
        // A ttl and a half after the last write, every hash is gone.
        hand.advance(ttl * 3 / 2 + Duration::from_secs(1));
        assert_eq!(
            claim(&g, &["done", "lost"]).await,
            vec![Claim::Claimed, Claim::Claimed]
        );
    }

    #[tokio::test]
    async fn claims_and_marks_of_the_key_per_event_version_are_still_read() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("t:"));
        let g = guard_on(&store);
        let ttl = Some(Duration::from_secs(600));
        let now = g.now_ms();
        // What an old pod left: a done mark, a completed claim call, a claim
        // it is still handling, and one it abandoned.
        store.set("idem:w:done", b"done", ttl).await.unwrap();
        let completed = format!("p:{now}:old1");
        store
            .set("idem:w:completed", completed.as_bytes(), ttl)
            .await
            .unwrap();
        store.set("idem:w:~old1", b"done", ttl).await.unwrap();
        let held = format!("p:{now}:old2");
        store
            .set("idem:w:held", held.as_bytes(), ttl)
            .await
            .unwrap();
        let abandoned = format!("p:{}:old3", now - 60_000);
        store
            .set("idem:w:abandoned", abandoned.as_bytes(), ttl)
            .await
            .unwrap();
        assert_eq!(
            claim(&g, &["done", "completed", "held", "abandoned", "new"]).await,
            vec![
                Claim::Duplicate,
                Claim::Duplicate,
                Claim::InProgress,
                Claim::Claimed,
                Claim::Claimed
            ]
        );
        // Release removes an old pod's claim too.
        g.release(["held"]).await.unwrap();
        assert_eq!(store.get("idem:w:held").await.unwrap(), None);
        assert_eq!(claim(&g, &["held"]).await, vec![Claim::Claimed]);
    }

    #[tokio::test]
    async fn a_new_install_never_reads_keys_of_the_version_before() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("t:"));
        let g = guard_on(&store);
        assert_eq!(claim(&g, &["a"]).await, vec![Claim::Claimed]);
        assert_eq!(
            store.get("idem-layout:w").await.unwrap(),
            Some(b"0".to_vec()),
            "recorded: no key of the version before"
        );
        // Not looked for again, by this process or the next.
        store.set("idem:w:x", b"done", None).await.unwrap();
        assert_eq!(claim(&g, &["x"]).await, vec![Claim::Claimed]);
        let next = guard_on(&store);
        store.set("idem:w:y", b"done", None).await.unwrap();
        assert_eq!(claim(&next, &["y"]).await, vec![Claim::Claimed]);
    }

    #[tokio::test]
    async fn keys_of_the_version_before_are_read_for_a_ttl_and_a_day_after_an_upgrade() {
        use chrono::TimeZone;
        let ttl = Duration::from_secs(7 * 86_400);
        let (clock, hand) =
            Clock::manual(chrono::Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap());
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("t:"));
        store.set("idem:w:old", b"done", None).await.unwrap();
        let guard = || {
            IdempotencyGuard::new(store.clone(), "w", Duration::from_secs(30), ttl)
                .with_clock(clock.clone())
        };
        let g = guard();
        let upgraded = g.now_ms();
        assert_eq!(claim(&g, &["old"]).await, vec![Claim::Duplicate]);
        let until = upgraded + (ttl + DAY).as_millis() as u64;
        assert_eq!(
            store.get("idem-layout:w").await.unwrap(),
            Some(until.to_string().into_bytes())
        );
        // An old pod still running writes more; a process started later reads
        // the recorded window.
        hand.advance(ttl);
        store.set("idem:w:late", b"done", None).await.unwrap();
        assert_eq!(claim(&guard(), &["late"]).await, vec![Claim::Duplicate]);
        // Once the window has passed, the keys are not read.
        hand.advance(DAY);
        store.set("idem:w:after", b"done", None).await.unwrap();
        assert_eq!(claim(&g, &["after"]).await, vec![Claim::Claimed]);
    }

    /// Marks `ids` with the guard's op; whether they were all unmarked.
    async fn mark_once(store: &dyn StateStore, g: &IdempotencyGuard, ids: &[&str]) -> bool {
        let op = g.mark_once_op(ids.iter().copied()).await.unwrap();
        store.apply_checked(&[op]).await.unwrap()[0]
    }

    #[tokio::test]
    async fn a_mark_in_a_generation_hash_is_seen_for_the_whole_ttl() {
        use chrono::TimeZone;
        let ttl = Duration::from_secs(7 * 86_400);
        // Just before a generation ends: the worst case for the mark's age.
        let start = chrono::Utc.timestamp_millis_opt(0).unwrap()
            + chrono::Duration::milliseconds(
                (20_000 * ttl.as_millis() as i64 / GENERATIONS_PER_TTL as i64) - 1,
            );
        let (clock, hand) = Clock::manual(start);
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("t:"));
        let g = IdempotencyGuard::new(store.clone(), "w", Duration::from_secs(30), ttl)
            .with_clock(clock);
        assert!(mark_once(&*store, &g, &["a"]).await);
        assert!(!mark_once(&*store, &g, &["a", "b"]).await, "marked already");
        assert_eq!(g.handled(&["a", "b"]).await.unwrap(), vec![true, false]);
        // Two generations later, one ms short of the ttl: still a duplicate.
        hand.advance(ttl - Duration::from_millis(1));
        assert!(!mark_once(&*store, &g, &["a"]).await);
        assert_eq!(g.handled(&["a"]).await.unwrap(), vec![true]);
        // Once its generation is more than a ttl behind, it is not asked.
        hand.advance(ttl / GENERATIONS_PER_TTL as u32 + Duration::from_millis(1));
        assert!(mark_once(&*store, &g, &["a"]).await);
        // The hash a mark is written to lives until its last lookup.
        let StateOp::MarkOnce { ttl: kept, .. } = g.mark_once_op(["x"]).await.unwrap() else {
            unreachable!()
        };
        assert_eq!(
            kept,
            ttl * (GENERATIONS_PER_TTL as u32 + 1) / GENERATIONS_PER_TTL as u32
        );
    }

    #[tokio::test]
    async fn marks_of_the_day_hashes_before_generations_are_still_seen() {
        use chrono::TimeZone;
        let ttl = Duration::from_secs(7 * 86_400);
        let (clock, hand) =
            Clock::manual(chrono::Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap());
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("t:"));
        let g = IdempotencyGuard::new(store.clone(), "w", Duration::from_secs(30), ttl)
            .with_clock(clock);
        // The version before wrote today's marks to the day's hash.
        let today = g.now_ms() / DAY.as_millis() as u64;
        store
            .apply(&[StateOp::HashSet {
                key: g.day_key(today),
                fields: vec![("old".into(), b"1".to_vec())],
            }])
            .await
            .unwrap();
        hand.advance(Duration::from_secs(6 * 86_400));
        assert!(!mark_once(&*store, &g, &["old"]).await);
        assert_eq!(g.handled(&["old", "new"]).await.unwrap(), vec![true, false]);
    }
}
