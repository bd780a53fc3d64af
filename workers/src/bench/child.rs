//! The worker under a benchmark in its own process, as in production: this
//! process (the harness: mock Kafka cluster, producer, Redis) starts
//! `taskstream run <worker>` (the same binary) as a child pointed at the
//! harness, so the memory and CPU figures are the worker's alone.
//!
//! The child reads the same config (`--config` / `TASKSTREAM_CONFIG`) with
//! the broker, Redis, consumer group and key prefix replaced through
//! `TASKSTREAM_*` variables, plus whatever a benchmark adds; its log
//! (level `warn`) goes to a file named when it exits early.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pipelines::testing::{unique, TestProducer};

/// A line of `/proc/<pid>/status` in bytes (`VmHWM`, `VmRSS`, ...).
pub fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// A process's peak resident set so far (`VmHWM` in `/proc/<pid>/status`).
pub fn peak_rss_of(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmHWM")
}

/// CPU seconds (user + system) a process has used so far
/// (`/proc/<pid>/stat`, fields 14 and 15).
pub fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from its `)`.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("no command name in /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no CPU times in /proc/{pid}/stat"))
    };
    // After `)`: state is field 3, so utime (14) and stime (15) are 11 and 12.
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok(total as f64 / hz as f64)
}

/// Where the child connects: the harness's broker and Redis.
pub struct Harness<'a> {
    /// `--config` of this process, passed on.
    pub config_path: Option<&'a Path>,
    pub bootstrap: &'a str,
    pub redis_url: &'a str,
    pub key_prefix: &'a str,
    /// The child's `kafka.group_prefix` (its group is `<prefix>-<worker>`).
    pub group_prefix: &'a str,
}

/// The worker process: `taskstream run <worker>` against the harness.
pub struct WorkerProcess {
    child: std::process::Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts `taskstream run <worker>` with `env` added to the harness's
    /// settings.
    pub fn spawn(
        worker: &str,
        harness: &Harness<'_>,
        env: &[(&str, String)],
    ) -> anyhow::Result<WorkerProcess> {
        let exe = std::env::current_exe().context("locating the taskstream binary")?;
        let log =
            std::env::temp_dir().join(format!("{}.log", unique(&format!("{worker}-bench-worker"))));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut c = std::process::Command::new(exe);
        if let Some(p) = harness.config_path {
            c.arg("--config").arg(p);
        }
        c.args(["run", worker])
            .env("KAFKA_BOOTSTRAP_SERVERS", harness.bootstrap)
            .env("REDIS_URL", harness.redis_url)
            .env("TASKSTREAM_REDIS__KEY_PREFIX", harness.key_prefix)
            .env("TASKSTREAM_METRICS_ADDR", "")
            .env("TASKSTREAM_KAFKA__GROUP_PREFIX", harness.group_prefix)
            .env("TASKSTREAM_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", "10")
            .env("TASKSTREAM_LOG__LEVEL", "warn")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .spawn()
            .with_context(|| format!("starting `taskstream run {worker}`"))?;
        Ok(WorkerProcess { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the worker exited early, naming its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the worker process exited early ({status}); its log: {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// Its peak RSS, then SIGTERM and wait (SIGKILL after 30 s).
    pub fn stop(mut self) -> anyhow::Result<u64> {
        let rss = peak_rss_of(self.child.id());
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&self.log);
        rss
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Produces `count` events (`event(i)` as key and payload) to `topic`, at
/// most `window` ahead of `consumed` (the mock keeps only a few MB a
/// partition).
pub fn produce(
    bootstrap: String,
    topic: String,
    count: u64,
    event: impl Fn(u64) -> (String, String) + Send + 'static,
    consumed: Arc<AtomicU64>,
    window: u64,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let p = TestProducer::new(&bootstrap)?;
        for i in 0..count {
            while i.saturating_sub(consumed.load(Ordering::Relaxed)) > window {
                p.poll();
                std::thread::sleep(Duration::from_micros(200));
            }
            let (key, payload) = event(i);
            p.send(&topic, key.as_bytes(), payload.as_bytes())?;
            if i % 1024 == 0 {
                p.poll();
            }
        }
        p.flush()?;
        Ok(())
    })
}
