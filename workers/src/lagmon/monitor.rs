//! The monitor's memory and judgement: collections of raw offsets in, per
//! group and partition lag, lag seconds, status and data loss out.
//!
//! Pure and deterministic: time comes in with each collection. Groups and
//! partitions missing from a collection are forgotten, so their series
//! disappear from `/metrics` instead of freezing at their last value.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use pipelines::kafka::offsets::{PeekedRecord, TopicPartition, Watermarks};
use serde::Serialize;

use super::lag::partition_lag;
use super::status::{
    group_status, partition_status, Observation, PartitionHistory, Status, StatusRules,
};
use super::timeline::Timeline;

/// Raw offsets of one partition for one group, as read from Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionOffsets {
    pub tp: TopicPartition,
    /// `None`: the group has no commit on this partition.
    pub committed: Option<i64>,
    pub watermarks: Watermarks,
    /// The first record at or after `committed`, when it was read.
    pub first_unconsumed: Option<PeekedRecord>,
}

/// One group's raw offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupOffsets {
    pub group: String,
    /// The taskstream worker whose group this is, else the group id (a bounded label).
    pub worker: String,
    pub partitions: Vec<PartitionOffsets>,
}

/// Everything read in one collection, at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub at: DateTime<Utc>,
    pub groups: Vec<GroupOffsets>,
}

/// One partition's verdict. The JSON keys are those `taskstream lag
/// --format json` promises.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionReport {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub low_watermark: i64,
    pub high_watermark: i64,
    /// `None` without a commit: no fake lag for a partition never consumed.
    pub lag: Option<u64>,
    pub lag_seconds: Option<f64>,
    /// `None` without a commit.
    pub status: Option<Status>,
    pub data_loss: u64,
    /// Whether `lag_seconds` came from the record itself (else interpolated).
    #[serde(skip)]
    pub exact_seconds: bool,
}

/// One group's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupReport {
    pub group: String,
    pub worker: String,
    pub status: Status,
    pub partitions: Vec<PartitionReport>,
}

impl GroupReport {
    pub fn max_lag(&self) -> u64 {
        self.partitions
            .iter()
            .filter_map(|p| p.lag)
            .max()
            .unwrap_or(0)
    }

    pub fn sum_lag(&self) -> u64 {
        self.partitions.iter().filter_map(|p| p.lag).sum()
    }

    pub fn max_lag_seconds(&self) -> f64 {
        self.partitions
            .iter()
            .filter_map(|p| p.lag_seconds)
            .fold(0.0, f64::max)
    }

    pub fn data_loss(&self) -> u64 {
        self.partitions.iter().map(|p| p.data_loss).sum()
    }
}

/// How the monitor judges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorSettings {
    pub window: usize,
    pub rules: StatusRules,
    pub allowed_lag: u64,
    pub timeline_samples: usize,
}

#[derive(Debug, Default)]
struct PartitionState {
    window: VecDeque<Observation>,
    offset_moved_at: Option<DateTime<Utc>>,
    last_committed: Option<i64>,
}

/// The lag monitor's state across collections.
#[derive(Debug)]
pub struct Monitor {
    settings: MonitorSettings,
    /// Per topic partition: its high-watermark history (shared by groups).
    timelines: HashMap<TopicPartition, Timeline>,
    /// Per group and partition: the status window.
    partitions: HashMap<(String, TopicPartition), PartitionState>,
}

impl Monitor {
    pub fn new(settings: MonitorSettings) -> Self {
        Monitor {
            settings,
            timelines: HashMap::new(),
            partitions: HashMap::new(),
        }
    }

    /// Whether `(topic, partition)` at `committed` still needs its first
    /// unconsumed record read: it lags and the record is not yet known.
    pub fn wants_record(&self, watermarks: Watermarks, committed: i64) -> bool {
        partition_lag(
            committed,
            watermarks.low,
            watermarks.high,
            self.settings.allowed_lag,
        )
        .messages
            > 0
    }

