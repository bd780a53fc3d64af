//! Reading consumer groups' positions from outside the groups, for the lag
//! monitor and `taskstream lag`: committed offsets, watermarks, and the
//! timestamp of the first record a group has not consumed yet.
//!
//! Nothing here joins a group or commits anything:
//! - committed offsets come from the OffsetFetch API (`rd_kafka_committed` on a
//!   consumer that carries the group's id but never subscribes), not from
//!   reading `__consumer_offsets`, so managed clusters that hide that topic work;
//! - watermarks come from ListOffsets (`rd_kafka_query_watermark_offsets`);
//! - the first unconsumed record is fetched by a consumer of its own group id
//!   (`<group_prefix>-lag-monitor-peek`) that is `assign()`ed, never commits and
//!   stops after one record per partition.
//!
//! Every call is blocking and bounded by a timeout: run them off the async
//! runtime (`spawn_blocking`). Plain structs come out; no rdkafka type leaks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{base_client_config, scrub};
use crate::config::KafkaConfig;

/// Partitions per ListOffsets call (see [`OffsetReader::watermarks`]).
const LIST_OFFSETS_CHUNK: usize = 200;

/// A Kafka read of the lag monitor failed.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} from Kafka: {message}")]
pub struct OffsetError {
    /// What was being read (`metadata`, `committed offsets of group G`, ...).
    pub what: String,
    pub message: String,
}

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// A partition's oldest and next offsets (low and high watermarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// The oldest offset still in the log (retention moves it forward).
    pub low: i64,
    /// The offset the next produced record will get.
    pub high: i64,
}

/// What fetching at a group's committed offset found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeekedRecord {
    /// Offset of the record returned (at or after the asked offset: compaction,
    /// transaction markers and retention may skip some).
    pub offset: i64,
    /// Its timestamp (create or log-append time), milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// Reads committed offsets, watermarks and first unconsumed records. One per
/// process; keeps one offset-fetch client per watched group.
pub struct OffsetReader {
    kafka: KafkaConfig,
    client_id: String,
    /// Metadata and watermarks; no group.
    meta: BaseConsumer,
    /// One client per group: `rd_kafka_committed` asks for the client's own group.
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    peek: Mutex<BaseConsumer>,
}

