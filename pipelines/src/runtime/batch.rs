//! The per-worker [`BatchProcessor`]: a partition's batches go through decode,
//! claim, handle, complete and decide (see the [`super`] module docs), and its
//! hooks and partition timer run beside them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::buffers::{BufferPool, BATCH_BUFFERS_KEPT};
use crate::config::RetryConfig;
use crate::dlq::{self, DeadLetter};
use crate::event::{decode, is_known_type, DecodeContext};
use crate::health::WorkerHealth;
use crate::idempotency::{Claim, Claims, IdempotencyGuard};
use crate::kafka::sink::Publisher;
use crate::kafka::source::{BatchProcessor, Processed};
use crate::kafka::RecordBatch;
use crate::metrics::{self, HandledOutcome};
use crate::retry::{backoff, outage_backoff};
use crate::timer::{TimerOwner, TimerScope};
use crate::worker::{Ctx, Inbound, Outcome, Source, Worker, WorkerError};

use super::timers::run_timer_loop;

/// The per-worker [`BatchProcessor`]: the stages described in the module docs.
pub struct Pipeline {
    worker: Arc<dyn Worker>,
    ctx: Ctx,
    guard: Option<IdempotencyGuard>,
    publisher: Publisher,
    retry: RetryConfig,
    dlq_suffix: String,
    health: Arc<WorkerHealth>,
    /// The decoded events of a batch, one buffer per batch in flight.
    segments: BufferPool<Vec<Inbound>>,
}

/// Retry bookkeeping of the event at the head of a segment.
struct Failing {
    index: usize,
    attempts: u32,
    first_failure_at: DateTime<Utc>,
}

/// Stopped (shutdown or revoke) before finishing.
struct Stopped;

impl Pipeline {
    /// Builds a pipeline without a source, for benchmarks and tests that feed
    /// batches directly.
    pub fn new(
        worker: Arc<dyn Worker>,
        ctx: Ctx,
        guard: Option<IdempotencyGuard>,
        publisher: Publisher,
        retry: RetryConfig,
        dlq_suffix: String,
        health: Arc<WorkerHealth>,
    ) -> Self {
        Pipeline {
            worker,
            ctx,
            guard,
            publisher,
            retry,
            dlq_suffix,
            health,
            segments: BufferPool::new(BATCH_BUFFERS_KEPT),
        }
    }

