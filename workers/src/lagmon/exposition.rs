//! The monitor's per-group series, rendered as Prometheus text once per
//! collection and served as is by `/metrics` (appended to the recorder's
//! output). Rendering here rather than through the `metrics` crate is what
//! lets a vanished group's or partition's series disappear: the crate has no
//! way to delete a series once written.
//!
//! Names follow kafka-lag-exporter, so existing dashboards keep working;
//! taskstream's own series carry the `taskstream_lag_` prefix. Labels: `group`,
//! `worker` (the taskstream worker, else the group id), `topic`, `partition`.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::monitor::GroupReport;
use super::status::Status;

pub const GROUP_LAG: &str = "kafka_consumergroup_group_lag";
pub const GROUP_LAG_SECONDS: &str = "kafka_consumergroup_group_lag_seconds";
pub const GROUP_MAX_LAG: &str = "kafka_consumergroup_group_max_lag";
pub const GROUP_MAX_LAG_SECONDS: &str = "kafka_consumergroup_group_max_lag_seconds";
pub const GROUP_SUM_LAG: &str = "kafka_consumergroup_group_sum_lag";
pub const GROUP_OFFSET: &str = "kafka_consumergroup_group_offset";
pub const LATEST_OFFSET: &str = "kafka_partition_latest_offset";
pub const EARLIEST_OFFSET: &str = "kafka_partition_earliest_offset";
pub const STATUS: &str = "taskstream_lag_group_status";
pub const PARTITION_STATUS: &str = "taskstream_lag_partition_status";
pub const UNCOMMITTED: &str = "taskstream_lag_partition_uncommitted";
pub const DATA_LOSS: &str = "taskstream_lag_data_loss_messages";
pub const LAG_SECONDS_EXACT: &str = "taskstream_lag_seconds_exact";

