//! The worker: events in, next occurrences out.
//!
//! - `task.completed` of a recurring task: plan its next occurrence(s) and
//!   publish a `task.created` for each, unless the series was deleted or
//!   already has them.
//! - `task.created`/`task.updated` with a rule (or `is_recurring: false`):
//!   remember the task's rule and fields, so a later completion that carries
//!   only the task id continues with the latest rule.
//! - `task.deleted`: the task's series is stopped (a tombstone).
//! - `task_template.*` with a rule: the pattern directory.
//! - `user.*` with a zone: the zone of that user's tasks that name none.
//!
//! Exactly one next occurrence per completion: the pipeline's idempotency
//! guard keeps a redelivered completion from being handled twice; the
//! per-series "last published" number keeps a second completion path (a
//! completion of a missed occurrence, a replayed dead letter) from publishing
//! an occurrence again; and the ids derived from series and number make any
//! duplicate that still slips through (a crash between publishing and
//! recording, two replicas during a rebalance) the same event, which
//! consumers dedupe by `event_id`/`task_id`.

use std::collections::HashMap;

use async_trait::async_trait;
use pipelines::OutputEvent;
use pipelines::{
    BatchOutcome, Ctx, Inbound, Outcome, PipelineConfig, TaskEvent, Worker, WorkerError,
};

use super::batch::BatchView;
use super::config::RecurringConfig;
use super::directory::{self, Directory, Pattern};
use super::metrics;
use super::occurrence::{plan, CatchUp, Completed, Plan};
use super::output::NextOccurrence;
use super::rule::{RecurrenceRule, RuleError, RuleKind};
use super::series::{self, PATTERN_ID_KEYS};
use super::zone;

/// The recurring tasks worker.
pub struct RecurringWorker {
    output_topic: String,
    catch_up: CatchUp,
    /// Patterns from the config's file; the state store's (from events) win.
    file_patterns: HashMap<String, Pattern>,
}

impl RecurringWorker {
    /// Builds the worker from its config section (and reads the pattern file).
    pub fn new(config: &RecurringConfig) -> Result<Self, String> {
        let catch_up = config.catch_up_policy().map_err(|e| e.to_string())?;
        let file_patterns = super::directory::load_pattern_file(&config.pattern_file)?;
        Ok(RecurringWorker {
            output_topic: config.output_topic.clone(),
            catch_up,
            file_patterns,
        })
    }

    /// Remembers a recurring task (or forgets one that stopped repeating).
    async fn remember(
        &self,
        event: &TaskEvent,
        ctx: &Ctx,
        view: &mut BatchView,
    ) -> Result<Outcome, WorkerError> {
        let Some(task_id) = event.task_id.as_deref() else {
            return Ok(Outcome::Skipped);
        };
        let dir = Directory::new(ctx.state());
        if series::says_not_recurring(event) {
            view.forget(task_id);
            return Ok(Outcome::Done);
        }
        let record = series::record_of(event);
        if !record.is_recurring() {
            return Ok(Outcome::Skipped);
        }
        let merged = match view.task(&dir, task_id).await? {
            Some(old) => record.over(old),
            None => record,
        };
        view.remember(task_id, merged)?;
        Ok(Outcome::Done)
    }

    async fn deleted(
        &self,
        event: &TaskEvent,
        ctx: &Ctx,
        view: &mut BatchView,
    ) -> Result<Outcome, WorkerError> {
        let Some(task_id) = event.task_id.as_deref() else {
            return Ok(Outcome::Skipped);
        };
        let dir = Directory::new(ctx.state());
        let known = view.task(&dir, task_id).await?;
        let series_id = series::record_of(event)
            .series_id
            .or_else(|| known.as_ref().and_then(|k| k.series_id.clone()))
            .unwrap_or_else(|| task_id.to_string());
        view.end(&series_id, "deleted");
        if let Some(known) = known {
            view.forget(task_id);
            let kind = known
                .rule
                .as_deref()
                .map_or("pattern", |r| RuleKind::guess(r).as_str());
            metrics::series_ended(kind, "deleted");
        }
        Ok(Outcome::Done)
    }

