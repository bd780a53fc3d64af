//! An in-process [`StateStore`]: for the demo and unit tests. Nothing survives
//! the process, so it cannot make side effects happen once across restarts;
//! production uses [`super::RedisStore`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Scored, StateError, StateStore};

#[derive(Debug, Clone)]
enum Value {
    Bytes(Vec<u8>),
    ZSet(HashMap<String, f64>),
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

    async fn set_nx_get_many(
        &self,
        keys: &[String],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.with(|m, now| {
            keys.iter()
                .map(|key| {
                    let k = self.key(key);
                    match live(m, &k, now) {
                        Some(Entry {
                            value: Value::Bytes(b),
                            ..
                        }) => Ok(Some(b.clone())),
                        Some(_) => Err(wrong_type(key)),
                        None => {
                            m.insert(
                                k,
                                Entry {
                                    value: Value::Bytes(value.to_vec()),
                                    expires_at: Some(now + ttl),
                                },
                            );
                            Ok(None)
                        }
                    }
                })
                .collect()
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
        self.with(|m, now| {
            let current = match live(m, &k, now) {
                None => 0,
                Some(Entry {
                    value: Value::Bytes(b),
                    ..
                }) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| StateError::Protocol {
                        key: key.to_string(),
                        message: "ERR value is not an integer or out of range".into(),
                    })?,
                Some(_) => return Err(wrong_type(key)),
            };
            let next = current + by;
            let expires_at = match (m.get(&k).and_then(|e| e.expires_at), ttl) {
                (Some(t), _) => Some(t),
                (None, Some(ttl)) => Some(now + ttl),
                (None, None) => None,
            };
            m.insert(
                k,
                Entry {
                    value: Value::Bytes(next.to_string().into_bytes()),
                    expires_at,
                },
            );
            Ok(next)
        })
    }

    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<(), StateError> {
        let k = self.key(key);
        self.with(|m, now| {
            if live(m, &k, now).is_none() {
                m.insert(
                    k.clone(),
                    Entry {
                        value: Value::ZSet(HashMap::new()),
                        expires_at: None,
                    },
                );
            }
            match m.get_mut(&k) {
                Some(Entry {
                    value: Value::ZSet(z),
                    ..
                }) => {
                    z.insert(member.to_string(), score);
                    Ok(())
                }
                _ => Err(wrong_type(key)),
            }
        })
    }

    async fn zrem(&self, key: &str, member: &str) -> Result<bool, StateError> {
        let k = self.key(key);
        self.with(|m, now| match live(m, &k, now) {
            None => Ok(false),
            Some(Entry {
                value: Value::ZSet(z),
                ..
            }) => {
                let removed = z.remove(member).is_some();
                if z.is_empty() {
                    m.remove(&k);
                }
                Ok(removed)
            }
            Some(_) => Err(wrong_type(key)),
        })
    }

    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        limit: usize,
    ) -> Result<Vec<Scored>, StateError> {
        let k = self.key(key);
        self.with(|m, now| match live(m, &k, now) {
            None => Ok(Vec::new()),
            Some(Entry {
                value: Value::ZSet(z),
                ..
            }) => {
                let mut v: Vec<Scored> = z
                    .iter()
                    .filter(|(_, s)| **s >= min && **s <= max)
                    .map(|(member, score)| Scored {
                        member: member.clone(),
                        score: *score,
                    })
                    .collect();
                // Redis orders by score, then lexicographically by member.
                v.sort_by(|a, b| {
                    a.score
                        .total_cmp(&b.score)
                        .then_with(|| a.member.cmp(&b.member))
                });
                v.truncate(limit);
                Ok(v)
            }
            Some(_) => Err(wrong_type(key)),
        })
    }

    async fn zfirst(&self, key: &str) -> Result<Option<Scored>, StateError> {
        Ok(self
            .zrange_by_score(key, f64::NEG_INFINITY, f64::INFINITY, 1)
            .await?
            .into_iter()
            .next())
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
