//! One collection: reads every watched group's committed offsets, the
//! watermarks of their partitions and, for lagging partitions, the first
//! unconsumed record, through `pipelines::kafka::offsets`. Blocking: run it
//! with `spawn_blocking`.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pipelines::config::KafkaConfig;
use pipelines::kafka::offsets::{OffsetError, OffsetReader, PeekedRecord, TopicPartition};

use super::config::LagMonitorConfig;
use super::monitor::{Collection, GroupOffsets, Monitor, PartitionOffsets};
use super::watch::WatchedGroup;

/// Reads collections; remembers the first unconsumed records it read, since
/// a group that has not moved still waits on the same record.
pub struct Collector {
    reader: OffsetReader,
    settings: LagMonitorConfig,
    peeked: HashMap<(TopicPartition, i64), PeekedRecord>,
}

impl Collector {
    pub fn new(kafka: &KafkaConfig, settings: &LagMonitorConfig) -> Result<Self, OffsetError> {
        let reader = OffsetReader::new(
            kafka,
            &format!("{}-lag-monitor", kafka.client_id),
            &format!("{}-lag-monitor-peek", kafka.group_prefix),
        )?;
        Ok(Collector {
            reader,
            settings: settings.clone(),
            peeked: HashMap::new(),
        })
    }

    /// Reads everything about `groups`; `clock` dates the collection once
    /// offsets are read (so lag seconds are not inflated by the read itself).
    pub fn collect(
        &mut self,
        groups: &[WatchedGroup],
        monitor: &Monitor,
        clock: impl Fn() -> DateTime<Utc>,
    ) -> Result<Collection, OffsetError> {
        let timeout = self.settings.request_timeout;
        let topics: Vec<String> = groups
            .iter()
            .flat_map(|g| g.topics.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let all = self.reader.partitions(&topics, timeout)?;
        let mut by_topic: HashMap<&str, Vec<TopicPartition>> = HashMap::new();
        for tp in &all {
            by_topic
                .entry(tp.topic.as_str())
                .or_default()
                .push(tp.clone());
        }

        // Committed offsets first, watermarks after: a commit read after the
        // high watermark could exceed it, and the lag would read low.
        let requests: Vec<(String, Vec<TopicPartition>)> = groups
            .iter()
            .map(|g| {
                let partitions = g
                    .topics
                    .iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .flat_map(|t| by_topic.get(t.as_str()).cloned().unwrap_or_default())
                    .collect();
                (g.group.clone(), partitions)
            })
            .collect();
        let mut committed = Vec::with_capacity(groups.len());
        for ((g, (_, partitions)), offsets) in groups
            .iter()
            .zip(requests.iter())
            .zip(self.reader.committed_many(&requests, timeout))
        {
            committed.push((g, partitions.clone(), offsets?));
        }

        let watermarks: HashMap<TopicPartition, _> = all
            .iter()
            .cloned()
            .zip(self.reader.watermarks(&all, timeout)?)
            .collect();

        // The first unconsumed record of every lagging partition not read
        // before, largest lag first, at most `peek_max_partitions` a collection.
        let mut wanted: BTreeSet<(TopicPartition, i64)> = BTreeSet::new();
        let mut lag_of: HashMap<(TopicPartition, i64), i64> = HashMap::new();
        for (_, partitions, offsets) in &committed {
            for (tp, c) in partitions.iter().zip(offsets) {
                if let (Some(c), Some(w)) = (c, watermarks.get(tp)) {
                    if monitor.wants_record(*w, *c) {
                        let position = (*c).max(w.low);
                        wanted.insert((tp.clone(), position));
                        lag_of.insert((tp.clone(), position), w.high - position);
                    }
                }
            }
        }
        let mut peeked = HashMap::with_capacity(wanted.len());
        if self.settings.exact_lag_seconds {
            let mut missing: Vec<(TopicPartition, i64)> = wanted
                .iter()
                .filter(|k| !self.peeked.contains_key(k))
                .cloned()
                .collect();
            missing.sort_by_key(|k| std::cmp::Reverse(lag_of.get(k).copied().unwrap_or(0)));
            missing.truncate(self.settings.peek_max_partitions);
            let fresh = self
                .reader
                .peek(&missing, self.settings.peek_timeout)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "could not read first unconsumed records; lag seconds are interpolated");
                    HashMap::new()
                });
            peeked.extend(fresh);
            for k in &wanted {
                if let Some(r) = self.peeked.get(k) {
                    peeked.insert(k.clone(), *r);
                }
            }
        }
        self.peeked = peeked;

        let at = clock();
        let groups = committed
            .into_iter()
            .map(|(g, partitions, offsets)| GroupOffsets {
                group: g.group.clone(),
                worker: g.worker.clone(),
                partitions: partitions
                    .into_iter()
                    .zip(offsets)
                    .filter_map(|(tp, c)| {
                        let w = *watermarks.get(&tp)?;
                        let first_unconsumed =
                            c.and_then(|c| self.peeked.get(&(tp.clone(), c.max(w.low))).copied());
                        Some(PartitionOffsets {
                            tp,
                            committed: c,
                            watermarks: w,
                            first_unconsumed,
                        })
                    })
                    .collect(),
            })
            .collect();
        Ok(Collection { at, groups })
    }

    /// How long collections may take before the next is due.
    pub fn interval(&self) -> Duration {
        self.settings.interval
    }
}
