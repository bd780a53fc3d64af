//! An in-process [`StateStore`]: for the demo and unit tests. Nothing survives
//! the process, so it cannot make side effects happen once across restarts;
//! production uses [`super::RedisStore`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{claim_target, ScoreRange, Scored, StateError, StateOp, StateStore};

#[derive(Debug, Clone)]
enum Value {
    Bytes(Vec<u8>),
    ZSet(HashMap<String, f64>),
    Hash(HashMap<String, Vec<u8>>),
    /// The in-memory stand-in for a HyperLogLog: exact.
    Distinct(HashSet<String>),
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

/// A mutex-guarded map with Redis's expiry semantics.
#[derive(Debug, Default)]
pub struct MemoryStore {
    prefix: String,
    map: Mutex<HashMap<String, Entry>>,
}

impl MemoryStore {
    pub fn new(prefix: &str) -> Self {
        MemoryStore {
            prefix: prefix.to_string(),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> R) -> R {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        f(&mut map, now)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }
}

fn live<'a>(map: &'a mut HashMap<String, Entry>, key: &str, now: Instant) -> Option<&'a mut Entry> {
    if map
        .get(key)
        .is_some_and(|e| e.expires_at.is_some_and(|t| t <= now))
    {
        map.remove(key);
    }
    map.get_mut(key)
}