    async fn pattern_event(&self, event: &TaskEvent, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let a = &event.attributes;
        let id = ["template_id", "pattern_id", "recurring_pattern_id", "id"]
            .iter()
            .chain(PATTERN_ID_KEYS)
            .find_map(|k| match a.get(*k) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .or_else(|| event.task_id.clone());
        let Some(id) = id else {
            return Ok(Outcome::Skipped);
        };
        let dir = Directory::new(ctx.state());
        if event.action() == "deleted" {
            dir.delete_pattern(&id).await?;
            return Ok(Outcome::Done);
        }
        let record = series::record_of(event);
        let rule = record.rule.or_else(|| {
            ["recurrence", "recurring_pattern", "rrule", "rule"]
                .iter()
                .find_map(|k| a.get(*k).and_then(|v| v.as_str()).map(str::to_string))
        });
        let Some(rule) = rule else {
            return Ok(Outcome::Skipped);
        };
        let timezone = record.timezone.or_else(|| {
            a.get("timezone")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
        // A pattern that does not parse is refused now, with its reason,
        // rather than at every completion that names it.
        let zone_name = timezone.as_deref().unwrap_or("UTC");
        if let Err(e) = RecurrenceRule::parse(&rule, zone_name) {
            metrics::rule_rejected(RuleKind::guess(&rule));
            return Err(WorkerError::permanent(e));
        }
        dir.set_pattern(&id, &Pattern { rule, timezone }).await?;
        Ok(Outcome::Done)
    }

    async fn user_event(&self, event: &TaskEvent, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let (Some(user_id), Some(zone)) = (
            event.user_id.as_deref(),
            event.user.as_ref().and_then(|u| u.timezone.as_deref()),
        ) else {
            return Ok(Outcome::Skipped);
        };
        if zone::parse_zone(zone).is_err() {
            // Not ours to reject: tasks of this user fall back to UTC.
            return Ok(Outcome::Skipped);
        }
        Directory::new(ctx.state())
            .set_user_zone(user_id, zone)
            .await?;
        Ok(Outcome::Done)
    }

    /// Plans a completion's occurrences; publishing is left to the batch
    /// (see [`Worker::handle_batch`] below).
    async fn completed(
        &self,
        event: &TaskEvent,
        ctx: &Ctx,
        view: &mut BatchView,
    ) -> Result<Step, WorkerError> {
        if series::says_not_recurring(event) {
            return Ok(Step::Finished(Outcome::Skipped));
        }
        let Some(task_id) = event.task_id.clone() else {
            return Ok(Step::Finished(Outcome::Skipped));
        };
        let dir = Directory::new(ctx.state());
        let mut task = series::record_of(event);
        // A completion often carries a partial snapshot: fill it from what the
        // created/updated events said (one read, only when needed).
        if !task.is_recurring() || task.series_id.is_none() || task.title.is_none() {
            if let Some(known) = view.task(&dir, &task_id).await? {
                task = task.over(known);
            }
        }
        if !task.is_recurring() {
            return Ok(Step::Finished(Outcome::Skipped));
        }
        let (rule_text, mut zone_name) = match (&task.rule, &task.pattern_id) {
            (Some(rule), _) => (rule.clone(), task.timezone.clone()),
            (None, Some(id)) => {
                let pattern = match dir.pattern(id).await? {
                    Some(p) => p,
                    None => self.file_patterns.get(id).cloned().ok_or_else(|| {
                        WorkerError::permanent(format!(
                            "recurring_pattern_id {id:?} is not in the pattern directory"
                        ))
                    })?,
                };
                (pattern.rule, task.timezone.clone().or(pattern.timezone))
            }
            (None, None) => return Ok(Step::Finished(Outcome::Skipped)),
        };
        if zone_name.is_none() {
            if let Some(user) = event.user_id.as_deref() {
                zone_name = dir.user_zone(user).await?;
            }
        }
        let zone_name = zone_name.unwrap_or_else(|| "UTC".to_string());
        let rule =
            RecurrenceRule::parse(&rule_text, &zone_name).map_err(|e| reject(&rule_text, e))?;
        let zone = rule.zone();

        let series_id = task.series_id.clone().unwrap_or_else(|| task_id.clone());
        if view.is_ended(&dir, &series_id).await? {
            return Ok(Step::Finished(Outcome::Skipped));
        }
        let due_at = task.due_at.unwrap_or(event.occurred_at);
        let completed = Completed {
            local: task
                .anchor_local()
                .unwrap_or_else(|| zone::to_local(zone, due_at)),
            due_at,
            number: task.occurrence.unwrap_or(1),
        };
        let planned = match plan(&rule, &completed, ctx.now(), self.catch_up)
            .map_err(|e| reject(&rule_text, e))?
        {
            // No tombstone: an update that extends COUNT/UNTIL revives it.
            Plan::Ended => {
                metrics::series_ended(rule.kind().as_str(), "count_or_until");
                return Ok(Step::Finished(Outcome::Done));
            }
            Plan::Create(planned) => planned,
        };
        let last = view.last(&dir, &series_id).await?;
        let fresh: Vec<_> = planned.iter().filter(|p| p.number > last).collect();
        if fresh.len() < planned.len() {
            metrics::duplicates_suppressed(rule.kind(), planned.len() - fresh.len());
        }
        let Some(highest) = fresh.iter().map(|p| p.number).max() else {
            return Ok(Step::Finished(Outcome::Done));
        };
        view.set_planned(&series_id, highest);
        let events = fresh
            .iter()
            .map(|p| {
                NextOccurrence {
                    completion: event,
                    task: &task,
                    series_id: &series_id,
                    rule: &rule_text,
                    zone,
                    planned: **p,
                }
                .to_event()
            })
            .collect();
        Ok(Step::Publish {
            series_id,
            highest,
            kind: rule.kind(),
            events,
        })
    }

    /// Reads, in two `MGET`s, what the batch's task events will
    /// ask of the store: the task records, then their series' state.
    async fn prefetch(
        &self,
        events: &[Inbound],
        ctx: &Ctx,
        view: &mut BatchView,
    ) -> Result<(), WorkerError> {
        let dir = Directory::new(ctx.state());
        let tasks: Vec<&TaskEvent> = events
            .iter()
            .map(|i| &i.event)
            .filter(|e| {
                e.entity() == "task"
                    && match e.action() {
                        // `is_recurring: false`: the completion is skipped unread.
                        "completed" => !series::says_not_recurring(e),
                        "deleted" => true,
                        _ => e.task.as_ref().is_some_and(|t| t.recurrence.is_some()),
                    }
            })
            .collect();
        let ids = tasks.iter().filter_map(|e| e.task_id.clone()).collect();
        view.prefetch_tasks(&dir, ids).await?;
        let series = tasks
            .iter()
            .filter(|e| e.action() == "completed")
            .filter_map(|e| {
                let task_id = e.task_id.as_deref()?;
                let own = series::record_of(e);
                let known = view.known_task(task_id);
                let recurring = own.is_recurring() || known.is_some_and(|k| k.is_recurring());
                recurring.then(|| {
                    own.series_id
                        .or_else(|| known.and_then(|k| k.series_id.clone()))
                        .unwrap_or_else(|| task_id.to_string())
                })
            })
            .collect();
        view.prefetch_series(&dir, series).await
    }

    /// Publishes every planned occurrence of the batch at once; on failure,
    /// the index of the first step whose publish failed, and the error.
    async fn publish_all(&self, steps: &[Step], ctx: &Ctx) -> Option<(usize, WorkerError)> {
        let sends = steps.iter().enumerate().flat_map(|(i, step)| match step {
            Step::Publish { events, .. } => events
                .iter()
                .map(|e| {
                    let key = e.task_id.clone().unwrap_or_default();
                    let out = OutputEvent::new(self.output_topic.clone(), key, e.clone());
                    async move { (i, ctx.publish_event(&out).await) }
                })
                .collect::<Vec<_>>(),
            Step::Finished(_) => Vec::new(),
        });
        first_failure(futures::future::join_all(sends).await)
    }

    /// One event's state work, in partition order.
    async fn step(
        &self,
        event: &TaskEvent,
        ctx: &Ctx,
        view: &mut BatchView,
    ) -> Result<Step, WorkerError> {
        let outcome = match concern(event) {
            Concern::Completion => return self.completed(event, ctx, view).await,
            Concern::Deletion => self.deleted(event, ctx, view).await,
            Concern::Rule => self.remember(event, ctx, view).await,
            Concern::Pattern => self.pattern_event(event, ctx).await,
            Concern::User => self.user_event(event, ctx).await,
            Concern::None => Ok(Outcome::Skipped),
        }?;
        Ok(Step::Finished(outcome))
    }
}

/// What an event is to this worker, from the event alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Concern {
    /// A completion not marked `is_recurring: false` (its record may say
    /// it recurs).
    Completion,
    Deletion,
    /// A task event carrying a rule, or saying it no longer recurs.
    Rule,
    Pattern,
    User,
    /// Passed by untouched.
    None,
}

fn concern(event: &TaskEvent) -> Concern {
    match (event.entity(), event.action()) {
        ("task", "completed") if series::says_not_recurring(event) => Concern::None,
        ("task", "completed") => Concern::Completion,
        ("task", "deleted") => Concern::Deletion,
        ("task", _)
            if event.task.as_ref().is_some_and(|t| t.recurrence.is_some())
                || series::says_not_recurring(event) =>
        {
            Concern::Rule
        }
        ("task_template", _) => Concern::Pattern,
        ("user", "created" | "updated") => Concern::User,
        _ => Concern::None,
    }
}

/// What one event amounts to before publishing.
enum Step {
    Finished(Outcome),
    /// Publish `events` (occurrences up to `highest` of `series_id`), then
    /// record `highest` as published.
    Publish {
        series_id: String,
        highest: u32,
        kind: RuleKind,
        events: Vec<TaskEvent>,
    },
}

/// Records each published series' highest occurrence, all at once, in one
/// `MULTI`/`EXEC` (after the broker acknowledged them); on failure, the first
/// publishing step and the error.
async fn record_published(steps: &[Step], ctx: &Ctx) -> Option<(usize, WorkerError)> {
    let mut first = None;
    let mut ops = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if let Step::Publish {
            series_id, highest, ..
        } = step
        {
            first.get_or_insert(i);
            match directory::last_published_op(series_id, *highest) {
                Ok(op) => ops.push(op),
                Err(e) => return Some((i, e)),
            }
        }
    }
    let first = first?;
    ctx.state()
        .apply(&ops)
        .await
        .err()
        .map(|e| (first, e.into()))
}

/// The lowest step index whose result is an error.
fn first_failure(results: Vec<(usize, Result<(), WorkerError>)>) -> Option<(usize, WorkerError)> {
    results
        .into_iter()
        .filter_map(|(i, r)| r.err().map(|e| (i, e)))
        .min_by_key(|(i, _)| *i)
}

/// An unusable rule: counted, and dead-lettered with the reason.
fn reject(rule: &str, e: RuleError) -> WorkerError {
    metrics::rule_rejected(RuleKind::guess(rule));
    WorkerError::permanent(e)
}

#[async_trait]
impl Worker for RecurringWorker {
    fn name(&self) -> &'static str {
        "recurring"
    }

