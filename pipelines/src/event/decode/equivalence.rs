//! The typed decoder against the one it replaced ([`super::legacy`]): every
//! seed example, every demo event, every one-field mutation of the seeds and
//! a generated corpus of more than 100,000 messages must give the same
//! canonical event, or the same error, from both.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::tests::{b64, replacements, variants, DECODABLE_SEEDS, SEED_003_REMINDER};
use super::{decode, direct, legacy, DecodeContext};
use crate::event::fixtures;

const DEMO_EVENTS: &str = include_str!("../../../../config/demo/events.jsonl");

const CONTEXTS: [DecodeContext<'static>; 4] = [
    DecodeContext {
        topic: "task-events",
        kafka_timestamp_ms: None,
    },
    DecodeContext {
        topic: "task-events",
        kafka_timestamp_ms: Some(1_764_000_000_000),
    },
    DecodeContext {
        topic: "reminders",
        kafka_timestamp_ms: Some(1_764_000_000_000),
    },
    DecodeContext {
        topic: "reminders",
        kafka_timestamp_ms: Some(i64::MIN),
    },
];

/// Compares both decoders on one message; returns whether it decoded.
fn same(bytes: &[u8], ctx: &DecodeContext<'_>) -> bool {
    let new = decode(bytes, ctx);
    let old = legacy::decode(bytes, ctx);
    match (&new, &old) {
        (Ok(n), Ok(o)) => {
            assert_eq!(n, o, "in {}", String::from_utf8_lossy(bytes));
            true
        }
        (Err(n), Err(o)) => {
            assert_eq!(
                (n.reason(), n.to_string()),
                (o.reason(), o.to_string()),
                "in {}",
                String::from_utf8_lossy(bytes)
            );
            false
        }
        _ => panic!(
            "new {new:?}\nold {old:?}\nin {}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

#[test]
fn seeds_demo_events_and_their_mutations_decode_alike() {
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for seed in DECODABLE_SEEDS.iter().chain([&SEED_003_REMINDER]) {
        messages.push(seed.as_bytes().to_vec());
        let v: serde_json::Value = serde_json::from_str(seed).unwrap();
        let mut all = Vec::new();
        variants(&v, &replacements(), &mut all);
        messages.extend(all.iter().map(|v| serde_json::to_vec(v).unwrap()));
    }
    let mut demo = 0;
    for line in DEMO_EVENTS.lines().filter(|l| !l.trim().is_empty()) {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let message = match line["seed"].as_str() {
            Some(name) => serde_json::from_str(fixtures::seed(name).unwrap()).unwrap(),
            None => line["message"].clone(),
        };
        // As the demo sends it: a string verbatim, an object as its JSON text.
        messages.push(match message {
            serde_json::Value::String(s) => s.into_bytes(),
            other => serde_json::to_vec(&other).unwrap(),
        });
        demo += 1;
    }
    assert!(demo >= 19, "{demo} demo events");
    let mut decoded = 0;
    for bytes in &messages {
        for ctx in &CONTEXTS {
            decoded += usize::from(same(bytes, ctx));
        }
    }
    assert!(messages.len() > 3_000, "{} messages", messages.len());
    assert!(decoded > 1_000, "{decoded} decoded");
}

#[test]
fn a_generated_corpus_decodes_alike() {
    let mut g = Gen::new(0x5EED_0012);
    let (mut decoded, mut failed) = (0usize, 0usize);
    let mut reasons = std::collections::BTreeSet::new();
    for i in 0..100_000u32 {
        let msg = g.message();
        let ctx = &CONTEXTS[(i % 4) as usize];
        if i % 20 == 0 && !msg.is_empty() {
            // The same with a byte that is not UTF-8.
            let mut bytes = msg.clone().into_bytes();
            let at = g.below(bytes.len());
            bytes[at] = [0xFF, 0xC3, 0x80][g.below(3)];
            same(&bytes, ctx);
        }
        if same(msg.as_bytes(), ctx) {
            decoded += 1;
        } else {
            failed += 1;
            reasons.insert(decode(msg.as_bytes(), ctx).unwrap_err().reason());
        }
    }
    // The corpus exercises both outcomes and every kind of failure.
    assert!(decoded > 30_000, "{decoded} decoded, {failed} failed");
    assert!(failed > 10_000, "{decoded} decoded, {failed} failed");
    assert_eq!(
        reasons.into_iter().collect::<Vec<_>>(),
        [
            "empty",
            "invalid_field",
            "missing_field",
            "not_an_object",
            "not_json",
            "unrecognized_shape"
        ]
    );
}

/// Envelope and standard task events of plain fields, mostly, so that many
/// are read in one pass ([`direct`]) and the rest, one awkward value or key
/// away, are not: both kinds are compared with the old decoder.
#[test]
fn plain_envelopes_decode_alike_in_one_pass_or_through_the_tree() {
    let mut g = Gen::new(0x5EED_0013);
    let (mut taken, mut standard, mut decoded) = (0usize, 0usize, 0usize);
    for i in 0..30_000u32 {
        let msg = g.plain_envelope();
        let ctx = &CONTEXTS[(i % 4) as usize];
        if let Some(event) = direct::read_event(&msg, ctx) {
            // The same as the tree decoder's, whatever `legacy` says.
            let tree = super::decode_tree(msg.as_bytes(), Some(&msg), ctx);
            assert_eq!(Ok(&event), tree.as_ref(), "in {msg}");
            taken += 1;
            standard += usize::from(event.dialect == crate::event::model::Dialect::Standard);
        }
        decoded += usize::from(same(msg.as_bytes(), ctx));
    }
    assert!(taken > 2_000, "{taken} read in one pass");
    assert!(
        standard > 500 && taken - standard > 500,
        "{standard} of {taken} in the standard dialect"
    );
    assert!(
        decoded > taken + 5_000,
        "{decoded} decoded, {taken} in one pass"
    );
}

/// Task-data, camel-case and CloudEvents-wrapped task events of plain
/// fields, mostly, in any key order: many are read in one pass, the rest one
/// awkward value or key away are not, and both are compared with the old
/// decoder.
#[test]
fn plain_messages_of_every_dialect_decode_alike_in_one_pass_or_through_the_tree() {
    let mut g = Gen::new(0x5EED_0014);
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    let mut decoded = 0usize;
    for i in 0..40_000u32 {
        let msg = g.plain_message();
        let ctx = &CONTEXTS[(i % 4) as usize];
        if let Some(event) = direct::read_event(&msg, ctx) {
            let tree = super::decode_tree(msg.as_bytes(), Some(&msg), ctx);
            assert_eq!(Ok(&event), tree.as_ref(), "in {msg}");
            let shape = format!("{:?}, CloudEvent {}", event.dialect, event.cloudevents);
            *taken.entry(shape).or_default() += 1;
        }
        decoded += usize::from(same(msg.as_bytes(), ctx));
    }
    for shape in [
        "TaskData, CloudEvent false",
        "CamelCase, CloudEvent false",
        "Envelope, CloudEvent true",
        "TaskData, CloudEvent true",
        "CamelCase, CloudEvent true",
        "Standard, CloudEvent true",
    ] {
        let n = taken.get(shape).copied().unwrap_or(0);
        assert!(n > 100, "{n} of {shape} read in one pass: {taken:?}");
    }
    let all: usize = taken.values().sum();
    assert!(
        decoded > all + 5_000,
        "{decoded} decoded, {all} in one pass"
    );
}

// ---------------------------------------------------------------- generator

/// Random messages of every dialect, written as text so that key order,
/// repeated keys, escapes and broken JSON are the generator's to choose.
struct Gen {
    state: u64,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Gen { state: seed }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
        items[self.below(items.len())]
    }

    /// One message: mostly a dialect, sometimes wrapped, sometimes broken.
    fn message(&mut self) -> String {
        let mut msg = match self.below(100) {
            0..=17 => self.envelope(),
            18..=31 => self.task_data(),
            32..=45 => self.standard(),
            46..=57 => self.camel(),
            58..=67 => self.reminder(),
            68..=71 => self.canonical(),
            72..=75 => self.shapeless(),
            76..=87 => {
                let inner = self.any_dialect();
                self.cloudevent(inner)
            }
            88..=91 => {
                let inner = self.any_dialect();
                format!(
                    "{{\"traceparent\": {}, \"event_data\": {inner}{}}}",
                    self.text(),
                    self.extra()
                )
            }
            92..=95 => self.scalar(),
            _ => self.any_dialect(),
        };
        if self.chance(4) {
            // Broken JSON: cut anywhere (on a char boundary).
            let mut end = self.below(msg.len().max(1));
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            msg.truncate(end);
        } else if self.chance(2) {
            msg.push_str(self.pick(&[" x", "}", ",", "  \n"]));
        }
        msg
    }

    fn any_dialect(&mut self) -> String {
        match self.below(6) {
            0 => self.envelope(),
            1 => self.task_data(),
            2 => self.standard(),
            3 => self.camel(),
            4 => self.reminder(),
            _ => self.canonical(),
        }
    }

    // ------------------------------------------------------------ dialects

    fn envelope(&mut self) -> String {
        let mut o = Obj::default();
        o.opt(self, 90, "event_id", Gen::id);
        let kind = self.pick(&[
            "task.created",
            "task.updated",
            "task.completed",
            "task.deleted",
            "user.registered",
            "user.created",
            "user.updated",
            "project.created",
            "comment.added",
            "Task.Tags_Added",
            "deadline.approaching",
            "com.example.thing",
        ]);
        o.raw("event_type", &self.kind_or_garbage(kind));
        o.opt(self, 90, "timestamp", Gen::time);
        o.opt(self, 60, "version", Gen::text);
        if self.chance(85) {
            let data = self.payload(kind.starts_with("user"));
            o.raw(
                self.pick(&["data", "data", "data", "payload", "task_data"]),
                &data,
            );
        } else {
            self.payload_fields(&mut o, false);
        }
        o.opt(self, 10, "metadata", Gen::metadata);
        self.finish(o)
    }

    /// An envelope or standard task event whose fields are plain most of
    /// the time.
    fn plain_envelope(&mut self) -> String {
        let mut o = Obj::default();
        o.opt(self, 90, "event_id", |g| g.mostly(Gen::plain_id, Gen::id));
        let kind = self.pick(&[
            "task.created",
            "task.updated",
            "task.completed",
            "Task.Tags_Added",
            "user.created",
            // The standard dialect's, and a bare action (the task-data one's).
            "task_created",
            "task_status_changed",
            "TaskCompleted",
            "updated",
        ]);
        let kind = self.kind_or_garbage(kind);
        o.raw("event_type", &kind);
        o.opt(self, 85, "timestamp", Gen::time);
        o.opt(self, 40, "version", |g| {
            g.mostly(Gen::plain_text, Gen::text)
        });
        o.opt(self, 30, "user_id", |g| g.mostly(Gen::plain_id, Gen::id));
        if self.chance(30) {
            let mut meta = Obj::default();
            meta.opt(self, 80, "source", |g| g.mostly(Gen::plain_text, Gen::text));
            meta.opt(self, 50, "version", |g| {
                g.mostly(Gen::plain_text, Gen::text)
            });
            meta.opt(self, 10, "ip_address", Gen::plain_text);
            meta.opt(self, 10, "title", Gen::plain_text);
            o.raw("metadata", &meta.text());
        }
        let mut data = Obj::default();
        data.opt(self, 95, "task_id", |g| g.mostly(Gen::plain_id, Gen::id));
        data.opt(self, 70, "user_id", |g| g.mostly(Gen::plain_id, Gen::id));
        for key in ["title", "description", "status", "priority"] {
            data.opt(self, 50, key, |g| g.mostly(Gen::plain_text, Gen::text));
        }
        data.opt(self, 50, "completed", |g| {
            g.mostly(|g| g.pick(&["true", "false"]).to_owned(), Gen::flag)
        });
        data.opt(self, 20, "completed_at", Gen::time);
        data.opt(self, 40, "created_at", Gen::time);
        data.opt(self, 30, "duration_minutes", Gen::number);
        data.opt(self, 20, "reason", |g| g.mostly(Gen::plain_text, Gen::text));
        if self.chance(10) {
            // A key some rule reads.
            let key = self.pick(&["name", "due_date", "tags", "id", "changes", "ip_address"]);
            data.raw(key, "\"x\"");
        }
        let data = if self.chance(90) {
            data.text()
        } else {
            self.finish(data)
        };
        o.raw("data", &data);
        o.text()
    }

    /// A task event of a dialect [`direct`] reads, bare or (a third of the
    /// time) in a CloudEvent, of plain fields most of the time.
    fn plain_message(&mut self) -> String {
        let event = match self.below(3) {
            0 => self.plain_envelope(),
            1 => self.plain_task_data(),
            _ => self.plain_camel(),
        };
        if self.chance(35) {
            self.plain_cloudevent(event)
        } else {
            event
        }
    }

    fn plain_task_data(&mut self) -> String {
        let mut o = Obj::default();
        o.opt(self, 40, "event_id", |g| g.mostly(Gen::plain_id, Gen::id));
        let kind = self.pick(&["updated", "created", "completed", "task_updated", "deleted"]);
        let kind = self.kind_or_garbage(kind);
        o.raw("event_type", &kind);
        o.opt(self, 90, "task_id", |g| g.mostly(Gen::plain_id, Gen::id));
        o.opt(self, 80, "user_id", |g| g.mostly(Gen::plain_id, Gen::id));
        o.opt(self, 85, "timestamp", Gen::time);
        o.opt(self, 10, "assignee_id", |g| {
            g.mostly(Gen::plain_id, Gen::id)
        });
        let data = self.plain_snapshot(true);
        let key = self.pick(&["task_data", "task_data", "task_data", "data"]);
        o.raw(key, &data);
        if self.chance(60) {
            let previous = self.plain_snapshot(false);
            o.raw("previous_task_data", &previous);
        }
        o.opt(self, 20, "source", |g| {
            g.mostly(Gen::plain_text, Gen::value)
        });
        self.shuffle(&mut o);
        o.text()
    }

    fn plain_camel(&mut self) -> String {
        let mut o = Obj::default();
        let kind = self.pick(&[
            "task.completed",
            "task.created",
            "task.updated",
            "user.created",
        ]);
        let kind = self.kind_or_garbage(kind);
        o.raw("eventType", &kind);
        o.opt(self, 90, "taskId", |g| g.mostly(Gen::plain_id, Gen::id));
        o.opt(self, 50, "teamId", Gen::plain_id);
        o.opt_one(self, 70, &["actorId", "actorId", "userId"], |g| {
            g.mostly(Gen::plain_id, Gen::id)
        });
        o.opt(self, 30, "creatorId", Gen::plain_id);
        o.opt(self, 40, "assigneeId", |g| g.mostly(Gen::plain_id, Gen::id));
        o.opt(self, 85, "timestamp", Gen::time);
        let payload = self.plain_snapshot(true);
        let key = self.pick(&["payload", "payload", "payload", "data"]);
        o.raw(key, &payload);
        self.shuffle(&mut o);
        o.text()
    }

    /// A CloudEvent as Dapr writes it (its keys sorted half the time).
    fn plain_cloudevent(&mut self, event: String) -> String {
        let mut o = Obj::default();
        o.opt(self, 97, "specversion", |g| {
            g.mostly(|_| "\"1.0\"".to_owned(), Gen::value)
        });
        o.opt(self, 80, "id", |g| g.mostly(Gen::plain_id, Gen::id));
        o.opt(self, 60, "source", Gen::plain_text);
        o.opt(self, 70, "type", |g| {
            let t = g.pick(&["\"com.dapr.event.sent\"", "\"task.completed\"", "null"]);
            g.mostly(|_| t.to_owned(), Gen::value)
        });
        o.opt(self, 50, "datacontenttype", |_| {
            "\"application/json\"".to_owned()
        });
        o.opt(self, 40, "topic", |_| "\"task-events\"".to_owned());
        o.opt(self, 40, "pubsubname", |_| "\"pubsub\"".to_owned());
        o.opt(self, 50, "traceparent", |g| {
            g.mostly(
                |_| "\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"".to_owned(),
                Gen::text,
            )
        });
        o.opt(self, 40, "time", Gen::time);
        o.opt(self, 5, "traceid", Gen::plain_text);
        o.raw("data", &event);
        if self.chance(50) {
            o.0.sort();
        } else {
            self.shuffle(&mut o);
        }
        o.text()
    }

    /// Snapshot fields, plain most of the time; a payload (`current`) may
    /// also carry the task id and keys no rule reads.
    fn plain_snapshot(&mut self, current: bool) -> String {
        let mut d = Obj::default();
        for key in ["title", "description", "status", "priority"] {
            d.opt(self, 40, key, |g| g.mostly(Gen::plain_text, Gen::text));
        }
        d.opt(self, 50, "completed", |g| {
            g.mostly(|g| g.pick(&["true", "false"]).to_owned(), Gen::flag)
        });
        d.opt(self, 40, "due_date", |g| {
            g.mostly(
                |g| format!("\"2026-12-{:02}T09:00:00Z\"", 1 + g.below(28)),
                Gen::time,
            )
        });
        d.opt(self, 40, "tags", |g| {
            let plain = [
                "[\"work\", \"important\"]",
                "[]",
                "[\"work\"]",
                "[1, \"a\"]",
            ];
            g.mostly(|g| g.pick(&plain).to_owned(), Gen::tags)
        });
        d.opt(self, 15, "completed_at", Gen::time);
        if current {
            d.opt(self, 10, "task_id", |g| g.mostly(Gen::plain_id, Gen::id));
            d.opt(self, 20, "seq", Gen::number);
        }
        if self.chance(8) {
            // A key some rule reads.
            let key = self.pick(&[
                "name",
                "tags_added",
                "timezone",
                "id",
                "recurrence",
                "assignee_id",
            ]);
            d.raw(key, "\"x\"");
        }
        self.shuffle(&mut d);
        d.text()
    }

    fn shuffle(&mut self, o: &mut Obj) {
        for i in (1..o.0.len()).rev() {
            let j = self.below(i + 1);
            o.0.swap(i, j);
        }
    }

    /// `plain` most of the time, else `awkward`.
    fn mostly(
        &mut self,
        plain: impl FnOnce(&mut Gen) -> String,
        awkward: impl FnOnce(&mut Gen) -> String,
    ) -> String {
        if self.chance(90) {
            plain(self)
        } else {
            awkward(self)
        }
    }

    fn plain_id(&mut self) -> String {
        if self.chance(50) {
            self.below(100_000).to_string()
        } else {
            format!("\"t-{}\"", self.below(1000))
        }
    }

    fn plain_text(&mut self) -> String {
        self.pick(&[
            "\"Buy groceries\"",
            "\"Caf\u{e9} \u{1F600}\"",
            "\"\u{5317}\u{4eac}\"",
            "\"high\"",
            "\"1.0\"",
            "7",
        ])
        .to_owned()
    }

    fn task_data(&mut self) -> String {
        let mut o = Obj::default();
        let kind = self.pick(&[
            "created",
            "updated",
            "completed",
            "deleted",
            "tags_added",
            "priority_changed",
            "Completed",
            "uncompleted",
            "user_created",
            "comment_added",
        ]);
        o.raw(
            self.pick(&["event_type", "event_type", "operation"]),
            &self.kind_or_garbage(kind),
        );
        o.opt(self, 85, "task_id", Gen::id);
        o.opt(self, 80, "user_id", Gen::id);
        o.opt(self, 85, "timestamp", Gen::time);
        if self.chance(80) {
            let data = self.payload(false);
            o.raw("task_data", &data);
        }
        if self.chance(40) {
            let prev = self.payload(false);
            o.raw(
                self.pick(&["previous_task_data", "previousTaskData", "previous"]),
                &prev,
            );
        }
        o.opt(self, 20, "ip_address", Gen::text);
        o.opt(self, 20, "user_agent", Gen::text);
        self.finish(o)
    }

    fn standard(&mut self) -> String {
        let mut o = Obj::default();
        let kind = self.pick(&[
            "task_created",
            "task_status_changed",
            "task_template_created",
            "task_distribution_viewed",
            "project_collaborator_added",
            "user_updated",
            "analytics_query",
            "backup_completed",
            "dashboard_viewed",
            "deadline_approaching",
            "foo_bar",
            "heartbeat",
            "TaskUpdated",
        ]);
        o.raw("event_type", &self.kind_or_garbage(kind));
        o.opt(self, 80, "user_id", Gen::id);
        o.opt(self, 85, "timestamp", Gen::time);
        if self.chance(85) {
            let data = self.payload(kind.starts_with("user"));
            o.raw("data", &data);
        } else {
            self.payload_fields(&mut o, false);
        }
        o.opt(self, 60, "metadata", Gen::metadata);
        self.finish(o)
    }

    fn camel(&mut self) -> String {
        let mut o = Obj::default();
        let kind = self.pick(&[
            "task.updated",
            "task.completed",
            "task.created",
            "user.created",
            "team.updated",
            "TaskAssigned",
            "taskCreated",
        ]);
        o.raw("eventType", &self.kind_or_garbage(kind));
        o.opt(self, 80, "taskId", Gen::id);
        o.opt(self, 30, "teamId", Gen::id);
        o.opt(self, 70, "actorId", Gen::id);
        o.opt(self, 20, "userId", Gen::id);
        o.opt(self, 30, "creatorId", Gen::id);
        o.opt(self, 40, "assigneeId", Gen::id);
        o.opt(self, 20, "projectId", Gen::id);
        o.opt(self, 85, "timestamp", Gen::time);
        if self.chance(85) {
            let data = self.payload(kind.starts_with("user"));
            o.raw(self.pick(&["payload", "payload", "data"]), &data);
        }
        self.finish(o)
    }

    fn reminder(&mut self) -> String {
        let mut o = Obj::default();
        o.opt(self, 30, "event_id", Gen::id);
        o.opt(self, 85, "task_id", Gen::id);
        o.opt(self, 80, "user_id", Gen::id);
        o.opt(self, 60, "title", Gen::text);
        o.opt(self, 60, "due_at", Gen::time);
        o.opt_one(self, 85, &["remind_at", "remindAt"], Gen::time);
        if self.chance(70) {
            let m = self.method();
            o.raw(self.pick(&["notification_method", "method"]), &m);
        }
        o.opt(self, 70, "created_at", Gen::time);
        o.opt(self, 20, "timezone", Gen::zone);
        o.opt(self, 10, "remind_local", Gen::local);
        o.opt(self, 10, "project_id", Gen::id);
        self.finish(o)
    }

    /// Canonical output: either a real encoding of a decoded message, or a
    /// hand-made one with random fields.
    fn canonical(&mut self) -> String {
        if self.chance(50) {
            let inner = self.any_dialect();
            if let Ok(e) = decode(inner.as_bytes(), &CONTEXTS[1]) {
                return serde_json::to_string(&e).unwrap();
            }
        }
        let mut o = Obj::default();
        o.opt(self, 95, "event_id", Gen::id);
        o.opt(self, 95, "type", |g| {
            let k = g.pick(&["task.completed", "user.created", "reminder.requested"]);
            g.kind_or_garbage(k)
        });
        o.opt(self, 95, "dialect", |g| {
            let d = g.pick(&[
                "envelope",
                "task_data",
                "standard",
                "camel_case",
                "reminder",
                "canonical",
                "klingon",
            ]);
            format!("\"{d}\"")
        });
        o.opt(self, 80, "occurred_at", Gen::time);
        o.opt(self, 60, "task_id", Gen::id);
        o.opt(self, 60, "user_id", Gen::id);
        o.opt(self, 20, "project_id", Gen::id);
        o.opt(self, 50, "task", |g| g.payload(false));
        o.opt(self, 20, "previous", |g| g.payload(false));
        o.opt(self, 20, "changes", Gen::changes);
        o.opt(self, 20, "reminder", |g| {
            let mut r = Obj::default();
            r.opt(g, 90, "remind_at", Gen::time);
            r.opt(g, 40, "method", Gen::method);
            r.opt(g, 20, "remind_local", Gen::local);
            r.opt(g, 20, "due_at", Gen::time);
            r.text()
        });
        o.opt(self, 20, "user", |g| g.payload(true));
        o.opt(self, 20, "context", |g| {
            let mut c = Obj::default();
            c.opt(g, 50, "ip_address", Gen::text);
            c.opt(g, 50, "trace_parent", Gen::text);
            c.text()
        });
        o.opt(self, 20, "cloudevents", Gen::flag);
        o.opt(self, 20, "schema_version", Gen::text);
        o.opt(self, 20, "attributes", |g| {
            let mut a = Obj::default();
            a.opt(g, 50, "seq", Gen::number);
            a.opt(g, 50, "reason", Gen::text);
            a.text()
        });
        self.finish(o)
    }

    /// Objects without an event type.
    fn shapeless(&mut self) -> String {
        let mut o = Obj::default();
        o.opt(self, 50, "task_id", Gen::id);
        o.opt(self, 50, "timestamp", Gen::time);
        o.opt(self, 30, "event_data", |g| {
            if g.chance(50) {
                g.scalar()
            } else {
                g.payload(false)
            }
        });
        for _ in 0..self.below(12) {
            let k = format!("k{}_{}", self.below(1000), "é".repeat(self.below(3)));
            let v = self.value();
            o.raw_owned(k, v);
        }
        self.finish(o)
    }

    fn cloudevent(&mut self, inner: String) -> String {
        let mut o = Obj::default();
        o.opt(self, 95, "specversion", |g| {
            if g.chance(90) {
                "\"1.0\"".to_owned()
            } else {
                g.value()
            }
        });
        o.opt(self, 80, "id", Gen::id);
        o.opt(self, 60, "source", Gen::text);
        o.opt(self, 80, "type", |g| {
            let t = g.pick(&[
                "com.dapr.event.sent",
                "task.completed",
                "user.created",
                "task_completed",
            ]);
            g.kind_or_garbage(t)
        });
        o.opt(self, 50, "time", Gen::time);
        o.opt(self, 40, "topic", |g| {
            let t = g.pick(&["task-events", "reminders", "task.created"]);
            format!("\"{t}\"")
        });
        o.opt(self, 40, "traceparent", Gen::text);
        o.opt(self, 10, "traceid", Gen::text);
        match self.below(10) {
            0..=5 => o.raw("data", &inner),
            6 => o.raw("data", &serde_json::to_string(&inner).unwrap()),
            7 => o.raw("data_base64", &format!("\"{}\"", b64(inner.as_bytes()))),
            8 => {
                let junk = self.value();
                o.raw(self.pick(&["data", "data_base64"]), &junk);
            }
            _ => {}
        }
        if self.chance(5) {
            // Wrapped twice or more.
            let again = self.cloudevent(o.text());
            return again;
        }
        self.finish(o)
    }

    // ------------------------------------------------------------ parts

    /// A task (or user) payload object.
    fn payload(&mut self, user: bool) -> String {
        let mut o = Obj::default();
        self.payload_fields(&mut o, user);
        o.text()
    }

    fn payload_fields(&mut self, o: &mut Obj, user: bool) {
        o.opt(self, 50, "task_id", Gen::id);
        o.opt(self, 15, "id", Gen::id);
        o.opt(self, 40, "user_id", Gen::id);
        o.opt_one(self, 50, &["title", "name"], Gen::text);
        o.opt(self, 30, "description", Gen::text);
        o.opt(self, 20, "status", Gen::text);
        o.opt_one(
            self,
            40,
            &["completed", "is_completed", "isCompleted"],
            Gen::flag,
        );
        o.opt(self, 30, "priority", Gen::text);
        o.opt_one(
            self,
            35,
            &["due_at", "due_date", "dueDate", "dueAt"],
            Gen::time,
        );
        o.opt_one(self, 15, &["timezone", "tz", "time_zone"], Gen::zone);
        o.opt(self, 5, "due_local", Gen::local);
        o.opt(self, 25, "tags", Gen::tags);
        o.opt(self, 10, "is_recurring", Gen::flag);
        o.opt_one(
            self,
            15,
            &["recurrence", "recurring_pattern", "rrule", "recurrenceRule"],
            Gen::rule,
        );
        o.opt(self, 5, "recurrence_timezone", Gen::zone);
        o.opt(self, 5, "recurring_pattern_id", Gen::id);
        o.opt_one(self, 15, &["assignee_id", "assigneeId"], Gen::id);
        o.opt_one(self, 15, &["project_id", "pid"], Gen::id);
        o.opt(self, 10, "created_by_uid", Gen::id);
        o.opt(self, 15, "completed_at", Gen::time);
        o.opt_one(self, 25, &["created_at", "createdAt"], Gen::time);
        o.opt(self, 15, "changes", Gen::changes);
        o.opt_one(self, 10, &["ip_address", "userAgent"], Gen::text);
        o.opt(self, 5, "previous", |g| g.payload(false));
        if user {
            o.opt(self, 50, "email", Gen::text);
            o.opt_one(self, 30, &["full_name", "displayName"], Gen::text);
            o.opt_one(self, 30, &["username", "userName"], Gen::text);
            o.opt(self, 20, "timezone", Gen::zone);
        }
        o.opt(self, 20, "duration_minutes", Gen::number);
        o.opt(self, 15, "reason", Gen::text);
    }

    fn metadata(&mut self) -> String {
        let mut m = Obj::default();
        m.opt(self, 70, "source", Gen::text);
        m.opt_one(self, 70, &["version", "schemaVersion"], Gen::text);
        m.opt(self, 20, "traceparent", Gen::text);
        m.opt(self, 10, "user_agent", Gen::text);
        m.text()
    }

    fn changes(&mut self) -> String {
        if self.chance(10) {
            return self.value();
        }
        let mut c = Obj::default();
        for _ in 0..self.below(4) {
            let field = self.pick(&["title", "description", "priority", "\u{e9}t\u{e9}"]);
            let entry = if self.chance(85) {
                let mut e = Obj::default();
                e.opt(self, 80, "old", Gen::value);
                e.opt(self, 80, "new", Gen::value);
                e.text()
            } else {
                self.value()
            };
            c.raw(field, &entry);
        }
        c.text()
    }

    // ------------------------------------------------------------ values

    /// An event type; sometimes not a string, or blank.
    fn kind_or_garbage(&mut self, kind: &str) -> String {
        match self.below(40) {
            0 => "null".to_owned(),
            1 => "\"  \"".to_owned(),
            2 => self.number(),
            3 => "{\"name\": \"task.created\"}".to_owned(),
            _ => format!("\"{kind}\""),
        }
    }

    fn id(&mut self) -> String {
        match self.below(20) {
            0..=7 => self.below(100_000).to_string(),
            8..=14 => format!("\"user-{}\"", self.below(1000)),
            15 => "\"\"".to_owned(),
            16 => "null".to_owned(),
            17 => self.pick(&["true", "{\"id\": 1}", "[1]"]).to_owned(),
            18 => self.number(),
            _ => self.text(),
        }
    }

    fn time(&mut self) -> String {
        let y = 2020 + self.below(8);
        let (mo, d, h, mi, s) = (
            1 + self.below(12),
            1 + self.below(28),
            self.below(24),
            self.below(60),
            self.below(60),
        );
        match self.below(24) {
            0..=6 => format!("\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z\""),
            7 => format!(
                "\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z\"",
                self.below(1000)
            ),
            8 => format!("\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+05:30\""),
            9 => format!("\"{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}-0800\""),
            10 => format!("\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.123456\""),
            11 => format!("\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}\""),
            12 => format!("\"{y}-{mo:02}-{d:02}\""),
            13 => format!("\" {y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} \""),
            14 => (1_600_000_000 + self.below(200_000_000)).to_string(),
            15 => (1_600_000_000_000u64 + self.next() % 200_000_000_000).to_string(),
            16 => format!("{}.{}", 1_600_000_000 + self.below(1000), self.below(1000)),
            17 => format!("\"{}\"", 1_600_000_000 + self.below(1000)),
            18 => format!("\"{}.5\"", 1_600_000_000 + self.below(1000)),
            19 => self
                .pick(&[
                    "\"2026-13-45T99:99:99Z\"",
                    "\"yesterday\"",
                    "\"\"",
                    "null",
                    "true",
                    "1e300",
                    "-1e300",
                    "18446744073709551615",
                    "-9223372036854775808",
                    "\"-5\"",
                    "\"1e5\"",
                ])
                .to_owned(),
            20 => format!("\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.999999999Z\""),
            21 => format!("\"{y}-02-30T10:00:00Z\""),
            22 => format!("\"{y}-{mo:02}-{d:02}t{h:02}:{mi:02}:{s:02}z\""),
            _ => self.value(),
        }
    }

    fn zone(&mut self) -> String {
        let z = self.pick(&[
            "Europe/Berlin",
            "America/Sao_Paulo",
            "Australia/Lord_Howe",
            "UTC",
            " Asia/Kolkata ",
            "Mars/Olympus",
            "",
        ]);
        if self.chance(5) {
            return self.number();
        }
        format!("\"{z}\"")
    }

    fn local(&mut self) -> String {
        match self.below(4) {
            0 => "{\"local\": \"2026-03-29T02:30:00\", \"timezone\": \"Europe/Berlin\"}".to_owned(),
            1 => "{\"local\": \"2026-03-29T02:30:00\"}".to_owned(),
            2 => "{\"local\": \"2026-03-29T02:30:00\", \"timezone\": \"Mars/Olympus\"}".to_owned(),
            _ => self.value(),
        }
    }

    fn rule(&mut self) -> String {
        match self.below(8) {
            0 => "\"daily\"".to_owned(),
            1 => "\"FREQ=WEEKLY;BYDAY=MO\"".to_owned(),
            2 => "\"none\"".to_owned(),
            3 => "{\"rule\": \"0 9 * * MON\", \"timezone\": \"UTC\", \"extra\": 1}".to_owned(),
            4 => "{\"frequency\": \"weekly\"}".to_owned(),
            5 => "{\"interval\": 2}".to_owned(),
            6 => "{\"rule\": 5}".to_owned(),
            _ => self.value(),
        }
    }

    fn tags(&mut self) -> String {
        match self.below(6) {
            0 => "[\"work\", \"important\"]".to_owned(),
            1 => "[]".to_owned(),
            2 => "\"work, important,,\"".to_owned(),
            3 => "[1, \"a\"]".to_owned(),
            4 => "[\"a\", null]".to_owned(),
            _ => self.value(),
        }
    }

    fn method(&mut self) -> String {
        let m = self.pick(&["email", "push", "SMS", " Push ", "email|push|sms", "pigeon"]);
        if self.chance(5) {
            return self.value();
        }
        format!("\"{m}\"")
    }

    fn flag(&mut self) -> String {
        self.pick(&[
            "true",
            "false",
            "\"TRUE\"",
            "\"false\"",
            "1",
            "0",
            "2",
            "\"yes\"",
            "null",
        ])
        .to_owned()
    }

    fn number(&mut self) -> String {
        match self.below(10) {
            0 => "18446744073709551615".to_owned(),
            1 => "-9223372036854775808".to_owned(),
            2 => "123456789012345678901234567890".to_owned(),
            3 => "1e308".to_owned(),
            4 => "-0.0".to_owned(),
            5 => "3.25".to_owned(),
            6 => "1E3".to_owned(),
            _ => self.below(1000).to_string(),
        }
    }

    /// Text with the awkward characters producers send.
    fn text(&mut self) -> String {
        let s = self.pick(&[
            "Buy groceries",
            "Caf\u{e9} \u{1F600}",
            "line\nbreak \"quoted\" back\\slash",
            "  ",
            "",
            "\u{0}\u{1f}\u{7f}",
            "\u{5317}\u{4eac}",
            "null",
            "1.0",
        ]);
        match self.below(12) {
            0 => {
                // Escaped in the JSON text rather than written raw.
                let mut out = String::from("\"");
                for c in s.chars() {
                    let _ = write!(out, "\\u{:04x}", c as u32 & 0xFFFF);
                }
                out.push('"');
                out
            }
            1 => format!("\"{}\"", "x".repeat(200 + self.below(100))),
            2 => "\"\\ud83d\\ude00 surrogate pair\"".to_owned(),
            3 => self.number(),
            _ => serde_json::to_string(s).unwrap(),
        }
    }

    /// Any JSON value.
    fn value(&mut self) -> String {
        match self.below(9) {
            0 => "null".to_owned(),
            1 => self.flag(),
            2 => self.number(),
            3 => self.text(),
            4 => "[]".to_owned(),
            5 => "{}".to_owned(),
            6 => "[1, [2, {\"a\": null}], \"x\"]".to_owned(),
            7 => "{\"old\": 1, \"nested\": {\"k\": [true]}}".to_owned(),
            _ => "\"e30=\"".to_owned(),
        }
    }

    /// Not an object, or nothing.
    fn scalar(&mut self) -> String {
        self.pick(&[
            "",
            "   \n",
            "null",
            "true",
            "12",
            "\"text\"",
            "[1, 2]",
            "[]",
            "{}",
            "\u{feff}{}",
        ])
        .to_owned()
    }

    fn extra(&mut self) -> String {
        if self.chance(30) {
            format!(", \"extra\": {}", self.value())
        } else {
            String::new()
        }
    }

    /// Adds unknown keys and repeats, then writes the object.
    fn finish(&mut self, mut o: Obj) -> String {
        for _ in 0..self.below(3) {
            let k = self.pick(&["team_id", "seq", "source", "trace", "\u{e9}l\u{e8}ve"]);
            let v = self.value();
            o.raw(k, &v);
        }
        if self.chance(5) && !o.0.is_empty() {
            // A repeated key: the last one counts.
            let (k, _) = o.0[self.below(o.0.len())].clone();
            let v = self.value();
            o.0.push((k, v));
        }
        if self.chance(10) {
            let i = self.below(o.0.len() + 1);
            let j = self.below(o.0.len() + 1);
            if i < o.0.len() && j < o.0.len() {
                o.0.swap(i, j);
            }
        }
        o.text()
    }
}

/// An object being written: keys with their JSON texts, in order.
#[derive(Default)]
struct Obj(Vec<(String, String)>);

impl Obj {
    fn raw(&mut self, key: &str, json: &str) {
        self.0.push((key.to_owned(), json.to_owned()));
    }

    fn raw_owned(&mut self, key: String, json: String) {
        self.0.push((key, json));
    }

    /// Adds `key` with a generated value, `percent` of the time.
    fn opt(
        &mut self,
        g: &mut Gen,
        percent: usize,
        key: &str,
        value: impl FnOnce(&mut Gen) -> String,
    ) {
        if g.chance(percent) {
            let v = value(g);
            self.raw(key, &v);
        }
    }

    /// Like [`Obj::opt`], under one of `keys`.
    fn opt_one(
        &mut self,
        g: &mut Gen,
        percent: usize,
        keys: &[&str],
        value: impl FnOnce(&mut Gen) -> String,
    ) {
        let key = g.pick(keys);
        self.opt(g, percent, key, value);
    }

    fn text(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&serde_json::to_string(k).unwrap());
            out.push_str(": ");
            out.push_str(v);
        }
        out.push('}');
        out
    }
}
