//! Test and benchmark harness, shared by every worker's tests: a throwaway
//! `redis-server` on a free port (killable and restartable), a throwaway
//! PostgreSQL cluster ([`postgres`]), a test CA ([`tls`]), and small Kafka
//! producer/reader helpers for the mock cluster, so tests never import rdkafka.

pub mod cluster;
pub mod postgres;
pub mod smtp;
pub mod tls;

pub use postgres::PostgresServer;
pub use tls::TestCa;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A `redis-server` child process on a free loopback port, killed on drop.
pub struct RedisServer {
    port: u16,
    /// With [`RedisServer::start_tls`]: the TLS port (the plain one stays open).
    tls_port: Option<u16>,
    /// A Redis Cluster node ([`cluster::RedisCluster`]): its cluster bus port.
    cluster_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

/// The harness could not do what a test asked.
#[derive(Debug, thiserror::Error)]
#[error("test harness: {0}")]
pub struct HarnessError(pub String);

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, HarnessError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| HarnessError(e.to_string()))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError(e.to_string()))
}

/// `spawn`, again after `move_ports` while the server exits before it
/// answers (`exited`), four times at most: a port [`free_port`] found can be
/// taken by another test before the server binds it.
fn on_free_ports<S>(
    server: &mut S,
    spawn: fn(&mut S) -> Result<(), HarnessError>,
    exited: fn(&S) -> bool,
    move_ports: fn(&mut S) -> Result<(), HarnessError>,
) -> Result<(), HarnessError> {
    let mut attempt = 1;
    loop {
        match spawn(server) {
            Err(_) if attempt < 4 && exited(server) => {
                attempt += 1;
                move_ports(server)?;
            }
            result => return result,
        }
    }
}

/// The exit status of the server process if it has ended, when it is also
/// forgotten (its start failed: see [`on_free_ports`]).
fn ended(child: &mut Option<Child>) -> Option<std::process::ExitStatus> {
    let status = child.as_mut()?.try_wait().ok()??;
    *child = None;
    Some(status)
}

/// The process id of the redis-server answering on `port` (`INFO server`),
/// if one answers.
fn answering_pid(port: u16) -> Option<u32> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while reply.len() < 65_536 {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(pid) = text.lines().find_map(|l| l.strip_prefix("process_id:")) {
            return pid.trim().parse().ok();
        }
    }
    None
}

/// A name no other test in this process (or a recent run) uses: for group ids,
/// topics and key prefixes, so tests never share a consumer group.
pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{name}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl RedisServer {
    /// Starts a server with persistence off and waits until it answers.
    pub fn start() -> Result<Self, HarnessError> {
        Self::launch(false)
    }

    /// Like [`RedisServer::start`], also listening with TLS (a self-signed
    /// certificate made with the `openssl` command) on [`RedisServer::tls_url`].
    pub fn start_tls() -> Result<Self, HarnessError> {
        Self::launch(true)
    }

    fn launch(tls: bool) -> Result<Self, HarnessError> {
        let mut server = Self::unstarted()?;
        if tls {
            server.make_certificate()?;
            server.tls_port = Some(free_port()?);
        }
        server.spawn_on_free_ports()?;
        Ok(server)
    }

    /// A server with cluster mode on (`cluster-enabled yes`, its bus on a free
    /// port of its own), not yet part of a cluster.
    fn start_cluster_node() -> Result<Self, HarnessError> {
        let mut server = Self::unstarted()?;
        server.cluster_port = Some(free_port()?);
        server.spawn_on_free_ports()?;
        Ok(server)
    }

    /// [`RedisServer::spawn`], again on other free ports while the server
    /// exits before answering: a port `free_port` found can be taken by
    /// another test before the server binds it.
    fn spawn_on_free_ports(&mut self) -> Result<(), HarnessError> {
        on_free_ports(
            self,
            Self::spawn,
            |s| s.child.is_none(),
            |s| {
                s.port = free_port()?;
                if s.tls_port.is_some() {
                    s.tls_port = Some(free_port()?);
                }
                if s.cluster_port.is_some() {
                    s.cluster_port = Some(free_port()?);
                }
                Ok(())
            },
        )
    }

    fn unstarted() -> Result<Self, HarnessError> {
        let dir = std::env::temp_dir().join(unique("taskstream-redis"));
        std::fs::create_dir_all(&dir).map_err(|e| HarnessError(e.to_string()))?;
        Ok(RedisServer {
            port: free_port()?,
            tls_port: None,
            cluster_port: None,
            dir,
            child: None,
        })
    }

    /// A self-signed `cert.pem`/`key.pem` in the server's directory.
    fn make_certificate(&self) -> Result<(), HarnessError> {
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| {
                HarnessError(format!(
                    "cannot run openssl ({e}); install it with `apt-get install openssl`"
                ))
            })?;
        if !status.success() {
            return Err(HarnessError(
                "openssl could not make a test certificate".into(),
            ));
        }
        Ok(())
    }

    /// Runs one command with `redis-cli` (from redis-tools, installed with
    /// redis-server) and returns its answer: for failover tests
    /// (`REPLICAOF host port` makes this server a read-only replica).
    pub fn command(&self, args: &[&str]) -> Result<String, HarnessError> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|e| HarnessError(format!("cannot run redis-cli: {e}")))?;
        if !out.status.success() {
            return Err(HarnessError(format!(
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `rediss://` URL of the TLS port; the certificate is self-signed, so the
    /// client is told not to verify it (`#insecure`).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|p| format!("rediss://127.0.0.1:{p}/#insecure"))
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let log = std::fs::File::create(self.dir.join("server.log"))
            .map_err(|e| HarnessError(e.to_string()))?;
        let mut command = Command::new("redis-server");
        if let Some(bus) = self.cluster_port {
            command
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"]);
        }
        if let Some(tls_port) = self.tls_port {
            command
                .args(["--tls-port", &tls_port.to_string()])
                .args(["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"])
                .args(["--tls-ca-cert-file", "cert.pem", "--tls-auth-clients", "no"])
                .current_dir(&self.dir);
        }
        let child = command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(&self.dir)
            // Its log (a bind error, say) goes to standard output.
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                HarnessError(format!(
                    "cannot start redis-server ({e}); install it with `apt-get install redis-server`"
                ))
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = ended(&mut self.child) {
                return Err(HarnessError(format!(
                    "redis-server on port {} exited ({status}): {}",
                    self.port,
                    self.log()
                )));
            }
            // Ours, not another test's server on a port taken first.
            let ours = self.child.as_ref().map(Child::id);
            if ours.is_some() && answering_pid(self.port) == ours {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HarnessError(format!(
            "redis-server on port {} did not start: {}",
            self.port,
            self.log()
        )))
    }

    /// What the server logged so far (the last run's, after a restart).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: like a crash or a network cut).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (data is gone: persistence is off).
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain producer for tests and benchmarks.
pub struct TestProducer {
    producer: BaseProducer,
}

impl TestProducer {
    pub fn new(bootstrap: &str) -> Result<Self, HarnessError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("batch.num.messages", "10000")
            .create()
            .map_err(|e| HarnessError(e.to_string()))?;
        Ok(TestProducer { producer })
    }

    /// Queues one message (retrying while the local queue is full).
    pub fn send(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), HarnessError> {
        self.send_to(topic, None, key, payload)
    }

    /// Queues one message to an explicit partition.
    pub fn send_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), HarnessError> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(HarnessError(e.to_string())),
            }
        }
    }

    /// Serves delivery reports; call now and then while producing a lot.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    pub fn flush(&self) -> Result<(), HarnessError> {
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| HarnessError(e.to_string()))
    }
}

