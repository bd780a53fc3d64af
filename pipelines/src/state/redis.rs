//! The production [`StateStore`], on Redis or a Redis Cluster.
//!
//! One multiplexed connection, managed: a dropped connection is re-established in
//! the background while the failing call returns [`StateError::Unavailable`], and
//! the pipeline's caller waits and retries. Batch operations are sent as one
//! pipeline.
//!
//! A `redis+cluster://` URL selects the redis crate's cluster client (one
//! connection per master, slots refreshed on `MOVED`, `ASK` followed). Every
//! multi-key command, pipeline, transaction and script must then name keys of
//! one slot: the runtime gives each worker a store whose keys carry the
//! worker's hash tag ([`super::slot`]). A redirect or failover the client could
//! not ride out (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, an aborted
//! transaction) is [`StateError::Unavailable`]: the batch waits, it is never
//! dead-lettered.
//!
//! The idempotency guard's claims are fields of a few hashes, claimed with one
//! script call per batch ([`CLAIM_FIELDS`]: a `HMGET` per hash and one `HSET`,
//! not a command per event); see the README's "Delivery guarantees".

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::{ScoreRange, Scored, StateError, StateOp, StateStore};
use crate::config::{mask_url, RedisConfig};

/// `compare_and_set`: GET and SET as one atomic step.
static COMPARE_AND_SET: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[3] == '0' then
    redis.call('SET', KEYS[1], ARGV[2])
  else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  end
  return 1
end
return 0",
    )
});

/// `zclaim_due`: read the due members and re-score them, as one atomic step
/// (one `ZADD` per 500 members: a `redis.call` costs more than a member).
static CLAIM_DUE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local args = {}
for i = 1, #due, 2 do
  args[#args + 1] = ARGV[2]
  args[#args + 1] = due[i]
  if #args >= 1000 then
    redis.call('ZADD', KEYS[1], unpack(args))
    args = {}
  end
end
if #args > 0 then
  redis.call('ZADD', KEYS[1], unpack(args))
end
return due",
    )
});

/// `zrem_if_score`: remove a member only while its score is unchanged.
static ZREM_IF_SCORE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0",
    )
});

/// `zmove_if_score`: re-score a member only while its score is unchanged.
static ZMOVE_IF_SCORE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0",
    )
});

/// `delete_if_eq`: an owner-checked delete.
static DELETE_IF_EQ: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

/// Most fields one `claim_fields` script call carries; more are claimed with
/// several calls, sent together. Redis spends less per field on calls of a
/// few hundred than on one of thousands when it shares the machine:
/// measured in `taskstream bench --worker audit` (batches of about 1,200
/// events, PostgreSQL on the same two cores), 2.0 µs of Redis CPU per event
/// with one call per batch, 1.6-1.8 with calls of 150-400 fields; on an
/// idle machine the size of the call made no difference.
pub const CLAIM_CALL_FIELDS: usize = 500;

/// `claim_fields`: `KEYS` are the hashes (`ARGV[3]` of them, the first the
/// one written) and then, optionally, a string key per field; `ARGV` is the
/// value, the expiry in ms, the number of hashes, the number of fields `nf`,
/// the fields, and optionally an expected value per field ('' = absent).
/// A hash that does not exist is not asked for the fields (older
/// generations not written yet cost one `EXISTS` per call); found values
/// come from one `HMGET` per hash and one `MGET` of the keys per 1,000
/// fields, and the new ones are written with one `HSET` per 500.
static CLAIM_FIELDS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local value, ttl, nh, nf = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local f0, e0, cas = 5, 5 + nf, #ARGV > 4 + nf
local found = {}
for i = 1, nf do found[i] = false end
local function fill(got, c)
  for j = 1, #got do
    if not found[c + j] then found[c + j] = got[j] end
  end
end
for h = 1, nh do
  if redis.call('EXISTS', KEYS[h]) == 1 then
    for c = 0, nf - 1, 1000 do
      fill(redis.call('HMGET', KEYS[h], unpack(ARGV, f0 + c, f0 + math.min(c + 999, nf - 1))), c)
    end
  end
