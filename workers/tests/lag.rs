//! The lag monitor end to end: the real binary (`taskstream run audit` with
//! the file store and in-memory state, `taskstream run lag-monitor`,
//! `taskstream lag`) on the mock Kafka cluster. A stopped worker's lag keeps
//! rising on the monitor, in messages and seconds, and its group goes
//! STALLED then STOPPED; once the worker is back its lag falls to 0.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pipelines::kafka::mock::MockKafka;
use pipelines::testing::{free_port, unique, TestProducer};

mod common;
use common::taskstream;

struct Process(Child);

impl Process {
    fn stop(mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("taskstream did not stop on SIGTERM");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The environment both the worker and the monitor run with.
struct Setup {
    bootstrap: String,
    group_prefix: String,
    dir: std::path::PathBuf,
}

impl Setup {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = taskstream();
        c.args(args)
            .env("KAFKA_BOOTSTRAP_SERVERS", &self.bootstrap)
            .env("REDIS_URL", "memory:")
            .env("TASKSTREAM_KAFKA__GROUP_PREFIX", &self.group_prefix)
            .env("TASKSTREAM_KAFKA__COMMIT_INTERVAL", "200ms")
            .env("TASKSTREAM_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", "20")
            .env("TASKSTREAM_WORKERS__AUDIT__TOPICS", "[\"task-events\"]")
            .env("TASKSTREAM_AUDIT__STORE", "file")
            .env("TASKSTREAM_AUDIT__DIR", self.dir.join("audit"))
            .env("TASKSTREAM_LAG_MONITOR__INTERVAL", "300ms")
            .env("TASKSTREAM_LAG_MONITOR__MIN_OBSERVATIONS", "3")
            .env("TASKSTREAM_LAG_MONITOR__STOPPED_AFTER", "4s")
            .env("RUST_LOG", "info");
        c
    }

    fn spawn(&self, args: &[&str], port: u16, log: &str) -> Process {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        Process(
            self.command(args)
                .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// `taskstream lag --format json`, one object per partition.
    fn lag_json(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["lag", "--format", "json"];
        args.extend_from_slice(extra);
        let out = self.command(&args).output().unwrap();
        assert!(
            out.status.success(),
            "taskstream lag failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// The value of the one sample of `metric` whose labels contain every `filter`.
fn sample(text: &str, metric: &str, filters: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
}

fn produce(producer: &TestProducer, from: u64, n: u64) {
    for i in from..from + n {
        let (key, payload) = pipelines::bench::sample_event(i);
        producer
            .send("task-events", key.as_bytes(), payload.as_bytes())
            .unwrap();
    }
    producer.flush().unwrap();
}

async fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_workers_lag_rises_and_goes_stopped_then_falls_to_zero_when_it_catches_up() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("task-events", 3).unwrap();
    let setup = Setup {
        bootstrap: mock.bootstrap_servers().to_string(),
        group_prefix: unique("lag"),
        dir: std::env::temp_dir().join(unique("lag-test")),
    };
    std::fs::create_dir_all(&setup.dir).unwrap();
    let group = format!("{}-audit", setup.group_prefix);
    let group_label = format!("group=\"{group}\"");
    let producer = TestProducer::new(&setup.bootstrap).unwrap();

    // Before any worker ran: partitions are reported, without a fake lag.
    produce(&producer, 0, 30);
    let all = setup.lag_json(&["--samples", "1"]);
    // Without --group: every worker's group on task-events (recurring also
    // reads user-events, which does not exist here).
    let mut groups: Vec<&str> = all.iter().filter_map(|r| r["group"].as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    assert_eq!(groups.len(), taskstream::workers::NAMES.len(), "{groups:?}");
    let rows: Vec<_> = all
        .into_iter()
        .filter(|r| r["group"] == group.as_str())
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        assert_eq!(r["group"], group.as_str());
        assert!(r["committed"].is_null() && r["lag"].is_null(), "{r}");
        assert_eq!(r["status"], serde_json::Value::Null);
    }

    // The monitor runs throughout.
    let monitor_port = free_port().unwrap();
    let _monitor = setup.spawn(&["run", "lag-monitor"], monitor_port, "monitor.log");

    // 1. The worker consumes everything: lag 0 everywhere.
    let worker_port = free_port().unwrap();
    let worker = setup.spawn(&["run", "audit"], worker_port, "worker-1.log");
    wait_for(Duration::from_secs(60), "the worker to catch up", || {
        let text = metrics_text(monitor_port);
        sample(&text, "kafka_consumergroup_group_sum_lag", &[&group_label]) == Some(0.0)
            && sample(
                &text,
                "taskstream_lag_partition_uncommitted",
                &[&group_label, "partition=\"0\""],
            ) == Some(0.0)
    })
    .await;
    worker.stop();

    // 2. Stopped: every second 10 more records; lag rises in messages and in
    //    seconds on every look, and the group goes STALLED, then STOPPED.
    let mut lags = Vec::new();
    let mut seconds = Vec::new();
    let mut statuses = Vec::new();
    for round in 0..8 {
        produce(&producer, 100 + round * 10, 10);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = metrics_text(monitor_port);
        lags.push(sample(&text, "kafka_consumergroup_group_sum_lag", &[&group_label]).unwrap());
        seconds.push(
            sample(
                &text,
                "kafka_consumergroup_group_max_lag_seconds",
                &[&group_label],
            )
            .unwrap(),
        );
        for s in ["OK", "WARNING", "STALLED", "STOPPED", "REWIND"] {
            if sample(
                &text,
                "taskstream_lag_group_status",
                &[&group_label, &format!("status=\"{s}\"")],
            ) == Some(1.0)
            {
                statuses.push(s);
            }
        }
    }
    assert!(
        lags.windows(2).all(|w| w[1] > w[0]),
        "lag rises while the worker is stopped: {lags:?}"
    );
    assert_eq!(*lags.last().unwrap(), 80.0);
    assert!(
        seconds.windows(2).all(|w| w[1] > w[0]),
        "lag seconds rise while the worker is stopped: {seconds:?}"
    );
    assert!(seconds.iter().all(|s| s.is_finite() && *s >= 0.0));
    assert!(statuses.contains(&"STALLED"), "{statuses:?}");
    assert_eq!(
        *statuses.last().unwrap(),
        "STOPPED",
        "{statuses:?}\n{}",
        setup.log("monitor.log")
    );
    assert!(
        sample(
            &metrics_text(monitor_port),
            "taskstream_lag_seconds_exact",
            &[&group_label]
        ) == Some(1.0),
        "lag seconds come from the first unconsumed record"
    );

    // `taskstream lag` says the same from its own reads.
    let rows = setup.lag_json(&["--group", &group, "--samples", "3", "--every", "300ms"]);
    assert_eq!(rows.len(), 3);
    let total: u64 = rows.iter().map(|r| r["lag"].as_u64().unwrap()).sum();
    assert_eq!(total, 80);
    for r in &rows {
        let lag = r["lag"].as_u64().unwrap();
        let committed = r["committed"].as_i64().unwrap();
        let high = r["high_watermark"].as_i64().unwrap();
        assert_eq!(high - committed, lag as i64, "{r}");
        assert_eq!(r["data_loss"], 0);
        if lag > 0 {
            assert!(r["lag_seconds"].as_f64().unwrap() >= 4.0, "{r}");
            assert_eq!(r["status"], "STOPPED", "{r}");
        }
    }

    // 3. The worker is back: it catches up and lag falls to 0, status OK.
    let worker = setup.spawn(&["run", "audit"], worker_port, "worker-2.log");
    wait_for(Duration::from_secs(60), "lag to fall to 0", || {
        let text = metrics_text(monitor_port);
        sample(&text, "kafka_consumergroup_group_sum_lag", &[&group_label]) == Some(0.0)
            && sample(
                &text,
                "kafka_consumergroup_group_max_lag_seconds",
                &[&group_label],
            ) == Some(0.0)
            && sample(
                &text,
                "taskstream_lag_group_status",
                &[&group_label, "status=\"OK\""],
            ) == Some(1.0)
    })
    .await;
    let rows = setup.lag_json(&["--group", &group, "--samples", "1"]);
    assert!(
        rows.iter()
            .all(|r| r["lag"] == 0 && r["lag_seconds"] == 0.0),
        "{rows:?}"
    );
    worker.stop();
    let _ = std::fs::remove_dir_all(&setup.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_answers_at_once_while_kafka_is_down() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("task-events", 3).unwrap();
    let setup = Setup {
        bootstrap: mock.bootstrap_servers().to_string(),
        group_prefix: unique("lag-down"),
        dir: std::env::temp_dir().join(unique("lag-down")),
    };
    std::fs::create_dir_all(&setup.dir).unwrap();
    let port = free_port().unwrap();
    let _monitor = setup.spawn(&["run", "lag-monitor"], port, "monitor.log");
    wait_for(Duration::from_secs(30), "a first collection", || {
        metrics_text(port).contains("kafka_partition_latest_offset{")
    })
    .await;

    mock.broker_down(1).unwrap();
    // Collections now wait for their request timeouts; scrapes must not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut took = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let text = metrics_text(port);
        took.push(started.elapsed());
        assert!(
            text.contains("kafka_partition_latest_offset{"),
            "the last collection is still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    took.sort();
    let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
    println!("scrapes while Kafka is down: median {median:?}, slowest {slowest:?}");
    // The machine is shared with builds, so one scrape may be descheduled;
    // the median is the scrape's own cost, and even the slowest is far below
    // the 5 s a collection waits for each Kafka request now.
    assert!(
        median < Duration::from_millis(10),
        "median scrape {median:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "slowest scrape {slowest:?}"
    );
    mock.broker_up(1).unwrap();
    let _ = std::fs::remove_dir_all(&setup.dir);
}
