//! `taskstream aggregate`: the worker's windowing over raw messages from
//! stdin (one per line, as `taskstream decode` reads them), in order, for
//! backfills and checks. One stream is one partition: its watermark is the
//! newest event time minus the lateness; a window is printed when the
//! watermark reaches its end, the open ones at end of input, then a summary.
//! Messages that do not decode, or have an unknown type, are not counted.
//! Distinct users are exact here (the worker's are a HyperLogLog).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, Write};

use pipelines::event::{decode, is_known_type, DecodeContext};
use serde::Serialize;

use super::dimension::{self, Dimension};
use super::plan::{plan, Counts, EventFacts};
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

/// What to print: one window size, and the lines per window.
#[derive(Debug, Clone)]
pub struct Options {
    pub spec: WindowSpec,
    pub lateness_ms: i64,
    /// The topic the messages came from (a decoding hint).
    pub topic: String,
    /// One line per key of this dimension; `None`: one line per window.
    pub dimension: Option<Dimension>,
    /// Keys with their own line per window (the others fold into `(other)`).
    pub max_keys: usize,
}

/// Counts with their users kept exactly.
#[derive(Debug, Default)]
struct Exact {
    counts: WindowCounts,
    users: BTreeSet<String>,
}

impl Exact {
    fn add(&mut self, c: &Counts<'_>) {
        self.counts.add(c);
        self.users
            .extend(c.users.iter().map(|u| u.name.to_string()));
    }

    fn merge(&mut self, o: &Exact) {
        self.counts.merge(&o.counts);
        self.users.extend(o.users.iter().cloned());
    }

    fn counts(mut self) -> WindowCounts {
        self.counts.distinct_users = self.users.len() as u64;
        self.counts
    }
}

/// One open window: over every event, or per key of the dimension.
#[derive(Debug, Default)]
struct Open {
    all: Exact,
    keys: BTreeMap<String, Exact>,
}

fn emit(out: &mut impl Write, w: &WindowId, open: Open, opts: &Options) -> anyhow::Result<()> {
    let mut line = |r: WindowResult| -> anyhow::Result<()> {
        serde_json::to_writer(&mut *out, &r)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    let Some(d) = opts.dimension else {
        return line(WindowResult::new(w, None, &open.all.counts()));
    };
    let (kept, folded) = dimension::top_keys(
        open.keys.into_iter().collect(),
        |e| e.counts.events,
        opts.max_keys,
    );
    for (k, e) in kept {
        line(WindowResult::new(w, Some((d, &k)), &e.counts()))?;
    }
    if !folded.is_empty() {
        let mut other = Exact::default();
        for (_, e) in &folded {
            other.merge(e);
        }
        line(WindowResult::new(
            w,
            Some((d, dimension::OTHER)),
            &other.counts(),
        ))?;
    }
    Ok(())
}

/// Reads `input` to the end, writing the lines of each window as it closes
/// and the summary last.
pub fn aggregate(
    input: impl BufRead,
    out: &mut impl Write,
    opts: &Options,
) -> anyhow::Result<Summary> {
    let specs = [opts.spec.clone()];
    let lateness_ms = opts.lateness_ms;
    let mut open: BTreeMap<(i64, i64), (WindowId, Open)> = BTreeMap::new();
    let mut closed: HashSet<WindowId> = HashSet::new();
    let mut newest: Option<i64> = None;
    let mut summary = Summary {
        summary: true,
        events: 0,
        late: 0,
        windows: 0,
    };
    let ctx = DecodeContext {
        topic: &opts.topic,
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
            let slot = &mut open
                .entry((w.end_ms, w.start_ms))
                .or_insert_with(|| (w.clone(), Open::default()))
                .1;
            slot.all.add(&d.all);
            for ((dim, k), c) in &d.by {
                if Some(*dim) == opts.dimension {
                    slot.keys.entry(k.to_string()).or_default().add(c);
                }
            }
        }
        let Some(watermark) = newest.map(|m| m.saturating_sub(lateness_ms)) else {
            continue;
        };
        while let Some(entry) = open.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let (w, o) = entry.remove();
            emit(out, &w, o, opts)?;
            summary.windows += 1;
            closed.insert(w);
        }
    }
    for (_, (w, o)) in std::mem::take(&mut open) {
        emit(out, &w, o, opts)?;
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

    fn options(dimension: Option<Dimension>, max_keys: usize) -> Options {
        Options {
            spec: WindowSpec::new("1m", Duration::from_secs(60)),
            lateness_ms: 60_000,
            topic: "task-events".into(),
            dimension,
            max_keys,
        }
    }

    fn in_project(id: &str, at: &str, user: &str, project: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","event_type":"task.created","timestamp":"{at}","data":{{"task_id":1,"user_id":"{user}","project_id":"{project}","priority":"high"}}}}"#
        )
    }

    fn lines(out: Vec<u8>) -> Vec<serde_json::Value> {
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_dimension_prints_one_line_per_key_and_folds_the_smallest_keys() {
        let input = [
            in_project("a", "2026-03-01T00:00:10Z", "u1", "apollo"),
            in_project("b", "2026-03-01T00:00:20Z", "u2", "apollo"),
            in_project("c", "2026-03-01T00:00:30Z", "u1", "gemini"),
            in_project("d", "2026-03-01T00:00:40Z", "u3", "mercury"),
            line("e", "task.created", "2026-03-01T00:00:50Z", "u4"),
        ]
        .join("\n");
        let mut out = Vec::new();
        aggregate(
            input.as_bytes(),
            &mut out,
            &options(Some(Dimension::Project), 2),
        )
        .unwrap();
        let l = lines(out);
        // apollo (2) and one of the single-event keys by name: "(none)"
        // sorts first; gemini and mercury fold into "(other)".
        let keys: Vec<&str> = l[..3].iter().map(|v| v["key"].as_str().unwrap()).collect();
        assert_eq!(keys, vec!["(none)", "apollo", "(other)"]);
        assert!(l[..3].iter().all(|v| v["dimension"] == "project"));
        assert_eq!(l[1]["events"], 2);
        assert_eq!(l[1]["distinct_users"], 2);
        assert_eq!(l[2]["events"], 2);
        assert_eq!(l[2]["distinct_users"], 2);
        let total: u64 = l[..3].iter().map(|v| v["events"].as_u64().unwrap()).sum();
        assert_eq!(total, 5, "the keys add up to the window");

        let mut out = Vec::new();
        aggregate(
            input.as_bytes(),
            &mut out,
            &options(Some(Dimension::Priority), 100),
        )
        .unwrap();
        let l = lines(out);
        assert_eq!(l[0]["key"], "high");
        assert_eq!(l[0]["events"], 4);
        assert_eq!(l[1]["key"], "none");
        assert_eq!(l[1]["events"], 1);
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
        let s = aggregate(input.as_bytes(), &mut out, &options(None, 100)).unwrap();
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