fn wrong_type(key: &str) -> StateError {
    StateError::Protocol {
        key: key.to_string(),
        message: "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let k = self.key(key);
        self.with(|m, now| match live(m, &k, now) {
            None => Ok(None),
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => Ok(Some(b.clone())),
            Some(_) => Err(wrong_type(key)),
        })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        Ok(self.with(|m, now| {
            keys.iter()
                .map(|key| match live(m, &self.key(key), now) {
                    Some(Entry {
                        value: Value::Bytes(b),
                        ..
                    }) => Some(b.clone()),
                    // MGET answers nil for a key of another type.
                    _ => None,
                })
                .collect()
        }))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        let k = self.key(key);
        self.with(|m, now| {
            m.insert(
                k,
                Entry {
                    value: Value::Bytes(value.to_vec()),
                    expires_at: ttl.map(|t| now + t),
                },
            );
        });
        Ok(())
    }

    async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let k = self.key(key);
        Ok(self.with(|m, now| {
            if live(m, &k, now).is_some() {
                return false;
            }
            m.insert(
                k,
                Entry {
                    value: Value::Bytes(value.to_vec()),
                    expires_at: ttl.map(|t| now + t),
                },
            );
            true
        }))
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let k = self.key(key);
        Ok(self.with(|m, now| match live(m, &k, now) {
            Some(e) if matches!(&e.value, Value::Bytes(b) if b.as_slice() == expected) => {
                *e = Entry {
                    value: Value::Bytes(value.to_vec()),
                    expires_at: ttl.map(|t| now + t),
                };
                true
            }
            _ => false,
        }))
    }

    async fn delete(&self, keys: &[String]) -> Result<u64, StateError> {
        Ok(self.with(|m, now| {
            keys.iter()
                .filter(|key| {
                    let k = self.key(key);
                    live(m, &k, now).is_some() && m.remove(&k).is_some()
                })
                .count() as u64
        }))
    }

    async fn any_key_with_prefix(
        &self,
        prefix: &str,
        _budget: usize,
    ) -> Result<Option<bool>, StateError> {
        let p = self.key(prefix);
        Ok(Some(self.with(|m, now| {
            m.iter()
                .any(|(k, e)| k.starts_with(&p) && e.expires_at.is_none_or(|t| t > now))
        })))
    }

    async fn claim_fields(
        &self,
        hashes: &[String],
        keys: &[String],
        fields: &[String],
        expected: &[Vec<u8>],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let Some(into) = claim_target(hashes, keys, fields, expected)? else {
            return Ok(Vec::new());
        };
        self.with(|m, now| {
            let mut answers = Vec::with_capacity(fields.len());
            let mut wrote = false;
            for (i, field) in fields.iter().enumerate() {
                let mut found: Option<Vec<u8>> = None;
                for h in hashes {
                    match live(m, &self.key(h), now) {
                        None => {}
                        Some(Entry {
                            value: Value::Hash(map),
                            ..
                        }) => {
                            if let Some(v) = map.get(field) {
                                found = Some(v.clone());
                                break;
                            }
                        }
                        Some(_) => return Err(wrong_type(h)),
                    }
                }
                if found.is_none() {
                    if let Some(key) = keys.get(i) {
                        found = match live(m, &self.key(key), now) {
                            None => None,
                            Some(Entry {
                                value: Value::Bytes(b),
                                ..
                            }) => Some(b.clone()),
                            Some(_) => return Err(wrong_type(key)),
                        };
                    }
                }
                let want = expected.get(i).map(Vec::as_slice).unwrap_or_default();
                if found.as_deref().unwrap_or_default() != want {
                    answers.push(found);
                    continue;
                }
                let k = self.key(into);
                if live(m, &k, now).is_none() {
                    m.insert(
                        k.clone(),
                        Entry {
                            value: Value::Hash(HashMap::new()),
                            expires_at: None,
                        },
                    );
                }
                match m.get_mut(&k) {
                    Some(Entry {
                        value: Value::Hash(map),
                        ..
                    }) => {
                        map.insert(field.clone(), value.to_vec());
                    }
                    _ => return Err(wrong_type(into)),
                }
                wrote = true;
                answers.push(None);
            }
            if wrote {
                if let Some(e) = m.get_mut(&self.key(into)) {
                    e.expires_at = Some(now + ttl);
                }
            }
            Ok(answers)
        })
    }

    async fn set_many(
        &self,
        keys: &[String],
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.with(|m, now| {
            for key in keys {
                m.insert(
                    self.key(key),
                    Entry {
                        value: Value::Bytes(value.to_vec()),
                        expires_at: Some(now + ttl),
                    },
                );
            }
        });
        Ok(())
    }

    async fn incr_by(&self, key: &str, by: i64, ttl: Option<Duration>) -> Result<i64, StateError> {
        let k = self.key(key);
        self.with(|m, now| incr_in(m, &k, key, by, ttl, now))
    }

    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<(), StateError> {
        let k = self.key(key);
        self.with(|m, now| {
            zset_mut(m, &k, key, now).map(|z| {
                z.insert(member.to_string(), score);
            })
        })
    }

    async fn zrem(&self, key: &str, member: &str) -> Result<bool, StateError> {
        let k = self.key(key);
        self.with(|m, now| zrem_in(m, &k, key, member, now))
    }

    async fn zrange(&self, key: &str, range: ScoreRange) -> Result<Vec<Scored>, StateError> {
        let k = self.key(key);
        self.with(|m, now| {
            let mut v = match live(m, &k, now) {
                None => return Ok(Vec::new()),
                Some(Entry {
                    value: Value::ZSet(z),
                    ..
                }) => sorted(z, |s| range.admits(s)),
                Some(_) => return Err(wrong_type(key)),
            };
            Ok(v.drain(..).skip(range.offset).take(range.limit).collect())
        })
    }

    async fn zcard(&self, key: &str) -> Result<u64, StateError> {
        let k = self.key(key);
        self.with(|m, now| match live(m, &k, now) {
            None => Ok(0),
            Some(Entry {
                value: Value::ZSet(z),
                ..
            }) => Ok(z.len() as u64),
            Some(_) => Err(wrong_type(key)),
        })
    }

    async fn zscore(&self, key: &str, member: &str) -> Result<Option<f64>, StateError> {
        let k = self.key(key);
        self.with(|m, now| match live(m, &k, now) {
            None => Ok(None),
            Some(Entry {
                value: Value::ZSet(z),
                ..
            }) => Ok(z.get(member).copied()),
            Some(_) => Err(wrong_type(key)),
        })
    }

    async fn zclaim_due(
        &self,
        key: &str,
        due_by: f64,
        lease_until: f64,
        limit: usize,
    ) -> Result<Vec<Scored>, StateError> {
        let k = self.key(key);
        self.with(|m, now| {
            let z = match live(m, &k, now) {
                None => return Ok(Vec::new()),
                Some(Entry {
                    value: Value::ZSet(z),
                    ..
                }) => z,
                Some(_) => return Err(wrong_type(key)),
            };
            let mut due = sorted(z, |s| s <= due_by);
            due.truncate(limit);
            for d in &due {
                z.insert(d.member.clone(), lease_until);
            }
            Ok(due)
        })
    }

    async fn zrem_if_score(&self, key: &str, member: &str, score: f64) -> Result<bool, StateError> {
        let k = self.key(key);
        self.with(|m, now| {
            let current = match live(m, &k, now) {
                None => return Ok(false),
                Some(Entry {
                    value: Value::ZSet(z),
                    ..
                }) => z.get(member).copied(),
                Some(_) => return Err(wrong_type(key)),
            };
            if current == Some(score) {
                zrem_in(m, &k, key, member, now)
            } else {
                Ok(false)
            }
        })
    }

    async fn zmove_if_score(
        &self,
        key: &str,
        member: &str,
        expected: f64,
        score: f64,
    ) -> Result<bool, StateError> {
        let k = self.key(key);
        self.with(|m, now| {
            let current = match live(m, &k, now) {
                None => return Ok(false),
                Some(Entry {
                    value: Value::ZSet(z),
                    ..
                }) => z.get(member).copied(),
                Some(_) => return Err(wrong_type(key)),
            };
            if current != Some(expected) {
                return Ok(false);
            }
            zset_mut(m, &k, key, now).map(|z| {
                z.insert(member.to_string(), score);
                true
            })
        })
    }

    async fn delete_if_eq(&self, key: &str, expected: &[u8]) -> Result<bool, StateError> {
        let k = self.key(key);
        Ok(self.with(|m, now| match live(m, &k, now) {
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) if b.as_slice() == expected => m.remove(&k).is_some(),
            _ => false,
        }))
    }

    async fn apply(&self, ops: &[StateOp]) -> Result<(), StateError> {
        self.apply_checked(ops).await.map(|_| ())
    }

    async fn apply_checked(&self, ops: &[StateOp]) -> Result<Vec<bool>, StateError> {
        self.with(|m, now| {
            let mut absent = Vec::new();
            for op in ops {
                match op {
                    StateOp::IfAbsent { key, .. } => {
                        absent.push(live(m, &self.key(key), now).is_none());
                    }
                    StateOp::MarkOnce {
                        into,
                        seen,
                        fields,
                        keys,
                        ..
                    } => {
                        let mut none = keys.iter().all(|k| live(m, &self.key(k), now).is_none());
                        for h in std::iter::once(into).chain(seen) {
                            match live(m, &self.key(h), now) {
                                None => {}
                                Some(Entry {
                                    value: Value::Hash(h),
                                    ..
                                }) => none &= !fields.iter().any(|f| h.contains_key(f)),
                                Some(_) => return Err(wrong_type(h)),
                            }
                        }
                        absent.push(none);
                        if !none {
                            break;
                        }
                    }
                    _ => {}
                }
                self.apply_one(m, op, now)?;
            }
            Ok(absent)
        })
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, StateError> {
        let k = self.key(key);
        self.with(|m, now| match live(m, &k, now) {
            None => Ok(None),
            Some(Entry {
                value: Value::Hash(h),
                ..
            }) => Ok(h.get(field).cloned()),
            Some(_) => Err(wrong_type(key)),
        })
    }

    async fn hget_all(&self, key: &str) -> Result<BTreeMap<String, Vec<u8>>, StateError> {
        let k = self.key(key);
        self.with(|m, now| match live(m, &k, now) {
            None => Ok(BTreeMap::new()),
            Some(Entry {
                value: Value::Hash(h),
                ..
            }) => Ok(h.iter().map(|(f, v)| (f.clone(), v.clone())).collect()),
            Some(_) => Err(wrong_type(key)),
        })
    }

    async fn distinct_count(&self, keys: &[String]) -> Result<u64, StateError> {
        self.with(|m, now| Ok(self.union_of(m, keys, now)?.len() as u64))
    }

    async fn distinct_merge(&self, dest: &str, sources: &[String]) -> Result<(), StateError> {
        self.with(|m, now| {
            let union = self.union_of(m, sources, now)?;
            self.apply_one(
                m,
                &StateOp::DistinctAdd {
                    key: dest.to_string(),
                    members: union.into_iter().collect(),
                },
                now,
            )
        })
    }
}

