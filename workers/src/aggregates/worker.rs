//! The aggregates worker: events fold into window counters as they come;
//! each partition's timer closes the windows the worker's watermark has
//! passed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pipelines::config::PipelineConfig;
use pipelines::state::{ScoreBound, ScoreRange, StateOp};
use pipelines::{
    Applied, BatchOutcome, Ctx, Inbound, Outcome, Timer, TimerScope, Worker, WorkerError,
};

use super::close::{close_window, Closed};
use super::config::AggregatesConfig;
use super::metrics;
use super::plan::{plan, BatchPlan, EventFacts};
use super::store::{self, KnownUsers};
use super::watermark::{self, PartitionMark};
use super::window::{WindowId, WindowSpec};

/// Windows closed per tick at most before the tick yields (and runs again at once).
const CLOSES_PER_TICK: usize = 200;
/// The newest event time of a partition assigned but not yet read: its
/// watermark is the beginning of time while it is active.
const NOTHING_YET: i64 = i64::MIN;
/// Closed windows remembered in process (beyond them the close mark is read).
const CLOSED_CACHE: usize = 10_000;

/// Windowed task metrics by event time.
pub struct AggregatesWorker {
    config: AggregatesConfig,
    specs: Vec<WindowSpec>,
    lateness_ms: i64,
    idle_ms: i64,
    /// Newest event time of each partition this replica owns.
    newest: Mutex<HashMap<(Arc<str>, i32), i64>>,
    /// Windows known closed (a close never reopens).
    closed: Mutex<HashSet<WindowId>>,
    /// The project allow-list of metric labels.
    projects: HashSet<String>,
    /// Users already added to each open window's distinct counts.
    known_users: Mutex<KnownUsers>,
    /// The mark field of every input partition, and when it was read (ms).
    partitions: Mutex<Option<(i64, Vec<String>)>>,
    /// When this process first found each input partition without a mark.
    unmarked_since: Mutex<HashMap<String, i64>>,
}

