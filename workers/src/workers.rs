//! The worker registry: names to instances, and `taskstream run`.

use std::sync::Arc;

use anyhow::{bail, Context};
use pipelines::{Runtime, Worker};
use tokio_util::sync::CancellationToken;

use crate::audit::{self, AuditWorker};
use crate::config::Config;
use crate::lagmon;

/// Every worker this binary can run, in `run all` order.
pub const NAMES: &[&str] = &["aggregates", "audit", "deadlines", "recurring", "reminders"];

/// The topics a worker reads unless `workers.<name>.topics` says otherwise,
/// known without building it (the lag monitor watches them).
pub fn default_topics(name: &str, config: &Config) -> Vec<String> {
    match name {
        "aggregates" => crate::aggregates::default_topics(&config.pipeline),
        "audit" => audit::default_topics(&config.pipeline),
        "deadlines" => crate::deadlines::worker::default_topics(&config.pipeline),
        "recurring" => crate::recurring::worker::default_topics(&config.pipeline),
        "reminders" => crate::reminders::worker::default_topics(&config.pipeline),
        _ => Vec::new(),
    }
}

/// Builds one worker by name.
pub async fn build(name: &str, config: &Config) -> anyhow::Result<Arc<dyn Worker>> {
    match name {
        "audit" => {
            let (store, kind) = audit::open_store(config, audit::Access::Write)
                .await
                .context("opening the audit store")?;
            Ok(Arc::new(AuditWorker::new(
                store,
                kind,
                config.audit.clone(),
            )))
        }
        "aggregates" => Ok(Arc::new(
            crate::aggregates::AggregatesWorker::new(&config.aggregates)
                .map_err(anyhow::Error::msg)?,
        )),
        "recurring" => Ok(Arc::new(
            crate::recurring::RecurringWorker::new(&config.recurring)
                .map_err(anyhow::Error::msg)?,
        )),
        "deadlines" => Ok(Arc::new(crate::deadlines::DeadlinesWorker::new(
            &config.deadlines,
        )?)),
        "reminders" => {
            let r = &config.reminders;
            let mailer =
                crate::reminders::mailer::Mailer::from_config(r, &config.pipeline.smtp.url)
                    .context("setting up reminder email")?;
            let webhook = crate::reminders::webhook::Webhook::from_config(r)
                .context("setting up the reminder webhook")?;
            Ok(Arc::new(crate::reminders::RemindersWorker::new(
                mailer,
                webhook,
                r.clone(),
            )))
        }
        other => bail!(
            "unknown worker {other:?}: expected one of {} or `all`",
            NAMES.join(", ")
        ),
    }
}

/// Expands `all` and rejects unknown or repeated names.
pub fn resolve(names: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let mut out: Vec<&'static str> = Vec::new();
    for n in names {
        if n == "all" {
            out.extend(NAMES.iter().copied());
            continue;
        }
        match NAMES.iter().find(|k| *k == n) {
            Some(k) => out.push(k),
            None => bail!(
                "unknown worker {n:?}: expected one of {} or `all`",
                NAMES.join(", ")
            ),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `taskstream run`: runs the named workers until `shutdown`.
pub async fn run(
    config: &Config,
    names: &[String],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The lag monitor is not a consumer-group worker: it runs beside them.
    let lag_monitor = names.iter().any(|n| n == lagmon::NAME);
    let names: Vec<String> = names
        .iter()
        .filter(|n| *n != lagmon::NAME)
        .cloned()
        .collect();
    if names.is_empty() && lag_monitor {
        return lagmon::service::run_alone(config, shutdown).await;
    }
    let names = resolve(&names)?;
    let rt = Runtime::new(config.pipeline.clone(), shutdown)
        .await
        .context("starting the pipeline")?;
    let mut workers = Vec::new();
    for n in &names {
        workers.push(build(n, config).await?);
    }
    let http = rt.serve_http_for(&workers);
    let monitor = lag_monitor.then(|| {
        let (config, health, shutdown) = (config.clone(), rt.health.clone(), rt.shutdown.clone());
        tokio::spawn(async move { lagmon::service::run(&config, &health, shutdown).await })
    });
    tracing::info!(workers = ?names, lag_monitor, "taskstream running");
    let result = rt.run(workers).await;
    if let Some(m) = monitor {
        rt.shutdown.cancel();
        m.await.context("the lag monitor panicked")??;
    }
    if let Some(h) = http {
        let _ = h.await;
    }
    result.context("a worker failed")?;
    tracing::info!("taskstream stopped cleanly");
    Ok(())
}