impl MemoryStore {
    /// The members of the distinct counts at `keys`, together.
    fn union_of(
        &self,
        m: &mut HashMap<String, Entry>,
        keys: &[String],
        now: Instant,
    ) -> Result<HashSet<String>, StateError> {
        let mut union = HashSet::new();
        for key in keys {
            match live(m, &self.key(key), now) {
                None => {}
                Some(Entry {
                    value: Value::Distinct(d),
                    ..
                }) => union.extend(d.iter().cloned()),
                Some(_) => return Err(wrong_type(key)),
            }
        }
        Ok(union)
    }

    /// One op of [`StateStore::apply`], under the map's lock.
    fn apply_one(
        &self,
        m: &mut HashMap<String, Entry>,
        op: &StateOp,
        now: Instant,
    ) -> Result<(), StateError> {
        let key = op.key();
        let k = self.key(key);
        match op {
            StateOp::Set { value, ttl, .. } => {
                m.insert(
                    k,
                    Entry {
                        value: Value::Bytes(value.clone()),
                        expires_at: ttl.map(|t| now + t),
                    },
                );
            }
            StateOp::Delete { .. } => {
                m.remove(&k);
            }
            StateOp::IncrBy { by, ttl, .. } => {
                incr_in(m, &k, key, *by, *ttl, now)?;
            }
            StateOp::HashSet { fields, .. } => {
                let h = hash_mut(m, &k, key, now)?;
                for (f, v) in fields {
                    h.insert(f.clone(), v.clone());
                }
            }
            StateOp::HashIncrBy { field, by, .. } => {
                let h = hash_mut(m, &k, key, now)?;
                let current = match h.get(field) {
                    None => 0,
                    Some(v) => parse_int(key, v)?,
                };
                h.insert(field.clone(), (current + by).to_string().into_bytes());
            }
            StateOp::HashIncrByMany { fields, .. } => {
                let h = hash_mut(m, &k, key, now)?;
                for (field, by) in fields {
                    let current = match h.get(field) {
                        None => 0,
                        Some(v) => parse_int(key, v)?,
                    };
                    h.insert(field.clone(), (current + by).to_string().into_bytes());
                }
            }
            // Checked by `apply_checked` first.
            StateOp::MarkOnce { fields, ttl, .. } => {
                let h = hash_mut(m, &k, key, now)?;
                for f in fields {
                    h.insert(f.clone(), b"1".to_vec());
                }
                if let Some(e) = live(m, &k, now) {
                    e.expires_at = Some(now + *ttl);
                }
            }
            StateOp::HashDelete { fields, .. } => {
                if let Some(Entry {
                    value: Value::Hash(h),
                    ..
                }) = live(m, &k, now)
                {
                    for f in fields {
                        h.remove(f);
                    }
                    if h.is_empty() {
                        m.remove(&k);
                    }
                }
            }
            StateOp::ZAdd { member, score, .. } => {
                zset_mut(m, &k, key, now)?.insert(member.clone(), *score);
            }
            StateOp::ZAddMany { members, .. } => {
                let z = zset_mut(m, &k, key, now)?;
                for (member, score) in members {
                    z.insert(member.clone(), *score);
                }
            }
            StateOp::ZRem { member, .. } => {
                zrem_in(m, &k, key, member, now)?;
            }
            StateOp::DistinctAdd { members, .. } => {
                typed_mut(
                    m,
                    &k,
                    key,
                    now,
                    || Value::Distinct(HashSet::new()),
                    |v| match v {
                        Value::Distinct(d) => Some(d),
                        _ => None,
                    },
                )?
                .extend(members.iter().cloned());
            }
            StateOp::Expire { ttl, .. } => {
                if let Some(e) = live(m, &k, now) {
                    e.expires_at = Some(now + *ttl);
                }
            }
            StateOp::IfAbsent {
                then, otherwise, ..
            } => {
                let branch = if live(m, &k, now).is_none() {
                    then
                } else {
                    otherwise
                };
                for op in branch {
                    self.apply_one(m, op, now)?;
                }
            }
        }
        Ok(())
    }
}

