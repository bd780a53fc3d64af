//! Timed work: who runs it, when it wakes, and how it stops.
//!
//! A worker with timed work (due reminders, deadline thresholds, window
//! closes) declares a [`TimerScope`]:
//! - [`TimerScope::Partition`]: one timer per assigned partition. Its state
//!   (the partition's due reminders, its open windows) belongs to whoever owns
//!   the partition in the consumer group. The worker's `on_assigned` hook runs
//!   before the timer's first tick; on revoke the timer is stopped and
//!   `on_revoked` runs *before* the partition is handed on (the rebalance
//!   waits for it, up to `drain_timeout`).
//! - [`TimerScope::Leader`]: one timer in the whole group of replicas, held
//!   under a [`crate::lease::LeaderLease`]; a replica that cannot renew stops
//!   its timer before the lease runs out, and a dead leader's lease expires
//!   so another replica takes over within `leader_lease` plus a renewal period.
//! - [`TimerScope::Process`]: one timer per process.
//!
//! A tick returns the absolute time of its next run (`None`: until woken). The
//! loop sleeps on the pipeline's [`Clock`], so tests move time by hand. A
//! handler that adds earlier work wakes the timer with
//! [`crate::Ctx::wake_timer_at`]; a wake for a time no earlier than the
//! planned one costs nothing. Every tick receives a stop token; shutdown waits
//! for a running tick up to `drain_timeout`, then aborts it.
//!
//! A partition's timer and its batches run side by side, so a tick could
//! otherwise read the partition's state half-way through a batch: between
//! a task's creation and the update that moves its due date, say, in the
//! same batch, and fire what the update cancels. A tick that reads or
//! claims due work does so under [`Timer::between_batches`], which waits
//! for the batch in progress to end and holds the next one back until the
//! guard is dropped (one claim's round trip, not the work that follows).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where a worker's timed work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerScope {
    /// No timed work.
    None,
    /// One timer per process.
    Process,
    /// One timer per assigned partition.
    Partition,
    /// One timer per consumer group, on the lease holder.
    Leader,
}

/// Which timer a tick belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerOwner {
    Process,
    Partition {
        topic: Arc<str>,
        partition: i32,
    },
    /// This replica is the leader, with this fencing token (larger for every
    /// new leader).
    Leader {
        fencing_token: u64,
    },
}

/// What one tick receives.
#[derive(Debug, Clone)]
pub struct Timer {
    pub owner: TimerOwner,
    /// Cancelled when the timer must stop: shutdown, partition revoked,
    /// leadership lost. A tick checks it between items and returns promptly.
    pub stop: CancellationToken,
    /// Held by the partition's lane for each batch (a timer of another scope
    /// has one of its own that nobody else takes).
    gate: Arc<BatchGate>,
}

/// Taken by a partition's lane for the whole of each batch, and by its
/// timer around each claim of due work.
pub(crate) type BatchGate = tokio::sync::Mutex<()>;

impl Timer {
    /// A timer of `owner` whose claims wait for no batch: benchmarks and
    /// tests that tick a worker by hand. The pipeline builds its own.
    pub fn new(owner: TimerOwner, stop: CancellationToken) -> Self {
        Timer::with_gate(owner, stop, Arc::default())
    }

    pub(crate) fn with_gate(
        owner: TimerOwner,
        stop: CancellationToken,
        gate: Arc<BatchGate>,
    ) -> Self {
        Timer { owner, stop, gate }
    }

    /// Waits until the partition is between batches and keeps it there
    /// while the guard lives: a claim made under it sees every event of a
    /// batch handled or none. `None` when the timer is stopped meanwhile.
    /// Batches wait for the guard, so hold it for a claim, not a delivery.
    pub async fn between_batches(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            guard = self.gate.lock() => Some(guard),
        }
    }
}

/// The key of a timer's wake slot: a partition, or the worker-wide timer.
pub(crate) type SlotKey = Option<(Arc<str>, i32)>;

/// When a timer plans to run next, and how to wake it sooner.
#[derive(Debug)]
pub(crate) struct WakeSlot {
    /// Planned next run, ms since the epoch (`i64::MAX`: none planned, or a
    /// tick is running and any wake must be remembered).
    next_ms: AtomicI64,
    notify: Notify,
    /// The partition's [`BatchGate`].
    pub(crate) gate: Arc<BatchGate>,
}

