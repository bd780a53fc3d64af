//! A throwaway Redis Cluster: three masters (`redis-server --cluster-enabled
//! yes` on free loopback ports, joined with `redis-cli --cluster create`), no
//! replicas, persistence off. Nodes can be killed and restarted, and a slot can
//! be moved between masters by hand, for the state store's cluster tests.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{HarnessError, RedisServer};

/// Three cluster masters, killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`: who owns which slots.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    /// Inclusive slot ranges it serves.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts three masters, splits the 16,384 slots between them and waits
    /// until every node reports `cluster_state:ok`.
    pub fn start() -> Result<Self, HarnessError> {
        let nodes = (0..3)
            .map(|_| RedisServer::start_cluster_node())
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| HarnessError(format!("cannot run redis-cli: {e}")))?;
        if !out.status.success() {
            return Err(HarnessError(format!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// `redis+cluster://` URL naming every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self, within: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError(format!(
                    "the cluster is not ok after {within:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The masters as node `from` sees them (`CLUSTER NODES`).
    pub fn topology(&self, from: usize) -> Result<Vec<ClusterNode>, HarnessError> {
        let text = self.nodes[from].command(&["CLUSTER", "NODES"])?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let port = f.get(1)?.split(['@', ',']).next()?.rsplit(':').next()?;
                let slots = f
                    .iter()
                    .skip(8)
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|x| (x, x)),
                    })
                    .collect();
                Some(ClusterNode {
                    id: f.first()?.to_string(),
                    port: port.parse().ok()?,
                    slots,
                })
            })
            .collect())
    }

    /// The index (into this cluster's nodes) of the master serving `slot`.
    pub fn owner_of(&self, slot: u16) -> Result<usize, HarnessError> {
        let from = (0..self.nodes.len())
            .find(|&i| self.nodes[i].command(&["PING"]).is_ok())
            .ok_or_else(|| HarnessError("no cluster node answers".into()))?;
        let port = self
            .topology(from)?
            .into_iter()
            .find(|n| n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|n| n.port)
            .ok_or_else(|| HarnessError(format!("no master serves slot {slot}")))?;
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .ok_or_else(|| HarnessError(format!("port {port} is not one of ours")))
    }

    /// The slot of a full key (prefix included), as the server computes it
    /// (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> Result<u16, HarnessError> {
        let from = (0..self.nodes.len())
            .find(|&i| self.nodes[i].command(&["PING"]).is_ok())
            .ok_or_else(|| HarnessError("no cluster node answers".into()))?;
        let answer = self.nodes[from].command(&["CLUSTER", "KEYSLOT", key])?;
        answer
            .parse()
            .map_err(|_| HarnessError(format!("CLUSTER KEYSLOT {key}: {answer}")))
    }

    /// The node id of node `i`.
    pub fn id_of(&self, i: usize) -> Result<String, HarnessError> {
        self.nodes[i].command(&["CLUSTER", "MYID"])
    }

    /// Starts moving `slot` from node `from` to node `to` (`SETSLOT IMPORTING`
    /// / `MIGRATING`), as `redis-cli --cluster reshard` does, without moving
    /// any key yet.
    pub fn begin_migration(&self, slot: u16, from: usize, to: usize) -> Result<(), HarnessError> {
        let s = slot.to_string();
        let (from_id, to_id) = (self.id_of(from)?, self.id_of(to)?);
        self.nodes[to].command(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])?;
        self.nodes[from].command(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])?;
        Ok(())
    }

    /// Moves keys (full names, prefix included) from node `from` to `to` with
    /// `MIGRATE`.
    pub fn migrate_keys(&self, from: usize, to: usize, keys: &[&str]) -> Result<(), HarnessError> {
        let port = self.nodes[to].port().to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend_from_slice(keys);
        let answer = self.nodes[from].command(&args)?;
        if answer != "OK" {
            return Err(HarnessError(format!("MIGRATE {keys:?}: {answer}")));
        }
        Ok(())
    }

    /// Ends a migration: every node learns that `to` owns `slot`.
    pub fn end_migration(&self, slot: u16, to: usize) -> Result<(), HarnessError> {
        let s = slot.to_string();
        let to_id = self.id_of(to)?;
        for n in &self.nodes {
            n.command(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id])?;
        }
        Ok(())
    }
}
