//! One scan of a pending-crossing set: claim what is due, check it against
//! the task's record, announce, acknowledge.
//!
//! - **Claim**: `zclaim_due` re-scores the due members to `now + claim_lease`
//!   atomically, so no other claimer (a replica that still believes it owns
//!   the partition) gets them within the lease, and a claimer that crashes
//!   leaves them to come back after it.
//! - **Check**: a crossing is announced only while its task is open, still
//!   due at the crossing's due time, and the crossing not already announced;
//!   otherwise it is dropped (the completion or move raced the scan).
//! - **Announce**, then **acknowledge**: the task's `sent` mark, the
//!   member's removal and the task's next crossing (the next threshold, or
//!   `overdue`) in one atomic write (one for the whole claimed batch), after
//!   the broker acknowledged the event. A crash between the two
//!   announces again after the lease, with the same event id (derived from
//!   task, threshold and due time), which consumers dedupe.
//!
//! Cost: per claimed batch, one range query by score, one pipelined read of
//! the tasks' records and one `MULTI`/`EXEC` of acknowledgements; the number
//! of tasks indexed does not enter.

use std::time::{Duration, Instant};

use chrono::DateTime;
use pipelines::state::{merge_sorted_set_adds, StateOp, StateStore};
use pipelines::{Ctx, OutputEvent, WorkerError};
use tokio_util::sync::CancellationToken;

use super::entry::StoredTask;
use super::index::DeadlineIndex;
use super::metrics;
use super::output::{announcement, kind_of};
use super::plan::{nominal_ms, parse_member};

/// How one scan is run.
#[derive(Debug, Clone)]
pub struct ScanSpec<'a> {
    pub crossings: &'a str,
    pub output_topic: &'a str,
    pub claim_lease: Duration,
    pub batch: usize,
}

/// What one scan did.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    pub emitted: usize,
    pub dropped: usize,
    /// Per announcement: acknowledged-at minus due-at (ms), on the ctx's clock.
    pub lateness_ms: Vec<i64>,
    /// The next crossing of this set (ms), if any: when to scan again.
    pub next_ms: Option<i64>,
    pub took: Duration,
}

