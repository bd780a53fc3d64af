//! The dashboards and alerts against a real Prometheus (Debian's `prometheus`
//! package): the audit worker and the lag monitor run under load on the mock
//! cluster, Prometheus scrapes them with the shipped `dashboards/prometheus.yml`
//! (targets and intervals replaced) and loads `dashboards/alerts.yml`; every
//! panel query and variable of every dashboard and every alert expression is
//! run through Prometheus's HTTP API. A query that errors fails the test, and
//! so does one that returns no series, except over the metrics listed in
//! [`MAY_BE_EMPTY`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipelines::kafka::mock::MockKafka;
use pipelines::testing::{free_port, unique, TestProducer};
use serde_json::Value;

mod common;
use common::taskstream;

/// Metrics a panel or alert may find no series of here, and why. Everything
/// else must return at least one series.
const MAY_BE_EMPTY: &[(&str, &str)] = &[
    (
        "taskstream_reminders_",
        "the reminders worker is not part of this build or test",
    ),
    (
        "taskstream_recurring_",
        "the recurring worker is not run by this test",
    ),
    (
        "taskstream_deadlines_",
        "the deadlines worker is not run by this test",
    ),
    (
        "taskstream_aggregates_",
        "the aggregates worker is not run by this test",
    ),
    (
        "taskstream_redis_errors_total",
        "counted only after a Redis error; the in-memory store never fails",
    ),
    (
        "taskstream_paused_partitions",
        "set only once a partition was paused for backpressure",
    ),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from 127.0.0.1:`port`; the body, or None when unreachable.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn prom_api(port: u16, path: &str) -> Value {
    let body = http_get(port, path).unwrap_or_default();
    serde_json::from_str(&body)
        .unwrap_or_else(|_| serde_json::json!({"status": "unreachable", "error": body}))
}

/// Runs an instant query; Ok(number of series) or Err(Prometheus's error).
fn query(port: u16, expr: &str) -> Result<usize, String> {
    let v = prom_api(
        port,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    );
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().map_or(0, Vec::len))
}

/// Every `expr` of every panel (rows' nested panels included).
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((
                        p["title"].as_str().unwrap_or("?").to_string(),
                        e.to_string(),
                    ));
                }
            }
            walk(&p["panels"], out);
        }
    }
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's variables, as Prometheus sees them.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$worker", ".*")
}

fn may_be_empty(expr: &str) -> bool {
    MAY_BE_EMPTY.iter().any(|(m, _)| expr.contains(m))
}

