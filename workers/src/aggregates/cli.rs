//! `taskstream aggregate`: the worker's windowing over raw messages from
//! stdin (one per line, as `taskstream decode` reads them), in order, for
//! backfills and checks. One stream is one partition: its watermark is the
//! newest event time minus the lateness; a window is printed when the
//! watermark reaches its end, the open ones at end of input, then a summary.
//! Messages that do not decode, or have an unknown type, are not counted.
//! Distinct users are exact here (the worker's are a HyperLogLog).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};

use pipelines::event::{decode, is_known_type, DecodeContext};
use serde::Serialize;

use super::plan::{plan, EventFacts, WindowDelta};
use super::result::WindowResult;
use super::store::WindowCounts;
use super::window::{WindowId, WindowSpec};

/// The last line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub summary: bool,
    pub events: u64,
    pub late: u64,
    pub windows: u64,
}

fn counts(d: &WindowDelta) -> WindowCounts {
    WindowCounts {
        events: d.events,
        created: d.created,
        completed: d.completed,
        by_type: d.by_type.clone(),
        by_priority: d.by_priority.clone(),
        durations: d.durations.clone(),
        distinct_users: d.users.len() as u64,
    }
}

fn emit(out: &mut impl Write, w: &WindowId, d: &WindowDelta) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, &WindowResult::new(w, &counts(d)))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Reads `input` to the end, writing one JSON line per window as it closes
/// and the summary last.
pub fn aggregate(
    input: impl BufRead,
    out: &mut impl Write,
    spec: &WindowSpec,
    lateness_ms: i64,
    topic: &str,
) -> anyhow::Result<Summary> {
    let specs = [spec.clone()];
    let mut open: BTreeMap<(i64, i64), (WindowId, WindowDelta)> = BTreeMap::new();
    let mut closed: HashSet<WindowId> = HashSet::new();
    let mut newest: Option<i64> = None;
    let mut summary = Summary {
        summary: true,
        events: 0,
        late: 0,
        windows: 0,
    };
    let ctx = DecodeContext {
        topic,
        kafka_timestamp_ms: None,
    };
    for line in input.split(b'\n') {
        let line = line?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(event) = decode(line, &ctx) else {
            continue;
        };
        if !is_known_type(&event.kind) {
            continue;
        }
        summary.events += 1;
        let p = plan(
            &specs,
            lateness_ms,
            newest,
            &closed,
            &[EventFacts::of(&event)],
        );
        summary.late += p.late.values().sum::<u64>();
        newest = p.max_event_ms;
        for (w, d) in p.windows {
            let slot = open
                .entry((w.end_ms, w.start_ms))
                .or_insert_with(|| (w.clone(), WindowDelta::default()));
            slot.1.merge(&d);
        }
        let Some(watermark) = newest.map(|m| m.saturating_sub(lateness_ms)) else {
            continue;
        };
        while let Some(entry) = open.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let (w, d) = entry.remove();
            emit(out, &w, &d)?;
            summary.windows += 1;
            closed.insert(w);
        }
    }
    for (_, (w, d)) in std::mem::take(&mut open) {
        emit(out, &w, &d)?;
        summary.windows += 1;
    }
    serde_json::to_writer(&mut *out, &summary)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(id: &str, kind: &str, at: &str, user: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","event_type":"{kind}","timestamp":"{at}","data":{{"task_id":1,"user_id":"{user}"}}}}"#
        )
    }

    #[test]
    fn windows_print_as_they_close_then_the_open_ones_then_the_summary() {
        let input = [
            line("a", "task.created", "2026-03-01T00:00:10Z", "u1"),
            line("b", "task.completed", "2026-03-01T00:00:50Z", "u2"),
            "not json".to_string(),
            line("c", "task.created", "2026-03-01T00:02:30Z", "u1"),
            // 2 min behind the newest: its minute has closed.
            line("d", "task.created", "2026-03-01T00:00:30Z", "u3"),
            line("e", "task.created", "2026-03-01T00:02:40Z", "u3"),
        ]
        .join("\n");
        let mut out = Vec::new();
        let s = aggregate(
            input.as_bytes(),
            &mut out,
            &WindowSpec::new("1m", Duration::from_secs(60)),
            60_000,
            "task-events",
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["window_start"], "2026-03-01T00:00:00Z");
        assert_eq!(lines[0]["events"], 2);
        assert_eq!(lines[0]["distinct_users"], 2);
        assert_eq!(lines[0]["dimension"], serde_json::Value::Null);
        assert_eq!(lines[1]["window_start"], "2026-03-01T00:02:00Z");
        assert_eq!(lines[1]["events"], 2);
        assert_eq!(
            lines[2],
            serde_json::json!({"summary": true, "events": 5, "late": 1, "windows": 2})
        );
        assert_eq!(s.late, 1);
    }
}