enum Verdict {
    /// The event, the threshold, the due time, and the task's record (for
    /// planning the next crossing).
    Announce(Box<OutputEvent>, String, i64, Box<StoredTask>),
    Drop(&'static str),
}

/// Scans `spec.crossings` until nothing is due (or `stop`).
pub async fn scan(
    ctx: &Ctx,
    index: &DeadlineIndex,
    spec: &ScanSpec<'_>,
    stop: &CancellationToken,
) -> Result<ScanReport, WorkerError> {
    let started = Instant::now();
    // A few rounds at once, so one round's broker and Redis waits overlap
    // another's work; claims are atomic, so they never share a crossing.
    let rounds = futures::future::join_all(
        (0..CONCURRENT_ROUNDS).map(|_| claim_rounds(ctx, index, spec, stop)),
    )
    .await;
    let mut report = ScanReport::default();
    for r in rounds {
        let r = r?;
        report.emitted += r.emitted;
        report.dropped += r.dropped;
        report.lateness_ms.extend(r.lateness_ms);
    }
    report.next_ms = ctx
        .state()
        .zfirst(spec.crossings)
        .await?
        .map(|s| s.score as i64);
    report.took = started.elapsed();
    Ok(report)
}

/// Rounds of claiming a scan runs side by side.
const CONCURRENT_ROUNDS: usize = 4;

/// Claims, announces and acknowledges batches until nothing is due.
async fn claim_rounds(
    ctx: &Ctx,
    index: &DeadlineIndex,
    spec: &ScanSpec<'_>,
    stop: &CancellationToken,
) -> Result<ScanReport, WorkerError> {
    let store = ctx.state();
    let lease_ms = spec.claim_lease.as_millis() as f64;
    let mut report = ScanReport::default();
    loop {
        let now = ctx.now().timestamp_millis() as f64;
        let lease_until = now + lease_ms;
        let claimed = store
            .zclaim_due(spec.crossings, now, lease_until, spec.batch)
            .await?;
        if claimed.is_empty() {
            break;
        }
        let members: Vec<_> = claimed.iter().map(|c| parse_member(&c.member)).collect();
        let tasks: Vec<&str> = members.iter().flatten().map(|m| m.task).collect();
        let mut records = index.load_many(store, &tasks).await?.into_iter();
        let records = members
            .iter()
            .map(|m| m.as_ref().and_then(|_| records.next().flatten()));
        let mut verdicts = Vec::with_capacity(claimed.len());
        for (c, record) in claimed.iter().zip(records) {
            verdicts.push(judge(&c.member, record, spec.output_topic));
        }
        let outs: Vec<OutputEvent> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Announce(o, ..) => Some(o.as_ref().clone()),
                Verdict::Drop(_) => None,
            })
            .collect();
        if let Err(e) = ctx.publish_events(&outs).await {
            // Give the claims back at once, so the retry need not wait for
            // the lease; what was published is published again, same ids.
            give_back(store, spec.crossings, &claimed).await;
            return Err(e);
        }
        // Every acknowledgement of the round in one `MULTI`/`EXEC`, each
        // with the task's next crossing.
        let now_ms = ctx.now().timestamp_millis();
        let mut acks = Vec::with_capacity(claimed.len() * 3);
        for ((v, c), m) in verdicts.iter().zip(&claimed).zip(&members) {
            acks.push(StateOp::ZRem {
                key: spec.crossings.to_string(),
                member: c.member.clone(),
            });
            if let (Verdict::Announce(_, threshold, due_ms, record), Some(m)) = (v, m) {
                acks.push(DeadlineIndex::sent_op(m.task, threshold, *due_ms));
                if let Some((op, _)) =
                    index.next_crossing(m.task, record, threshold, *due_ms, now_ms)
                {
                    acks.push(op);
                }
            }
        }
        store.apply(&merge_sorted_set_adds(acks)).await?;
        let acked = ctx.now().timestamp_millis();
        for (v, c) in verdicts.iter().zip(&claimed) {
            match v {
                Verdict::Announce(_, threshold, ..) => {
                    let late = (acked - c.score as i64).max(0);
                    report.lateness_ms.push(late);
                    report.emitted += 1;
                    metrics::emitted(
                        kind_of(threshold),
                        threshold,
                        Duration::from_millis(late as u64),
                    );
                }
                Verdict::Drop(reason) => {
                    report.dropped += 1;
                    metrics::dropped(reason);
                }
            }
        }
        if stop.is_cancelled() {
            break;
        }
    }
    Ok(report)
}

/// Announce or drop one claimed crossing.
fn judge(member: &str, record: Option<StoredTask>, topic: &str) -> Verdict {
    let Some(m) = parse_member(member) else {
        return Verdict::Drop("unreadable");
    };
    let Some(task) = record.filter(|t| t.open) else {
        return Verdict::Drop("closed");
    };
    if task.due_ms != Some(m.due_ms) {
        return Verdict::Drop("moved");
    }
    if task.was_sent(m.threshold, m.due_ms) {
        return Verdict::Drop("already_sent");
    }
    let (Some(due_at), Some(nominal)) = (
        DateTime::from_timestamp_millis(m.due_ms),
        nominal_ms(m.threshold, m.due_ms).and_then(DateTime::from_timestamp_millis),
    ) else {
        return Verdict::Drop("unreadable");
    };
    let event = announcement(m.task, m.threshold, due_at, nominal, &task);
    Verdict::Announce(
        Box::new(OutputEvent::new(topic, m.task, event)),
        m.threshold.to_string(),
        m.due_ms,
        Box::new(task),
    )
}

/// Puts claimed members back at their original scores (best effort: if this
/// fails too, they come back when the claim lease ends).
async fn give_back(store: &dyn StateStore, key: &str, claimed: &[pipelines::state::Scored]) {
    let ops = merge_sorted_set_adds(
        claimed
            .iter()
            .map(|c| StateOp::ZAdd {
                key: key.to_string(),
                member: c.member.clone(),
                score: c.score,
            })
            .collect(),
    );
    if let Err(e) = store.apply(&ops).await {
        tracing::debug!(error = %e, "could not give claimed crossings back; they return after the claim lease");
    }
}