    fn topics(&self, config: &PipelineConfig) -> Vec<String> {
        default_topics(config)
    }

    /// Most events of a task stream are not about recurring tasks: those
    /// are passed by without the guard's claim and mark.
    fn needs_claim(&self, event: &TaskEvent) -> bool {
        concern(event) != Concern::None
    }

    async fn handle(&self, inbound: &Inbound, ctx: &Ctx) -> Result<Outcome, WorkerError> {
        let out = self.handle_batch(std::slice::from_ref(inbound), ctx).await;
        match (out.failure, out.outcomes.first()) {
            (Some(e), _) => Err(e),
            (None, Some(o)) => Ok(*o),
            (None, None) => Ok(Outcome::Skipped),
        }
    }

    /// State work runs event by event, in order, against the batch's view;
    /// the writes it collected are applied in one `MULTI`/`EXEC`; the batch's
    /// occurrences are then published together (the producer's acknowledgements overlap
    /// instead of costing a linger interval each), and only after their
    /// acknowledgement is an occurrence recorded as published. A publish
    /// failure stops the batch at that event: it and the events after it are
    /// retried, and what they publish again carries the same ids.
    async fn handle_batch(&self, events: &[Inbound], ctx: &Ctx) -> BatchOutcome {
        let mut view = BatchView::default();
        if let Err(e) = self.prefetch(events, ctx, &mut view).await {
            return BatchOutcome {
                outcomes: Vec::new(),
                failure: Some(e),
            };
        }
        let mut steps = Vec::with_capacity(events.len());
        let mut failure = None;
        for inbound in events {
            match self.step(&inbound.event, ctx, &mut view).await {
                Ok(step) => steps.push(step),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // The state writes of the steps taken, at once (replayed as a whole
        // if this fails: each write is the same again).
        let writes = view.take_writes();
        if !writes.is_empty() {
            if let Err(e) = ctx.state().apply(&writes).await {
                return BatchOutcome {
                    outcomes: Vec::new(),
                    failure: Some(e.into()),
                };
            }
        }
        if let Some((i, e)) = self.publish_all(&steps, ctx).await {
            steps.truncate(i);
            failure = Some(e);
        }
        if let Some((i, e)) = record_published(&steps, ctx).await {
            // Published but not recorded: the retry republishes the same
            // events (same ids).
            steps.truncate(i);
            failure = Some(e);
        }
        let outcomes = steps
            .iter()
            .map(|step| match step {
                Step::Finished(o) => *o,
                Step::Publish { kind, events, .. } => {
                    metrics::generated(*kind, events.len());
                    Outcome::Done
                }
            })
            .collect();
        BatchOutcome { outcomes, failure }
    }
}

/// The topics the worker reads unless `workers.recurring.topics` says otherwise.
pub fn default_topics(config: &PipelineConfig) -> Vec<String> {
    vec![
        config.topics.task_events.clone(),
        config.topics.user_events.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pipelines::event::{decode, DecodeContext};
    use pipelines::state::MemoryStore;

    use super::*;

    fn dec(json: &str) -> TaskEvent {
        decode(
            json.as_bytes(),
            &DecodeContext {
                topic: "task-events",
                kafka_timestamp_ms: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn only_events_about_recurring_tasks_are_claimed() {
        let w = worker(&[], "next_after_now");
        let plain = dec(
            r#"{"event_id":"a","event_type":"task.created","timestamp":"2026-11-20T10:00:00Z","data":{"task_id":1,"user_id":"u","title":"T"}}"#,
        );
        let ruled = dec(
            r#"{"event_id":"b","event_type":"task.created","timestamp":"2026-11-20T10:00:00Z","data":{"task_id":2,"user_id":"u","title":"T","recurrence":{"rule":"daily","timezone":"UTC"}}}"#,
        );
        let completed = dec(
            r#"{"event_id":"c","event_type":"task.completed","timestamp":"2026-11-20T10:00:00Z","data":{"task_id":3,"user_id":"u"}}"#,
        );
        let not_recurring = dec(
            r#"{"event_type":"completed","task_id":4,"user_id":"u","timestamp":"2026-11-20T10:00:00Z","task_data":{"title":"T","completed":true,"is_recurring":false}}"#,
        );
        let deleted = dec(
            r#"{"event_id":"d","event_type":"task.deleted","timestamp":"2026-11-20T10:00:00Z","data":{"task_id":5}}"#,
        );
        assert!(!w.needs_claim(&plain), "a task without a rule is passed by");
        assert!(w.needs_claim(&ruled));
        assert!(w.needs_claim(&completed), "its record may say it recurs");
        assert!(!w.needs_claim(&not_recurring));
        assert!(w.needs_claim(&deleted));
    }

    /// A context on the in-memory store and no producer: these tests look at
    /// what the worker decides, before anything is published.
    fn ctx() -> Ctx {
        Ctx::new(
            "recurring",
            Arc::new(MemoryStore::new("t:")),
            None,
            Arc::new(PipelineConfig::default()),
        )
    }

    fn worker(patterns: &[(&str, &str, Option<&str>)], catch_up: &str) -> RecurringWorker {
        let mut w = RecurringWorker::new(&RecurringConfig {
            catch_up: catch_up.into(),
            catch_up_cap: 3,
            ..RecurringConfig::default()
        })
        .unwrap();
        for (id, rule, tz) in patterns {
            w.file_patterns.insert(
                id.to_string(),
                Pattern {
                    rule: rule.to_string(),
                    timezone: tz.map(str::to_string),
                },
            );
        }
        w
    }

    async fn step(w: &RecurringWorker, ctx: &Ctx, view: &mut BatchView, json: &str) -> Step {
        w.step(&dec(json), ctx, view).await.unwrap()
    }

    fn due_times(step: &Step) -> Vec<String> {
        match step {
            Step::Publish { events, .. } => events
                .iter()
                .map(|e| e.task.as_ref().unwrap().due_at.unwrap().to_rfc3339())
                .collect(),
            Step::Finished(o) => vec![format!("{o:?}")],
        }
    }

    const BY_PATTERN: &str = r#"{"event_type":"completed","task_id":42,"user_id":"u1","timestamp":"2030-01-03T10:00:00Z","task_data":{"completed":true,"due_date":"2030-01-03T08:00:00Z","is_recurring":true,"recurring_pattern_id":7}}"#;

    #[tokio::test]
    async fn pattern_file_serves_ids_the_directory_lacks_and_template_events_win() {
        let w = worker(&[("7", "daily", Some("Europe/Berlin"))], "next_after_now");
        let ctx = ctx();
        let mut view = BatchView::default();
        let s = step(&w, &ctx, &mut view, BY_PATTERN).await;
        assert_eq!(due_times(&s), ["2030-01-04T08:00:00+00:00"]);
        // A template event for pattern 7 replaces the file's rule.
        let template = r#"{"event_type":"task_template_updated","user_id":"u1","timestamp":"2030-01-01T10:00:00Z","data":{"template_id":7,"recurrence":"FREQ=WEEKLY","timezone":"Europe/Berlin"}}"#;
        assert!(matches!(
            step(&w, &ctx, &mut view, template).await,
            Step::Finished(Outcome::Done)
        ));
        let s = step(&w, &ctx, &mut BatchView::default(), BY_PATTERN).await;
        assert_eq!(due_times(&s), ["2030-01-10T08:00:00+00:00"]);
    }

    #[tokio::test]
    async fn unknown_pattern_id_is_a_permanent_error_naming_it() {
        let w = worker(&[], "next_after_now");
        let e = w
            .step(&dec(BY_PATTERN), &ctx(), &mut BatchView::default())
            .await
            .err()
            .unwrap();
        assert!(
            matches!(e, WorkerError::Permanent(ref m) if m.contains("\"7\"")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_task_without_a_zone_takes_its_users_zone() {
        let w = worker(&[], "next_after_now");
        let ctx = ctx();
        let mut view = BatchView::default();
        let user = r#"{"event_type":"user_updated","user_id":"u9","timestamp":"2030-01-01T10:00:00Z","data":{"timezone":"America/New_York"}}"#;
        step(&w, &ctx, &mut view, user).await;
        // Due 09:00 in New York (14:00Z); daily keeps 09:00 New York time.
        let done = r#"{"event_id":"d1","event_type":"task.completed","timestamp":"2030-01-03T15:00:00Z","data":{"task_id":5,"user_id":"u9","due_date":"2030-01-03T14:00:00Z","recurrence":"daily"}}"#;
        let s = step(&w, &ctx, &mut view, done).await;
        assert_eq!(due_times(&s), ["2030-01-04T14:00:00+00:00"]);
    }

    #[tokio::test]
    async fn a_second_completion_of_the_same_series_publishes_nothing_new() {
        let w = worker(&[], "next_after_now");
        let ctx = ctx();
        let mut view = BatchView::default();
        let done = r#"{"event_id":"d1","event_type":"task.completed","timestamp":"2030-01-03T15:00:00Z","data":{"task_id":5,"due_date":"2030-01-03T14:00:00Z","recurrence":"daily"}}"#;
        assert_eq!(due_times(&step(&w, &ctx, &mut view, done).await).len(), 1);
        // The same completion again (a replayed dead letter, say), other event id.
        let again = done.replace("\"d1\"", "\"d2\"");
        assert!(matches!(
            step(&w, &ctx, &mut view, &again).await,
            Step::Finished(Outcome::Done)
        ));
    }

    #[tokio::test]
    async fn every_missed_creates_missed_occurrences_up_to_the_cap() {
        let w = worker(&[], "every_missed");
        // Due in 2020, completed now: far more than three missed; the cap is 3.
        let done = r#"{"event_id":"d1","event_type":"task.completed","timestamp":"2020-01-03T15:00:00Z","data":{"task_id":5,"due_date":"2020-01-03T09:00:00Z","recurrence":"daily"}}"#;
        let s = step(&w, &ctx(), &mut BatchView::default(), done).await;
        assert_eq!(
            due_times(&s),
            [
                "2020-01-04T09:00:00+00:00",
                "2020-01-05T09:00:00+00:00",
                "2020-01-06T09:00:00+00:00"
            ]
        );
    }

    #[tokio::test]
    async fn deleting_any_task_of_a_series_stops_it() {
        let w = worker(&[], "next_after_now");
        let ctx = ctx();
        let mut view = BatchView::default();
        let deleted = r#"{"event_id":"x","event_type":"task.deleted","timestamp":"2030-01-02T10:00:00Z","data":{"task_id":5}}"#;
        step(&w, &ctx, &mut view, deleted).await;
        let done = r#"{"event_id":"d1","event_type":"task.completed","timestamp":"2030-01-03T15:00:00Z","data":{"task_id":5,"due_date":"2030-01-03T14:00:00Z","recurrence":"daily"}}"#;
        assert!(matches!(
            step(&w, &ctx, &mut view, done).await,
            Step::Finished(Outcome::Skipped)
        ));
    }

    #[test]
    fn pattern_file_is_read_and_a_broken_one_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(pipelines::testing::unique("patterns"));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"7": {"rule": "daily", "timezone": "UTC"}}"#).unwrap();
        let w = RecurringWorker::new(&RecurringConfig {
            pattern_file: good.to_string_lossy().into_owned(),
            ..RecurringConfig::default()
        })
        .unwrap();
        assert_eq!(w.file_patterns["7"].rule, "daily");
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "[1, 2]").unwrap();
        let e = RecurringWorker::new(&RecurringConfig {
            pattern_file: bad.to_string_lossy().into_owned(),
            ..RecurringConfig::default()
        })
        .err()
        .unwrap();
        assert!(e.contains("bad.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