/// Escapes a label value per the exposition format.
fn escape(v: &str) -> String {
    if !v.contains(['\\', '"', '\n']) {
        return v.to_string();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// Renders every series of `reports`.
pub fn render(reports: &[GroupReport]) -> String {
    let mut out = String::with_capacity(
        256 + reports
            .iter()
            .map(|g| g.partitions.len() * 900 + 600)
            .sum::<usize>(),
    );
    let group_labels = |g: &GroupReport| {
        format!(
            "group=\"{}\",worker=\"{}\"",
            escape(&g.group),
            escape(&g.worker)
        )
    };
    let partition_rows =
        |out: &mut String,
         name: &str,
         help: &str,
         value: &dyn Fn(&super::monitor::PartitionReport) -> Option<f64>| {
            header(out, name, help);
            for g in reports {
                let gl = group_labels(g);
                for p in &g.partitions {
                    if let Some(v) = value(p) {
                        let _ = writeln!(
                            out,
                            "{name}{{{gl},topic=\"{}\",partition=\"{}\"}} {v}",
                            escape(&p.topic),
                            p.partition
                        );
                    }
                }
            }
        };
    partition_rows(
        &mut out,
        GROUP_LAG,
        "Records the group has yet to read (committed partitions only).",
        &|p| p.lag.map(|l| l as f64),
    );
    partition_rows(
        &mut out,
        GROUP_LAG_SECONDS,
        "Age of the first unconsumed record (0 when caught up).",
        &|p| p.lag_seconds,
    );
    partition_rows(
        &mut out,
        GROUP_OFFSET,
        "Committed offset of the group.",
        &|p| p.committed.map(|c| c as f64),
    );
    partition_rows(
        &mut out,
        UNCOMMITTED,
        "1 when the group has no committed offset on the partition.",
        &|p| Some(if p.committed.is_none() { 1.0 } else { 0.0 }),
    );
    partition_rows(
        &mut out,
        DATA_LOSS,
        "Records deleted by retention before the group read them.",
        &|p| p.committed.map(|_| p.data_loss as f64),
    );
    partition_rows(
        &mut out,
        LAG_SECONDS_EXACT,
        "1 when lag seconds came from the record's own timestamp, 0 when interpolated.",
        &|p| {
            p.lag_seconds
                .map(|_| if p.exact_seconds { 1.0 } else { 0.0 })
        },
    );
    partition_rows(
        &mut out,
        PARTITION_STATUS,
        "Partition status: 0 OK, 1 REWIND, 2 WARNING, 3 STALLED, 4 STOPPED.",
        &|p| p.status.map(|s| s as u8 as f64),
    );

    let group_rows =
        |out: &mut String, name: &str, help: &str, value: &dyn Fn(&GroupReport) -> f64| {
            header(out, name, help);
            for g in reports {
                let _ = writeln!(out, "{name}{{{}}} {}", group_labels(g), value(g));
            }
        };
    group_rows(
        &mut out,
        GROUP_MAX_LAG,
        "Largest partition lag of the group.",
        &|g| g.max_lag() as f64,
    );
    group_rows(
        &mut out,
        GROUP_MAX_LAG_SECONDS,
        "Largest partition lag in seconds of the group.",
        &|g| g.max_lag_seconds(),
    );
    group_rows(&mut out, GROUP_SUM_LAG, "Total lag of the group.", &|g| {
        g.sum_lag() as f64
    });

    header(
        &mut out,
        STATUS,
        "1 for the group's current status (OK, WARNING, STALLED, STOPPED, REWIND), else 0.",
    );
    for g in reports {
        let gl = group_labels(g);
        for s in Status::ALL {
            let v = if g.status == s { 1 } else { 0 };
            let _ = writeln!(out, "{STATUS}{{{gl},status=\"{s}\"}} {v}");
        }
    }

    header(&mut out, LATEST_OFFSET, "High watermark of the partition.");
    let mut topics = BTreeSet::new();
    for g in reports {
        for p in &g.partitions {
            topics.insert((&p.topic, p.partition, p.high_watermark, p.low_watermark));
        }
    }
    let mut done = BTreeSet::new();
    for (t, p, high, _) in &topics {
        if done.insert((*t, *p)) {
            let _ = writeln!(
                out,
                "{LATEST_OFFSET}{{topic=\"{}\",partition=\"{p}\"}} {high}",
                escape(t)
            );
        }
    }
    header(&mut out, EARLIEST_OFFSET, "Low watermark of the partition.");
    let mut done = BTreeSet::new();
    for (t, p, _, low) in &topics {
        if done.insert((*t, *p)) {
            let _ = writeln!(
                out,
                "{EARLIEST_OFFSET}{{topic=\"{}\",partition=\"{p}\"}} {low}",
                escape(t)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::monitor::PartitionReport;
    use super::*;

    fn report(group: &str, lag: Option<u64>) -> GroupReport {
        GroupReport {
            group: group.into(),
            worker: "audit".into(),
            status: Status::Stalled,
            partitions: vec![PartitionReport {
                group: group.into(),
                topic: "task-events".into(),
                partition: 2,
                committed: lag.map(|l| 100 - l as i64),
                low_watermark: 0,
                high_watermark: 100,
                lag,
                lag_seconds: lag.map(|_| 12.5),
                status: lag.map(|_| Status::Stalled),
                data_loss: 0,
                exact_seconds: true,
            }],
        }
    }

    #[test]
    fn renders_kafka_lag_exporter_names_with_labels() {
        let text = render(&[report("taskstream-audit", Some(7))]);
        assert!(text.contains(
            "kafka_consumergroup_group_lag{group=\"taskstream-audit\",worker=\"audit\",topic=\"task-events\",partition=\"2\"} 7\n"
        ), "{text}");
        assert!(text.contains("kafka_consumergroup_group_lag_seconds{group=\"taskstream-audit\",worker=\"audit\",topic=\"task-events\",partition=\"2\"} 12.5"));
        assert!(text.contains("kafka_consumergroup_group_max_lag_seconds{group=\"taskstream-audit\",worker=\"audit\"} 12.5"));
        assert!(text.contains("taskstream_lag_group_status{group=\"taskstream-audit\",worker=\"audit\",status=\"STALLED\"} 1"));
        assert!(text.contains("taskstream_lag_group_status{group=\"taskstream-audit\",worker=\"audit\",status=\"OK\"} 0"));
        assert!(text
            .contains("kafka_partition_latest_offset{topic=\"task-events\",partition=\"2\"} 100"));
    }

    #[test]
    fn an_uncommitted_partition_has_its_own_gauge_and_no_lag() {
        let text = render(&[report("g", None)]);
        assert!(!text.contains("kafka_consumergroup_group_lag{"), "{text}");
        assert!(text.contains("taskstream_lag_partition_uncommitted{group=\"g\",worker=\"audit\",topic=\"task-events\",partition=\"2\"} 1"));
    }

    #[test]
    fn a_group_no_longer_reported_has_no_series() {
        let before = render(&[report("gone", Some(1)), report("kept", Some(1))]);
        let after = render(&[report("kept", Some(1))]);
        assert!(before.contains("group=\"gone\""));
        assert!(!after.contains("group=\"gone\""));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn no_value_is_negative_or_not_finite() {
        let text = render(&[report("g", Some(3)), report("h", None)]);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{line}");
        }
    }
}
