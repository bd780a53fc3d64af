//! `taskstream bench --worker NAME`: which subject each name measures.

use std::sync::Arc;

use anyhow::{bail, Context};
use pipelines::bench::{BenchReport, BenchSpec, NoopWorker, Subject};

use crate::audit::{file_store::FileStore, pg_store::PgStore, AuditWorker};
use crate::config::Config;

/// Runs the benchmark of `worker` (`baseline`, `pipeline`, `aggregates`,
/// `audit`, `recurring`).
pub async fn run(
    config: &Config,
    worker: &str,
    events: u64,
    partitions: i32,
    redis_url: Option<String>,
    database_url: Option<String>,
    store: &str,
) -> anyhow::Result<BenchReport> {
    if events == 0 {
        bail!("--events has value 0: expected a whole number above zero");
    }
    if partitions <= 0 {
        bail!("--partitions has value {partitions}: expected a whole number above zero");
    }
    let subject = match worker {
        "baseline" => Subject::Baseline,
        "pipeline" => Subject::Worker(Arc::new(NoopWorker)),
        "aggregates" => Subject::Worker(Arc::new(
            crate::aggregates::AggregatesWorker::new(&config.aggregates)
                .map_err(anyhow::Error::msg)?,
        )),
        "audit" if store == "files" => {
            let dir = std::env::temp_dir().join(pipelines::testing::unique("bench-audit-files"));
            let file_store =
                Arc::new(FileStore::open(&dir).context("opening the audit file store")?);
            let worker = AuditWorker::new(file_store, "file", config.audit.clone());
            let report = pipelines::bench::run(
                spec(config, events, partitions, redis_url),
                Subject::Worker(Arc::new(worker)),
            )
            .await;
            std::fs::remove_dir_all(&dir).ok();
            return report.map_err(Into::into);
        }
        "audit" if store != "postgres" => {
            bail!("--store has value {store:?}: expected postgres or files")
        }
        "audit" => {
            let url = database_url
                .or_else(|| std::env::var("DATABASE_URL").ok())
                .unwrap_or_else(|| {
                    "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".into()
                });
            let schema = pipelines::testing::unique("bench_audit").replace('-', "_");
            let store = PgStore::connect_with_schema(&url, config.audit.pool_size, &schema)
                .await
                .context("connecting to PostgreSQL for the audit benchmark")?;
            let store = Arc::new(store);
            let worker = AuditWorker::new(store.clone(), "postgres", config.audit.clone());
            let report = pipelines::bench::run(
                spec(config, events, partitions, redis_url),
                Subject::Worker(Arc::new(worker)),
            )
            .await;
            store.drop_schema().await.ok();
            return report.map_err(Into::into);
        }
        "recurring" => {
            let mut recurring = config.recurring.clone();
            // Its own output topic: occurrences must not be counted as input.
            recurring.output_topic = "bench-recurring-out".into();
            let worker =
                crate::recurring::RecurringWorker::new(&recurring).map_err(anyhow::Error::msg)?;
            let mut spec = spec(config, events, partitions, redis_url);
            spec.sample = crate::recurring::bench_events::sample_event;
            return Ok(pipelines::bench::run(spec, Subject::Worker(Arc::new(worker))).await?);
        }
        other => {
            bail!("--worker has value {other:?}: expected baseline, pipeline, aggregates, audit or recurring")
        }
    };
    Ok(pipelines::bench::run(spec(config, events, partitions, redis_url), subject).await?)
}

fn spec(config: &Config, events: u64, partitions: i32, redis_url: Option<String>) -> BenchSpec {
    BenchSpec {
        events,
        partitions,
        redis_url,
        config: config.pipeline.clone(),
        sample: pipelines::bench::sample_event,
    }
}
