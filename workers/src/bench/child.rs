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
    Ok(process_times(pid)?.cpu_seconds)
}

/// What `/proc/<pid>/stat` says of a process's CPU time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessTimes {
    /// Field 4: the parent's pid.
    pub parent: u32,
    /// Fields 14 and 15: its own user and system time, in seconds.
    pub cpu_seconds: f64,
    /// Fields 16 and 17: that of its children that have exited and been
    /// waited for, in seconds.
    pub exited_children_cpu_seconds: f64,
}

/// A process's CPU times from `/proc/<pid>/stat`.
pub fn process_times(pid: u32) -> anyhow::Result<ProcessTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat(&stat).with_context(|| format!("no CPU times in /proc/{pid}/stat"))
}

fn parse_stat(stat: &str) -> Option<ProcessTimes> {
    // The command name (field 2) may hold spaces: count from its `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`, field 3 (the state) is at 0: field n is at n - 3.
    let number = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ProcessTimes {
        parent: u32::try_from(number(4)?).ok()?,
        cpu_seconds: (number(14)? + number(15)?) as f64 / hz,
        exited_children_cpu_seconds: (number(16)? + number(17)?) as f64 / hz,
    })
}

/// The CPU seconds a single-threaded process has run so far, in
/// nanoseconds' precision: the first field of `/proc/<pid>/schedstat` (its
/// main thread's). `stat` counts in clock ticks (10 ms), as coarse as a
/// short bench's whole share of PostgreSQL (3,000 events took 0 ticks once).
fn run_seconds(pid: u32) -> Option<f64> {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    parse_schedstat(&schedstat)
}

fn parse_schedstat(schedstat: &str) -> Option<f64> {
    let nanos: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(nanos as f64 / 1e9)
}

/// The CPU seconds PostgreSQL has used so far, from the pids of its
/// processes (`pg_stat_activity`, one thread each): theirs, and the
/// postmaster's (their parent) with that of its children that exited, so a
/// process that ends between two readings (an autovacuum worker, a closed
/// connection) still counts. `None` when the processes cannot be read
/// (another machine's).
pub fn postgres_cpu_seconds(pids: &[u32]) -> Option<f64> {
    let mut postmaster = None;
    let mut total = 0.0;
    for &pid in pids {
        // A process may end between the listing and this reading.
        let Ok(t) = process_times(pid) else { continue };
        total += run_seconds(pid).unwrap_or(t.cpu_seconds);
        postmaster.get_or_insert(t.parent);
    }
    let postmaster = postmaster?;
    let master = process_times(postmaster).ok()?;
    let own = run_seconds(postmaster).unwrap_or(master.cpu_seconds);
    Some(total + own + master.exited_children_cpu_seconds)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let stat = "4242 (postgres: x (y)) S 17 4242 4242 0 -1 4194560 500 0 0 0 \
                    300 200 1000 500 20 0 1 0 100 1000 10";
        assert_eq!(
            parse_stat(stat),
            Some(ProcessTimes {
                parent: 17,
                cpu_seconds: 500.0 / hz,
                exited_children_cpu_seconds: 1500.0 / hz,
            })
        );
        assert_eq!(parse_stat("4242 (x) S 17"), None);
    }

    #[test]
    fn schedstat_is_read_in_nanoseconds() {
        assert_eq!(parse_schedstat("1500000000 20 3\n"), Some(1.5));
        assert_eq!(parse_schedstat(""), None);
        // This process's main thread has run.
        let ran = run_seconds(std::process::id()).unwrap();
        assert!(ran > 0.0, "{ran}");
    }

    #[test]
    fn this_process_reads_as_its_own_times() {
        let t = process_times(std::process::id()).unwrap();
        assert_eq!(t.parent, std::os::unix::process::parent_id());
        assert!(t.cpu_seconds >= 0.0);
    }
}