    fn name(&self) -> &'static str {
        self.worker.name()
    }

    /// Retries `op` while its dependency is down, until it succeeds or `stop`.
    async fn until_available<T, F, Fut>(
        &self,
        stop: &CancellationToken,
        what: &str,
        mut op: F,
    ) -> Result<T, Stopped>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, WorkerError>>,
    {
        let mut attempt = 0u32;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    attempt += 1;
                    if matches!(
                        e,
                        WorkerError::Unavailable {
                            dependency: "redis",
                            ..
                        }
                    ) {
                        metrics::redis_error(self.name());
                    }
                    // The probe owns the readiness signal: ask it to look now.
                    self.health.nudge();
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(worker = self.name(), error = %e, attempt, "{what} failed; waiting for the dependency");
                    }
                    let wait = outage_backoff(&self.retry, attempt);
                    tokio::select! {
                        _ = stop.cancelled() => return Err(Stopped),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        stop: &CancellationToken,
        dl: DeadLetter<'_>,
    ) -> Result<(), Stopped> {
        tracing::warn!(
            worker = self.name(),
            topic = %dl.topic,
            partition = dl.partition,
            offset = dl.record.offset,
            error = %dl.error,
            "message dead-lettered"
        );
        self.until_available(stop, "dead-letter publish", || async {
            dlq::send(&self.publisher, &self.dlq_suffix, &dl)
                .await
                .map_err(WorkerError::from)
        })
        .await?;
        let reason = if dl.error_class.starts_with("decode") {
            "undecodable"
        } else if dl.error_class == "permanent" {
            "permanent"
        } else {
            "retries_exhausted"
        };
        metrics::dead_lettered(self.name(), dl.topic, reason);
        metrics::handled(self.name(), dl.topic, HandledOutcome::DeadLettered, 1);
        Ok(())
    }

    /// Hands `events` to the worker. While it runs longer than a third of the
    /// claim lease (a slow side effect), the claims of `ids` are renewed, so
    /// nobody takes them over mid-effect.
    async fn handle_renewing<'a>(
        &self,
        ctx: &Ctx,
        events: &[Inbound],
        token: Option<&str>,
        ids: impl Iterator<Item = &'a str>,
    ) -> crate::worker::BatchOutcome {
        let handling = self.worker.handle_batch(events, ctx);
        let (Some(g), Some(token)) = (&self.guard, token) else {
            return handling.await;
        };
        tokio::pin!(handling);
        let period = g.lease() / 3;
        // Collected only if the batch turns out slow.
        let mut ids = Some(ids);
        let mut list: Vec<&str> = Vec::new();
        loop {
            tokio::select! {
                outcome = &mut handling => return outcome,
                _ = tokio::time::sleep(period) => {
                    if let Some(it) = ids.take() {
                        list.extend(it);
                    }
                    if let Err(e) = g.renew(token, list.iter().copied()).await {
                        tracing::warn!(worker = self.name(), error = %e, "could not renew claims of a slow batch");
                    }
                }
            }
        }
    }

    /// Handles a run of decoded events (consecutive records); `indices[i]` is
    /// the record index of `events[i]`. Returns the number of events finished,
    /// from the start, when stopped early.
    async fn handle_segment(
        &self,
        ctx: &Ctx,
        stop: &CancellationToken,
        batch: &RecordBatch,
        indices: &[usize],
        events: &[Inbound],
    ) -> Result<(), usize> {
        let mut held = vec![false; events.len()]; // claims this call holds
        let result = self
            .handle_claimed(ctx, stop, batch, indices, events, &mut held)
            .await;
        if result.is_err() {
            // Stopped early: give back the claims of events not handled, so the
            // partition's next owner need not wait out the lease.
            if let Some(g) = &self.guard {
                let ids: Vec<&str> = events
                    .iter()
                    .zip(&held)
                    .filter(|(_, h)| **h)
                    .map(|(e, _)| e.event.event_id.as_str())
                    .collect();
                if !ids.is_empty() {
                    let release = g.release(ids.iter().copied());
                    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), release).await
                    {
                        tracing::debug!(worker = self.name(), error = %e, "could not release claims");
                    }
                }
            }
        }
        result
    }

    async fn handle_claimed(
        &self,
        ctx: &Ctx,
        stop: &CancellationToken,
        batch: &RecordBatch,
        indices: &[usize],
        events: &[Inbound],
        held: &mut [bool],
    ) -> Result<(), usize> {
        let topic = &batch.topic;
        let name = self.name();
        let mut finished = 0usize; // events of the segment finished, in order
        let mut failing: Option<Failing> = None;
        let mut start = 0usize;
        let mut subset: Vec<Inbound> = Vec::new();
        while start < events.len() {
            let slice = &events[start..];
            // Claim what is left; our own earlier claims count as ours.
            // `fresh[i]`: claimed by this very call (under `token`).
            // `guarded[i]`: the worker may act on it, so it is claimed; the
            // others it passes by untouched (`Worker::needs_claim`), and
            // handling one of those twice changes nothing.
            let (claims, token, fresh, guarded) = match &self.guard {
                None => (
                    vec![Claim::Claimed; slice.len()],
                    None,
                    Vec::new(),
                    Vec::new(),
                ),
                Some(g) => {
                    let guarded: Vec<bool> = slice
                        .iter()
                        .map(|e| self.worker.needs_claim(&e.event))
                        .collect();
                    let ids = || {
                        slice
                            .iter()
                            .zip(&guarded)
                            .filter(|(_, g)| **g)
                            .map(|(e, _)| e.event.event_id.as_str())
                    };
                    let (token, got) = if guarded.contains(&true) {
                        let Claims { token, claims } = self
                            .until_available(stop, "idempotency claim", || async {
                                g.claim(ids()).await.map_err(WorkerError::from)
                            })
                            .await
                            .map_err(|_| finished)?;
                        (Some(token), claims)
                    } else {
                        (None, Vec::new())
                    };
                    let mut got = got.into_iter();
                    let mut claims = Vec::with_capacity(slice.len());
                    let mut fresh = Vec::with_capacity(slice.len());
                    for (i, g) in guarded.iter().enumerate() {
                        if !g {
                            claims.push(Claim::Claimed);
                            fresh.push(false);
                            continue;
                        }
                        let mut c = got.next().unwrap_or(Claim::InProgress);
                        fresh.push(c == Claim::Claimed);
                        if c == Claim::InProgress && held[start + i] {
                            c = Claim::Claimed;
                        }
                        if c == Claim::Claimed {
                            held[start + i] = true;
                        }
                        claims.push(c);
                    }
                    (claims, token, fresh, guarded)
                }
            };
            // Stop before the first event someone else is handling: order matters.
            let ready = claims
                .iter()
                .position(|c| *c == Claim::InProgress)
                .unwrap_or(claims.len());
            let mut handled_pos: Vec<usize> = Vec::with_capacity(ready);
            for (i, claim) in claims[..ready].iter().enumerate() {
                if *claim == Claim::Claimed {
                    handled_pos.push(start + i);
                }
            }
            let duplicates = (ready - handled_pos.len()) as u64;
            metrics::handled(name, topic, HandledOutcome::Duplicate, duplicates);
            // Usually every event is new: hand the worker a sub-slice, no copies.
            let to_handle: &[Inbound] = if duplicates == 0 {
                &slice[..ready]
            } else {
                subset.clear();
                subset.extend(handled_pos.iter().map(|&p| events[p].clone()));
                &subset
            };

            let outcome = if to_handle.is_empty() {
                crate::worker::BatchOutcome {
                    outcomes: Vec::new(),
                    failure: None,
                }
            } else {
                let fresh_ids = handled_pos
                    .iter()
                    .filter(|&&p| fresh.get(p - start).copied().unwrap_or(false))
                    .map(|&p| events[p].event.event_id.as_str());
                self.handle_renewing(ctx, to_handle, token.as_deref(), fresh_ids)
                    .await
            };
            let done_count = outcome.outcomes.len().min(to_handle.len());
            // Complete the claims of everything handled: with one marker for
            // the whole claim call when all of its claims were handled, else id
            // by id.
            if let (Some(g), Some(token)) = (&self.guard, &token) {
                let done_pos = &handled_pos[..done_count];
                // Their side effects happened: never give these claims back,
                // even if completing them is interrupted.
                for &p in done_pos {
                    held[p] = false;
                }
                let fresh_total = fresh.iter().filter(|f| **f).count();
                let fresh_done = done_pos.iter().filter(|&&p| fresh[p - start]).count();
                let whole_call = fresh_total > 0 && fresh_done == fresh_total;
                let ids: Vec<&str> = done_pos
                    .iter()
                    .filter(|&&p| guarded[p - start] && !(whole_call && fresh[p - start]))
                    .map(|&p| events[p].event.event_id.as_str())
                    .collect();
                if whole_call {
                    self.until_available(stop, "idempotency complete", || async {
                        g.complete_claims(token).await.map_err(WorkerError::from)
                    })
                    .await
                    .map_err(|_| finished)?;
                }
                if !ids.is_empty() {
                    self.until_available(stop, "idempotency complete", || async {
                        g.complete(ids.iter().copied())
                            .await
                            .map_err(WorkerError::from)
                    })
                    .await
                    .map_err(|_| finished)?;
                }
            }
            let ok = outcome.outcomes[..done_count]
                .iter()
                .filter(|o| **o == Outcome::Done)
                .count() as u64;
            metrics::handled(name, topic, HandledOutcome::Ok, ok);
            metrics::handled(name, topic, HandledOutcome::Skipped, done_count as u64 - ok);

            match outcome.failure {
                None => {
                    // Everything up to `ready` is finished.
                    finished = start + ready;
                    start += ready;
                    failing = None;
                    if ready < slice.len() {
                        // The next event is held by another consumer: wait for it.
                        tokio::select! {
                            _ = stop.cancelled() => return Err(finished),
                            _ = tokio::time::sleep(backoff(&self.retry, 1)) => {}
                        }
                    }
                }
                Some(error) => {
                    let pos = handled_pos[done_count];
                    // Everything before the failing event is finished.
                    finished = pos;
                    start = pos;
                    let f = match failing.take() {
                        Some(f) if f.index == indices[pos] => f,
                        _ => Failing {
                            index: indices[pos],
                            attempts: 0,
                            first_failure_at: self.ctx.now(),
                        },
                    };
                    let attempts = f.attempts + 1;
                    let decision = decide(&error, attempts, &self.retry);
                    let wait = match decision {
                        Decision::DeadLetter => {
                            let record = &batch.records[indices[pos]];
                            self.dead_letter(
                                stop,
                                DeadLetter {
                                    worker: name,
                                    topic,
                                    partition: batch.partition,
                                    record,
                                    error: error.to_string(),
                                    error_class: error.class().to_string(),
                                    attempts,
                                    first_failure_at: f.first_failure_at,
                                },
                            )
                            .await
                            .map_err(|_| finished)?;
                            // Release so a replay from the dead-letter topic is handled.
                            if let Some(g) = &self.guard {
                                let id = events[pos].event.event_id.clone();
                                self.until_available(stop, "idempotency release", || async {
                                    g.release([id.as_str()]).await.map_err(WorkerError::from)
                                })
                                .await
                                .map_err(|_| finished)?;
                                held[pos] = false;
                            }
                            finished = pos + 1;
                            start = pos + 1;
                            failing = None;
                            continue;
                        }
                        Decision::WaitForDependency(wait) => {
                            self.health.nudge();
                            tracing::warn!(worker = name, error = %error, "dependency unavailable; waiting");
                            wait
                        }
                        Decision::Retry(wait) => {
                            metrics::handled(name, topic, HandledOutcome::Retried, 1);
                            tracing::info!(worker = name, error = %error, attempts, "handling failed; will retry");
                            wait
                        }
                    };
                    failing = Some(Failing { attempts, ..f });
                    tokio::select! {
                        _ = stop.cancelled() => return Err(finished),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the pipeline does with an event whose handling failed: the *decide*
/// step, from the error's class alone.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    /// Permanent, or retryable with no attempt left.
    DeadLetter,
    /// Retryable: try again after this backoff.
    Retry(Duration),
    /// A dependency is down: wait (never dead-letter), however long it takes.
    WaitForDependency(Duration),
}

fn decide(error: &WorkerError, attempts: u32, retry: &RetryConfig) -> Decision {
    match error {
        WorkerError::Permanent(_) => Decision::DeadLetter,
        WorkerError::Retryable(_) if attempts >= retry.max_attempts => Decision::DeadLetter,
        WorkerError::Retryable(_) => Decision::Retry(backoff(retry, attempts)),
        WorkerError::Unavailable { .. } => {
            Decision::WaitForDependency(outage_backoff(retry, attempts))
        }
    }
}

#[async_trait]
impl BatchProcessor for Pipeline {
    /// The partition's hooks and, for a partition-scoped worker, its timer:
    /// `on_assigned` (retried while it fails; the partition's lane waits for
    /// it), the timer until `stop`, then `on_revoked`. The source waits for
    /// this before handing the partition on.
    async fn run_partition(
        &self,
        topic: Arc<str>,
        partition: i32,
        stop: CancellationToken,
        ready: tokio::sync::oneshot::Sender<()>,
    ) {
        let name = self.name();
        let ctx = self.ctx.with_stop(stop.clone());
        let mut attempt = 0u32;
        loop {
            match self.worker.on_assigned(&topic, partition, &ctx).await {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    self.health.nudge();
                    tracing::warn!(worker = name, %topic, partition, error = %e, attempt, "loading the partition's state failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(outage_backoff(&self.retry, attempt)) => {}
                    }
                }
            }
        }
        let timed = self.worker.timer_scope() == TimerScope::Partition && !stop.is_cancelled();
        let key = Some((topic.clone(), partition));
        // Registered before the first batch, which takes the slot's gate.
        let slot = timed.then(|| ctx.wakers().register(key.clone()));
        // The lane may hand the partition's events to the worker now.
        let _ = ready.send(());
        if let Some(slot) = slot {
            let owner = TimerOwner::Partition {
                topic: topic.clone(),
                partition,
            };
            run_timer_loop(self.worker.as_ref(), &ctx, owner, &slot, &self.retry, &stop).await;
            ctx.wakers().unregister(&key, &slot);
        } else {
            stop.cancelled().await;
        }
        self.worker.on_revoked(&topic, partition, &ctx).await;
    }

    async fn process(&self, batch: RecordBatch, stop: &CancellationToken) -> Processed {
        let started = Instant::now();
        let name = self.name();
        let n = batch.records.len();
        metrics::in_flight(name, n as f64);
        // The partition's timer claims between batches, not within one.
        let gate = match self.worker.timer_scope() {
            TimerScope::Partition => self
                .ctx
                .wakers()
                .gate(&Some((batch.topic.clone(), batch.partition))),
            _ => None,
        };
        let _between = match &gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        let received_at = self.ctx.now();
        let ctx = self.ctx.with_stop(stop.clone());
        let mut finished_up_to: Option<i64> = None;
        // The current segment: decoded events and their record indices.
        let mut segment = self.segments.take(n);
        let mut indices: Vec<usize> = Vec::with_capacity(n);
        let mut complete = true;

        // Walk the records in order; decodable events accumulate into a segment
        // that is handled as one batch when a dead letter (or the end) is reached.
        let mut i = 0usize;
        'records: while i <= n {
            let dead = if i < n {
                let record = &batch.records[i];
                let ctx = DecodeContext {
                    topic: &batch.topic,
                    kafka_timestamp_ms: record.timestamp_ms,
                };
                match decode(record.payload.as_deref().unwrap_or_default(), &ctx) {
                    Ok(event) if is_known_type(&event.kind) => {
                        indices.push(i);
                        segment.push(Inbound {
                            event,
                            source: Source {
                                topic: batch.topic.clone(),
                                partition: batch.partition,
                                offset: record.offset,
                                timestamp_ms: record.timestamp_ms,
                                received_at,
                            },
                        });
                        i += 1;
                        continue;
                    }
                    Ok(event) => {
                        // Unknown type: counted and skipped, in place.
                        metrics::unknown_event(name, &batch.topic);
                        metrics::handled(name, &batch.topic, HandledOutcome::Skipped, 1);
                        tracing::debug!(worker = name, kind = %event.kind, "unknown event type skipped");
                        // Inside a segment it is finished once the segment is.
                        if segment.is_empty() {
                            finished_up_to = Some(record.offset);
                        }
                        i += 1;
                        continue;
                    }
                    Err(e) => Some((i, e)),
                }
            } else {
                None
            };

            if !segment.is_empty() {
                let result = self
                    .handle_segment(&ctx, stop, &batch, &indices, segment.as_slice())
                    .await;
                let offsets: Vec<i64> = segment.iter().map(|e| e.source.offset).collect();
                segment.clear();
                indices.clear();
                match result {
                    Ok(()) => {
                        // Unknown-type records inside the segment are finished too.
                        let upto = dead.as_ref().map_or(n, |(di, _)| *di);
                        finished_up_to = Some(batch.records[upto - 1].offset);
                    }
                    Err(done) => {
                        if done > 0 {
                            finished_up_to = Some(offsets[done - 1]);
                        }
                        complete = false;
                        break 'records;
                    }
                }
            }
            match dead {
                Some((di, e)) => {
                    let record = &batch.records[di];
                    metrics::decode_failed(name, &batch.topic, e.reason());
                    let r = self
                        .dead_letter(
                            stop,
                            DeadLetter {
                                worker: name,
                                topic: &batch.topic,
                                partition: batch.partition,
                                record,
                                error: e.to_string(),
                                error_class: format!("decode:{}", e.reason()),
                                attempts: 1,
                                first_failure_at: self.ctx.now(),
                            },
                        )
                        .await;
                    if r.is_err() {
                        complete = false;
                        break 'records;
                    }
                    finished_up_to = Some(record.offset);
                    i = di + 1;
                }
                None => break 'records,
            }
        }
        metrics::in_flight(name, -(n as f64));
        metrics::batch_handled(name, n, started.elapsed());
        Processed {
            finished_up_to,
            complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> RetryConfig {
        RetryConfig {
            max_attempts: 3,
            jitter: false,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn permanent_failures_are_dead_lettered_at_once() {
        assert_eq!(
            decide(&WorkerError::permanent("bad rule"), 1, &retry()),
            Decision::DeadLetter
        );
    }

    #[test]
    fn retryable_failures_back_off_until_the_last_attempt() {
        let r = retry();
        assert!(matches!(
            decide(&WorkerError::retryable("451"), 1, &r),
            Decision::Retry(_)
        ));
        assert!(matches!(
            decide(&WorkerError::retryable("451"), 2, &r),
            Decision::Retry(_)
        ));
        assert_eq!(
            decide(&WorkerError::retryable("451"), 3, &r),
            Decision::DeadLetter
        );
    }

    #[test]
    fn an_unavailable_dependency_is_waited_for_forever() {
        let r = retry();
        for attempts in [1, 3, 50, 10_000] {
            assert!(
                matches!(
                    decide(&WorkerError::unavailable("redis", "READONLY"), attempts, &r),
                    Decision::WaitForDependency(_)
                ),
                "attempt {attempts}"
            );
        }
    }
}