impl OffsetReader {
    /// Creates the clients (no network round trip yet). `peek_group` is the
    /// group id of the record-peeking consumer; it must differ from every
    /// watched group's.
    pub fn new(
        kafka: &KafkaConfig,
        client_id: &str,
        peek_group: &str,
    ) -> Result<Self, OffsetError> {
        let fail = |what: &str, e: rdkafka::error::KafkaError| OffsetError {
            what: what.to_string(),
            message: scrub(kafka, &e.to_string()),
        };
        let meta: BaseConsumer = base_client_config(kafka, client_id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| fail("a metadata client", e))?;
        let peek: BaseConsumer = base_client_config(kafka, client_id)
            .set("group.id", peek_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A committed offset below the low watermark (retention) reads the
            // oldest record still there.
            .set("auto.offset.reset", "earliest")
            // One record per partition is all we want: a broker returns at least
            // the first record batch whatever this limit says (KIP-74).
            .set("max.partition.fetch.bytes", "1")
            .set("fetch.max.bytes", "1048576")
            .set("queued.min.messages", "1")
            .set("queued.max.messages.kbytes", "1024")
            .set("fetch.wait.max.ms", "50")
            // With a one-message queue, librdkafka's default (1 s) would idle
            // each partition for a second after its first record.
            .set("fetch.queue.backoff.ms", "10")
            .create()
            .map_err(|e| fail("a peek client", e))?;
        Ok(OffsetReader {
            kafka: kafka.clone(),
            client_id: client_id.to_string(),
            meta,
            groups: Mutex::new(HashMap::new()),
            peek: Mutex::new(peek),
        })
    }

    fn error(&self, what: impl Into<String>, e: impl std::fmt::Display) -> OffsetError {
        OffsetError {
            what: what.into(),
            message: scrub(&self.kafka, &e.to_string()),
        }
    }

    /// Every partition of each of `topics` that exists, from one metadata
    /// request. Topics that do not exist are left out (never auto-created).
    pub fn partitions(
        &self,
        topics: &[String],
        timeout: Duration,
    ) -> Result<Vec<TopicPartition>, OffsetError> {
        let wanted: HashSet<&str> = topics.iter().map(String::as_str).collect();
        let md = self
            .meta
            .fetch_metadata(None, timeout)
            .map_err(|e| self.error("metadata", e))?;
        let mut out = Vec::new();
        for t in md.topics() {
            if !wanted.contains(t.name()) || t.error().is_some() {
                continue;
            }
            for p in t.partitions() {
                out.push(TopicPartition::new(t.name(), p.id()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The committed offset of `group` on each of `partitions` (same order);
    /// `None` where the group has no commit.
    pub fn committed(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<Vec<Option<i64>>, OffsetError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let what = || format!("committed offsets of group {group}");
        let client = self
            .group_client(group)
            .map_err(|e| self.error(what(), e))?;
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for tp in partitions {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let got = client
            .committed_offsets(tpl, timeout)
            .map_err(|e| self.error(what(), e))?;
        let mut by_tp: HashMap<(String, i32), Option<i64>> = HashMap::new();
        for e in got.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            by_tp.insert((e.topic().to_string(), e.partition()), offset);
        }
        Ok(partitions
            .iter()
            .map(|tp| {
                by_tp
                    .get(&(tp.topic.clone(), tp.partition))
                    .copied()
                    .flatten()
            })
            .collect())
    }

    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer>, rdkafka::error::KafkaError> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = groups.get(group) {
            return Ok(c.clone());
        }
        let c: BaseConsumer = base_client_config(&self.kafka, &self.client_id)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let c = Arc::new(c);
        groups.insert(group.to_string(), c.clone());
        Ok(c)
    }

    /// Closes the offset-fetch clients of groups no longer watched.
    pub fn retain_groups(&self, watched: &[String]) {
        let keep: HashSet<&str> = watched.iter().map(String::as_str).collect();
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.retain(|g, _| keep.contains(g.as_str()));
    }

    /// Low and high watermarks of each partition (same order): two ListOffsets
    /// requests per partition leader (earliest, latest) for all partitions,
    /// rather than two round trips per partition. Under the default
    /// `read_committed` isolation, "high" is the last stable offset, which is
    /// what a transactional consumer can reach.
    pub fn watermarks(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<Vec<Watermarks>, OffsetError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut low = Vec::with_capacity(partitions.len());
        let mut high = Vec::with_capacity(partitions.len());
        // librdkafka matches each answer to its request list by a linear
        // search: quadratic in the list's size, so ask in chunks.
        for chunk in partitions.chunks(LIST_OFFSETS_CHUNK) {
            low.extend(self.list_offsets(chunk, Offset::Beginning, timeout)?);
            high.extend(self.list_offsets(chunk, Offset::End, timeout)?);
        }
        Ok(low
            .into_iter()
            .zip(high)
            .map(|(low, high)| Watermarks { low, high })
            .collect())
    }

    /// The offset `which` (earliest or latest) of each partition, same order.
    fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        which: Offset,
        timeout: Duration,
    ) -> Result<Vec<i64>, OffsetError> {
        let what = || {
            format!(
                "{} offsets",
                if which == Offset::End {
                    "latest"
                } else {
                    "earliest"
                }
            )
        };
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for tp in partitions {
            tpl.add_partition_offset(&tp.topic, tp.partition, which)
                .map_err(|e| self.error(what(), e))?;
        }
        let got = self
            .meta
            .offsets_for_times(tpl, timeout)
            .map_err(|e| self.error(what(), e))?;
        let mut by_tp: HashMap<(String, i32), i64> = HashMap::with_capacity(partitions.len());
        for e in got.elements() {
            if let Err(err) = e.error() {
                return Err(self.error(
                    format!("{} of {}/{}", what(), e.topic(), e.partition()),
                    err,
                ));
            }
            if let Offset::Offset(o) = e.offset() {
                by_tp.insert((e.topic().to_string(), e.partition()), o);
            }
        }
        partitions
            .iter()
            .map(|tp| {
                by_tp
                    .get(&(tp.topic.clone(), tp.partition))
                    .copied()
                    .ok_or_else(|| {
                        self.error(
                            format!("{} of {}/{}", what(), tp.topic, tp.partition),
                            "no offset returned",
                        )
                    })
            })
            .collect()
    }

    /// Fetches the first record at or after each `(partition, offset)` and
    /// returns what was found by `timeout`; a partition missing from the
    /// result had nothing to return in time. Nothing is committed.
    pub fn peek(
        &self,
        positions: &[(TopicPartition, i64)],
        timeout: Duration,
    ) -> Result<HashMap<TopicPartition, PeekedRecord>, OffsetError> {
        let mut found = HashMap::new();
        if positions.is_empty() {
            return Ok(found);
        }
        let consumer = self.peek.lock().unwrap_or_else(|p| p.into_inner());
        let mut tpl = TopicPartitionList::with_capacity(positions.len());
        let mut wanted: HashMap<(String, i32), i64> = HashMap::new();
        for (tp, offset) in positions {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
                .map_err(|e| self.error("peek positions", e))?;
            wanted.insert((tp.topic.clone(), tp.partition), *offset);
        }
        consumer
            .assign(&tpl)
            .map_err(|e| self.error("peek assignment", e))?;
        let deadline = Instant::now() + timeout;
        while !wanted.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                Some(Ok(m)) => {
                    let key = (m.topic().to_string(), m.partition());
                    let Some(&asked) = wanted.get(&key) else {
                        continue;
                    };
                    if m.offset() < asked {
                        continue;
                    }
                    wanted.remove(&key);
                    if let Some(ts) = m.timestamp().to_millis() {
                        found.insert(
                            TopicPartition::new(key.0, key.1),
                            PeekedRecord {
                                offset: m.offset(),
                                timestamp_ms: ts,
                            },
                        );
                    }
                    // Stop fetching this partition.
                    let mut done = TopicPartitionList::new();
                    done.add_partition(m.topic(), m.partition());
                    let _ = consumer.pause(&done);
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %scrub(&self.kafka, &e.to_string()), "peek fetch error");
                }
                None => {}
            }
        }
        // Pause flags outlive an assignment: clear them for the next peek.
        let _ = consumer.resume(&tpl);
        let _ = consumer.unassign();
        Ok(found)
    }
}
