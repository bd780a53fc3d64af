//! `taskstream lag`: the monitor's verdict from a few reads, printed once.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use super::collect::Collector;
use super::monitor::{Monitor, PartitionReport};
use super::service::settings;
use super::watch::watched_groups;
use crate::config::Config;

/// Output format of `taskstream lag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Reads `samples` times, `every` apart (a status needs more than one look:
/// a single read cannot tell a stalled group from one between two commits),
/// and prints the last verdict.
pub async fn lag(
    config: &Config,
    groups: &[String],
    format: Format,
    samples: usize,
    every: Duration,
) -> anyhow::Result<()> {
    let watched = watched_groups(config, groups);
    let samples = samples.max(1);
    let mut s = settings(config);
    s.rules.min_observations = s.rules.min_observations.min(samples.max(2));
    let kafka = config.pipeline.kafka.clone();
    let lag_cfg = config.lag_monitor.clone();
    let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<PartitionReport>> {
        let mut collector = Collector::new(&kafka, &lag_cfg)?;
        let mut monitor = Monitor::new(s);
        let mut last = Vec::new();
        for i in 0..samples {
            if i > 0 {
                std::thread::sleep(every);
            }
            let c = collector
                .collect(&watched, &monitor, Utc::now)
                .context("reading consumer group offsets")?;
            last = monitor.observe(&c);
        }
        Ok(last.into_iter().flat_map(|g| g.partitions).collect())
    })
    .await
    .context("the lag read panicked")??;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        Format::Json => {
            for r in &rows {
                serde_json::to_writer(&mut out, r)?;
                writeln!(out)?;
            }
        }
        Format::Table => write_table(&mut out, &rows)?,
    }
    out.flush()?;
    Ok(())
}

fn write_table(out: &mut impl Write, rows: &[PartitionReport]) -> std::io::Result<()> {
    let header = [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "HIGH",
        "LAG",
        "LAG_SECONDS",
        "STATUS",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let dash = || "-".to_string();
            [
                r.group.clone(),
                r.topic.clone(),
                r.partition.to_string(),
                r.committed.map_or_else(dash, |c| c.to_string()),
                r.high_watermark.to_string(),
                r.lag.map_or_else(dash, |l| l.to_string()),
                r.lag_seconds.map_or_else(dash, |s| format!("{s:.1}")),
                match (r.status, r.data_loss) {
                    (None, _) => "NO_COMMIT".to_string(),
                    (Some(s), 0) => s.to_string(),
                    (Some(s), lost) => format!("{s} (data loss: {lost})"),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |out: &mut dyn Write, row: &[&str]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&format!("{c:<w$}"));
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &header)?;
    for row in &cells {
        line(out, &row.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::status::Status;
    use super::*;

    fn row(committed: Option<i64>) -> PartitionReport {
        PartitionReport {
            group: "taskstream-audit".into(),
            topic: "task-events".into(),
            partition: 0,
            committed,
            low_watermark: 0,
            high_watermark: 10,
            lag: committed.map(|c| (10 - c) as u64),
            lag_seconds: committed.map(|_| 3.25),
            status: committed.map(|_| Status::Stalled),
            data_loss: 0,
            exact_seconds: true,
        }
    }

    #[test]
    fn json_rows_have_exactly_the_promised_keys() {
        let v = serde_json::to_value(row(None)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "group",
            "topic",
            "partition",
            "committed",
            "low_watermark",
            "high_watermark",
            "lag",
            "lag_seconds",
            "status",
            "data_loss",
        ];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
        assert!(v["committed"].is_null());
        let v = serde_json::to_value(row(Some(4))).unwrap();
        assert_eq!(v["status"], "STALLED");
        assert_eq!(v["lag"], 6);
    }

    #[test]
    fn table_shows_uncommitted_partitions_as_such() {
        let mut out = Vec::new();
        write_table(&mut out, &[row(Some(4)), row(None)]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("GROUP"));
        assert!(
            lines[1].contains("STALLED") && lines[1].contains("3.2"),
            "{text}"
        );
        assert!(lines[2].contains("NO_COMMIT"), "{text}");
    }
}
