//! `taskstream demo`: the main job end to end on embedded defaults.
//!
//! Starts an in-process mock Kafka cluster, uses the in-memory state store and
//! the file audit store, produces one message of every dialect the design
//! documents show (plus a re-sent duplicate, a truncated poison message and an
//! unknown event type), runs the workers until everything is handled, and shows
//! what happened: the audit trail, its verification, the compliance report and
//! the dead letter. `<out>/audit` is recreated on every run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pipelines::kafka::mock::MockKafka;
use pipelines::testing::{read_topic, TestProducer};
use pipelines::{Runtime, Worker};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, AuditQuery, AuditWorker};
use crate::config::Config;

/// The demo's input: every seed dialect, one duplicate, one poison, one unknown.
pub const EVENTS: &str = include_str!("../../config/demo/events.jsonl");

#[derive(Deserialize)]
struct DemoMessage {
    topic: String,
    key: String,
    /// A JSON object is sent as its JSON text; a string is sent verbatim
    /// (that is how the demo sends a broken message).
    #[serde(default)]
    message: Option<serde_json::Value>,
    /// Or the name of a seed example (`pipelines::event::fixtures`), sent
    /// as its JSON text.
    #[serde(default)]
    seed: Option<String>,
}

/// Parses [`EVENTS`] into (topic, key, payload).
pub fn messages() -> anyhow::Result<Vec<(String, String, Vec<u8>)>> {
    EVENTS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let at = || format!("config/demo/events.jsonl line {}", i + 1);
            let m: DemoMessage = serde_json::from_str(line).with_context(at)?;
            let message = match (m.message, m.seed) {
                (Some(message), None) => message,
                (None, Some(name)) => {
                    let text = pipelines::event::fixtures::seed(&name)
                        .with_context(|| format!("{}: no seed example named \"{name}\"", at()))?;
                    serde_json::from_str(text).with_context(at)?
                }
                _ => bail!("{}: needs one of \"message\" and \"seed\"", at()),
            };
            let payload = match message {
                serde_json::Value::String(s) => s.into_bytes(),
                other => serde_json::to_vec(&other)?,
            };
            Ok((m.topic, m.key, payload))
        })
        .collect()
}

