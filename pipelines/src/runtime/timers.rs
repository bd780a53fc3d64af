//! Running a worker's timed work in each scope (see [`crate::timer`]): one
//! tick with its metrics, the loop, the process-wide timer and the leader's.
//! Partition timers are run by [`super::Pipeline`] beside their lanes.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::RetryConfig;
use crate::lease::LeaderLease;
use crate::metrics;
use crate::retry::outage_backoff;
use crate::timer::{self, Timer, TimerOwner, WakeSlot};
use crate::worker::{Ctx, Worker, WorkerError};

/// One tick with its metrics and logs; the loop decides when the next runs.
async fn tick_once(
    worker: &dyn Worker,
    ctx: &Ctx,
    owner: &TimerOwner,
    slot: &WakeSlot,
    stop: &CancellationToken,
) -> Result<Option<DateTime<Utc>>, WorkerError> {
    let timer = Timer::with_gate(owner.clone(), stop.clone(), slot.gate.clone());
    let result = worker.tick(&timer, &ctx.with_stop(stop.clone())).await;
    metrics::ticked(worker.name(), result.is_ok());
    if let Err(e) = &result {
        tracing::warn!(worker = worker.name(), ?owner, error = %e, "timed work failed; retrying");
    }
    result
}

/// Runs a timer loop for `owner` on `slot` until `stop`.
pub(super) async fn run_timer_loop(
    worker: &dyn Worker,
    ctx: &Ctx,
    owner: TimerOwner,
    slot: &WakeSlot,
    retry: &RetryConfig,
    stop: &CancellationToken,
) {
    metrics::timers_running(worker.name(), 1.0);
    timer::run_loop(
        ctx.clock(),
        slot,
        stop,
        || tick_once(worker, ctx, &owner, slot, stop),
        |failures| outage_backoff(retry, failures),
    )
    .await;
    metrics::timers_running(worker.name(), -1.0);
}

pub(super) async fn run_process_timer(
    worker: Arc<dyn Worker>,
    ctx: Ctx,
    retry: RetryConfig,
    stop: CancellationToken,
) {
    let slot = ctx.wakers().register(None);
    run_timer_loop(
        worker.as_ref(),
        &ctx,
        TimerOwner::Process,
        &slot,
        &retry,
        &stop,
    )
    .await;
    ctx.wakers().unregister(&None, &slot);
}

/// Contends for the worker's lease and runs its timer while holding it.
///
/// The lease is renewed every third of its ttl. A renewal that finds the lease
/// gone, or two thirds of the ttl without a successful renewal (the store is
/// unreachable), stops the timer: a running tick gets its stop token and a
/// sixth of the ttl to return, then is dropped, all before the lease can
/// expire and a successor start. On shutdown the lease is released (owner
/// checked), so a successor starts at once; a killed leader's lease simply
/// expires.
pub(super) async fn run_leader_timer(
    worker: Arc<dyn Worker>,
    ctx: Ctx,
    lease: LeaderLease,
    retry: RetryConfig,
    stop: CancellationToken,
) {
    let name = worker.name();
    let slot = ctx.wakers().register(None);
    let ttl = lease.ttl();
    let period = ttl / 3;
    metrics::leader(name, false);
    while !stop.is_cancelled() {
        let fencing_token = match lease.try_acquire().await {
            Ok(Some(t)) => t,
            Ok(None) => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(period) => continue,
                }
            }
            Err(e) => {
                tracing::debug!(worker = name, error = %e, "cannot contend for the leader lease");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(period) => continue,
                }
            }
        };
        tracing::info!(worker = name, fencing_token, "leader: running timed work");
        metrics::leader(name, true);
        let leading = stop.child_token();
        let renew = async {
            let mut last_ok = Instant::now();
            loop {
                tokio::select! {
                    _ = leading.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                match lease.renew().await {
                    Ok(true) => last_ok = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(worker = name, "leader lease lost: stopping timed work");
                        leading.cancel();
                        return;
                    }
                    Err(e) if last_ok.elapsed() >= ttl * 2 / 3 => {
                        tracing::warn!(worker = name, error = %e, "leader lease not renewable: stopping timed work before it expires");
                        leading.cancel();
                        return;
                    }
                    Err(_) => {}
                }
            }
        };
        let work = async {
            let owner = TimerOwner::Leader { fencing_token };
            let run = run_timer_loop(worker.as_ref(), &ctx, owner, &slot, &retry, &leading);
            tokio::select! {
                _ = run => {}
                _ = async { leading.cancelled().await; tokio::time::sleep(ttl / 6).await } => {
                    tracing::warn!(worker = name, "a tick did not stop in time: abandoned");
                }
            }
            leading.cancel();
        };
        tokio::join!(renew, work);
        metrics::leader(name, false);
        if stop.is_cancelled() {
            if let Err(e) = lease.release().await {
                tracing::debug!(worker = name, error = %e, "could not release the leader lease");
            }
            break;
        }
    }
    ctx.wakers().unregister(&None, &slot);
}
