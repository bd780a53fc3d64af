//! The event mix of `taskstream bench --worker recurring`: the pipeline's
//! usual mixed-dialect events, with one in ten a recurring task (half
//! created, half completed), as a task app's stream looks: most events are
//! not about recurring tasks, and the worker must pass them by cheaply.

/// Event `i` as (key, payload). Recurring series use ids of their own, so
/// every completion continues a different series and publishes.
pub fn sample_event(i: u64) -> (String, String) {
    if i % 20 != 7 && i % 20 != 17 {
        return pipelines::bench::sample_event(i);
    }
    let task = 1_000_000 + i;
    let (rule, zone) = match (i / 20) % 4 {
        0 => ("FREQ=WEEKLY;BYDAY=MO,WE,FR", "Europe/Berlin"),
        1 => ("0 9 * * 1-5", "America/New_York"),
        2 => ("daily", "Australia/Lord_Howe"),
        _ => (
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
            "Australia/Sydney",
        ),
    };
    let payload = if i % 20 == 7 {
        format!(
            r#"{{"event_id":"bench-rc-{i}","event_type":"task.created","timestamp":"2026-11-20T10:00:00Z","version":"1.0","data":{{"task_id":{task},"user_id":"user-{u}","title":"Recurring {i}","priority":"medium","due_date":"2027-02-01T08:00:00Z","recurrence":{{"rule":"{rule}","timezone":"{zone}"}}}}}}"#,
            u = i % 997
        )
    } else {
        format!(
            r#"{{"event_type":"completed","task_id":{task},"user_id":"user{u}","timestamp":"2026-11-20T10:00:00Z","task_data":{{"title":"Recurring {i}","completed":true,"priority":"low","due_date":"2027-02-01T08:00:00Z","tags":["home"],"is_recurring":true,"recurring_pattern":"{rule}","timezone":"{zone}"}}}}"#,
            u = i % 997
        )
    };
    (task.to_string(), payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::event::{decode, DecodeContext};

    #[test]
    fn one_in_ten_bench_events_is_a_recurring_task_and_all_decode() {
        let ctx = DecodeContext {
            topic: "task-events",
            kafka_timestamp_ms: None,
        };
        let mut recurring = 0;
        for i in 0..200 {
            let e = decode(sample_event(i).1.as_bytes(), &ctx).unwrap();
            if e.task.as_ref().is_some_and(|t| t.recurrence.is_some()) {
                recurring += 1;
            }
        }
        assert_eq!(recurring, 20);
    }
}