/// How long the input topics' partition counts are used before they are
/// read again (a topic may gain partitions).
const PARTITIONS_REFRESH_MS: i64 = 60_000;

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl AggregatesWorker {
    pub fn new(config: &AggregatesConfig) -> Result<Self, String> {
        let specs = config.window_specs().map_err(|e| e.to_string())?;
        Ok(AggregatesWorker {
            config: config.clone(),
            specs,
            lateness_ms: ms(config.allowed_lateness),
            idle_ms: ms(config.idle_timeout),
            newest: Mutex::new(HashMap::new()),
            closed: Mutex::new(HashSet::new()),
            projects: config.projects.iter().cloned().collect(),
            known_users: Mutex::new(KnownUsers::default()),
            partitions: Mutex::new(None),
            unmarked_since: Mutex::new(HashMap::new()),
        })
    }

    /// The mark field of every partition of the input topics (the cluster's
    /// metadata, read again every [`PARTITIONS_REFRESH_MS`]).
    async fn input_partitions(&self, ctx: &Ctx, now: i64) -> Result<Vec<String>, WorkerError> {
        {
            let cached = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, fields)) = cached.as_ref() {
                if now.saturating_sub(*at) < PARTITIONS_REFRESH_MS && now >= *at {
                    return Ok(fields.clone());
                }
            }
        }
        let mut fields = Vec::new();
        for topic in default_topics(ctx.config()) {
            let n = ctx.partition_count(&topic).await?;
            fields.extend((0..n as i32).map(|p| store::mark_field(&topic, p)));
        }
        *self.partitions.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, fields.clone()));
        Ok(fields)
    }

    /// Every input partition's mark. A partition no replica has marked yet
    /// (assigned to a replica that has not started it, or new) holds the
    /// watermark back like one assigned and not yet read, so windows do not
    /// close without its events; it counts as idle `idle_timeout` after this
    /// process first found it unmarked, so one that never gets a mark cannot
    /// stall every window.
    async fn all_marks(&self, ctx: &Ctx, now: i64) -> Result<Vec<PartitionMark>, WorkerError> {
        let mut marks = store::marks(ctx.state()).await?;
        let expected = self.input_partitions(ctx, now).await?;
        let mut since = self
            .unmarked_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for field in expected {
            match marks.entry(field) {
                std::collections::btree_map::Entry::Occupied(e) => {
                    since.remove(e.key());
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    let first = *since.entry(e.key().clone()).or_insert(now);
                    e.insert(PartitionMark {
                        max_event_ms: NOTHING_YET,
                        seen_ms: first,
                    });
                }
            }
        }
        Ok(marks.into_values().collect())
    }

    fn newest(&self) -> std::sync::MutexGuard<'_, HashMap<(Arc<str>, i32), i64>> {
        self.newest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closed(&self) -> std::sync::MutexGuard<'_, HashSet<WindowId>> {
        self.closed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn known_users(&self) -> std::sync::MutexGuard<'_, KnownUsers> {
        self.known_users.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember_closed(&self, w: WindowId) {
        self.known_users().forget(&w);
        let mut c = self.closed();
        if c.len() >= CLOSED_CACHE {
            c.clear();
        }
        c.insert(w);
    }

    /// Folds `events` into the windows; returns, per event, whether it was
    /// handled before (and skipped).
    async fn fold(&self, events: &[Inbound], ctx: &Ctx) -> Result<Vec<bool>, WorkerError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let src = &first.source;
        let key = (src.topic.clone(), src.partition);
        let prior = self.newest().get(&key).copied();
        let prior = match prior {
            Some(p) => Some(p),
            None => store::mark(ctx.state(), &src.topic, src.partition)
                .await?
                .map(|m| m.max_event_ms)
                .filter(|m| *m != NOTHING_YET),
        };
        // The events not handled before (by a redelivery's first delivery or
        // another replica): all of them but in a race.
        let mut survivors: Option<(Vec<usize>, Vec<Inbound>)> = None;
        let mut duplicates = vec![false; events.len()];
        let field = store::mark_field(&src.topic, src.partition);
        loop {
            let live = survivors.as_ref().map_or(events, |(_, e)| e.as_slice());
            if live.is_empty() {
                return Ok(duplicates);
            }
            let mut facts: Vec<EventFacts> =
                live.iter().map(|e| EventFacts::of(&e.event)).collect();
            let created_ops = completion_times(&mut facts, ctx).await?;
            let plan = {
                let closed = self.closed();
                plan(&self.specs, self.lateness_ms, prior, &closed, &facts)
            };
            let now = ctx.now().timestamp_millis();
            let mark = plan.max_event_ms.map(|max_event_ms| PartitionMark {
                max_event_ms,
                seen_ms: now,
            });
            let mut ops = {
                let known = self.known_users();
                store::batch_ops(
                    &plan,
                    mark.map(|m| (field.as_str(), m)),
                    self.config.state_ttl,
                    &known,
                )
            };
            ops.extend(created_ops);
            // The update and the events' idempotency marks land together,
            // unless one of the events is marked already: then nothing
            // lands, and the batch is folded again without those.
            let rest = match ctx.apply_once_for_all(live, ops).await? {
                // One flag per window of the plan, in order: false when the
                // window was closed (by any replica) before this update landed.
                Applied::Done(open) => {
                    self.landed(ctx, src, prior, &facts, &plan, &open);
                    return Ok(duplicates);
                }
                Applied::Duplicates(handled) => {
                    let index = |i: usize| survivors.as_ref().map_or(i, |(idx, _)| idx[i]);
                    let mut rest = (Vec::new(), Vec::new());
                    for (i, (e, h)) in live.iter().zip(&handled).enumerate() {
                        if *h {
                            duplicates[index(i)] = true;
                        } else {
                            rest.0.push(index(i));
                            rest.1.push(e.clone());
                        }
                    }
                    rest
                }
            };
            survivors = Some(rest);
        }
    }

    /// After a batch's update landed: in-process state and metrics.
    fn landed(
        &self,
        ctx: &Ctx,
        src: &pipelines::Source,
        prior: Option<i64>,
        facts: &[EventFacts<'_>],
        plan: &BatchPlan<'_>,
        open: &[bool],
    ) {
        self.known_users().record(plan, open);
        if let Some(max) = plan.max_event_ms {
            self.newest()
                .insert((src.topic.clone(), src.partition), max);
        }
        metrics::events(facts, &self.projects);
        for (w, n) in &plan.late {
            metrics::late(w, *n);
        }
        for ((w, d), open) in plan.windows.iter().zip(open) {
            if !open {
                metrics::late(&w.name, d.all.events);
                self.remember_closed(w.clone());
            }
        }
        // Wake this partition's timer when its watermark crossed a boundary
        // of the shortest window: a window may have become closable.
        let smallest = self.specs.first().map_or(60_000, |s| s.size_ms);
        let crossed = match (prior, plan.max_event_ms) {
            (Some(a), Some(b)) => {
                a.saturating_sub(self.lateness_ms).div_euclid(smallest)
                    != b.saturating_sub(self.lateness_ms).div_euclid(smallest)
            }
            (None, Some(_)) => true,
            _ => false,
        };
        if crossed {
            ctx.wake_timer_at(src, ctx.now());
        }
    }
}

