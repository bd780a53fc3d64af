//! The reminders part of `taskstream demo`: reminder requests and tasks
//! computed at run time (a fixed file cannot hold "two seconds from now"),
//! email written as `.eml` files into `<out>/mail/` (lettre's file
//! transport) unless `SMTP_URL` is set, and the outcome events read back.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use pipelines::testing::read_topic;
use serde_json::json;

/// The demo user's address.
pub const USER_EMAIL: &str = "ada@example.com";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The user the reminders are for (produce it first: reminders are
/// addressed when they fire).
pub fn user_messages(now: DateTime<Utc>) -> Vec<(String, String, Vec<u8>)> {
    let user = json!({
        "event_id": "demo-reminders-user",
        "event_type": "user.created",
        "timestamp": ts(now),
        "data": {"user_id": "demo-ada", "email": USER_EMAIL, "name": "Ada Lovelace",
                 "timezone": "Europe/Berlin"}
    });
    vec![(
        "user-events".into(),
        "demo-ada".into(),
        user.to_string().into_bytes(),
    )]
}

/// Reminders due a second or two after `now`: two requests (one with an
/// HTML and CR/LF title), a task whose offset puts its reminder two seconds
/// out, and a task completed before its reminder (cancelled: no email).
/// Returns the messages and how many emails they should produce.
pub fn reminder_messages(now: DateTime<Utc>) -> (Vec<(String, String, Vec<u8>)>, usize) {
    let ms = |n: i64| now + chrono::Duration::milliseconds(n);
    let request = |task: &str, title: &str, remind_in: i64| {
        json!({"task_id": task, "user_id": "demo-ada", "title": title,
               "due_at": ts(ms(3_600_000)), "remind_at": ts(ms(remind_in)),
               "notification_method": "email", "created_at": ts(now)})
    };
    let task = |id: &str, kind: &str, title: &str, extra: serde_json::Value| {
        let mut data = json!({"task_id": id, "user_id": "demo-ada", "title": title,
                              "due_date": ts(ms(62_000)), "reminder_offsets": ["-60s"]});
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        json!({"event_id": format!("demo-{id}-{kind}"), "event_type": kind,
               "timestamp": ts(now), "data": data})
    };
    let out: Vec<(&str, &str, serde_json::Value)> = vec![
        (
            "reminders",
            "demo-r1",
            request("demo-r1", "Send the quarterly report", 1500),
        ),
        (
            "reminders",
            "demo-r2",
            request(
                "demo-r2",
                "Review <b>this</b>\r\nBcc: nobody@example.com",
                1800,
            ),
        ),
        (
            "task-events",
            "demo-t1",
            task("demo-t1", "task.created", "Water the plants", json!({})),
        ),
        (
            "task-events",
            "demo-t2",
            task(
                "demo-t2",
                "task.created",
                "Cancelled by completion",
                json!({}),
            ),
        ),
        (
            "task-events",
            "demo-t2",
            task(
                "demo-t2",
                "task.completed",
                "Cancelled by completion",
                json!({"completed": true}),
            ),
        ),
    ];
    (
        out.into_iter()
            .map(|(t, k, v)| (t.to_owned(), k.to_owned(), v.to_string().into_bytes()))
            .collect(),
        3,
    )
}

/// Waits until `dir` holds `n` `.eml` files (or `timeout` passed).
pub fn wait_for_mail(dir: &Path, n: usize, timeout: Duration) -> Vec<std::path::PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        if files.len() >= n || Instant::now() > deadline {
            return files;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Prints each message's `To` and `Subject`, and every outcome event (at
/// least `n`; the fixed demo events add reminders long past: missed).
pub fn print(files: &[std::path::PathBuf], bootstrap: &str, topic: &str, n: usize) {
    println!("\nreminder email ({} messages):", files.len());
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let header = |name: &str| {
            text.lines()
                .take_while(|l| !l.is_empty())
                .find(|l| {
                    l.len() > name.len()
                        && l[..name.len()].eq_ignore_ascii_case(name)
                        && l.as_bytes()[name.len()] == b':'
                })
                .map(|l| l[name.len() + 1..].trim().to_owned())
                .unwrap_or_default()
        };
        println!(
            "  {}  To: {}  Subject: {}",
            f.file_name().unwrap_or_default().to_string_lossy(),
            header("To"),
            header("Subject")
        );
    }
    let mut events = read_topic(bootstrap, topic, n, Duration::from_secs(10)).unwrap_or_default();
    if events.len() >= n {
        // Whatever else is there, without waiting long for it.
        let all =
            read_topic(bootstrap, topic, usize::MAX, Duration::from_secs(5)).unwrap_or_default();
        if all.len() > events.len() {
            events = all;
        }
    }
    println!("\nnotification events ({topic}):");
    for e in &events {
        let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap_or_default();
        println!(
            "  {} task {} scheduled {} sent {} ({} ms late)",
            v["type"].as_str().unwrap_or("?"),
            v["task_id"].as_str().unwrap_or("?"),
            v["attributes"]["scheduled_at"].as_str().unwrap_or("?"),
            v["attributes"]["actual_at"].as_str().unwrap_or("?"),
            v["attributes"]["lateness_ms"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::event::{decode, DecodeContext};

    #[test]
    fn demo_reminders_are_due_within_two_seconds_of_now() {
        let now = Utc::now();
        let (messages, emails) = reminder_messages(now);
        assert_eq!(emails, 3);
        let mut requests = 0;
        for (topic, _, payload) in &messages {
            let e = decode(
                payload,
                &DecodeContext {
                    topic,
                    kafka_timestamp_ms: None,
                },
            )
            .unwrap();
            if let Some(r) = e.reminder {
                requests += 1;
                let d = r.remind_at - now;
                assert!(d > chrono::Duration::zero() && d <= chrono::Duration::seconds(2));
            }
        }
        assert_eq!(requests, 2);
    }
}
