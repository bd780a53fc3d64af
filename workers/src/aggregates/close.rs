//! Closing a window once across replicas.
//!
//! Every partition timer of every replica may find the same window due; the
//! close is claimed with `SET NX` on the window's close mark (value: the
//! claim time). From then on no batch adds to the window (its writes are
//! conditional on the mark's absence, in the same atomic step: a partition
//! that resumes after being idle counts its events for the window as
//! late). The claimer reads the counts, publishes the results (the window's
//! and one per dimension and key, ids derived from them), removes the
//! window from the open set and records it as its size's last closed. A
//! claimer that crashed in between leaves the window open with an old mark:
//! after `close_lease` another replica takes the claim over
//! (compare-and-set) and, if the window is still open, publishes the same
//! result with the same id, which consumers dedupe. The mark stays for the window's length plus
//! `state_ttl`: events that arrive for the window after its close are
//! refused as late.

use std::time::Duration;

use pipelines::{Ctx, WorkerError};

use super::dimension::Dimension;
use super::metrics;
use super::result::{self, WindowResult};
use super::store;
use super::window::WindowId;

/// Whether this call closed the window.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// Published by this call: the result over every event first.
    Published(Vec<WindowResult>),
    /// Another replica holds (or finished) the close.
    NotOurs,
}

/// Claims `w`'s close; true when this call holds it.
async fn claim(
    ctx: &Ctx,
    w: &WindowId,
    lease: Duration,
    ttl: Duration,
) -> Result<bool, WorkerError> {
    let key = store::closed_key(w);
    let now = ctx.now().timestamp_millis();
    let stamp = now.to_string();
    if ctx
        .state()
        .set_nx(&key, stamp.as_bytes(), Some(ttl))
        .await?
    {
        return Ok(true);
    }
    let Some(old) = ctx.state().get(&key).await? else {
        // Expired between the two calls: claim it afresh.
        return Ok(ctx
            .state()
            .set_nx(&key, stamp.as_bytes(), Some(ttl))
            .await?);
    };
    let claimed_at: i64 = std::str::from_utf8(&old)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(i64::MIN);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    if claimed_at.saturating_add(lease_ms) > now {
        return Ok(false);
    }
    if !ctx
        .state()
        .compare_and_set(&key, &old, stamp.as_bytes(), Some(ttl))
        .await?
    {
        return Ok(false);
    }
    // Taken over: but if the window has left the open set, its closer
    // finished (our list of due windows was older than its close): nothing
    // to do. If it is still there, the closer crashed, or is slower than
    // the lease: publish (a second copy has the same id).
    Ok(ctx
        .state()
        .zscore(store::OPEN, &w.member())
        .await?
        .is_some())
}

/// Closes `w` if nobody else is: claim, read, publish to `topic`, forget.
pub async fn close_window(
    ctx: &Ctx,
    w: &WindowId,
    topic: &str,
    lease: Duration,
    state_ttl: Duration,
    max_keys: usize,
) -> Result<Closed, WorkerError> {
    let ttl = store::window_ttl(w, state_ttl);
    if !claim(ctx, w, lease, ttl).await? {
        return Ok(Closed::NotOurs);
    }
    let state = ctx.state();
    let mut lines = result::read(state, w, None, max_keys).await?;
    for d in Dimension::ALL {
        lines.extend(result::read(state, w, Some(d), max_keys).await?);
    }
    let outputs: Vec<_> = lines.iter().map(|r| r.output(w, topic)).collect();
    ctx.publish_events(&outputs).await?;
    state.zrem(store::OPEN, &w.member()).await?;
    record_last_closed(ctx, w).await?;
    metrics::window_closed(&w.name, &lines[0]);
    Ok(Closed::Published(lines))
}

/// Records `w` as the last closed window of its size unless a later one is
/// recorded (timers of several partitions close windows concurrently).
async fn record_last_closed(ctx: &Ctx, w: &WindowId) -> Result<(), WorkerError> {
    let state = ctx.state();
    let key = store::last_closed_key(&w.name);
    let start = w.start_ms.to_string();
    loop {
        let swapped = match state.get(&key).await? {
            None => state.set_nx(&key, start.as_bytes(), None).await?,
            Some(old) => {
                let recorded = std::str::from_utf8(&old)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok());
                if recorded.is_some_and(|r| r >= w.start_ms) {
                    return Ok(());
                }
                state
                    .compare_and_set(&key, &old, start.as_bytes(), None)
                    .await?
            }
        };
        if swapped {
            return Ok(());
        }
    }
}