#[async_trait]
impl Worker for AggregatesWorker {
    fn name(&self) -> &'static str {
        "aggregates"
    }

    fn topics(&self, config: &PipelineConfig) -> Vec<String> {
        default_topics(config)
    }

    /// The batch's update carries its events' idempotency marks and skips
    /// events already marked: no separate claim round trip.
    fn marks_in_update(&self) -> bool {
        true
    }

    /// One partition's timer: windows close as that partition's watermark
    /// (or any replica's, through the shared marks) allows.
    fn timer_scope(&self) -> TimerScope {
        TimerScope::Partition
    }

    async fn handle(&self, event: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let duplicates = self.fold(std::slice::from_ref(event), ctx).await?;
        Ok(if duplicates.contains(&true) {
            Outcome::Skipped
        } else {
            Outcome::Done
        })
    }

    /// The whole batch is one atomic update (counters, marks, idempotency
    /// marks): it lands entirely or not at all.
    async fn handle_batch(&self, events: &[Inbound], ctx: &Ctx) -> BatchOutcome {
        match self.fold(events, ctx).await {
            Ok(duplicates) => BatchOutcome {
                outcomes: duplicates
                    .into_iter()
                    .map(|d| if d { Outcome::Skipped } else { Outcome::Done })
                    .collect(),
                failure: None,
            },
            Err(e) => BatchOutcome {
                outcomes: Vec::new(),
                failure: Some(e),
            },
        }
    }

    /// Loads the partition's newest event time and restarts its idle clock:
    /// a partition just assigned (maybe with a backlog, maybe never read
    /// before) holds the watermark back for `idle_timeout`, so windows do
    /// not close before its events are read.
    async fn on_assigned(&self, topic: &str, partition: i32, ctx: &Ctx) -> Result<(), WorkerError> {
        let existing = store::mark(ctx.state(), topic, partition)
            .await?
            .map(|m| m.max_event_ms)
            .filter(|m| *m != NOTHING_YET);
        let mark = PartitionMark {
            max_event_ms: existing.unwrap_or(NOTHING_YET),
            seen_ms: ctx.now().timestamp_millis(),
        };
        ctx.state()
            .apply(&[StateOp::HashSet {
                key: store::MARKS.into(),
                fields: vec![(
                    store::mark_field(topic, partition),
                    mark.encode().into_bytes(),
                )],
            }])
            .await?;
        if let Some(m) = existing {
            self.newest().insert((Arc::from(topic), partition), m);
        }
        Ok(())
    }

    /// `GET /api/stats` (see [`super::stats`]).
    fn routes(&self, ctx: &Ctx) -> Option<axum::Router> {
        Some(super::stats::router(
            ctx.clone(),
            self.specs.clone(),
            self.config.max_keys,
        ))
    }

    async fn on_revoked(&self, topic: &str, partition: i32, _ctx: &Ctx) {
        self.newest().remove(&(Arc::from(topic), partition));
    }

    async fn tick(&self, timer: &Timer, ctx: &Ctx) -> Result<Option<DateTime<Utc>>, WorkerError> {
        let now = ctx.now().timestamp_millis();
        let marks = self.all_marks(ctx, now).await?;
        let Some(wm) = watermark::combined(&marks, now, self.lateness_ms, self.idle_ms) else {
            return Ok(None);
        };
        metrics::watermark(wm);
        let due = ctx
            .state()
            .zrange(
                store::OPEN,
                ScoreRange {
                    min: ScoreBound::Unbounded,
                    max: ScoreBound::Inclusive(wm as f64),
                    offset: 0,
                    limit: CLOSES_PER_TICK,
                },
            )
            .await?;
        let mut windows: Vec<WindowId> = due
            .iter()
            .filter_map(|s| WindowId::from_member(&s.member))
            .collect();
        windows.sort_by(|a, b| a.close_order(b));
        let topic = ctx.config().topics.task_metrics.clone();
        for w in &windows {
            if timer.stop.is_cancelled() {
                return Ok(Some(ctx.now()));
            }
            match close_window(
                ctx,
                w,
                &topic,
                self.config.close_lease,
                self.config.state_ttl,
                self.config.max_keys,
            )
            .await?
            {
                Closed::Published(r) => {
                    tracing::debug!(window = %w.name, start = w.start_ms, events = r[0].events, results = r.len(), "window closed");
                    self.remember_closed(w.clone());
                }
                Closed::NotOurs => {}
            }
        }
        if due.len() >= CLOSES_PER_TICK {
            return Ok(Some(ctx.now()));
        }
        if ctx.state().zfirst(store::OPEN).await?.is_none() {
            return Ok(None);
        }
        // Open windows remain: look again when a partition may turn idle
        // (or after check_interval, for closes another replica left behind).
        let mut next = now.saturating_add(ms(self.config.check_interval));
        if let Some(idle_at) = watermark::next_idle_at(&marks, now, self.idle_ms) {
            next = next.min(idle_at);
        }
        Ok(DateTime::from_timestamp_millis(next))
    }
}

