//! Helpers shared by the binary's integration tests.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The `taskstream` binary, without the developer's environment: tests set
/// what they need.
pub fn taskstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_taskstream"));
    for var in [
        "TASKSTREAM_CONFIG",
        "KAFKA_BOOTSTRAP_SERVERS",
        "REDIS_URL",
        "SMTP_URL",
        "DATABASE_URL",
        "TASKSTREAM_METRICS_ADDR",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c
}

/// A running `taskstream` process, killed (SIGKILL) on drop.
pub struct Process {
    child: Child,
    log: Option<PathBuf>,
}

impl Process {
    pub fn new(child: Child) -> Self {
        Process { child, log: None }
    }

    /// A process whose stderr goes to `log`.
    pub fn logged(child: Child, log: PathBuf) -> Self {
        Process {
            child,
            log: Some(log),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL now: a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `sig` (SIGTERM for a graceful stop).
    pub fn signal(&self, sig: i32) {
        // SAFETY: a plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit, failing the test after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "taskstream did not exit in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the process logged so far (empty without a log file).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body (`None`
/// when nothing answers).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// Sum of a metric's samples whose line contains `filter`, from `/metrics`
/// on `port` (-1 when nothing answers).
pub fn scrape(port: u16, metric: &str, filter: &str) -> f64 {
    let Some((_, body)) = http_get(port, "/metrics") else {
        return -1.0;
    };
    body.lines()
        .filter(|l| l.starts_with(metric) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