/// A message read back by [`read_topic`].
#[derive(Debug, Clone)]
pub struct ReadMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl ReadMessage {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads every message of `topic` (all partitions, from the start) until
/// `expected` were read or `timeout` passed. No consumer group is involved.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<ReadMessage>, HarnessError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| HarnessError(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    // Wait for the topic to exist and learn its partitions.
    let partitions = loop {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| HarnessError(e.to_string()))?;
        let n = md
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if n > 0 {
            break n;
        }
        if Instant::now() > deadline {
            return Ok(Vec::new());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| HarnessError(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| HarnessError(e.to_string()))?;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(ReadMessage {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut cond: F) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pipeline config for tests: the given Kafka and Redis, a unique group
/// prefix and key prefix, fast commits, short backoffs, no HTTP server.
pub fn test_config(bootstrap: &str, redis_url: &str) -> crate::config::PipelineConfig {
    let mut c = crate::config::PipelineConfig::default();
    c.kafka.bootstrap_servers = bootstrap.to_string();
    c.kafka.group_prefix = unique("test");
    c.kafka.commit_interval = Duration::from_millis(200);
    c.kafka.statistics_interval = Duration::from_millis(500);
    c.kafka.session_timeout = Duration::from_secs(10);
    c.redis.url = redis_url.to_string();
    c.redis.key_prefix = format!("{}:", unique("t"));
    c.redis.response_timeout = Duration::from_millis(500);
    c.redis.connect_timeout = Duration::from_millis(500);
    c.metrics.addr = String::new();
    c.retry.initial_backoff = Duration::from_millis(20);
    c.retry.max_backoff = Duration::from_millis(200);
    c.retry.max_attempts = 3;
    c.pipeline.idempotency_lease = Duration::from_secs(2);
    c.pipeline.drain_timeout = Duration::from_secs(10);
    c
}

/// Commits `offsets` (`(topic, partition, next offset to read)`) for `group`
/// without joining it, as a consumer that stopped would have left them: for
/// lag tests and the lag monitor's benchmark.
pub fn commit_offsets(
    bootstrap: &str,
    group: &str,
    offsets: &[(String, i32, i64)],
) -> Result<(), HarnessError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| HarnessError(e.to_string()))?;
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (topic, partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(|e| HarnessError(e.to_string()))?;
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .map_err(|e| HarnessError(format!("commit for group {group}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose port was taken before it bound it says why at once
    /// rather than after the ten-second wait, and the start retries on
    /// another free port.
    #[test]
    fn a_taken_port_is_reported_at_once_and_the_start_moves_to_another() {
        let first = RedisServer::start().expect("redis-server starts");
        let mut second = RedisServer::unstarted().expect("a directory");
        second.port = first.port();
        let started = Instant::now();
        let err = second.spawn().expect_err("the port is taken");
        assert!(started.elapsed() < Duration::from_secs(5), "{err:?}");
        assert!(second.child.is_none());
        assert!(err.0.contains("exited"), "{err:?}");
        assert!(err.0.contains("Address already in use"), "{err:?}");

        second.port = first.port();
        second
            .spawn_on_free_ports()
            .expect("started on another port");
        assert_ne!(second.port(), first.port());
        assert_eq!(second.command(&["PING"]).expect("it answers"), "PONG");
    }
}