end
if #KEYS > nh then
  for c = 0, nf - 1, 1000 do
    fill(redis.call('MGET', unpack(KEYS, nh + 1 + c, nh + 1 + math.min(c + 999, nf - 1))), c)
  end
end
local set, now = {}, {}
for i = 1, nf do
  local f = ARGV[f0 + i - 1]
  local v = now[f] or found[i]
  if (v or '') == (cas and ARGV[e0 + i - 1] or '') then
    set[#set + 1] = f
    set[#set + 1] = value
    now[f] = value
    found[i] = false
  else
    found[i] = v
  end
end
for c = 1, #set, 1000 do
  redis.call('HSET', KEYS[1], unpack(set, c, math.min(c + 999, #set)))
end
if #set > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return found",
    )
});

/// `apply_checked`: [`StateOp`]s as commands (see
/// `RedisStore::encode_for_script`), run in order as one atomic step;
/// `?IFABSENT` runs the commands up to its `?ELSE` when its key does not
/// exist, else those from `?ELSE` to `?END`, and reports which (1: absent)
/// for the top-level ones. `?MARKONCE ns nk nf ttl fields...` (its `ns`
/// hashes, the first the one written, then `nk` keys in `KEYS`) stops the
/// script when a field is in a hash or a key exists, reporting like
/// `?IFABSENT`, else sets the fields (a hash that does not exist is not
/// asked for the fields: the hashes of older layouts and generations not
/// yet written cost one `EXISTS` per call, not one lookup per field);
/// `?HINCRBYMANY` adds to many fields of one hash with one `HMGET` and one
/// `HSET` per 500 fields; `?SETPX ttl n values...` sets `n` keys, each to
/// its value with the same expiry (a run of [`StateOp::Set`]s: two
/// arguments per key instead of six, and one step of the interpreter).
/// (Another command may have at most a few thousand arguments: Lua's
/// `unpack` limit.)
static APPLY: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local pos, key, absent, stopped = 1, 0, {}, false
local function block(live, top)
  while pos <= #ARGV and not stopped do
    local name = ARGV[pos]
    if name == '?ELSE' or name == '?END' then
      pos = pos + 1
      return name
    end
    key = key + 1
    if name == '?IFABSENT' then
      pos = pos + 1
      local yes = redis.call('EXISTS', KEYS[key]) == 0
      if top then absent[#absent + 1] = yes and 1 or 0 end
      if block(live and yes, false) == '?ELSE' then
        block(live and not yes, false)
      end
    elseif name == '?MARKONCE' then
      local ns, nk, nf = tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
      local ttl, f0 = ARGV[pos + 4], pos + 5
      local found = 0
      for c = key + ns, key + ns + nk - 1, 1000 do
        found = found + redis.call('EXISTS', unpack(KEYS, c, math.min(c + 999, key + ns + nk - 1)))
      end
      for s = key, key + ns - 1 do
        if found > 0 then break end
        if redis.call('EXISTS', KEYS[s]) == 1 then
          for c = f0, f0 + nf - 1, 1000 do
            if found > 0 then break end
            local got = redis.call('HMGET', KEYS[s], unpack(ARGV, c, math.min(c + 999, f0 + nf - 1)))
            for _, v in ipairs(got) do
              if v then found = found + 1 end
            end
          end
        end
      end
      if top then absent[#absent + 1] = found == 0 and 1 or 0 end
      if live and found > 0 then
        stopped = true
      elseif live and nf > 0 then
        for c = f0, f0 + nf - 1, 1000 do
          local args = {}
          for i = c, math.min(c + 999, f0 + nf - 1) do
            args[#args + 1] = ARGV[i]
            args[#args + 1] = '1'
          end
          redis.call('HSET', KEYS[key], unpack(args))
        end
        redis.call('PEXPIRE', KEYS[key], ttl)
      end
      key = key + ns + nk - 1
      pos = f0 + nf
    elseif name == '?SETPX' then
      local ttl, n = ARGV[pos + 1], tonumber(ARGV[pos + 2])
      if live then
        for i = 0, n - 1 do
          redis.call('SET', KEYS[key + i], ARGV[pos + 3 + i], 'PX', ttl)
        end
      end
      key = key + n - 1
      pos = pos + 3 + n
    elseif name == '?HINCRBYMANY' then
      local n = tonumber(ARGV[pos + 1]) / 2
      if live then
        for c = 0, n - 1, 500 do
          local fields, out = {}, {}
          for i = c, math.min(c + 499, n - 1) do
            fields[#fields + 1] = ARGV[pos + 2 + 2 * i]
          end
          local cur = redis.call('HMGET', KEYS[key], unpack(fields))
          for j = 1, #fields do
            local by = tonumber(ARGV[pos + 3 + 2 * (c + j - 1)])
            out[2 * j - 1] = fields[j]
            out[2 * j] = string.format('%d', (tonumber(cur[j]) or 0) + by)
          end
          redis.call('HSET', KEYS[key], unpack(out))
        end
      end
      pos = pos + 2 + 2 * n
    else
      local n = tonumber(ARGV[pos + 1])
      if live then redis.call(name, KEYS[key], unpack(ARGV, pos + 2, pos + 1 + n)) end
      pos = pos + 2 + n
    end
  end
end
block(true, true)
return absent",
    )
});

/// The `KEYS` and `ARGV` of one call of [`APPLY`], each one flat buffer
/// (no allocation per argument).
struct ScriptArgs {
    keys: redis::Cmd,
    argv: redis::Cmd,
    key_count: usize,
}

/// Server replies that mean "not now" (a failover, a replica still loading,
/// a cluster resharding: a slot that moved or is moving, a transaction the
/// server aborted because a key of it was redirected): the store is
/// unavailable, the message is fine.
const NOT_NOW: &[&str] = &[
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "BUSY",
    "NOREPLICAS",
    "MOVED",
    "ASK",
    "EXECABORT",
];

/// One node behind a managed connection, or a cluster.
#[derive(Clone)]
enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A Redis-backed store. Cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn unavailable(e: RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

fn classify(key: &str, e: RedisError) -> StateError {
    let not_now = e.code().is_some_and(|c| NOT_NOW.contains(&c))
        || NOT_NOW.iter().any(|c| {
            e.to_string()
                .split_whitespace()
                .any(|w| w.trim_matches(':') == *c)
        });
    if not_now
        || e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
    {
        unavailable(e)
    } else if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
        || e.code().is_some()
    {
        StateError::Protocol {
            key: key.to_string(),
            message: e.to_string(),
        }
    } else {
        unavailable(e)
    }
}

/// The score argument Redis reads back exactly.
fn score_arg(x: f64) -> String {
    super::ScoreBound::Inclusive(x).redis_arg(true)
}

impl RedisStore {
    /// Prepares a managed connection. It connects lazily, so a worker can start
    /// while Redis is down and report not-ready until it is back.
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, StateError> {
        let nodes = cfg
            .cluster_nodes()
            .map_err(|e| StateError::Unavailable(e.to_string()))?;
        if let Some(nodes) = nodes {
            return Self::connect_cluster(cfg, nodes);
        }
        let client = redis::Client::open(cfg.url.as_str()).map_err(|e| {
            StateError::Unavailable(format!("redis.url {}: {e}", mask_url(&cfg.url)))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisStore {
            conn: Conn::Node(conn),
            prefix: cfg.key_prefix.clone(),
        })
    }

    /// The cluster client on `nodes` (seed nodes; the rest is discovered). It
    /// connects in the background, like the single-node one.
    fn connect_cluster(cfg: &RedisConfig, nodes: Vec<String>) -> Result<Self, StateError> {
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(cfg.connect_timeout)
            .response_timeout(cfg.response_timeout)
            // Redirects and a refresh of the slot map are retried within the
            // call, briefly; a longer outage is the caller's wait.
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(1000)
            .build()
            .map_err(|e| {
                StateError::Unavailable(format!("redis.url {}: {e}", mask_url(&cfg.url)))
            })?;
        let config = ClusterConfig::new()
            .set_connection_timeout(cfg.connect_timeout)
            .set_response_timeout(cfg.response_timeout);
        Ok(RedisStore {
            conn: Conn::Cluster(client.get_pending_async_connection_with_config(config)),
            prefix: cfg.key_prefix.clone(),
        })
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    /// One `claim_fields` script call: its part of the fields, and of the
    /// keys and expected values when given; errors name `into`, the hash
    /// claimed in.
    #[allow(clippy::too_many_arguments)]
    async fn claim_fields_call(
        &self,
        into: &str,
        hashes: &[String],
        keys: &[String],
        fields: &[String],
        expected: &[Vec<u8>],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let size: usize = hashes
            .iter()
            .chain(keys)
            .chain(fields)
            .map(String::len)
            .sum::<usize>()
            + expected.iter().map(Vec::len).sum::<usize>();
        let n = hashes.len() + keys.len() + fields.len() + expected.len();
        let mut cmd = redis::Cmd::with_capacity(8 + n, 64 + size + 8 * n);
        cmd.arg("EVALSHA")
            .arg(CLAIM_FIELDS.get_hash())
            .arg(hashes.len() + keys.len());
        for k in hashes.iter().chain(keys) {
            cmd.arg(self.key(k));
        }
        cmd.arg(value)
            .arg(Self::ms(ttl))
            .arg(hashes.len())
            .arg(fields.len());
        for f in fields {
            cmd.arg(f);
        }
        for e in expected {
            cmd.arg(e.as_slice());
        }
        let values: Vec<Value> = self.evalsha(&CLAIM_FIELDS, &cmd, into).await?;
        if values.len() != fields.len() {
            return Err(StateError::Protocol {
                key: into.to_string(),
                message: format!("{} answers for {} fields", values.len(), fields.len()),
            });
        }
        Ok(values.into_iter().map(bytes).collect())
    }

    /// Sends `cmd`, an `EVALSHA` of `script`, loading the script first when
    /// the server does not know it (a restart, a failover); errors name `key`.
    async fn evalsha<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        cmd: &Cmd,
        key: &str,
    ) -> Result<T, StateError> {
        let mut c = self.conn.clone();
        match cmd.query_async(&mut c).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script
                    .prepare_invoke()
                    .load_async(&mut c)
                    .await
                    .map_err(|e| classify(key, e))?;
                cmd.query_async(&mut c).await
            }
            other => other,
        }
        .map_err(|e| classify(key, e))
    }

    fn ms(d: Duration) -> u64 {
        (d.as_millis() as u64).max(1)
    }

    /// The commands of one op, in order, into `out`: a transaction's
    /// pipeline ([`StateStore::apply`]) or the batch script's arguments
    /// ([`RedisStore::encode_for_script`]). An [`StateOp::IfAbsent`] and a
    /// [`StateOp::MarkOnce`] have none here: only the script runs them.
    fn each_command(&self, op: &StateOp, out: &mut impl CommandSink) {
        let k = self.key(op.key());
        match op {
            StateOp::Set { value, ttl, .. } => {
                out.begin("SET", &k, if ttl.is_some() { 3 } else { 1 });
                out.arg(value.as_slice());
                if let Some(ttl) = ttl {
                    out.arg("PX");
                    out.arg(Self::ms(*ttl));
                }
            }
            StateOp::Delete { .. } => out.begin("DEL", &k, 0),
            StateOp::IncrBy { by, ttl, .. } => {
                out.begin("INCRBY", &k, 1);
                out.arg(*by);
                if let Some(ttl) = ttl {
                    out.begin("PEXPIRE", &k, 2);
                    out.arg(Self::ms(*ttl));
                    out.arg("NX");
                }
            }
            StateOp::HashSet { fields, .. } => {
                if !fields.is_empty() {
                    out.begin("HSET", &k, 2 * fields.len());
                    for (field, v) in fields {
                        out.arg(field);
                        out.arg(v.as_slice());
                    }
                }
            }
            StateOp::HashIncrBy { field, by, .. } => {
                out.begin("HINCRBY", &k, 2);
                out.arg(field);
                out.arg(*by);
            }
            StateOp::HashIncrByMany { fields, .. } => {
                for (field, by) in fields {
                    out.begin("HINCRBY", &k, 2);
                    out.arg(field);
                    out.arg(*by);
                }
            }
            StateOp::HashDelete { fields, .. } => {
                if !fields.is_empty() {
                    out.begin("HDEL", &k, fields.len());
                    out.arg(fields);
                }
            }
            StateOp::ZAdd { member, score, .. } => {
                out.begin("ZADD", &k, 2);
                out.arg(score_arg(*score));
                out.arg(member);
            }
            StateOp::ZAddMany { members, .. } => {
                if !members.is_empty() {
                    out.begin("ZADD", &k, 2 * members.len());
                    for (member, score) in members {
                        out.arg(score_arg(*score));
                        out.arg(member);
                    }
                }
            }
            StateOp::ZRem { member, .. } => {
                out.begin("ZREM", &k, 1);
                out.arg(member);
            }
            StateOp::DistinctAdd { members, .. } => {
                out.begin("PFADD", &k, members.len());
                out.arg(members);
            }
            StateOp::Expire { ttl, .. } => {
                out.begin("PEXPIRE", &k, 1);
                out.arg(Self::ms(*ttl));
            }
            StateOp::IfAbsent { .. } | StateOp::MarkOnce { .. } => {}
        }
    }

    /// Appends `ops` to the arguments of [`APPLY`], a run of two or more
    /// [`StateOp::Set`]s with one expiry as one `?SETPX` step.
    fn encode_all_for_script(&self, ops: &[StateOp], out: &mut ScriptArgs) {
        let mut rest = ops;
        while let Some(op) = rest.first() {
            let run = match op {
                StateOp::Set { ttl: Some(ttl), .. } => {
                    let same =
                        |o: &&StateOp| matches!(o, StateOp::Set { ttl: Some(t), .. } if t == ttl);
                    Some((ttl, rest.iter().take_while(same).count()))
                }
                _ => None,
            };
            let Some((ttl, n)) = run.filter(|(_, n)| *n >= 2) else {
                self.encode_for_script(op, out);
                rest = &rest[1..];
                continue;
            };
            let (sets, after) = rest.split_at(n);
            out.argv.arg("?SETPX").arg(Self::ms(*ttl)).arg(n);
            for set in sets {
                if let StateOp::Set { key, value, .. } = set {
                    out.keys.arg(self.key(key));
                    out.argv.arg(value.as_slice());
                }
            }
            out.key_count += n;
            rest = after;
        }
    }

    /// Appends `op` to the arguments of [`APPLY`]: each command as its key
    /// (in `KEYS`) and `name, n, arg1..argn` (in `ARGV`); an
    /// [`StateOp::IfAbsent`] as its key and `?IFABSENT`, the commands of
    /// `then`, `?ELSE`, those of `otherwise`, `?END`; a
    /// [`StateOp::MarkOnce`] and a [`StateOp::HashIncrByMany`] as the
    /// script's own steps.
    fn encode_for_script(&self, op: &StateOp, out: &mut ScriptArgs) {
        match op {
            StateOp::IfAbsent {
                then, otherwise, ..
            } => {
                out.keys.arg(self.key(op.key()));
                out.key_count += 1;
                out.argv.arg("?IFABSENT");
                self.encode_all_for_script(then, out);
                out.argv.arg("?ELSE");
                self.encode_all_for_script(otherwise, out);
                out.argv.arg("?END");
            }
            StateOp::MarkOnce {
                into,
                seen,
                fields,
                keys,
                ttl,
            } => {
                out.keys.arg(self.key(into));
                let others = seen.iter().filter(|h| *h != into);
                for k in others.clone().chain(keys) {
                    out.keys.arg(self.key(k));
                }
                let ns = 1 + others.count();
                out.key_count += ns + keys.len();
                out.argv
                    .arg("?MARKONCE")
                    .arg(ns)
                    .arg(keys.len())
                    .arg(fields.len())
                    .arg(Self::ms(*ttl));
                for f in fields {
                    out.argv.arg(f);
                }
            }
            StateOp::HashIncrByMany { key, fields } => {
                if !fields.is_empty() {
                    out.begin("?HINCRBYMANY", &self.key(key), 2 * fields.len());
                    for (field, by) in fields {
                        out.argv.arg(field).arg(*by);
                    }
                }
            }
            _ => self.each_command(op, out),
        }
    }
}

/// Where [`RedisStore::each_command`] writes commands: a pipeline (a
/// transaction) or the batch script's arguments ([`ScriptArgs`]).
trait CommandSink {
    /// Starts command `name` on `key` (prefixed), with `n` arguments to come.
    fn begin(&mut self, name: &str, key: &str, n: usize);
    /// Adds to the command started last (a list adds each of its items).
    fn arg(&mut self, arg: impl redis::ToRedisArgs);
}

impl CommandSink for redis::Pipeline {
    fn begin(&mut self, name: &str, key: &str, _n: usize) {
        self.cmd(name).arg(key).ignore();
    }

    fn arg(&mut self, arg: impl redis::ToRedisArgs) {
        redis::Pipeline::arg(self, arg);
    }
}

impl CommandSink for ScriptArgs {
    fn begin(&mut self, name: &str, key: &str, n: usize) {
        self.keys.arg(key);
        self.key_count += 1;
        self.argv.arg(name).arg(n);
    }

    fn arg(&mut self, arg: impl redis::ToRedisArgs) {
        self.argv.arg(arg);
    }
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn ping(&self) -> Result<(), StateError> {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let mut c = self.conn.clone();
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async::<Option<Vec<u8>>>(&mut c)
            .await
            .map_err(|e| classify(key, e))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(self.key(k));
        }
        cmd.query_async(&mut c)
            .await
            .map_err(|e| classify(first, e))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(Self::ms(ttl));
        }
        cmd.query_async::<()>(&mut c)
            .await
            .map_err(|e| classify(key, e))
    }

    async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value).arg("NX");
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(Self::ms(ttl));
        }
        let v: Value = cmd
            .query_async(&mut c)
            .await
            .map_err(|e| classify(key, e))?;
        Ok(!matches!(v, Value::Nil))
    }

    async fn delete(&self, keys: &[String]) -> Result<u64, StateError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(self.key(k));
        }
        cmd.query_async::<u64>(&mut c)
            .await
            .map_err(|e| classify(&keys[0], e))
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let mut c = self.conn.clone();
        let ms = ttl.map_or(0, Self::ms);
        COMPARE_AND_SET
            .key(self.key(key))
            .arg(expected)
            .arg(value)
            .arg(ms)
            .invoke_async::<i64>(&mut c)
            .await
            .map(|n| n == 1)
            .map_err(|e| classify(key, e))
    }

    async fn any_key_with_prefix(
        &self,
        prefix: &str,
        budget: usize,
    ) -> Result<Option<bool>, StateError> {
        let Conn::Node(node) = &self.conn else {
            return Ok(None);
        };
        let mut c = node.clone();
        let mut pattern = String::new();
        for ch in self.key(prefix).chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push('*');
        let (mut cursor, mut looked) = (0u64, 0usize);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(|e| classify(prefix, e))?;
            if !keys.is_empty() {
                return Ok(Some(true));
            }
            looked += 1000;
            cursor = next;
            if cursor == 0 {
                return Ok(Some(false));
            }
            if looked >= budget {
                return Ok(None);
            }
        }
    }

    /// One script call per [`CLAIM_CALL_FIELDS`] fields, sent together:
    /// Redis runs them in order, so a field repeated across calls is still
    /// claimed once (the later call finds the earlier one's value).
    async fn claim_fields(
        &self,
        hashes: &[String],
        keys: &[String],
        fields: &[String],
        expected: &[Vec<u8>],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let Some(into) = super::claim_target(hashes, keys, fields, expected)? else {
            return Ok(Vec::new());
        };
        // `keys` and `expected` are empty or one per field (`claim_target`).
        let calls = fields
            .chunks(CLAIM_CALL_FIELDS)
            .zip((0..).step_by(CLAIM_CALL_FIELDS))
            .map(|(part, at)| {
                let range = at..at + part.len();
                self.claim_fields_call(
                    into,
                    hashes,
                    keys.get(range.clone()).unwrap_or_default(),
                    part,
                    expected.get(range).unwrap_or_default(),
                    value,
                    ttl,
                )
            });
        Ok(futures::future::try_join_all(calls)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn set_many(
        &self,
        keys: &[String],
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StateError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        let ms = Self::ms(ttl);
        for k in keys {
            pipe.cmd("SET")
                .arg(self.key(k))
                .arg(value)
                .arg("PX")
                .arg(ms)
                .ignore();
        }
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(|e| classify(&keys[0], e))
    }

    async fn incr_by(&self, key: &str, by: i64, ttl: Option<Duration>) -> Result<i64, StateError> {
        let mut c = self.conn.clone();
        let k = self.key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("INCRBY").arg(&k).arg(by);
        if let Some(ttl) = ttl {
            // NX: keep the expiry set when the counter was created.
            pipe.cmd("PEXPIRE")
                .arg(&k)
                .arg(Self::ms(ttl))
                .arg("NX")
                .ignore();
        }
        let (v,): (i64,) = pipe
            .query_async(&mut c)
            .await
            .map_err(|e| classify(key, e))?;
        Ok(v)
    }

    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<(), StateError> {
        let mut c = self.conn.clone();
        redis::cmd("ZADD")
            .arg(self.key(key))
            .arg(score)
            .arg(member)
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| classify(key, e))
    }

    async fn zrem(&self, key: &str, member: &str) -> Result<bool, StateError> {
        let mut c = self.conn.clone();
        redis::cmd("ZREM")
            .arg(self.key(key))
            .arg(member)
            .query_async::<u64>(&mut c)
            .await
            .map(|n| n > 0)
            .map_err(|e| classify(key, e))
    }

    async fn zrange(&self, key: &str, range: ScoreRange) -> Result<Vec<Scored>, StateError> {
        let mut c = self.conn.clone();
        let pairs: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key(key))
            .arg(range.min.redis_arg(true))
            .arg(range.max.redis_arg(false))
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(range.offset)
            .arg(range.limit)
            .query_async(&mut c)
            .await
            .map_err(|e| classify(key, e))?;
        Ok(pairs
            .into_iter()
            .map(|(member, score)| Scored { member, score })
            .collect())
    }

    async fn zcard(&self, key: &str) -> Result<u64, StateError> {
        let mut c = self.conn.clone();
        redis::cmd("ZCARD")
            .arg(self.key(key))
            .query_async(&mut c)
            .await
            .map_err(|e| classify(key, e))
    }

    async fn zscore(&self, key: &str, member: &str) -> Result<Option<f64>, StateError> {
        let mut c = self.conn.clone();
        redis::cmd("ZSCORE")
            .arg(self.key(key))
            .arg(member)
            .query_async(&mut c)
            .await
            .map_err(|e| classify(key, e))
    }

    async fn zclaim_due(
        &self,
        key: &str,
        due_by: f64,
        lease_until: f64,
        limit: usize,
    ) -> Result<Vec<Scored>, StateError> {
        let mut c = self.conn.clone();
        let flat: Vec<String> = CLAIM_DUE
            .key(self.key(key))
            .arg(score_arg(due_by))
            .arg(score_arg(lease_until))
            .arg(limit)
            .invoke_async(&mut c)
            .await
            .map_err(|e| classify(key, e))?;
        flat.chunks(2)
            .map(|pair| match pair {
                [member, score] => score
                    .parse::<f64>()
                    .map(|score| Scored {
                        member: member.clone(),
                        score,
                    })
                    .map_err(|_| StateError::Protocol {
                        key: key.to_string(),
                        message: format!("score {score:?} is not a number"),
                    }),
                _ => Err(StateError::Protocol {
                    key: key.to_string(),
                    message: "odd number of member/score replies".into(),
                }),
            })
            .collect()
    }

    async fn zrem_if_score(&self, key: &str, member: &str, score: f64) -> Result<bool, StateError> {
        let mut c = self.conn.clone();
        ZREM_IF_SCORE
            .key(self.key(key))
            .arg(member)
            .arg(score_arg(score))
            .invoke_async::<i64>(&mut c)
            .await
            .map(|n| n == 1)
            .map_err(|e| classify(key, e))
    }

    async fn zmove_if_score(
        &self,
        key: &str,
        member: &str,
        expected: f64,
        score: f64,
    ) -> Result<bool, StateError> {
        let mut c = self.conn.clone();
        ZMOVE_IF_SCORE
            .key(self.key(key))
            .arg(member)
            .arg(score_arg(expected))
            .arg(score_arg(score))
            .invoke_async::<i64>(&mut c)
            .await
            .map(|n| n == 1)
            .map_err(|e| classify(key, e))
    }

    async fn delete_if_eq(&self, key: &str, expected: &[u8]) -> Result<bool, StateError> {
        let mut c = self.conn.clone();
        DELETE_IF_EQ
            .key(self.key(key))
            .arg(expected)
            .invoke_async::<i64>(&mut c)
            .await
            .map(|n| n == 1)
            .map_err(|e| classify(key, e))
    }

    async fn apply(&self, ops: &[StateOp]) -> Result<(), StateError> {
        let Some(first) = ops.first() else {
            return Ok(());
        };
        if ops.iter().any(|op| {
            matches!(
                op,
                StateOp::IfAbsent { .. }
                    | StateOp::MarkOnce { .. }
                    | StateOp::HashIncrByMany { .. }
            )
        }) {
            return self.apply_checked(ops).await.map(|_| ());
        }
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for op in ops {
            self.each_command(op, &mut pipe);
        }
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(|e| classify(first.key(), e))
    }

    async fn apply_checked(&self, ops: &[StateOp]) -> Result<Vec<bool>, StateError> {
        let Some(first) = ops.first() else {
            return Ok(Vec::new());
        };
        let mut args = ScriptArgs {
            keys: redis::Cmd::new(),
            argv: redis::Cmd::new(),
            key_count: 0,
        };
        self.encode_all_for_script(ops, &mut args);
        let all = || args.keys.args_iter().chain(args.argv.args_iter());
        let bytes: usize = all()
            .map(|a| match a {
                redis::Arg::Simple(a) => a.len(),
                _ => 0,
            })
            .sum();
        let mut cmd = redis::Cmd::with_capacity(3 + all().count(), 64 + bytes);
        cmd.arg("EVALSHA").arg(APPLY.get_hash()).arg(args.key_count);
        for a in all() {
            if let redis::Arg::Simple(a) = a {
                cmd.arg(a);
            }
        }
        let absent: Vec<i64> = self.evalsha(&APPLY, &cmd, first.key()).await?;
        Ok(absent.into_iter().map(|a| a == 1).collect())
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, StateError> {
        let mut c = self.conn.clone();
        redis::cmd("HGET")
            .arg(self.key(key))
            .arg(field)
            .query_async(&mut c)
            .await
            .map_err(|e| classify(key, e))
    }

    async fn hget_all(&self, key: &str) -> Result<BTreeMap<String, Vec<u8>>, StateError> {
        let mut c = self.conn.clone();
        redis::cmd("HGETALL")
            .arg(self.key(key))
            .query_async(&mut c)
            .await
            .map_err(|e| classify(key, e))
    }

    async fn hget_many(
        &self,
        key: &str,
        fields: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let values: Vec<Value> = redis::cmd("HMGET")
            .arg(self.key(key))
            .arg(fields)
            .query_async(&mut c)
            .await
            .map_err(|e| classify(key, e))?;
        Ok(values.into_iter().map(bytes).collect())
    }

    async fn hget_all_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<BTreeMap<String, Vec<u8>>>, StateError> {
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HGETALL").arg(self.key(k));
        }
        pipe.query_async(&mut c)
            .await
            .map_err(|e| classify(first, e))
    }

    async fn distinct_count(&self, keys: &[String]) -> Result<u64, StateError> {
        let Some(first) = keys.first() else {
            return Ok(0);
        };
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("PFCOUNT");
        for k in keys {
            cmd.arg(self.key(k));
        }
        cmd.query_async(&mut c)
            .await
            .map_err(|e| classify(first, e))
    }

    async fn distinct_merge(&self, dest: &str, sources: &[String]) -> Result<(), StateError> {
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("PFMERGE");
        cmd.arg(self.key(dest));
        for k in sources {
            cmd.arg(self.key(k));
        }
        cmd.query_async::<()>(&mut c)
            .await
            .map_err(|e| classify(dest, e))
    }
}