impl WakeSlot {
    fn new() -> Self {
        WakeSlot {
            next_ms: AtomicI64::new(i64::MAX),
            notify: Notify::new(),
            gate: Arc::default(),
        }
    }

    /// Wakes the timer if `at_ms` is earlier than its plan.
    fn wake_at(&self, at_ms: i64) {
        if self.next_ms.fetch_min(at_ms, Ordering::AcqRel) > at_ms {
            // notify_one keeps a permit when the timer is not waiting yet.
            self.notify.notify_one();
        }
    }

    fn wake_now(&self) {
        self.next_ms.store(i64::MIN, Ordering::Release);
        self.notify.notify_one();
    }
}

/// The wake slots of one worker's timers.
#[derive(Debug, Default)]
pub(crate) struct TimerWakers {
    slots: Mutex<HashMap<SlotKey, Arc<WakeSlot>>>,
}

impl TimerWakers {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<SlotKey, Arc<WakeSlot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new slot for `key`'s timer. It replaces one a run of the same key
    /// left while it stops (a partition revoked and assigned again at once),
    /// whose [`TimerWakers::unregister`] then leaves this one in place.
    pub(crate) fn register(&self, key: SlotKey) -> Arc<WakeSlot> {
        let slot = Arc::new(WakeSlot::new());
        self.slots().insert(key, slot.clone());
        slot
    }

    /// Removes `slot`, unless a later run of `key` has registered its own.
    pub(crate) fn unregister(&self, key: &SlotKey, slot: &Arc<WakeSlot>) {
        let mut slots = self.slots();
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(key);
        }
    }

    /// The [`BatchGate`] of `key`'s timer, while it is registered.
    pub(crate) fn gate(&self, key: &SlotKey) -> Option<Arc<BatchGate>> {
        self.slots().get(key).map(|s| s.gate.clone())
    }

    /// Wakes the timer of `key` (a partition, or `None` for the worker-wide
    /// timer) if `at` is earlier than its plan. The worker-wide timer is also
    /// woken for any partition key, so Process- and Leader-scoped timers need
    /// not know partitions.
    pub(crate) fn wake_at(&self, key: &SlotKey, at: DateTime<Utc>) {
        let at_ms = at.timestamp_millis();
        let slots = self.slots();
        if let Some(s) = slots.get(key) {
            s.wake_at(at_ms);
        }
        if key.is_some() {
            if let Some(s) = slots.get(&None) {
                s.wake_at(at_ms);
            }
        }
    }

    /// Wakes every timer of the worker now.
    pub(crate) fn wake_all(&self) {
        for s in self.slots().values() {
            s.wake_now();
        }
    }
}

/// How a timer loop ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TimerExit {
    Stopped,
}