pub async fn run(mut config: Config, out: &Path) -> anyhow::Result<()> {
    let mock = MockKafka::start(1)?;
    let bootstrap = mock.bootstrap_servers().to_string();
    for topic in audit::default_topics(&config.pipeline) {
        mock.create_topic(&topic, 3)?;
    }
    let t = &config.pipeline.topics;
    mock.create_topic(&t.analytics_events, 3)?;
    mock.create_topic(&t.task_metrics, 1)?;
    // Windows close once every partition is quiet for a second (the
    // demo's input ends; nothing else would move the watermark).
    config.aggregates.idle_timeout = Duration::from_secs(1);
    let audit_dir = out.join("audit");
    if audit_dir.exists() {
        std::fs::remove_dir_all(&audit_dir)
            .with_context(|| format!("cannot clear {}", audit_dir.display()))?;
    }
    config.pipeline.kafka.bootstrap_servers = bootstrap.clone();
    config.pipeline.kafka.properties.clear();
    config.pipeline.redis.url = "memory:".into();
    config.pipeline.database.url.clear();
    config.audit.store = "file".into();
    config.audit.dir = audit_dir.to_string_lossy().into_owned();
    let mail_dir = out.join("mail");
    if mail_dir.exists() {
        std::fs::remove_dir_all(&mail_dir)
            .with_context(|| format!("cannot clear {}", mail_dir.display()))?;
    }
    config.reminders.mail_dir = mail_dir.to_string_lossy().into_owned();

    let mut messages = messages()?;
    let recurring_messages = crate::recurring::demo::messages()?;
    messages.extend(recurring_messages.iter().cloned());
    let aggregate_messages = crate::aggregates::demo::messages(
        &config.pipeline.topics.task_events,
        &config.pipeline.topics.analytics_events,
    );
    let audited_aggregate_messages = aggregate_messages
        .iter()
        .filter(|(topic, _, _)| *topic == config.pipeline.topics.task_events)
        .count();
    messages.extend(aggregate_messages);
    messages.extend(crate::deadlines::demo::messages(
        &config.pipeline.topics.task_events,
        chrono::Utc::now(),
    ));
    let reminder_user = crate::reminders::demo::user_messages(chrono::Utc::now());
    messages.extend(reminder_user.iter().cloned());
    println!("taskstream demo");
    println!(
        "  mock Kafka at {bootstrap}; state store: in-memory; audit store: {}",
        audit_dir.display()
    );
    let producer = TestProducer::new(&bootstrap)?;
    for (topic, key, payload) in &messages {
        producer.send(topic, key.as_bytes(), payload)?;
    }
    producer.flush()?;
    println!(
        "  produced {} messages in every dialect of the design documents",
        messages.len()
    );

    let (store, kind) = audit::open_store(&config, audit::Access::Write).await?;
    let worker: Arc<dyn Worker> =
        Arc::new(AuditWorker::new(store.clone(), kind, config.audit.clone()));
    let shutdown = CancellationToken::new();
    let rt = Runtime::new(config.pipeline.clone(), shutdown.clone()).await?;
    let metrics = pipelines::metrics::install();
    let recurring: Arc<dyn Worker> = Arc::new(
        crate::recurring::RecurringWorker::new(&config.recurring).map_err(anyhow::Error::msg)?,
    );
    let aggregates: Arc<dyn Worker> = Arc::new(
        crate::aggregates::AggregatesWorker::new(&config.aggregates).map_err(anyhow::Error::msg)?,
    );
    let deadlines: Arc<dyn Worker> =
        Arc::new(crate::deadlines::DeadlinesWorker::new(&config.deadlines)?);
    let reminders = crate::workers::build("reminders", &config).await?;
    let run = tokio::spawn(async move {
        rt.run(vec![worker, recurring, aggregates, deadlines, reminders])
            .await
    });

    // Each recurring completion is audited, and so is the occurrence it creates.
    // The aggregates demo's task events are audited too, and the reminders' user.
    let expected_records =
        16 + 2 * recurring_messages.len() + audited_aggregate_messages + reminder_user.len();
    let dlq_topic = format!("task-events{}", config.pipeline.pipeline.dlq_suffix);
    let records = audit_trail(
        store.as_ref(),
        expected_records,
        Duration::ZERO,
        &run,
        &shutdown,
    )
    .await?;
    let dead = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || read_topic(&bootstrap, &dlq_topic, 1, Duration::from_secs(20))
    })
    .await??;
    // Everything is consumed now: reminders due a second or two from now.
    let (reminder_messages, emails) = crate::reminders::demo::reminder_messages(chrono::Utc::now());
    for (topic, key, payload) in &reminder_messages {
        producer.send(topic, key.as_bytes(), payload)?;
    }
    producer.flush()?;
    println!(
        "  produced {} reminder requests and tasks due in about two seconds",
        reminder_messages.len()
    );
    let mail = if config.pipeline.smtp.url.is_empty() {
        tokio::task::spawn_blocking({
            let dir = mail_dir.clone();
            move || crate::reminders::demo::wait_for_mail(&dir, emails, Duration::from_secs(30))
        })
        .await?
    } else {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Vec::new()
    };
    // The demo's six minutes, 09:00 to 09:05: the minutes up to 09:04 close
    // (the watermark is the newest event minus the minute of lateness).
    let windows = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        let topic = config.pipeline.topics.task_metrics.clone();
        move || crate::aggregates::demo::published(&bootstrap, &topic, 4, Duration::from_secs(20))
    })
    .await??;
    let announcements = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        let topic = config.deadlines.output_topic.clone();
        move || {
            crate::deadlines::demo::published(&bootstrap, &topic, crate::deadlines::demo::EXPECTED)
        }
    })
    .await??;
    // The workers' own output is audited too (the deadline announcements,
    // the reminders' tasks and notifications) and arrives at its own pace:
    // the trail is read again once it holds the announcements and has
    // stopped growing, so that every run prints the same trail.
    let records = audit_trail(
        store.as_ref(),
        records.len() + announcements.len(),
        Duration::from_secs(2),
        &run,
        &shutdown,
    )
    .await?;
    // Let the last offsets commit, then stop the way SIGTERM would.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    shutdown.cancel();
    run.await??;

    println!("\naudit trail ({} records):", records.len());
    let stdout = std::io::stdout();
    audit::cli::write_records(&mut stdout.lock(), &records, audit::cli::Format::Table)?;
    println!("\naudit verify:");
    audit::cli::verify(store.as_ref()).await?;
    println!("\ncompliance report (all time):");
    let from = chrono::DateTime::<chrono::Utc>::MIN_UTC;
    let to = chrono::Utc::now() + chrono::Duration::days(1);
    audit::cli::write_report(&mut stdout.lock(), &store.report(from, to).await?)?;
    let occurrences = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        let topic = config.recurring.output_topic.clone();
        let n = recurring_messages.len();
        move || crate::recurring::demo::published(&bootstrap, &topic, n)
    })
    .await??;
    crate::recurring::demo::print(&occurrences);
    tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        let topic = config.pipeline.topics.notification_events.clone();
        move || crate::reminders::demo::print(&mail, &bootstrap, &topic, emails)
    })
    .await?;
    crate::aggregates::demo::print(&windows);
    crate::deadlines::demo::print(&announcements);
    println!("\ndead letters:");
    for m in &dead {
        println!(
            "  task-events{} offset {}: {} (error: {})",
            config.pipeline.pipeline.dlq_suffix,
            m.offset,
            String::from_utf8_lossy(&m.payload),
            m.header("error").unwrap_or("?")
        );
    }
    let rendered = metrics.render();
    let count = |outcome: &str| -> u64 {
        rendered
            .lines()
            .filter(|l| {
                l.starts_with(pipelines::metrics::HANDLED)
                    && l.contains("worker=\"audit\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    println!(
        "\nsummary: {} messages -> {} audit records, {} duplicate skipped, {} unknown type skipped, {} dead-lettered",
        messages.len(),
        records.len(),
        count("duplicate"),
        count("skipped"),
        dead.len()
    );
    println!(
        "audit files are in {0}; read them back with `TASKSTREAM_AUDIT__DIR={0} taskstream audit query` (or `audit verify`)",
        audit_dir.display()
    );
    if config.pipeline.smtp.url.is_empty() {
        println!("reminder email is in {}", mail_dir.display());
    }
    drop(mock);
    Ok(())
}

/// The audit trail once it holds at least `at_least` records and has not
/// grown for `quiet`; an error after 60 s, or if the workers stopped.
async fn audit_trail<T>(
    store: &dyn audit::AuditStore,
    at_least: usize,
    quiet: Duration,
    run: &tokio::task::JoinHandle<T>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<audit::AuditRecord<'static>>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = store.query(&AuditQuery::default()).await?;
    let mut since = Instant::now();
    while records.len() < at_least || since.elapsed() < quiet {
        if Instant::now() > deadline || run.is_finished() {
            shutdown.cancel();
            bail!(
                "demo: {} of {at_least} audit records, or still growing, after 60 s",
                records.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = store.query(&AuditQuery::default()).await?;
        if now.len() != records.len() {
            records = now;
            since = Instant::now();
        }
    }
    Ok(records)
}