/// The members of `z` whose score `keep` admits, in Redis order (score, then member).
fn sorted(z: &HashMap<String, f64>, keep: impl Fn(f64) -> bool) -> Vec<Scored> {
    let mut v: Vec<Scored> = z
        .iter()
        .filter(|(_, s)| keep(**s))
        .map(|(member, score)| Scored {
            member: member.clone(),
            score: *score,
        })
        .collect();
    v.sort_by(|a, b| {
        a.score
            .total_cmp(&b.score)
            .then_with(|| a.member.cmp(&b.member))
    });
    v
}

fn parse_int(key: &str, v: &[u8]) -> Result<i64, StateError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| StateError::Protocol {
            key: key.to_string(),
            message: "ERR value is not an integer or out of range".into(),
        })
}

fn incr_in(
    m: &mut HashMap<String, Entry>,
    k: &str,
    key: &str,
    by: i64,
    ttl: Option<Duration>,
    now: Instant,
) -> Result<i64, StateError> {
    let current = match live(m, k, now) {
        None => 0,
        Some(Entry {
            value: Value::Bytes(b),
            ..
        }) => parse_int(key, b)?,
        Some(_) => return Err(wrong_type(key)),
    };
    let next = current + by;
    let expires_at = match (m.get(k).and_then(|e| e.expires_at), ttl) {
        (Some(t), _) => Some(t),
        (None, Some(ttl)) => Some(now + ttl),
        (None, None) => None,
    };
    m.insert(
        k.to_string(),
        Entry {
            value: Value::Bytes(next.to_string().into_bytes()),
            expires_at,
        },
    );
    Ok(next)
}