    /// Takes in one collection and returns every group's verdict. State of
    /// groups and partitions absent from it is dropped.
    pub fn observe(&mut self, c: &Collection) -> Vec<GroupReport> {
        let now = c.at;
        let mut seen_tp: HashSet<TopicPartition> = HashSet::new();
        for g in &c.groups {
            for p in &g.partitions {
                if seen_tp.insert(p.tp.clone()) {
                    self.timelines
                        .entry(p.tp.clone())
                        .or_insert_with(|| Timeline::new(self.settings.timeline_samples))
                        .record(p.watermarks.high, now);
                }
            }
        }
        self.timelines.retain(|tp, _| seen_tp.contains(tp));

        let mut seen: HashSet<(String, TopicPartition)> = HashSet::new();
        let mut reports = Vec::with_capacity(c.groups.len());
        for g in &c.groups {
            let mut partitions = Vec::with_capacity(g.partitions.len());
            for p in &g.partitions {
                let key = (g.group.clone(), p.tp.clone());
                seen.insert(key.clone());
                partitions.push(self.observe_partition(&g.group, key, p, now));
            }
            let status = group_status(partitions.iter().filter_map(|p| p.status));
            reports.push(GroupReport {
                group: g.group.clone(),
                worker: g.worker.clone(),
                status,
                partitions,
            });
        }
        self.partitions.retain(|k, _| seen.contains(k));
        reports
    }

    fn observe_partition(
        &mut self,
        group: &str,
        key: (String, TopicPartition),
        p: &PartitionOffsets,
        now: DateTime<Utc>,
    ) -> PartitionReport {
        let w = p.watermarks;
        let mut report = PartitionReport {
            group: group.to_string(),
            topic: p.tp.topic.clone(),
            partition: p.tp.partition,
            committed: p.committed,
            low_watermark: w.low.max(0),
            high_watermark: w.high.max(0),
            lag: None,
            lag_seconds: None,
            status: None,
            data_loss: 0,
            exact_seconds: false,
        };
        let Some(committed) = p.committed else {
            // Keep no window for an uncommitted partition: its first commit
            // starts a fresh one.
            self.partitions.remove(&key);
            return report;
        };
        let lag = partition_lag(committed, w.low, w.high, self.settings.allowed_lag);
        report.lag = Some(lag.messages);
        report.data_loss = lag.data_loss;

        // When was the first unconsumed record produced?
        let position = committed.max(w.low);
        let exact = p
            .first_unconsumed
            .filter(|r| r.offset >= position && r.offset < w.high.max(position + 1))
            .and_then(|r| DateTime::<Utc>::from_timestamp_millis(r.timestamp_ms));
        let estimated = self
            .timelines
            .get(&p.tp)
            .and_then(|tl| tl.produced_at(position));
        let unconsumed_since = exact.or(estimated);
        report.exact_seconds = exact.is_some();
        report.lag_seconds = Some(if lag.messages == 0 {
            0.0
        } else {
            unconsumed_since
                .map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0)
                .unwrap_or(0.0)
        });

        let window_len = self.settings.window;
        let state = self.partitions.entry(key).or_default();
        if let Some(prev) = state.last_committed {
            if prev != committed {
                state.offset_moved_at = Some(now);
            }
        }
        state.last_committed = Some(committed);
        state.window.push_back(Observation {
            at: now,
            committed,
            lag: lag.messages,
        });
        while state.window.len() > window_len {
            state.window.pop_front();
        }
        let history = PartitionHistory {
            offset_moved_at: state.offset_moved_at,
            unconsumed_since: if lag.messages > 0 {
                unconsumed_since
            } else {
                None
            },
        };
        report.status = Some(partition_status(
            state.window.make_contiguous(),
            history,
            now,
            self.settings.rules,
        ));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn settings() -> MonitorSettings {
        MonitorSettings {
            window: 5,
            rules: StatusRules {
                min_observations: 3,
                stopped_after: Duration::from_secs(60),
            },
            allowed_lag: 0,
            timeline_samples: 20,
        }
    }

