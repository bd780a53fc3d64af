//! The recurring worker's part of `taskstream demo`: three completed recurring
//! tasks (an RRULE in the `task_data` dialect of the design documents, a cron
//! rule, a simple "last Friday" pattern), and their next occurrences read
//! back from the topic.

use std::time::Duration;

use anyhow::Context;
use pipelines::event::{decode, DecodeContext};
use pipelines::testing::read_topic;
use pipelines::TaskEvent;
use serde::Deserialize;

use super::series::{ATTR_DUE_LOCAL, ATTR_OCCURRENCE, ATTR_SERIES};

/// The demo's recurring completions.
pub const EVENTS: &str = include_str!("../../../config/demo/recurring.jsonl");

#[derive(Deserialize)]
struct DemoMessage {
    topic: String,
    key: String,
    message: serde_json::Value,
}

/// Parses [`EVENTS`] into (topic, key, payload).
pub fn messages() -> anyhow::Result<Vec<(String, String, Vec<u8>)>> {
    EVENTS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let m: DemoMessage = serde_json::from_str(line)
                .with_context(|| format!("config/demo/recurring.jsonl line {}", i + 1))?;
            Ok((m.topic, m.key, serde_json::to_vec(&m.message)?))
        })
        .collect()
}

/// The next occurrences the worker published to `topic` (waits for `expected`).
pub fn published(bootstrap: &str, topic: &str, expected: usize) -> anyhow::Result<Vec<TaskEvent>> {
    let ctx = DecodeContext {
        topic,
        kafka_timestamp_ms: None,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = read_topic(bootstrap, topic, usize::MAX, Duration::from_secs(1))?;
        let ours: Vec<TaskEvent> = all
            .iter()
            .filter_map(|m| decode(&m.payload, &ctx).ok())
            .filter(|e| e.attributes.contains_key(ATTR_SERIES))
            .collect();
        if ours.len() >= expected || std::time::Instant::now() > deadline {
            return Ok(ours);
        }
    }
}

/// Prints one line per next occurrence.
pub fn print(events: &[TaskEvent]) {
    println!(
        "\nrecurring tasks: next occurrences published ({}):",
        events.len()
    );
    for e in events {
        let task = e.task.as_ref();
        println!(
            "  series {} #{}: {:?} due {} ({}), rule {:?}, task {}",
            e.attributes[ATTR_SERIES].as_str().unwrap_or("?"),
            e.attributes[ATTR_OCCURRENCE],
            task.and_then(|t| t.title.as_deref()).unwrap_or(""),
            task.and_then(|t| t.due_at)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            e.attributes[ATTR_DUE_LOCAL].as_str().unwrap_or("?"),
            task.and_then(|t| t.recurrence.as_ref())
                .map(|r| r.rule.as_str())
                .unwrap_or(""),
            e.task_id.as_deref().unwrap_or("?"),
        );
    }
}
