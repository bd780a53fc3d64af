//! `taskstream`: the single binary. See `taskstream --help` and the README.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use pipelines::event::{decode, is_known_type, DecodeContext};
use taskstream::audit::{self, cli::Format, AuditQuery};
use taskstream::config::Config;
use taskstream::{bench, demo, lagmon, recurring, workers};

#[derive(Parser)]
#[command(
    name = "taskstream",
    version,
    about = "Kafka consumer-group workers for task events"
)]
struct Cli {
    /// Config file (TOML). Falls back to TASKSTREAM_CONFIG, then built-in defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run workers in this process until SIGINT/SIGTERM (`all` = every worker;
    /// `lag-monitor` = the lag monitor, alone or beside workers).
    Run {
        #[arg(required = true, value_name = "WORKER")]
        workers: Vec<String>,
    },
    /// Decode raw messages (one per stdin line) into canonical events (JSON lines).
    Decode {
        /// The topic the messages came from (a hint for topic-specific shapes).
        #[arg(long, default_value = "task-events")]
        topic: String,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Measure a worker on an in-process mock Kafka cluster and a real Redis.
    Bench {
        /// `baseline`, `pipeline`, or a worker name.
        #[arg(long, default_value = "pipeline")]
        worker: String,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Partitions of the topic (default 6); with `lag-monitor`, of each
        /// group's topic (default 100).
        #[arg(long)]
        partitions: Option<i32>,
        /// `deadlines` only: tasks crossing a threshold at once (`--events`
        /// is the number of tasks indexed).
        #[arg(long, default_value_t = 10_000)]
        burst: u64,
        /// `lag-monitor` only: consumer groups, each on its own topic.
        #[arg(long, default_value_t = 50)]
        groups: usize,
        /// Redis to use; default: start a throwaway redis-server.
        #[arg(long)]
        redis_url: Option<String>,
        /// PostgreSQL for `--worker audit` (default: DATABASE_URL, then the
        /// local server postgres://postgres@127.0.0.1:5432/test?sslmode=disable,
        /// as TLS on loopback would only measure the encryption).
        #[arg(long)]
        database_url: Option<String>,
        /// `audit` only: `postgres` (default) or `files` (the embedded file
        /// store, in a temporary directory).
        #[arg(long, default_value = "postgres")]
        store: String,
        /// `aggregates` only: events per second of event time (`occurred_at`)
        /// in the stream, as a live stream carries them; 1 spaces them a
        /// second apart, as a replay of history (a backfill) does.
        #[arg(long, default_value_t = 1_000)]
        event_rate: u64,
    },
    /// Run a standalone mock Kafka cluster; prints its bootstrap address first.
    DevKafka {
        /// Topics to create, `name[:partitions]`, comma-separated (default: every
        /// configured topic, 3 partitions each).
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        #[arg(long, default_value_t = 1)]
        brokers: i32,
    },
    /// Run the main job end to end on embedded defaults (mock Kafka, in-memory
    /// state, file audit store) with sample events from every dialect.
    Demo {
        /// Where the demo writes its audit trail.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
    },
    /// Consumer lag of every worker's group (or each --group), read from
    /// Kafka now: committed offset, high watermark, lag, lag seconds, status.
    Lag {
        /// A consumer group id (repeatable); default: every configured worker's group.
        #[arg(long = "group", value_name = "G")]
        groups: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: lagmon::cli::Format,
        /// Reads to judge the status on (a status needs more than one look).
        #[arg(long, default_value_t = 2)]
        samples: usize,
        /// Pause between reads; default: twice kafka.commit_interval, at least 1s.
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<std::time::Duration>,
    },
    /// Read the audit trail back.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Window raw messages (one per stdin line) as the aggregates worker
    /// does; one JSON line per window as it closes, then a summary.
    Aggregate {
        /// Window size (`1m`, `1h`, `1d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        /// How far behind the newest event an event may be.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
        lateness: std::time::Duration,
        /// The topic the messages came from (a hint for topic-specific shapes).
        #[arg(long, default_value = "task-events")]
        topic: String,
        /// One line per window and key of `type`, `project` or `priority`
        /// (default: one line per window over every event).
        #[arg(long)]
        dimension: Option<String>,
    },
    /// Recurrence rules: check one with the worker's own engine.
    Recurrence {
        #[command(subcommand)]
        command: RecurrenceCommand,
    },
}

#[derive(Subcommand)]
enum RecurrenceCommand {
    /// Print the next occurrences of a rule, one RFC 3339 UTC instant per line.
    Next {
        /// `RRULE:...`, a cron expression (5 or 6 fields), or a simple pattern
        /// (`daily`, or JSON such as {"frequency":"weekly","weekdays":["mon"]}).
        #[arg(long)]
        rule: String,
        /// The series' first occurrence, local time (2026-03-30T09:00:00).
        #[arg(long)]
        dtstart: String,
        /// IANA time zone of the rule (Europe/Berlin).
        #[arg(long)]
        tz: String,
        /// Occurrences strictly after this instant (RFC 3339); default now.
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config (the global `--config FILE`) and print the effective
    /// config, secrets masked.
    Check,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Records by task, user, type and time range.
    Query {
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// Canonical type, e.g. task.updated.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// occurred_at >= FROM (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// occurred_at < TO.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Check the hash chain; exit code 1 and the first broken record if tampered.
    Verify,
    /// Per-user activity summary (counts by operation) as CSV.
    Report {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli_path: &Option<PathBuf>) -> anyhow::Result<Config> {
    Config::load(cli_path.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { workers: names } => {
            let config = load_config(&cli.config)?;
            pipelines::telemetry::init(&config.pipeline.log);
            let shutdown = pipelines::shutdown::on_signals();
            workers::run(&config, &names, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Decode { topic } => {
            decode_stdin(&topic)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = load_config(&cli.config)?;
            let text = toml::to_string_pretty(&config.redacted())
                .context("cannot render the effective config")?;
            println!("# effective configuration (secrets masked)\n{text}");
            eprintln!("config ok");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            worker,
            events,
            partitions,
            groups,
            burst,
            redis_url,
            database_url,
            store,
            event_rate,
        } => {
            let config = load_config(&cli.config)?;
            if worker == "deadlines" {
                pipelines::telemetry::init(&pipelines::config::LogConfig {
                    level: "error".into(),
                    ..config.pipeline.log.clone()
                });
                let report =
                    taskstream::deadlines::bench::run(&config, events, burst, redis_url).await?;
                println!("{}", serde_json::to_string(&report)?);
                return Ok(ExitCode::SUCCESS);
            }
            if worker == lagmon::NAME {
                pipelines::telemetry::init(&pipelines::config::LogConfig {
                    level: "error".into(),
                    ..config.pipeline.log.clone()
                });
                let report = lagmon::bench::run(&config, groups, partitions.unwrap_or(100)).await?;
                println!("{}", serde_json::to_string(&report)?);
                return Ok(ExitCode::SUCCESS);
            }
            let partitions = partitions.unwrap_or(6);
            pipelines::telemetry::init(&pipelines::config::LogConfig {
                level: "warn".into(),
                ..config.pipeline.log.clone()
            });
            if worker == "reminders" {
                let report = taskstream::reminders::bench::run(
                    &config,
                    cli.config.as_deref(),
                    events,
                    partitions,
                    redis_url,
                )
                .await?;
                println!("{}", serde_json::to_string(&report)?);
                return Ok(ExitCode::SUCCESS);
            }
            let report = bench::run(
                &config,
                cli.config.as_deref(),
                &worker,
                events,
                partitions,
                redis_url,
                database_url,
                &store,
                event_rate,
            )
            .await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::DevKafka { topics, brokers } => {
            let config = load_config(&cli.config)?;
            dev_kafka(&config, &topics, brokers).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { out } => {
            let config = load_config(&cli.config)?;
            pipelines::telemetry::init(&pipelines::config::LogConfig {
                level: "warn".into(),
                ..config.pipeline.log.clone()
            });
            demo::run(config, &out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Aggregate {
            window,
            lateness,
            topic,
            dimension,
        } => {
            use taskstream::aggregates::dimension::Dimension;
            if window.as_millis() < 1000 {
                bail!("--window has value {window:?}: expected at least 1s");
            }
            let dimension = match dimension.as_deref() {
                None => None,
                Some(d) => Some(Dimension::parse(d).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--dimension has value {d:?}: expected type, project or priority"
                    )
                })?),
            };
            let config = load_config(&cli.config)?;
            let name = humantime::format_duration(window).to_string();
            let opts = taskstream::aggregates::cli::Options {
                spec: taskstream::aggregates::window::WindowSpec::new(&name, window),
                lateness_ms: i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX),
                topic,
                dimension,
                max_keys: config.aggregates.max_keys,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            taskstream::aggregates::cli::aggregate(std::io::stdin().lock(), &mut out, &opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Recurrence {
            command:
                RecurrenceCommand::Next {
                    rule,
                    dtstart,
                    tz,
                    after,
                    count,
                },
        } => {
            let now = chrono::Utc::now();
            match recurring::cli::next(&rule, &dtstart, &tz, after.as_deref(), count, now) {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Lag {
            groups,
            format,
            samples,
            every,
        } => {
            let config = load_config(&cli.config)?;
            pipelines::telemetry::init(&pipelines::config::LogConfig {
                level: "warn".into(),
                ..config.pipeline.log.clone()
            });
            let every = every.unwrap_or_else(|| {
                (config.pipeline.kafka.commit_interval * 2).max(std::time::Duration::from_secs(1))
            });
            lagmon::cli::lag(&config, &groups, format, samples, every).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => {
            let config = load_config(&cli.config)?;
            let (store, _) = audit::open_store(&config, audit::Access::Read).await?;
            match command {
                AuditCommand::Query {
                    task,
                    user,
                    event_type,
                    from,
                    to,
                    limit,
                    format,
                } => {
                    let q = AuditQuery {
                        task_id: task,
                        user_id: user,
                        event_type,
                        from: from
                            .map(|f| audit::cli::parse_time("--from", &f))
                            .transpose()
                            .map_err(anyhow::Error::msg)?,
                        to: to
                            .map(|t| audit::cli::parse_time("--to", &t))
                            .transpose()
                            .map_err(anyhow::Error::msg)?,
                        limit,
                    };
                    audit::cli::query(store.as_ref(), &q, format).await?;
                    Ok(ExitCode::SUCCESS)
                }
                AuditCommand::Verify => {
                    let (ok, _) = audit::cli::verify(store.as_ref()).await?;
                    Ok(if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    })
                }
                AuditCommand::Report { from, to } => {
                    let from =
                        audit::cli::parse_time("--from", &from).map_err(anyhow::Error::msg)?;
                    let to = audit::cli::parse_time("--to", &to).map_err(anyhow::Error::msg)?;
                    if to <= from {
                        bail!("--to ({to}) must be after --from ({from})");
                    }
                    audit::cli::report(store.as_ref(), from, to).await?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

/// One canonical event (or error object) per input line. Per-line errors keep
/// exit code 0: the output says which line failed and why.
fn decode_stdin(topic: &str) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (n, line) in stdin.lock().split(b'\n').enumerate() {
        let line = line.context("reading stdin")?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let ctx = DecodeContext {
            topic,
            kafka_timestamp_ms: None,
        };
        let value = match decode(line, &ctx) {
            Ok(event) if is_known_type(&event.kind) => serde_json::to_value(&event)?,
            Ok(event) => serde_json::json!({
                "line": n + 1,
                "error": format!("unknown event type {:?}: it would be counted and skipped", event.kind),
                "reason": "unknown_type",
                "event": event,
            }),
            Err(e) => serde_json::json!({
                "line": n + 1,
                "error": e.to_string(),
                "reason": e.reason(),
            }),
        };
        serde_json::to_writer(&mut out, &value)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

async fn dev_kafka(config: &Config, topics: &[String], brokers: i32) -> anyhow::Result<()> {
    let mock = pipelines::kafka::mock::MockKafka::start(brokers)?;
    let t = &config.pipeline.topics;
    let topics: Vec<String> = if topics.is_empty() {
        [
            &t.task_events,
            &t.user_events,
            &t.project_events,
            &t.reminders,
            &t.schedule_events,
            &t.notification_events,
            &t.analytics_events,
            &t.task_metrics,
        ]
        .iter()
        .map(|s| format!("{s}:3"))
        .collect()
    } else {
        topics.to_vec()
    };
    for spec in &topics {
        let (name, partitions) = match spec.split_once(':') {
            Some((n, p)) => (
                n,
                p.parse::<i32>().ok().filter(|p| *p > 0).with_context(|| {
                    format!("--topics {spec:?}: partitions must be a whole number above zero")
                })?,
            ),
            None => (spec.as_str(), 3),
        };
        mock.create_topic(name, partitions)?;
    }
    println!("{}", mock.bootstrap_servers());
    std::io::stdout().flush()?;
    eprintln!(
        "mock Kafka cluster with {brokers} broker(s), topics: {}; Ctrl-C to stop",
        topics.join(", ")
    );
    pipelines::shutdown::on_signals().cancelled().await;
    drop(mock);
    Ok(())
}

/// glibc's allocator spent ~15% of the pipeline's CPU in malloc/free under the
/// many small, cross-thread allocations of decoding; mimalloc is much cheaper.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` and `mi_option_allow_thp` in mimalloc 3's
/// `mi_option_t` (mimalloc.h).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 43;

/// How long freed pages are kept before they go back to the OS (mimalloc's
/// own default is 1 s).
const PURGE_DELAY_MS: std::ffi::c_long = 50;

extern "C" {
    // mimalloc's own, linked by the `mimalloc` crate.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// Memory goes back to the OS sooner, in small pages, so a worker's
/// resident set follows what it holds.
///
/// - Transparent huge pages off for the process: mimalloc advises its
///   regions as huge where the kernel allows it (`madvise` mode, as on
///   Debian), and each purge of part of a 2 MB huge page is paid again as a
///   2 MB page zeroed at the next fault, and as resident memory in between.
/// - Freed pages purged after 50 ms instead of 1 s: a second of a busy
///   worker's freed batches is no longer held.
///
/// Measured (release, one machine; the README's "Benchmarks"): peak RSS of
/// the reminders bench's worker 143–160 MB before, 103–124 MB with huge
/// pages off, 84 MB with both; the audit file store at 1,000,000 events
/// 155–172, 101–119 and 86–92 MB, and at 10,000,000 events 183, 121–128
/// and 91 MB (only both keep the two within 10%). The recurring bench ran
/// at the same rate with a 50 ms or a 1 s delay once huge pages were off
/// (three runs each, 105–107k events/s).
/// `MIMALLOC_PURGE_DELAY` and `MIMALLOC_ALLOW_THP` in the environment still
/// decide when set.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mimalloc's options may be set at any time, from any thread.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // mimalloc reads this option when it starts (before `main`): new
        // regions are no longer advised as huge, and the process (and its
        // children) stops getting huge pages at its next faults.
        // SAFETY: as above; prctl with these arguments only sets a flag of
        // this process.
        unsafe {
            mi_option_set(MI_OPTION_ALLOW_THP, 0);
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::*;

    #[test]
    fn memory_goes_back_sooner_in_small_pages() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
            || std::env::var_os("MIMALLOC_ALLOW_THP").is_some()
        {
            return; // the environment decides; nothing of ours to check
        }
        // SAFETY (every call): reading an option or the process's THP flag.
        // mimalloc 3's own defaults on Linux (1000 ms, huge pages allowed):
        // the indices name the right options.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        assert_eq!(unsafe { mi_option_get(MI_OPTION_ALLOW_THP) }, 1);
        tune_allocator();
        assert_eq!(
            unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) },
            PURGE_DELAY_MS
        );
        assert_eq!(unsafe { mi_option_get(MI_OPTION_ALLOW_THP) }, 0);
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
            1
        );
    }
}