#[test]
fn the_prometheus_rule_manifest_has_the_same_rules_as_alerts_yml() {
    let alerts = std::fs::read_to_string(root().join("dashboards/alerts.yml")).unwrap();
    let manifest = std::fs::read_to_string(root().join("k8s/base/prometheusrule.yaml")).unwrap();
    let groups = &alerts[alerts.find("groups:").unwrap()..];
    let indented: String = groups
        .lines()
        .map(|l| {
            if l.trim().is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    let spec = &manifest[manifest.find("spec:\n").unwrap() + "spec:\n".len()..];
    assert_eq!(
        spec, indented,
        "copy dashboards/alerts.yml's groups into k8s/base/prometheusrule.yaml"
    );
}

#[test]
fn promtool_accepts_the_rule_file() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root().join("dashboards/alerts.yml"))
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dashboards/alerts_test.yml`: each reminder alert fires on a series
/// showing its problem and not on a healthy one.
#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let out = Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(root().join("dashboards"))
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_and_alert_runs_on_prometheus_scraping_the_workers_and_the_lag_monitor() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("task-events", 3).unwrap();
    let bootstrap = mock.bootstrap_servers().to_string();
    let dir = std::env::temp_dir().join(unique("dashboards"));
    std::fs::create_dir_all(&dir).unwrap();
    let group_prefix = unique("dash");

    // Load: mixed events all along, and one poison message (a dead letter).
    let producer = TestProducer::new(&bootstrap).unwrap();
    producer
        .send("task-events", b"poison", b"not json at all")
        .unwrap();
    producer.flush().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, bootstrap) = (stop.clone(), bootstrap.clone());
        std::thread::spawn(move || {
            let producer = TestProducer::new(&bootstrap).unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    let (key, payload) = pipelines::bench::sample_event(i);
                    producer
                        .send("task-events", key.as_bytes(), payload.as_bytes())
                        .unwrap();
                    i += 1;
                }
                producer.flush().unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let spawn = |args: &[&str], port: u16, log: &str| {
        Process(
            taskstream()
                .args(args)
                .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
                .env("REDIS_URL", "memory:")
                .env("TASKSTREAM_KAFKA__GROUP_PREFIX", &group_prefix)
                .env("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "200ms")
                .env("TASKSTREAM_WORKERS__AUDIT__TOPICS", "[\"task-events\"]")
                .env("TASKSTREAM_AUDIT__STORE", "file")
                .env("TASKSTREAM_AUDIT__DIR", dir.join("audit"))
                .env("TASKSTREAM_LAG_MONITOR__INTERVAL", "1s")
                .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(log)).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let (worker_port, monitor_port) = (free_port().unwrap(), free_port().unwrap());
    let _worker = spawn(&["run", "audit"], worker_port, "worker.log");
    let _monitor = spawn(&["run", "lag-monitor"], monitor_port, "monitor.log");

    // Prometheus with the shipped config: our targets, 1 s intervals.
    let shipped = std::fs::read_to_string(root().join("dashboards/prometheus.yml")).unwrap();
    let targets_line =
        "      - targets: [\"taskstream-audit:9464\", \"taskstream-lag-monitor:9464\"]";
    assert!(
        shipped.contains(targets_line),
        "dashboards/prometheus.yml changed shape"
    );
    let config = shipped
        .replace(
            targets_line,
            &format!(
                "      - targets: [\"127.0.0.1:{worker_port}\", \"127.0.0.1:{monitor_port}\"]"
            ),
        )
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(root().join("dashboards/alerts.yml"), dir.join("alerts.yml")).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.join("prometheus.yml"))
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let prom_port = free_port().unwrap();
    let _prometheus = Process(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (apt-get install prometheus)"),
    );

    // Wait until both targets are up and the lag monitor's series are in.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let up = query(prom_port, "up == 1").unwrap_or(0);
        let lag = query(prom_port, "kafka_consumergroup_group_lag").unwrap_or(0);
        let handled =
            query(prom_port, "rate(taskstream_messages_handled_total[1m]) > 0").unwrap_or(0);
        if up == 2 && lag > 0 && handled > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "targets not scraped: up={up} lag={lag} handled={handled}\nprometheus: {}\nmonitor: {}\nworker: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("monitor.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default(),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few more scrapes, so every rate() window holds several samples.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Every panel of every dashboard; retried for a while, since some series
    // (histograms' rates) need a couple of scrapes after the first.
    let mut dashboards = Vec::new();
    for entry in std::fs::read_dir(root().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            dashboards.push((path, d));
        }
    }
    assert!(dashboards.len() >= 2, "taskstream.json and lag.json");
    let mut checked;
    let deadline = Instant::now() + Duration::from_secs(30);
    let failures = loop {
        let mut failures = Vec::new();
        checked = 0;
        for (path, d) in &dashboards {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            for (title, expr) in panel_queries(d) {
                checked += 1;
                let promql = grafana_to_promql(&expr);
                match query(prom_port, &promql) {
                    Err(e) => failures.push(format!("{name} / {title}: {promql}: {e}")),
                    Ok(0) if !may_be_empty(&expr) => {
                        failures.push(format!("{name} / {title}: {promql}: no series"))
                    }
                    Ok(_) => {}
                }
            }
            // Variables: label_values(metric, label).
            for v in d["templating"]["list"].as_array().into_iter().flatten() {
                let Some(q) = v["query"]
                    .as_str()
                    .and_then(|q| q.strip_prefix("label_values("))
                else {
                    continue;
                };
                let (metric, label) = q.trim_end_matches(')').split_once(',').unwrap();
                let r = prom_api(
                    prom_port,
                    &format!(
                        "/api/v1/label/{}/values?match[]={}",
                        label.trim(),
                        percent_encode(metric.trim())
                    ),
                );
                if r["data"].as_array().is_none_or(|a| a.is_empty()) {
                    failures.push(format!(
                        "{name} variable {}: {q}: no values ({r})",
                        v["name"]
                    ));
                }
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(
        failures.is_empty(),
        "{} panel queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 30, "only {checked} panel queries found");

    // Every alert: Prometheus loaded and evaluated it without error, and its
    // expression runs as a query.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rules = loop {
        let v = prom_api(prom_port, "/api/v1/rules");
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        if (!rules.is_empty() && evaluated) || Instant::now() > deadline {
            break rules;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(rules.len(), 15, "every rule of alerts.yml is loaded");
    for r in &rules {
        assert_eq!(
            r["health"], "ok",
            "alert {} evaluates with an error: {}",
            r["name"], r["lastError"]
        );
        let expr = r["query"].as_str().unwrap();
        query(prom_port, expr).unwrap_or_else(|e| panic!("alert {}: {expr}: {e}", r["name"]));
    }

    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