/// Runs ticks until `stop`: the loop every scope shares. `tick` runs one
/// tick; its errors are logged and retried after `on_error(failures)`.
pub(crate) async fn run_loop<F, Fut>(
    clock: &crate::Clock,
    slot: &WakeSlot,
    stop: &CancellationToken,
    mut tick: F,
    on_error: impl Fn(u32) -> std::time::Duration,
) -> TimerExit
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<DateTime<Utc>>, crate::WorkerError>>,
{
    let mut failures = 0u32;
    loop {
        if stop.is_cancelled() {
            return TimerExit::Stopped;
        }
        // A wake that arrives while the tick runs must not be lost.
        slot.next_ms.store(i64::MAX, Ordering::Release);
        let next = match tick().await {
            Ok(next) => {
                failures = 0;
                next
            }
            Err(_) => {
                failures += 1;
                let wait = on_error(failures);
                let at = clock.now()
                    + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1));
                Some(at)
            }
        };
        let planned = next.map_or(i64::MAX, |t| t.timestamp_millis());
        // Keep an earlier wake that arrived during the tick.
        slot.next_ms.fetch_min(planned, Ordering::AcqRel);
        // Sleep until the plan; a wake re-plans (earlier) without a tick.
        loop {
            let deadline_ms = slot.next_ms.load(Ordering::Acquire);
            if deadline_ms <= clock.now_ms() {
                // Due (or woken to run now): drop a stale permit and tick,
                // after letting other tasks run (a tick that keeps
                // answering "now" must not starve its thread).
                let _ = futures::FutureExt::now_or_never(slot.notify.notified());
                tokio::task::yield_now().await;
                break;
            }
            let sleep = async {
                match DateTime::<Utc>::from_timestamp_millis(deadline_ms) {
                    Some(t) if deadline_ms != i64::MAX => clock.sleep_until(t).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return TimerExit::Stopped,
                _ = slot.notify.notified() => continue,
                _ = sleep => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clock;
    use chrono::TimeZone;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    #[tokio::test]
    async fn loop_sleeps_until_the_returned_time_and_wakes_early_when_asked() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let (clock, hand) = Clock::manual(start);
        let wakers = Arc::new(TimerWakers::default());
        let slot = wakers.register(None);
        let stop = CancellationToken::new();
        let ticks = Arc::new(AtomicU32::new(0));
        let (c, s, t, st) = (clock.clone(), slot.clone(), ticks.clone(), stop.clone());
        let task = tokio::spawn(async move {
            run_loop(
                &c,
                &s,
                &st,
                || {
                    let n = t.fetch_add(1, Ordering::SeqCst);
                    // Work due in a week, until the third run finds none.
                    let next = (n < 2).then(|| start + chrono::Duration::days(7));
                    async move { Ok(next) }
                },
                |_| Duration::from_secs(1),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            1,
            "first tick at once, then sleep"
        );
        // A later wake than planned is free: no extra tick.
        wakers.wake_at(&None, start + chrono::Duration::days(8));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 1);
        // An earlier one re-plans: the loop sleeps until then.
        wakers.wake_at(&None, start + chrono::Duration::days(1));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            1,
            "woken to re-plan, not yet due"
        );
        hand.advance(Duration::from_secs(86_400));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 2, "ran at the earlier time");
        hand.advance(Duration::from_secs(6 * 86_400));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 3, "and at the planned one");
        stop.cancel();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .unwrap()
                .unwrap(),
            TimerExit::Stopped
        );
    }

    #[tokio::test]
    async fn a_wake_during_a_tick_is_not_lost() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let (clock, _hand) = Clock::manual(start);
        let wakers = Arc::new(TimerWakers::default());
        let slot = wakers.register(Some((Arc::from("t"), 0)));
        let stop = CancellationToken::new();
        let ticks = Arc::new(AtomicU32::new(0));
        let (c, s, t, st, w) = (
            clock.clone(),
            slot.clone(),
            ticks.clone(),
            stop.clone(),
            wakers.clone(),
        );
        let task = tokio::spawn(async move {
            run_loop(
                &c,
                &s,
                &st,
                || {
                    let n = t.fetch_add(1, Ordering::SeqCst);
                    let w = w.clone();
                    async move {
                        if n == 0 {
                            // Work due now arrives while the first tick runs.
                            w.wake_at(&Some((Arc::from("t"), 0)), start);
                        }
                        Ok(None)
                    }
                },
                |_| Duration::from_secs(1),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            2,
            "the wake caused a second tick"
        );
        stop.cancel();
        task.await.unwrap();
    }

    /// A partition revoked and at once assigned again: the old run stops
    /// after the new one registered, and its unregistering leaves the new
    /// slot (its wakes and its batch gate) in place.
    #[test]
    fn a_stopping_run_does_not_unregister_its_successor() {
        let wakers = TimerWakers::default();
        let key: SlotKey = Some((Arc::from("t"), 0));
        let old = wakers.register(key.clone());
        let new = wakers.register(key.clone());
        assert!(!Arc::ptr_eq(&old, &new), "a new run gets its own slot");
        wakers.unregister(&key, &old);
        let gate = wakers.gate(&key).expect("the new run's slot is registered");
        assert!(Arc::ptr_eq(&gate, &new.gate), "the gate is the new run's");
        wakers.wake_at(&key, DateTime::<Utc>::MIN_UTC);
        assert_eq!(
            new.next_ms.load(Ordering::Acquire),
            DateTime::<Utc>::MIN_UTC.timestamp_millis()
        );
        assert_eq!(
            old.next_ms.load(Ordering::Acquire),
            i64::MAX,
            "the old slot is not woken"
        );
        wakers.unregister(&key, &new);
        assert!(wakers.gate(&key).is_none());
    }
}