/// Fills in the completion time of completions whose snapshot has no
/// creation time, from `task.created` events earlier in the batch or the
/// creation index (one `MGET` for the batch); returns the index writes of
/// the batch's `task.created` events.
async fn completion_times(
    facts: &mut [EventFacts<'_>],
    ctx: &Ctx,
) -> Result<Vec<StateOp>, WorkerError> {
    let mut created_here: HashMap<&str, i64> = HashMap::new();
    let mut ops = Vec::new();
    let mut wanted: Vec<usize> = Vec::new();
    for (i, f) in facts.iter().enumerate() {
        let Some(task) = f.task_id else { continue };
        if f.kind == "task.created" {
            created_here.entry(task).or_insert(f.t_ms);
            ops.push(StateOp::Set {
                key: store::created_key(task),
                value: f.t_ms.to_string().into_bytes(),
                ttl: Some(store::CREATED_TTL),
            });
        } else if f.completed_ms.is_some() && f.completion_seconds.is_none() {
            wanted.push(i);
        }
    }
    let to_read: Vec<String> = wanted
        .iter()
        .filter_map(|i| facts[*i].task_id)
        .filter(|t| !created_here.contains_key(t))
        .map(store::created_key)
        .collect();
    let mut read = ctx.state().get_many(&to_read).await?.into_iter();
    for i in wanted {
        let Some(task) = facts[i].task_id else {
            continue;
        };
        let created = match created_here.get(task) {
            Some(t) => Some(*t),
            None => read
                .next()
                .flatten()
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok()),
        };
        let f = &mut facts[i];
        f.completion_seconds = f
            .completed_ms
            .zip(created)
            .and_then(super::plan::completion_seconds);
    }
    Ok(ops)
}