/// The live value at `k` as the kind `pick` selects, created by `empty`
/// when absent; a value of another kind is Redis's WRONGTYPE.
fn typed_mut<'a, T>(
    m: &'a mut HashMap<String, Entry>,
    k: &str,
    key: &str,
    now: Instant,
    empty: fn() -> Value,
    pick: fn(&mut Value) -> Option<&mut T>,
) -> Result<&'a mut T, StateError> {
    if live(m, k, now).is_none() {
        m.insert(
            k.to_string(),
            Entry {
                value: empty(),
                expires_at: None,
            },
        );
    }
    m.get_mut(k)
        .and_then(|e| pick(&mut e.value))
        .ok_or_else(|| wrong_type(key))
}

fn zset_mut<'a>(
    m: &'a mut HashMap<String, Entry>,
    k: &str,
    key: &str,
    now: Instant,
) -> Result<&'a mut HashMap<String, f64>, StateError> {
    typed_mut(
        m,
        k,
        key,
        now,
        || Value::ZSet(HashMap::new()),
        |v| match v {
            Value::ZSet(z) => Some(z),
            _ => None,
        },
    )
}

fn hash_mut<'a>(
    m: &'a mut HashMap<String, Entry>,
    k: &str,
    key: &str,
    now: Instant,
) -> Result<&'a mut HashMap<String, Vec<u8>>, StateError> {
    typed_mut(
        m,
        k,
        key,
        now,
        || Value::Hash(HashMap::new()),
        |v| match v {
            Value::Hash(h) => Some(h),
            _ => None,
        },
    )
}

fn zrem_in(
    m: &mut HashMap<String, Entry>,
    k: &str,
    key: &str,
    member: &str,
    now: Instant,
) -> Result<bool, StateError> {
    match live(m, k, now) {
        None => Ok(false),
        Some(Entry {
            value: Value::ZSet(z),
            ..
        }) => {
            let removed = z.remove(member).is_some();
            if z.is_empty() {
                m.remove(k);
            }
            Ok(removed)
        }
        Some(_) => Err(wrong_type(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        let store = MemoryStore::new("conf:");
        super::super::conformance::run_all(&store).await;
    }
}
