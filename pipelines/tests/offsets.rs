//! `kafka::offsets` against the mock cluster: what the lag monitor reads.

use std::time::Duration;

use pipelines::config::KafkaConfig;
use pipelines::kafka::mock::MockKafka;
use pipelines::kafka::offsets::{OffsetReader, TopicPartition, Watermarks};
use pipelines::testing::{commit_offsets, unique, TestProducer};

fn reader(bootstrap: &str) -> OffsetReader {
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap.to_string(),
        ..KafkaConfig::default()
    };
    OffsetReader::new(&kafka, "offsets-test", &unique("peek")).unwrap()
}

#[test]
fn reads_committed_offsets_watermarks_and_the_first_unconsumed_record() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("orders", 3).unwrap();
    let bootstrap = mock.bootstrap_servers().to_string();
    let producer = TestProducer::new(&bootstrap).unwrap();
    let before = chrono::Utc::now().timestamp_millis();
    for i in 0..10 {
        producer
            .send_to("orders", Some(0), b"k", format!("m{i}").as_bytes())
            .unwrap();
    }
    producer.flush().unwrap();
    let group = unique("group");
    let reader = reader(&bootstrap);
    let timeout = Duration::from_secs(10);

    // Only existing topics, every partition, sorted.
    let parts = reader
        .partitions(&["orders".into(), "no-such-topic".into()], timeout)
        .unwrap();
    assert_eq!(
        parts,
        (0..3)
            .map(|p| TopicPartition::new("orders", p))
            .collect::<Vec<_>>()
    );

    // No commit yet: None, not -1.
    assert_eq!(
        reader.committed(&group, &parts, timeout).unwrap(),
        vec![None, None, None]
    );
    commit_offsets(&bootstrap, &group, &[("orders".into(), 0, 4)]).unwrap();
    assert_eq!(
        reader.committed(&group, &parts, timeout).unwrap(),
        vec![Some(4), None, None]
    );

    assert_eq!(
        reader.watermarks(&parts, timeout).unwrap(),
        vec![
            Watermarks { low: 0, high: 10 },
            Watermarks { low: 0, high: 0 },
            Watermarks { low: 0, high: 0 },
        ]
    );

    // Many groups at once, answers in the order asked.
    let other = unique("other");
    commit_offsets(&bootstrap, &other, &[("orders".into(), 2, 0)]).unwrap();
    let many = reader.committed_many(
        &[
            (other.clone(), parts.clone()),
            (unique("never"), parts.clone()),
            (group.clone(), vec![parts[0].clone()]),
            (unique("nothing-asked"), vec![]),
        ],
        timeout,
    );
    let many: Vec<Vec<Option<i64>>> = many.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        many,
        vec![
            vec![None, None, Some(0)],
            vec![None, None, None],
            vec![Some(4)],
            vec![],
        ]
    );

    // The record at the committed offset, with its timestamp; nothing at the end.
    let p0 = TopicPartition::new("orders", 0);
    let found = reader
        .peek(
            &[(p0.clone(), 4), (TopicPartition::new("orders", 1), 0)],
            Duration::from_secs(2),
        )
        .unwrap();
    let r = found[&(p0.clone(), 4)];
    assert_eq!(r.offset, 4);
    assert!(
        r.timestamp_ms >= before - 1000 && r.timestamp_ms <= chrono::Utc::now().timestamp_millis()
    );
    assert_eq!(
        found.len(),
        1,
        "an empty partition has no record: {found:?}"
    );

    // Peeking committed nothing for the peek group or the watched one.
    assert_eq!(
        reader.committed(&group, &parts, timeout).unwrap(),
        vec![Some(4), None, None]
    );
    // A second peek of the same partition works (pause flags were cleared),
    // and one partition asked at two offsets (two groups) answers both.
    let again = reader
        .peek(&[(p0.clone(), 7), (p0.clone(), 2)], Duration::from_secs(4))
        .unwrap();
    assert_eq!(again[&(p0.clone(), 7)].offset, 7);
    assert_eq!(again[&(p0.clone(), 2)].offset, 2);
}

#[test]
fn a_cluster_that_is_down_fails_within_the_timeout() {
    let mock = MockKafka::start(1).unwrap();
    mock.create_topic("orders", 1).unwrap();
    let reader = reader(mock.bootstrap_servers());
    let parts = reader
        .partitions(&["orders".into()], Duration::from_secs(10))
        .unwrap();
    mock.broker_down(1).unwrap();
    let started = std::time::Instant::now();
    assert!(reader.watermarks(&parts, Duration::from_secs(1)).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