/// `task-events` and `analytics-events`.
pub fn default_topics(config: &PipelineConfig) -> Vec<String> {
    vec![
        config.topics.task_events.clone(),
        config.topics.analytics_events.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::state::MemoryStore;

    fn fact(kind: &str, task: &'static str, t_s: i64) -> EventFacts<'static> {
        EventFacts {
            t_ms: t_s * 1000,
            kind: super::super::plan::known_kind(kind),
            user: None,
            priority: "none",
            project: None,
            completion_seconds: None,
            task_id: Some(task),
            completed_ms: (kind == "task.completed").then_some(t_s * 1000),
        }
    }

    /// Two replicas start: one has read its partitions far past minute 0
    /// while the other has not yet marked its own (assigned, not started).
    /// The unmarked partitions hold the watermark back until the other
    /// replica marks them, or until they have been unmarked for
    /// `idle_timeout`.
    #[tokio::test]
    async fn an_input_partition_nobody_has_marked_yet_holds_the_watermark_back() {
        let mock = pipelines::kafka::mock::MockKafka::start(1).unwrap();
        let mut config = PipelineConfig::default();
        config.kafka.bootstrap_servers = mock.bootstrap_servers().to_string();
        mock.create_topic(&config.topics.task_events, 4).unwrap();
        let publisher = pipelines::kafka::sink::Publisher::new(&config.kafka, "t").unwrap();
        let ctx = Ctx::new(
            "aggregates",
            Arc::new(MemoryStore::new("t:")),
            Some(publisher),
            Arc::new(config.clone()),
        );
        let agg = AggregatesConfig::default();
        let worker = AggregatesWorker::new(&agg).unwrap();
        let (lateness, idle) = (ms(agg.allowed_lateness), ms(agg.idle_timeout));
        let now = 1_764_000_000_000;
        let read = PartitionMark {
            max_event_ms: now - 1_000,
            seen_ms: now,
        };
        let mark = |topic: &str, p: i32, m: PartitionMark| StateOp::HashSet {
            key: store::MARKS.into(),
            fields: vec![(store::mark_field(topic, p), m.encode().into_bytes())],
        };
        let tasks = config.topics.task_events.clone();
        let analytics = config.topics.analytics_events.clone();
        ctx.state()
            .apply(&[
                mark(&tasks, 0, read),
                mark(&tasks, 1, read),
                mark(&analytics, 0, read),
            ])
            .await
            .unwrap();
        let watermark =
            |marks: Vec<PartitionMark>, at: i64| watermark::combined(&marks, at, lateness, idle);
        // The analytics topic does not exist yet: nothing to wait for.
        let marks = worker.all_marks(&ctx, now).await.unwrap();
        assert_eq!(marks.len(), 5, "every input partition: {marks:?}");
        *worker.partitions.lock().unwrap() = None;
        mock.create_topic(&config.topics.analytics_events, 1)
            .unwrap();
        let marks = worker.all_marks(&ctx, now).await.unwrap();
        assert_eq!(marks.len(), 5, "the analytics partition has a mark");
        assert_eq!(watermark(marks, now), Some(i64::MIN), "held back");
        // Still held a moment later; once marked by their owner, they count.
        let marks = worker.all_marks(&ctx, now + idle - 1).await.unwrap();
        assert_eq!(watermark(marks, now + idle - 1), Some(i64::MIN));
        ctx.state()
            .apply(&[mark(&tasks, 2, read), mark(&tasks, 3, read)])
            .await
            .unwrap();
        let marks = worker.all_marks(&ctx, now + 10).await.unwrap();
        assert_eq!(watermark(marks, now + 10), Some(now - 1_000 - lateness));
        // One that stays unmarked is idle `idle_timeout` after it was missed.
        let later = worker.all_marks(&ctx, now + 20).await.unwrap();
        assert_eq!(later.len(), 5);
        ctx.state()
            .apply(&[StateOp::HashDelete {
                key: store::MARKS.into(),
                fields: vec![store::mark_field(&tasks, 3)],
            }])
            .await
            .unwrap();
        let missed_at = now + 30;
        let marks = worker.all_marks(&ctx, missed_at).await.unwrap();
        assert_eq!(watermark(marks, missed_at), Some(i64::MIN));
        // The others keep delivering (active); the unmarked one turns idle.
        let at = missed_at + idle;
        let active = PartitionMark {
            max_event_ms: now - 1_000,
            seen_ms: at,
        };
        ctx.state()
            .apply(&[
                mark(&tasks, 0, active),
                mark(&tasks, 1, active),
                mark(&tasks, 2, active),
                mark(&analytics, 0, active),
            ])
            .await
            .unwrap();
        let marks = worker.all_marks(&ctx, at - 1).await.unwrap();
        assert_eq!(watermark(marks, at - 1), Some(i64::MIN));
        let marks = worker.all_marks(&ctx, at).await.unwrap();
        assert_eq!(watermark(marks, at), Some(now - 1_000 - lateness));
    }

    #[tokio::test]
    async fn completions_without_created_at_take_it_from_the_batch_or_the_index() {
        let ctx = Ctx::new(
            "aggregates",
            Arc::new(MemoryStore::new("t:")),
            None,
            Arc::new(PipelineConfig::default()),
        );
        ctx.state()
            .set(&store::created_key("t2"), b"100000", None)
            .await
            .unwrap();
        let mut facts = vec![
            fact("task.created", "t1", 0),
            fact("task.completed", "t1", 600),
            fact("task.completed", "t2", 400),
            fact("task.completed", "unknown", 400),
        ];
        let ops = completion_times(&mut facts, &ctx).await.unwrap();
        assert_eq!(facts[1].completion_seconds, Some(600.0));
        assert_eq!(facts[2].completion_seconds, Some(300.0));
        assert_eq!(facts[3].completion_seconds, None, "no creation known");
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].key(), store::created_key("t1"));
    }
}
