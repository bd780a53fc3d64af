//! The deadlines worker's part of `taskstream demo`: four tasks whose due
//! times are set relative to now (one already overdue, one due within the
//! hour, one in two days, one completed before anything was due), and the
//! announcements read back from the topic.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use pipelines::event::{decode, DecodeContext};
use pipelines::testing::read_topic;
use pipelines::TaskEvent;

/// The demo's task events as (topic, key, payload), due times relative to `now`.
pub fn messages(topic: &str, now: DateTime<Utc>) -> Vec<(String, String, Vec<u8>)> {
    let due = |minutes: i64| {
        (now + chrono::Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let ts = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let lines = [
        (
            "dl-1",
            format!(
                r#"{{"event_id":"demo-dl-1","event_type":"task.created","timestamp":"{ts}","data":{{"task_id":"dl-1","user_id":"alice","title":"File the quarterly report","assignee_id":"bob","project_id":"finance","due_date":"{}"}}}}"#,
                due(-90)
            ),
        ),
        (
            "dl-2",
            format!(
                r#"{{"event_type":"created","task_id":"dl-2","user_id":"carol","timestamp":"{ts}","task_data":{{"title":"Renew the TLS certificate","due_date":"{}","assigned_to":"dave"}}}}"#,
                due(40)
            ),
        ),
        (
            "dl-3",
            format!(
                r#"{{"eventType":"task.created","taskId":"dl-3","actorId":"erin","timestamp":"{ts}","payload":{{"title":"Plan the offsite","dueDate":"{}"}}}}"#,
                due(2 * 24 * 60)
            ),
        ),
        (
            "dl-4",
            format!(
                r#"{{"event_id":"demo-dl-4","event_type":"task.created","timestamp":"{ts}","data":{{"task_id":"dl-4","user_id":"frank","title":"Already done","due_date":"{}"}}}}"#,
                due(10 * 24 * 60)
            ),
        ),
        (
            "dl-4",
            format!(
                r#"{{"event_id":"demo-dl-4-done","event_type":"task.completed","timestamp":"{ts}","data":{{"task_id":"dl-4","user_id":"frank"}}}}"#
            ),
        ),
    ];
    lines
        .into_iter()
        .map(|(key, payload)| (topic.to_string(), key.to_string(), payload.into_bytes()))
        .collect()
}

/// How many announcements the demo's tasks make: overdue for dl-1, `1h` for
/// dl-2, `3d` for dl-3 (each a threshold already passed, announced at once).
pub const EXPECTED: usize = 3;

/// The announcements on `topic` (waits for `expected`, up to 30 s).
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
            .filter(|e| e.kind.starts_with("deadline.") && e.attributes.contains_key("threshold"))
            .collect();
        if ours.len() >= expected || std::time::Instant::now() > deadline {
            return Ok(ours);
        }
    }
}

/// Prints one line per announcement.
pub fn print(events: &[TaskEvent]) {
    println!("\ndeadlines: announcements published ({}):", events.len());
    for e in events {
        let task = e.task.as_ref();
        println!(
            "  {} task {} {:?}, threshold {}, due {}, assignee {}, id {}",
            e.kind,
            e.task_id.as_deref().unwrap_or("?"),
            task.and_then(|t| t.title.as_deref()).unwrap_or(""),
            e.attributes
                .get("threshold")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            task.and_then(|t| t.due_at)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            task.and_then(|t| t.assignee_id.as_deref()).unwrap_or("-"),
            e.event_id
        );
    }
}
