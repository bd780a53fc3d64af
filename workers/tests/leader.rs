//! A leader-scoped timer across real processes: the audit worker's retention
//! runs on exactly one replica, under the Redis lease. Killing the leader
//! with SIGKILL (no release) hands the timer to another replica within a few
//! seconds, and a Redis restart never leaves two leaders.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use pipelines::kafka::mock::MockKafka;
use pipelines::testing::{free_port, unique, RedisServer};

mod common;
use common::taskstream;

struct Replica {
    child: Child,
    port: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bootstrap: &str, redis: &str, group: &str, dir: &std::path::Path) -> Replica {
    let port = free_port().unwrap();
    let log = std::fs::File::create(dir.join(format!("replica-{port}.log"))).unwrap();
    let child = taskstream()
        .args(["run", "audit"])
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("REDIS_URL", redis)
        .env("TASKSTREAM_AUDIT__STORE", "file")
        .env("TASKSTREAM_AUDIT__DIR", dir.join(format!("trail-{port}")))
        .env("TASKSTREAM_AUDIT__RETENTION", "30days")
        .env("TASKSTREAM_AUDIT__RETENTION_CHECK_INTERVAL", "200ms")
        .env("TASKSTREAM_PIPELINE__LEADER_LEASE", "3s")
        .env("TASKSTREAM_KAFKA__GROUP_PREFIX", group)
        .env("TASKSTREAM_KAFKA__SESSION_TIMEOUT", "3s")
        .env("TASKSTREAM_REDIS__RESPONSE_TIMEOUT", "300ms")
        .env("TASKSTREAM_REDIS__CONNECT_TIMEOUT", "300ms")
        .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("TASKSTREAM_WORKERS__AUDIT__TOPICS", "[\"task-events\"]")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Replica { child, port }
}

/// `taskstream_timer_leader{worker="audit"}` of one replica; `None` when it
/// does not answer.
fn leading(port: u16) -> Option<bool> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let line = body
        .lines()
        .find(|l| l.starts_with("taskstream_timer_leader{") && l.contains("worker=\"audit\""))?;
    Some(line.trim_end().ends_with(" 1"))
}

/// Samples every replica for `for_how_long`; panics if two lead at once;
/// returns the ports that led.
fn watch(replicas: &[&Replica], for_how_long: Duration) -> Vec<u16> {
    let deadline = Instant::now() + for_how_long;
    let mut led = Vec::new();
    while Instant::now() < deadline {
        let now: Vec<u16> = replicas
            .iter()
            .filter(|r| leading(r.port) == Some(true))
            .map(|r| r.port)
            .collect();
        assert!(now.len() <= 1, "two leaders at once: {now:?}");
        led.extend(now);
        std::thread::sleep(Duration::from_millis(100));
    }
    led.sort_unstable();
    led.dedup();
    led
}

fn wait_for_leader(replicas: &[&Replica], timeout: Duration) -> Option<u16> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let now: Vec<u16> = replicas
            .iter()
            .filter(|r| leading(r.port) == Some(true))
            .map(|r| r.port)
            .collect();
        assert!(now.len() <= 1, "two leaders at once: {now:?}");
        if let Some(p) = now.first() {
            return Some(*p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn exactly_one_leader_through_sigkill_and_a_redis_restart() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("task-events", 2).unwrap();
    let mut redis = RedisServer::start().unwrap();
    let dir = std::env::temp_dir().join(unique("leader"));
    std::fs::create_dir_all(&dir).unwrap();
    let group = unique("leader");
    let a = start(mock.bootstrap_servers(), &redis.url(), &group, &dir);
    let b = start(mock.bootstrap_servers(), &redis.url(), &group, &dir);
    let c = start(mock.bootstrap_servers(), &redis.url(), &group, &dir);
    let all = [&a, &b, &c];

    let first = wait_for_leader(&all, Duration::from_secs(30)).expect("a leader is elected");
    assert_eq!(
        watch(&all, Duration::from_secs(3)),
        vec![first],
        "the leader stays"
    );

    // SIGKILL the leader: no release; its lease must expire and another take over.
    let (mut dead, rest): (Vec<Replica>, Vec<Replica>) =
        [a, b, c].into_iter().partition(|r| r.port == first);
    let mut killed = dead.pop().unwrap();
    killed.child.kill().unwrap();
    let _ = killed.child.wait();
    let killed_at = Instant::now();
    let survivors: Vec<&Replica> = rest.iter().collect();
    let second =
        wait_for_leader(&survivors, Duration::from_secs(15)).expect("a survivor takes over");
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "taken over within the lease (3 s) plus a renewal period, not {took:?}"
    );
    assert_ne!(second, first);
    assert_eq!(watch(&survivors, Duration::from_secs(2)), vec![second]);

    // Redis restarts (no persistence: the lease is gone with it). The leader
    // cannot renew and stops; afterwards exactly one leads again.
    redis.stop();
    let stopped = (0..80).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        survivors.iter().all(|r| leading(r.port) == Some(false))
    });
    assert!(
        stopped,
        "a leader that cannot renew stops before its lease runs out"
    );
    std::thread::sleep(Duration::from_secs(1));
    redis.restart().unwrap();
    wait_for_leader(&survivors, Duration::from_secs(20))
        .expect("a leader again after Redis is back");
    let leaders = watch(&survivors, Duration::from_secs(3));
    assert_eq!(
        leaders.len(),
        1,
        "one leader after the restart: {leaders:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
