//! Reading consumer groups' positions from outside the groups, for the lag
//! monitor and `taskstream lag`: committed offsets, watermarks, and the
//! timestamp of the first record a group has not consumed yet.
//!
//! Nothing here joins a group or commits anything:
//! - committed offsets come from the admin API's ListConsumerGroupOffsets (an
//!   OffsetFetch to each group's coordinator, all groups in flight at once on
//!   one client), not from reading `__consumer_offsets`, so managed clusters
//!   that hide that topic work. rdkafka 0.39 does not wrap this call, so it is
//!   made through `rdkafka-sys`, as the mock cluster's controls are;
//! - watermarks come from ListOffsets (earliest and latest), batched per
//!   partition leader;
//! - the first unconsumed record is fetched by a consumer of its own group id
//!   (`<group_prefix>-lag-monitor-peek`) that is `assign()`ed, never commits and
//!   stops after one record per partition.
//!
//! Every call is blocking and bounded by a timeout: run them off the async
//! runtime (`spawn_blocking`). Plain structs come out; no rdkafka type leaks.

use std::collections::{HashMap, HashSet};
use std::ffi::{c_void, CStr, CString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use rdkafka_sys as rdsys;

use super::{base_client_config, scrub};
use crate::config::KafkaConfig;

/// A C string owned by librdkafka, copied; empty for NULL.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string alive for the call.
unsafe fn c_text(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

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
/// process: three clients whatever the number of groups watched.
pub struct OffsetReader {
    kafka: KafkaConfig,
    /// Metadata and watermarks; no group.
    meta: BaseConsumer,
    /// ListConsumerGroupOffsets (OffsetFetch to each group's coordinator).
    admin: AdminClient<DefaultClientContext>,
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
        let admin: AdminClient<DefaultClientContext> = base_client_config(kafka, client_id)
            .create()
            .map_err(|e| fail("an admin client", e))?;
        Ok(OffsetReader {
            kafka: kafka.clone(),
            meta,
            admin,
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
        self.committed_many(&[(group.to_string(), partitions.to_vec())], timeout)
            .pop()
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// [`OffsetReader::committed`] for many groups at once: one
    /// ListConsumerGroupOffsets request per group, all in flight together on
    /// one admin client. Results in the order of `groups`.
    pub fn committed_many(
        &self,
        groups: &[(String, Vec<TopicPartition>)],
        timeout: Duration,
    ) -> Vec<Result<Vec<Option<i64>>, OffsetError>> {
        let what = |g: &str| format!("committed offsets of group {g}");
        let mut results: Vec<Option<Result<Vec<Option<i64>>, OffsetError>>> =
            groups.iter().map(|_| None).collect();
        let rk = self.admin.inner().native_ptr();
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `rk` lives as long as `self.admin`; the queue is destroyed
        // below, after every event taken from it was destroyed.
        let queue = unsafe { rdsys::rd_kafka_queue_new(rk) };
        let mut in_flight = 0usize;
        for (i, (group, partitions)) in groups.iter().enumerate() {
            if partitions.is_empty() {
                results[i] = Some(Ok(Vec::new()));
                continue;
            }
            let Ok(group_c) = CString::new(group.as_str()) else {
                results[i] = Some(Err(self.error(what(group), "group id contains a NUL byte")));
                continue;
            };
            let mut tpl = TopicPartitionList::with_capacity(partitions.len());
            for tp in partitions {
                tpl.add_partition(&tp.topic, tp.partition);
            }
            // SAFETY: librdkafka copies the request and the options; both are
            // destroyed here once the call has returned.
            unsafe {
                let options = rdsys::rd_kafka_AdminOptions_new(
                    rk,
                    rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
                );
                let mut errstr = [0 as std::os::raw::c_char; 256];
                rdsys::rd_kafka_AdminOptions_set_request_timeout(
                    options,
                    timeout_ms,
                    errstr.as_mut_ptr(),
                    errstr.len(),
                );
                rdsys::rd_kafka_AdminOptions_set_opaque(options, i as *mut c_void);
                let mut request =
                    rdsys::rd_kafka_ListConsumerGroupOffsets_new(group_c.as_ptr(), tpl.ptr());
                rdsys::rd_kafka_ListConsumerGroupOffsets(rk, &mut request, 1, options, queue);
                rdsys::rd_kafka_ListConsumerGroupOffsets_destroy(request);
                rdsys::rd_kafka_AdminOptions_destroy(options);
            }
            in_flight += 1;
        }
        // librdkafka answers every request by its own timeout; the slack only
        // guards against a lost event.
        let deadline = Instant::now() + timeout + Duration::from_secs(1);
        while in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // SAFETY: the queue is live; a non-null event is ours until destroyed.
            let event = unsafe {
                rdsys::rd_kafka_queue_poll(queue, left.as_millis().min(i32::MAX as u128) as i32)
            };
            if event.is_null() {
                continue;
            }
            in_flight -= 1;
            // SAFETY: `event` is a live ListConsumerGroupOffsets result event.
            let (index, outcome) = unsafe { self.read_offsets_event(event, groups) };
            unsafe { rdsys::rd_kafka_event_destroy(event) };
            if let Some(slot) = index.and_then(|i| results.get_mut(i)) {
                *slot = Some(outcome);
            }
        }
        // SAFETY: created above; events taken from it are destroyed.
        unsafe { rdsys::rd_kafka_queue_destroy(queue) };
        results
            .into_iter()
            .zip(groups)
            .map(|(r, (group, _))| {
                r.unwrap_or_else(|| Err(self.error(what(group), "no answer in time")))
            })
            .collect()
    }

    /// Reads one ListConsumerGroupOffsets result: which request it answers
    /// (its opaque) and the offsets in that request's partition order.
    ///
    /// # Safety
    /// `event` must be a live event from a ListConsumerGroupOffsets call whose
    /// opaque is an index into `groups`.
    unsafe fn read_offsets_event(
        &self,
        event: *mut rdsys::rd_kafka_event_t,
        groups: &[(String, Vec<TopicPartition>)],
    ) -> (Option<usize>, Result<Vec<Option<i64>>, OffsetError>) {
        let index = rdsys::rd_kafka_event_opaque(event) as usize;
        let Some((group, partitions)) = groups.get(index) else {
            return (None, Ok(Vec::new()));
        };
        let what = format!("committed offsets of group {group}");
        if rdsys::rd_kafka_event_error(event)
            != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            let msg = c_text(rdsys::rd_kafka_event_error_string(event));
            return (Some(index), Err(self.error(what, msg)));
        }
        let result = rdsys::rd_kafka_event_ListConsumerGroupOffsets_result(event);
        if result.is_null() {
            return (Some(index), Err(self.error(what, "not an offsets result")));
        }
        let mut count = 0usize;
        let group_results =
            rdsys::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
        if group_results.is_null() || count == 0 {
            return (Some(index), Err(self.error(what, "empty offsets result")));
        }
        let group_result = *group_results;
        let error = rdsys::rd_kafka_group_result_error(group_result);
        if !error.is_null() {
            let msg = c_text(rdsys::rd_kafka_error_string(error));
            return (Some(index), Err(self.error(what, msg)));
        }
        let tpl = rdsys::rd_kafka_group_result_partitions(group_result);
        let mut by_tp: HashMap<(String, i32), Option<i64>> = HashMap::new();
        if !tpl.is_null() {
            let elems = std::slice::from_raw_parts((*tpl).elems, (*tpl).cnt.max(0) as usize);
            for e in elems {
                if e.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    let msg = c_text(rdsys::rd_kafka_err2str(e.err));
                    let topic = c_text(e.topic);
                    return (
                        Some(index),
                        Err(self.error(format!("{what} on {topic}/{}", e.partition), msg)),
                    );
                }
                by_tp.insert(
                    (c_text(e.topic), e.partition),
                    (e.offset >= 0).then_some(e.offset),
                );
            }
        }
        let offsets = partitions
            .iter()
            .map(|tp| {
                by_tp
                    .get(&(tp.topic.clone(), tp.partition))
                    .copied()
                    .flatten()
            })
            .collect();
        (Some(index), Ok(offsets))
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
    /// returns what was found by `timeout`, keyed by the position asked; a
    /// position missing from the result had nothing to return in time.
    /// Nothing is committed. A partition asked at several offsets (groups at
    /// different places on one topic) is read once per offset, in rounds.
    pub fn peek(
        &self,
        positions: &[(TopicPartition, i64)],
        timeout: Duration,
    ) -> Result<HashMap<(TopicPartition, i64), PeekedRecord>, OffsetError> {
        let mut rounds: Vec<Vec<(TopicPartition, i64)>> = Vec::new();
        let mut seen: HashMap<&TopicPartition, usize> = HashMap::new();
        let mut sorted: Vec<&(TopicPartition, i64)> = positions.iter().collect();
        sorted.sort();
        sorted.dedup();
        for pos in sorted {
            let round = seen.entry(&pos.0).or_insert(0);
            if rounds.len() <= *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push(pos.clone());
            *round += 1;
        }
        let deadline = Instant::now() + timeout;
        let mut found = HashMap::new();
        let total = rounds.len() as u32;
        for (i, round) in rounds.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let share = left / (total - i as u32).max(1);
            for (tp, record) in self.peek_round(round, share)? {
                if let Some((_, asked)) = round.iter().find(|(t, _)| *t == tp) {
                    found.insert((tp, *asked), record);
                }
            }
        }
        Ok(found)
    }

    /// One round of [`OffsetReader::peek`]: each partition at most once.
    fn peek_round(
        &self,
        positions: &[(TopicPartition, i64)],
        timeout: Duration,
    ) -> Result<HashMap<TopicPartition, PeekedRecord>, OffsetError> {
        let mut found = HashMap::new();
        if positions.is_empty() || timeout.is_zero() {
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