    fn part(p: i32, committed: Option<i64>, low: i64, high: i64) -> PartitionOffsets {
        PartitionOffsets {
            tp: TopicPartition::new("task-events", p),
            committed,
            watermarks: Watermarks { low, high },
            first_unconsumed: None,
        }
    }

    fn collection(at: i64, groups: Vec<(&str, Vec<PartitionOffsets>)>) -> Collection {
        Collection {
            at: t(at),
            groups: groups
                .into_iter()
                .map(|(g, partitions)| GroupOffsets {
                    group: g.to_string(),
                    worker: g.to_string(),
                    partitions,
                })
                .collect(),
        }
    }

    #[test]
    fn a_stopped_consumer_lags_more_in_messages_and_seconds_until_stopped() {
        let mut m = Monitor::new(settings());
        let mut statuses = Vec::new();
        let mut seconds = Vec::new();
        let mut lags = Vec::new();
        for i in 0..10 {
            // 10 records produced every 10 s; the group stays at 0.
            let r = m.observe(&collection(
                i * 10,
                vec![("g", vec![part(0, Some(0), 0, 10 * (i + 1))])],
            ));
            let p = &r[0].partitions[0];
            lags.push(p.lag.unwrap());
            seconds.push(p.lag_seconds.unwrap());
            statuses.push(r[0].status);
        }
        assert!(lags.windows(2).all(|w| w[1] > w[0]), "{lags:?}");
        assert!(seconds[2..].windows(2).all(|w| w[1] > w[0]), "{seconds:?}");
        assert!(seconds.iter().all(|s| s.is_finite() && *s >= 0.0));
        assert!(statuses.contains(&Status::Stalled), "{statuses:?}");
        assert_eq!(*statuses.last().unwrap(), Status::Stopped, "{statuses:?}");
    }

    #[test]
    fn a_catching_up_consumer_falls_to_zero_lag_and_ok() {
        let mut m = Monitor::new(settings());
        m.observe(&collection(0, vec![("g", vec![part(0, Some(0), 0, 100)])]));
        m.observe(&collection(
            10,
            vec![("g", vec![part(0, Some(50), 0, 100)])],
        ));
        let r = m.observe(&collection(
            20,
            vec![("g", vec![part(0, Some(100), 0, 100)])],
        ));
        let p = &r[0].partitions[0];
        assert_eq!(p.lag, Some(0));
        assert_eq!(p.lag_seconds, Some(0.0));
        assert_eq!(r[0].status, Status::Ok);
    }

    #[test]
    fn exact_lag_seconds_come_from_the_first_unconsumed_record() {
        let mut m = Monitor::new(settings());
        let mut p = part(0, Some(5), 0, 10);
        p.first_unconsumed = Some(PeekedRecord {
            offset: 5,
            timestamp_ms: t(-42).timestamp_millis(),
        });
        let r = m.observe(&collection(0, vec![("g", vec![p])]));
        assert_eq!(r[0].partitions[0].lag_seconds, Some(42.0));
        assert!(r[0].partitions[0].exact_seconds);
    }

    #[test]
    fn idle_and_behind_keeps_growing_idle_and_caught_up_stays_zero() {
        let mut m = Monitor::new(settings());
        m.observe(&collection(0, vec![("g", vec![part(0, Some(10), 0, 10)])]));
        m.observe(&collection(10, vec![("g", vec![part(0, Some(10), 0, 20)])]));
        // The topic goes idle; one group is behind, the other caught up.
        let mut last = 0.0;
        for i in 2..6 {
            let r = m.observe(&collection(
                i * 10,
                vec![
                    ("behind", vec![part(0, Some(10), 0, 20)]),
                    ("caught-up", vec![part(0, Some(20), 0, 20)]),
                ],
            ));
            let behind = r[0].partitions[0].lag_seconds.unwrap();
            assert!(behind.is_finite() && behind > last, "{behind} after {last}");
            last = behind;
            assert_eq!(r[1].partitions[0].lag_seconds, Some(0.0));
        }
    }

