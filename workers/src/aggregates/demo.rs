//! The aggregates worker's part of `taskstream demo`: six minutes of task
//! and analytics events, and the window results read back from
//! `task-metrics`.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pipelines::testing::read_topic;

use super::result::{WindowResult, KIND};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

/// (topic, key, payload): 36 task events, one every 10 s from 09:00 (created
/// and completed alternately, by five users), and 6 dashboard views.
pub fn messages(task_topic: &str, analytics_topic: &str) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..36i64 {
        let at = start() + chrono::Duration::seconds(10 * i);
        let ts = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let created = (at - chrono::Duration::minutes(5 + i))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let kind = if i % 2 == 0 {
            "task.created"
        } else {
            "task.completed"
        };
        let payload = format!(
            r#"{{"event_id":"demo-agg-{i}","event_type":"{kind}","timestamp":"{ts}","data":{{"task_id":"agg-{i}","user_id":"user-{}","title":"Demo task {i}","priority":"high","created_at":"{created}"}}}}"#,
            i % 5
        );
        out.push((
            task_topic.to_string(),
            format!("agg-{i}"),
            payload.into_bytes(),
        ));
    }
    for j in 0..6i64 {
        let ts = (start() + chrono::Duration::seconds(60 * j + 5))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let payload = format!(
            r#"{{"event_id":"demo-view-{j}","event_type":"analytics.dashboard_viewed","timestamp":"{ts}","data":{{"user_id":"user-{j}"}}}}"#
        );
        out.push((
            analytics_topic.to_string(),
            format!("view-{j}"),
            payload.into_bytes(),
        ));
    }
    out
}

/// The window results over every event (not per key) on `topic` for the
/// demo's day (waits up to `wait` for at least `expected`).
pub fn published(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    wait: Duration,
) -> anyhow::Result<Vec<WindowResult>> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let all = read_topic(bootstrap, topic, usize::MAX, Duration::from_secs(1))?;
        let mut ours: Vec<WindowResult> = all
            .iter()
            .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
            .filter(|v| v["type"] == KIND)
            .filter_map(|v| serde_json::from_value(v["attributes"].clone()).ok())
            .filter(|r: &WindowResult| r.window_start >= start() && r.dimension.is_none())
            .collect();
        if ours.len() >= expected || std::time::Instant::now() > deadline {
            ours.sort_by_key(|r| (r.window_end, r.window_start));
            return Ok(ours);
        }
    }
}

/// One line per closed window.
pub fn print(results: &[WindowResult]) {
    println!("\nwindows closed ({}), from task-metrics:", results.len());
    for r in results {
        println!(
            "  {} {}: {} events {:?}, {} users, created {} completed {}, completion p50 {}",
            r.window,
            r.window_start.format("%Y-%m-%d %H:%M"),
            r.events,
            r.by_type,
            r.distinct_users,
            r.tasks_created,
            r.tasks_completed,
            r.completion_seconds
                .p50
                .map_or("-".to_string(), |s| format!("<= {s} s")),
        );
    }
}
