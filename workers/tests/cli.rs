//! The `taskstream` binary's contract: decode, config check, dev-kafka.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::taskstream;

fn decode(lines: &str, topic: &str) -> Vec<serde_json::Value> {
    let mut child = taskstream()
        .args(["decode", "--topic", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "decode exits 0 even with bad lines");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every JSON example of the five design documents, one per line, as the
/// producers would send it (the demo's input file holds them).
#[test]
fn decode_turns_every_seed_example_into_a_canonical_event() {
    let input: String = taskstream::demo::messages()
        .unwrap()
        .into_iter()
        .map(|(_, _, payload)| String::from_utf8(payload).unwrap() + "\n")
        .collect();
    let out = decode(&input, "task-events");
    assert_eq!(out.len(), 19);
    let kinds: Vec<&str> = out
        .iter()
        .map(|v| v["type"].as_str().unwrap_or("ERROR"))
        .collect();
    assert_eq!(
        &kinds[..16],
        &[
            "user.created",
            "task.created",
            "task.updated",
            "task.completed",
            "task.deleted",
            "task.created",
            "task.updated",
            "reminder.requested",
            "task.created",
            "task.status_changed",
            "task.created",
            "user.created",
            "task.updated",
            "task.completed",
            "task.created",
            "deadline.approaching",
        ]
    );
    for v in &out[..17] {
        assert!(v["event_id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
        assert!(v["occurred_at"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(v["dialect"].is_string(), "{v}");
    }
    // Ids become strings whatever the producer's JSON type.
    assert_eq!(out[1]["task_id"], "123");
    assert_eq!(out[8]["user_id"], "123");
    assert_eq!(out[10]["project_id"], "project-789");
    // The CloudEvents envelope keeps the inner id and type.
    assert_eq!(out[14]["cloudevents"], true);
    assert_eq!(out[14]["event_id"], "7d1f7a52-1111-4c1e-9d5e-000000000125");
    // The truncated message is an error line naming the reason, not a crash.
    assert_eq!(out[17]["reason"], "not_json");
    assert_eq!(out[17]["line"], 18);
    assert_eq!(out[18]["reason"], "unknown_type");
}

#[test]
fn decode_of_a_message_without_id_is_stable() {
    let line = r#"{"event_type":"completed","task_id":5,"user_id":"u","timestamp":"2026-01-03T10:00:00Z","task_data":{"completed":true}}"#;
    let a = decode(&format!("{line}\n{line}\n"), "task-events");
    assert_eq!(a[0]["event_id"], a[1]["event_id"]);
    assert!(a[0]["event_id"].as_str().unwrap().starts_with("h:"));
}

#[test]
fn config_check_masks_secrets_and_applies_env_overrides() {
    let dir = std::env::temp_dir().join(pipelines::testing::unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("taskstream.toml");
    std::fs::write(
        &file,
        r#"
[kafka]
bootstrap_servers = "b1.example.com:9096,b2.example.com:9096"
[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanisms" = "SCRAM-SHA-512"
"sasl.username" = "taskstream"
"sasl.password" = "file-secret-pw"
[pipeline]
max_batch = 100
"#,
    )
    .unwrap();
    let out = taskstream()
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("REDIS_URL", "redis://:redis-secret-pw@cache:6379/0")
        .env("TASKSTREAM_PIPELINE__MAX_BATCH", "250")
        .env(
            "TASKSTREAM_KAFKA__PROPERTIES__SSL_CA_LOCATION",
            "/etc/ca.pem",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("file-secret-pw") && !stderr.contains("file-secret-pw"));
    assert!(!stdout.contains("redis-secret-pw") && !stderr.contains("redis-secret-pw"));
    assert!(
        stdout.contains("\"sasl.password\" = \"********\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("redis://:********@cache:6379/0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("max_batch = 250"),
        "env beats the file: {stdout}"
    );
    assert!(
        stdout.contains("\"ssl.ca.location\" = \"/etc/ca.pem\""),
        "{stdout}"
    );
    assert!(stdout.contains("SCRAM-SHA-512"));
}

#[test]
fn bad_config_values_name_the_key_and_the_value() {
    let cases = [
        (
            "TASKSTREAM_PIPELINE__CONCURRENCY",
            "0",
            "pipeline.concurrency",
        ),
        (
            "TASKSTREAM_PIPELINE__CONCURRENCY",
            "many",
            "pipeline.concurrency",
        ),
        (
            "TASKSTREAM_KAFKA__AUTO_OFFSET_RESET",
            "oldest",
            "kafka.auto_offset_reset",
        ),
        (
            "TASKSTREAM_RETRY__INITIAL_BACKOFF",
            "soon",
            "retry.initial_backoff",
        ),
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            "kafka",
            "kafka.bootstrap_servers",
        ),
        ("TASKSTREAM_AUDIT__STORE", "s3", "audit.store"),
    ];
    for (var, value, key) in cases {
        let out = taskstream()
            .args(["config", "check"])
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} must be rejected");
        assert!(stderr.contains(key), "{var}={value}: {stderr}");
        assert!(stderr.contains(value), "{var}={value}: {stderr}");
    }
}

#[test]
fn unknown_config_section_is_rejected() {
    let dir = std::env::temp_dir().join(pipelines::testing::unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("typo.toml");
    std::fs::write(&file, "[kafak]\nbootstrap_servers = \"x:1\"\n").unwrap();
    let out = taskstream()
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kafak"));
}

#[test]
fn documented_config_file_is_accepted() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/taskstream.toml");
    let out = taskstream()
        .args(["config", "check", "--config", file])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dev_kafka_prints_a_bootstrap_address_that_accepts_messages() {
    let mut child = taskstream()
        .args(["dev-kafka", "--topics", "task-events:2,reminders"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let bootstrap = first.trim().to_string();
    assert!(bootstrap.contains(':'), "{bootstrap:?}");
    let p = pipelines::testing::TestProducer::new(&bootstrap).unwrap();
    p.send_to("task-events", Some(1), b"k", b"hello").unwrap();
    p.flush().unwrap();
    let got = pipelines::testing::read_topic(&bootstrap, "task-events", 1, Duration::from_secs(10))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].partition, 1);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success());
}

/// A bench's own bad flag is refused before anything starts, naming the flag
/// and the value.
#[test]
fn bench_refuses_an_event_rate_of_zero() {
    let out = taskstream()
        .args(["bench", "--worker", "aggregates", "--event-rate", "0"])
        .env_remove("TASKSTREAM_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--event-rate has value 0"), "{stderr}");
}

/// The JSON line of `taskstream bench ARGS`, which must succeed.
fn bench_line(args: &[&str]) -> serde_json::Value {
    let out = taskstream()
        .arg("bench")
        .args(args)
        .env_remove("TASKSTREAM_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

/// `bench --worker audit --store files` runs the worker as a child process:
/// every event reaches the file store's consumer group and the memory figure
/// is the child's, not this harness's (which holds the mock cluster).
#[test]
fn audit_file_store_bench_measures_the_worker_process() {
    let line = bench_line(&["--worker", "audit", "--store", "files", "--events", "3000"]);
    assert_eq!(line["worker"], "audit");
    assert_eq!(line["events"], 3000);
    let rss = line["peak_rss_bytes"].as_u64().unwrap();
    assert!(rss > 1 << 20, "a child's peak RSS, got {rss}");
    assert!(line["wall_seconds"].as_f64().unwrap() > 0.0);
    assert!(line["cpu_seconds_per_event"].as_f64().unwrap() > 0.0);
    let (p50, p99) = (
        line["p50_ms"].as_f64().unwrap(),
        line["p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 <= p99, "p50 {p50} above p99 {p99}");
    let redis = line["redis_cpu_seconds_per_event"].as_f64().unwrap();
    assert!(redis > 0.0, "the Redis server's CPU per event, got {redis}");
    assert!(line.get("postgres_cpu_seconds_per_event").is_none());
}

/// `bench --worker audit` (PostgreSQL, on this machine) says where the
/// machine's time went: the bench process's CPU, Redis's and PostgreSQL's,
/// each per event; the baseline, which uses neither, names neither.
#[test]
fn audit_postgres_bench_reports_the_cpu_of_redis_and_postgres() {
    let line = bench_line(&["--worker", "audit", "--events", "3000"]);
    for key in [
        "cpu_seconds_per_event",
        "redis_cpu_seconds_per_event",
        "postgres_cpu_seconds_per_event",
    ] {
        let v = line[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {line}"));
        // Each event costs each of them some work: well above nothing, and
        // well below a second.
        assert!(v > 1e-7 && v < 0.1, "{key}: {v}");
    }
    let line = bench_line(&["--worker", "baseline", "--events", "3000"]);
    assert!(line.get("redis_cpu_seconds_per_event").is_none(), "{line}");
    assert!(
        line.get("postgres_cpu_seconds_per_event").is_none(),
        "{line}"
    );
}

/// The README's first command, `taskstream demo`: the main job end to end on
/// embedded defaults exits 0 and shows the same trail every run; the
/// reminder that comes due long past is recorded missed, and published so,
/// once (it is planned by both the task event and the reminder request of
/// task 124).
#[test]
fn the_demo_runs_the_main_job_end_to_end() {
    let out = std::env::temp_dir().join(pipelines::testing::unique("demo-out"));
    let run = taskstream()
        .arg("demo")
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains(
            "summary: 70 messages -> 80 audit records, 1 duplicate skipped, \
             1 unknown type skipped, 1 dead-lettered"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok: 80 records checked, hash chain intact"),
        "{stdout}"
    );
    let missed = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("notification.missed task 124"))
        .count();
    assert_eq!(missed, 1, "{stdout}");
    assert!(out.join("audit").is_dir() && out.join("mail").is_dir());
    std::fs::remove_dir_all(&out).ok();
}
