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
//! - **Prepared ahead**: a scan claims, checks and builds the announcements
//!   of everything due within the next `lead` (up to [`PREPARE_LIMIT`]
//!   crossings), then announces each at its due time. A burst of crossings
//!   due at one instant then costs only its publishing and acknowledgement
//!   after that instant. The check is as of preparing: a task completed or
//!   moved within `lead` before its crossing may still be announced (with
//!   the id of that crossing, so at most once), as a completion racing the
//!   announcement always could; the partition's timer wakes `lead` before
//!   the next crossing.
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
use pipelines::state::{merge_sorted_set_adds, Scored, StateOp, StateStore};
use pipelines::{Ctx, EncodedEvent, OutputEvent, Timer, WorkerError};

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
    /// How far ahead crossings are claimed and prepared.
    pub lead: Duration,
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

impl ScanReport {
    fn add(&mut self, other: ScanReport) {
        self.emitted += other.emitted;
        self.dropped += other.dropped;
        self.lateness_ms.extend(other.lateness_ms);
    }
}

enum Verdict {
    /// The event, the threshold, the due time, and the task's record (for
    /// planning the next crossing).
    Announce(Box<EncodedEvent>, String, i64, Box<StoredTask>),
    Drop(&'static str),
}

/// A claimed crossing, judged and (when announced) built.
struct Prepared {
    claimed: Scored,
    /// The task its member names, when it parses.
    task: Option<String>,
    verdict: Verdict,
}

/// Crossings prepared at most per pass of a scan (memory stays bounded
/// when a backlog is due at once, after an outage).
const PREPARE_LIMIT: usize = 20_000;

/// Rounds of claiming a scan runs side by side.
const CONCURRENT_ROUNDS: usize = 4;

/// Rounds of announcing in flight at once (mostly waiting on the broker).
const ANNOUNCING_ROUNDS: usize = 8;

/// Scans `spec.crossings` until nothing is due within the lead (or the
/// timer stops). Each pass claims and checks between the partition's batches
/// ([`Timer::between_batches`]), so it never sees a batch half handled.
pub async fn scan(
    ctx: &Ctx,
    index: &DeadlineIndex,
    spec: &ScanSpec<'_>,
    timer: &Timer,
) -> Result<ScanReport, WorkerError> {
    let stop = &timer.stop;
    let started = Instant::now();
    let mut report = ScanReport::default();
    loop {
        let Some(between) = timer.between_batches().await else {
            break;
        };
        let horizon = ctx.now().timestamp_millis() + spec.lead.as_millis() as i64;
        let mut prepared = prepare(ctx, index, spec, horizon as f64).await?;
        drop(between);
        if prepared.is_empty() {
            break;
        }
        prepared.sort_by(|a, b| a.claimed.score.total_cmp(&b.claimed.score));
        let mut prepared = std::collections::VecDeque::from(prepared);
        while let Some(first) = prepared.front() {
            let first_due = DateTime::from_timestamp_millis(first.claimed.score as i64);
            if let Some(at) = first_due.filter(|at| *at > ctx.now()) {
                tokio::select! {
                    _ = ctx.clock().sleep_until(at) => {}
                    _ = stop.cancelled() => {
                        give_back_prepared(ctx, spec, prepared).await;
                        return finish(ctx, spec, report, started).await;
                    }
                }
            }
            let now = ctx.now().timestamp_millis() as f64;
            let n = prepared
                .iter()
                .position(|p| p.claimed.score > now)
                .unwrap_or(prepared.len());
            let due: Vec<Prepared> = prepared.drain(..n).collect();
            if let Err(e) = announce_due(ctx, index, spec, &due, &mut report).await {
                give_back_prepared(ctx, spec, prepared).await;
                return Err(e);
            }
        }
        if stop.is_cancelled() {
            break;
        }
    }
    finish(ctx, spec, report, started).await
}

async fn finish(
    ctx: &Ctx,
    spec: &ScanSpec<'_>,
    mut report: ScanReport,
    started: Instant,
) -> Result<ScanReport, WorkerError> {
    report.next_ms = ctx
        .state()
        .zfirst(spec.crossings)
        .await?
        .map(|s| s.score as i64);
    report.took = started.elapsed();
    Ok(report)
}

/// Claims and judges what is due by `horizon`, a few claims at once (they
/// are atomic, so they never share a crossing), up to [`PREPARE_LIMIT`].
/// On a failure everything claimed is given back.
async fn prepare(
    ctx: &Ctx,
    index: &DeadlineIndex,
    spec: &ScanSpec<'_>,
    horizon: f64,
) -> Result<Vec<Prepared>, WorkerError> {
    let taken = std::sync::atomic::AtomicUsize::new(0);
    let rounds = futures::future::join_all(
        (0..CONCURRENT_ROUNDS).map(|_| prepare_rounds(ctx, index, spec, horizon, &taken)),
    )
    .await;
    let mut all = Vec::new();
    let mut failure = None;
    for (prepared, error) in rounds {
        all.extend(prepared);
        failure = failure.or(error);
    }
    if let Some(e) = failure {
        give_back_prepared(ctx, spec, all).await;
        return Err(e);
    }
    Ok(all)
}

/// Claims and judges rounds of `spec.batch` until nothing is due by
/// `horizon` or the pass's limit is reached. On a failure: what it prepared
/// before (for the caller to give back) and the error; the failing round's
/// own claims are given back here.
async fn prepare_rounds(
    ctx: &Ctx,
    index: &DeadlineIndex,
    spec: &ScanSpec<'_>,
    horizon: f64,
    taken: &std::sync::atomic::AtomicUsize,
) -> (Vec<Prepared>, Option<WorkerError>) {
    use std::sync::atomic::Ordering;
    let store = ctx.state();
    let lease_ms = spec.claim_lease.as_millis() as f64;
    let mut out = Vec::new();
    while taken.fetch_add(spec.batch, Ordering::Relaxed) < PREPARE_LIMIT {
        let lease_until = ctx.now().timestamp_millis() as f64 + lease_ms;
        let claimed = match store
            .zclaim_due(spec.crossings, horizon, lease_until, spec.batch)
            .await
        {
            Ok(c) => c,
            Err(e) => return (out, Some(e.into())),
        };
        if claimed.is_empty() {
            break;
        }
        match judge_round(ctx, index, spec, &claimed).await {
            Ok(judged) => out.extend(claimed.into_iter().zip(judged).map(
                |(claimed, (task, verdict))| Prepared {
                    claimed,
                    task,
                    verdict,
                },
            )),
            Err(e) => {
                give_back(store, spec.crossings, &claimed).await;
                return (out, Some(e));
            }
        }
    }
    (out, None)
}

/// Reads the records of a claimed round's tasks (one pipelined read) and
/// judges each crossing: per crossing, the task its member names and the
/// verdict.
async fn judge_round(
    ctx: &Ctx,
    index: &DeadlineIndex,
    spec: &ScanSpec<'_>,
    claimed: &[Scored],
) -> Result<Vec<(Option<String>, Verdict)>, WorkerError> {
    let tasks: Vec<Option<String>> = claimed
        .iter()
        .map(|c| parse_member(&c.member).map(|m| m.task.to_string()))
        .collect();
    let names: Vec<&str> = tasks.iter().flatten().map(String::as_str).collect();
    let mut records = index.load_many(ctx.state(), &names).await?.into_iter();
    let mut judged = Vec::with_capacity(claimed.len());
    for (c, task) in claimed.iter().zip(tasks) {
        let record = task.as_ref().and_then(|_| records.next().flatten());
        let verdict = judge(ctx, &c.member, record, spec.output_topic)?;
        judged.push((task, verdict));
    }
    Ok(judged)
}

/// Announces and acknowledges crossings that are due, in rounds of
/// `spec.batch`, a few rounds in flight at once.
async fn announce_due(
    ctx: &Ctx,
    index: &DeadlineIndex,
    spec: &ScanSpec<'_>,
    due: &[Prepared],
    report: &mut ScanReport,
) -> Result<(), WorkerError> {
    use futures::StreamExt;
    let rounds: Vec<&[Prepared]> = due.chunks(spec.batch).collect();
    let announcing: Vec<_> = rounds
        .iter()
        .enumerate()
        .map(|(i, round)| async move { (i, announce_round(ctx, index, spec, round).await) })
        .collect();
    let mut results = futures::stream::iter(announcing).buffer_unordered(ANNOUNCING_ROUNDS);
    let mut failed = Vec::new();
    let mut failure = None;
    while let Some((i, r)) = results.next().await {
        match r {
            Ok(done) => report.add(done),
            Err(e) => {
                failed.push(i);
                failure = Some(e);
            }
        }
    }
    drop(results);
    if let Some(e) = failure {
        // Give the claims back at once, so the retry need not wait for the
        // lease; what was published is published again, same ids.
        let claimed: Vec<Scored> = failed
            .iter()
            .flat_map(|&i| rounds[i].iter().map(|p| p.claimed.clone()))
            .collect();
        give_back(ctx.state(), spec.crossings, &claimed).await;
        return Err(e);
    }
    Ok(())
}

/// Publishes one round's announcements, then acknowledges the round.
async fn announce_round(
    ctx: &Ctx,
    index: &DeadlineIndex,
    spec: &ScanSpec<'_>,
    round: &[Prepared],
) -> Result<ScanReport, WorkerError> {
    let sends = round.iter().filter_map(|p| match &p.verdict {
        Verdict::Announce(e, ..) => Some(ctx.publish_encoded(e)),
        Verdict::Drop(_) => None,
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .collect::<Result<(), WorkerError>>()?;
    // Every acknowledgement of the round in one `MULTI`/`EXEC`, each
    // with the task's next crossing.
    let now_ms = ctx.now().timestamp_millis();
    let mut acks = Vec::with_capacity(round.len() * 3);
    for p in round {
        acks.push(StateOp::ZRem {
            key: spec.crossings.to_string(),
            member: p.claimed.member.clone(),
        });
        if let (Verdict::Announce(_, threshold, due_ms, record), Some(task)) = (&p.verdict, &p.task)
        {
            acks.push(DeadlineIndex::sent_op(task, threshold, *due_ms));
            if let Some((op, _)) = index.next_crossing(task, record, threshold, *due_ms, now_ms) {
                acks.push(op);
            }
        }
    }
    ctx.state().apply(&merge_sorted_set_adds(acks)).await?;
    let acked = ctx.now().timestamp_millis();
    let mut report = ScanReport::default();
    for p in round {
        match &p.verdict {
            Verdict::Announce(_, threshold, ..) => {
                let late = (acked - p.claimed.score as i64).max(0);
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
    Ok(report)
}

/// Announce (encoded, ready to publish) or drop one claimed crossing.
fn judge(
    ctx: &Ctx,
    member: &str,
    record: Option<StoredTask>,
    topic: &str,
) -> Result<Verdict, WorkerError> {
    let Some(m) = parse_member(member) else {
        return Ok(Verdict::Drop("unreadable"));
    };
    let Some(task) = record.filter(|t| t.open) else {
        return Ok(Verdict::Drop("closed"));
    };
    if task.due_ms != Some(m.due_ms) {
        return Ok(Verdict::Drop("moved"));
    }
    if task.was_sent(m.threshold, m.due_ms) {
        return Ok(Verdict::Drop("already_sent"));
    }
    let (Some(due_at), Some(nominal)) = (
        DateTime::from_timestamp_millis(m.due_ms),
        nominal_ms(m.threshold, m.due_ms).and_then(DateTime::from_timestamp_millis),
    ) else {
        return Ok(Verdict::Drop("unreadable"));
    };
    let event = announcement(m.task, m.threshold, due_at, nominal, &task);
    let encoded = ctx.encode_event(&OutputEvent::new(topic, m.task, event))?;
    Ok(Verdict::Announce(
        Box::new(encoded),
        m.threshold.to_string(),
        m.due_ms,
        Box::new(task),
    ))
}

/// [`give_back`] of prepared crossings.
async fn give_back_prepared(
    ctx: &Ctx,
    spec: &ScanSpec<'_>,
    prepared: impl IntoIterator<Item = Prepared>,
) {
    let claimed: Vec<Scored> = prepared.into_iter().map(|p| p.claimed).collect();
    give_back(ctx.state(), spec.crossings, &claimed).await;
}

/// Puts claimed members back at their original scores (best effort: if this
/// fails too, they come back when the claim lease ends).
async fn give_back(store: &dyn StateStore, key: &str, claimed: &[Scored]) {
    if claimed.is_empty() {
        return;
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};
    use pipelines::kafka::mock::MockKafka;
    use pipelines::kafka::sink::Publisher;
    use pipelines::state::MemoryStore;
    use pipelines::{Clock, PipelineConfig, Timer, TimerOwner, Worker};

    use crate::deadlines::config::DeadlinesConfig;
    use crate::deadlines::index::crossings_key;
    use crate::deadlines::worker::tests::inbound;
    use crate::deadlines::worker::DeadlinesWorker;

    #[tokio::test]
    async fn a_crossing_within_the_lead_is_claimed_ahead_and_announced_at_its_due_time() {
        let mock = MockKafka::start(1).unwrap();
        mock.create_topic("schedule-events", 1).unwrap();
        let mut pipeline = PipelineConfig::default();
        pipeline.kafka.bootstrap_servers = mock.bootstrap_servers().to_string();
        let publisher = Publisher::new(&pipeline.kafka, "test").unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap();
        let (clock, time) = Clock::manual(t0);
        let ctx = pipelines::Ctx::new(
            "deadlines",
            Arc::new(MemoryStore::new("t:")),
            Some(publisher),
            Arc::new(pipeline),
        )
        .with_clock(clock);
        let config = DeadlinesConfig::default();
        let lead = config.lead;
        let w = DeadlinesWorker::new(&config).unwrap();
        // Due 3 days and 100 ms from now: its `3d` crossing is 100 ms away,
        // within the lead.
        let inbound = inbound(
            r#"{"event_id":"c","event_type":"task.created","timestamp":"2026-11-26T08:00:00Z","data":{"task_id":"t1","user_id":"alice","title":"T","due_date":"2026-11-29T09:00:00.100Z"}}"#,
        );
        assert!(w.handle_batch(&[inbound], &ctx).await.failure.is_none());
        let crossing = t0 + chrono::Duration::milliseconds(100);
        assert_eq!(
            w.prepare_at(crossing),
            crossing - lead,
            "the timer wakes a lead early"
        );

        let key = crossings_key("task-events", 0);
        let timer = Timer::new(TimerOwner::Process, Default::default());
        let scan = w.scan_set(&ctx, &key, &timer);
        tokio::pin!(scan);
        // Before the due time the scan has claimed it (re-scored to its lease)
        // and waits; nothing is announced yet.
        tokio::select! {
            _ = &mut scan => panic!("announced before its due time"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
        }
        let claimed = ctx.state().zfirst(&key).await.unwrap().unwrap();
        assert!(
            claimed.score > crossing.timestamp_millis() as f64,
            "claimed ahead: {claimed:?}"
        );
        time.advance(std::time::Duration::from_millis(100));
        let report = scan.await.unwrap();
        assert_eq!(report.emitted, 1);
        assert_eq!(report.lateness_ms, vec![0], "acknowledged at its due time");
        // Its next crossing (`1h`) is days away: nothing more is prepared.
        let next = ctx.state().zfirst(&key).await.unwrap().unwrap();
        assert!(next.member.contains("|1h|"), "{next:?}");
        let idle = w.scan_set(&ctx, &key, &timer).await.unwrap();
        assert_eq!(idle.emitted, 0);
    }
}