    #[test]
    fn a_partition_without_a_commit_has_no_lag_and_no_status() {
        let mut m = Monitor::new(settings());
        let r = m.observe(&collection(
            0,
            vec![("g", vec![part(0, None, 0, 50), part(1, Some(50), 0, 50)])],
        ));
        let p0 = &r[0].partitions[0];
        assert_eq!((p0.lag, p0.lag_seconds, p0.status), (None, None, None));
        assert_eq!(r[0].partitions[1].lag, Some(0));
        assert_eq!(r[0].status, Status::Ok);
    }

    #[test]
    fn data_loss_is_reported_when_retention_overtook_the_group() {
        let mut m = Monitor::new(settings());
        let r = m.observe(&collection(0, vec![("g", vec![part(0, Some(10), 30, 50)])]));
        assert_eq!(r[0].partitions[0].data_loss, 20);
        assert_eq!(r[0].partitions[0].lag, Some(20));
        assert_eq!(r[0].data_loss(), 20);
    }

    #[test]
    fn a_vanished_group_is_forgotten() {
        let mut m = Monitor::new(settings());
        m.observe(&collection(
            0,
            vec![
                ("a", vec![part(0, Some(0), 0, 5)]),
                ("b", vec![part(0, Some(0), 0, 5)]),
            ],
        ));
        let r = m.observe(&collection(10, vec![("b", vec![part(0, Some(0), 0, 5)])]));
        assert_eq!(r.len(), 1);
        assert_eq!(m.partitions.len(), 1);
        assert!(m.partitions.keys().all(|(g, _)| g == "b"));
    }

    #[test]
    fn a_low_traffic_partition_that_just_got_a_record_is_not_stopped() {
        // Caught up and idle for 1000 s (stopped_after is 60 s), then one
        // record arrives; nothing says when but the high-watermark history.
        let mut m = Monitor::new(settings());
        for i in 0..=100 {
            let r = m.observe(&collection(
                i * 10,
                vec![("g", vec![part(0, Some(10), 0, 10)])],
            ));
            assert_eq!(r[0].status, Status::Ok);
        }
        let r = m.observe(&collection(
            1010,
            vec![("g", vec![part(0, Some(10), 0, 11)])],
        ));
        let p = &r[0].partitions[0];
        assert_eq!(p.lag, Some(1));
        assert!(p.lag_seconds.unwrap() <= 10.0, "{p:?}");
        assert_eq!(r[0].status, Status::Ok);
        // Left waiting, it becomes STALLED, then STOPPED a minute after it arrived.
        let mut last = Status::Ok;
        for i in 102..=108 {
            last = m.observe(&collection(
                i * 10,
                vec![("g", vec![part(0, Some(10), 0, 11)])],
            ))[0]
                .status;
        }
        assert_eq!(last, Status::Stopped);
    }

    #[test]
    fn a_reset_offset_is_rewind() {
        let mut m = Monitor::new(settings());
        m.observe(&collection(
            0,
            vec![("g", vec![part(0, Some(100), 0, 100)])],
        ));
        let r = m.observe(&collection(10, vec![("g", vec![part(0, Some(0), 0, 100)])]));
        assert_eq!(r[0].status, Status::Rewind);
    }

    #[test]
    fn group_aggregates_are_over_committed_partitions() {
        let mut m = Monitor::new(settings());
        let r = m.observe(&collection(
            0,
            vec![(
                "g",
                vec![
                    part(0, Some(0), 0, 7),
                    part(1, Some(0), 0, 3),
                    part(2, None, 0, 100),
                ],
            )],
        ));
        assert_eq!(r[0].max_lag(), 7);
        assert_eq!(r[0].sum_lag(), 10);
    }
}
