//! librdkafka's built-in mock Kafka cluster, for tests, benchmarks, the demo and
//! `taskstream dev-kafka`. It speaks the real wire protocol (consumer groups,
//! commits, idempotent producer), in this process, on loopback ports.
//!
//! This wraps `rd_kafka_mock_*` directly because `rdkafka::mocking` does not
//! expose the group rebalance delay or broker up/down. Known limits: it keeps
//! about 5 MB or 100,000 messages per partition, so produce while consuming.

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use rdkafka_sys as rdsys;

/// A running mock cluster. Dropping it stops the brokers.
pub struct MockKafka {
    cluster: *mut rdsys::rd_kafka_mock_cluster_t,
    // The handle the cluster lives in; must outlive `cluster`.
    _owner: BaseProducer,
    bootstrap: String,
}

// SAFETY: the mock cluster runs on its own librdkafka thread; its control
// functions post operations to that thread and are documented thread-safe.
unsafe impl Send for MockKafka {}
unsafe impl Sync for MockKafka {}

/// The mock refused an operation.
#[derive(Debug, thiserror::Error)]
#[error("mock Kafka cluster: {0}")]
pub struct MockError(String);

impl MockKafka {
    /// Starts `brokers` brokers. Group joins complete at once (the broker's
    /// default 3 s initial rebalance delay is set to 0).
    pub fn start(brokers: i32) -> Result<Self, MockError> {
        let owner: BaseProducer = ClientConfig::new()
            .set("log_level", "3")
            .create()
            .map_err(|e| MockError(e.to_string()))?;
        // SAFETY: `owner` is a live handle; the cluster is destroyed in Drop before it.
        let cluster =
            unsafe { rdsys::rd_kafka_mock_cluster_new(owner.client().native_ptr(), brokers) };
        if cluster.is_null() {
            return Err(MockError("rd_kafka_mock_cluster_new failed".into()));
        }
        // SAFETY: cluster is non-null and live; the returned string is owned by it.
        let bootstrap = unsafe {
            CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(cluster))
                .to_string_lossy()
                .into_owned()
        };
        let mock = MockKafka {
            cluster,
            _owner: owner,
            bootstrap,
        };
        mock.set_group_initial_rebalance_delay(Duration::ZERO);
        Ok(mock)
    }

    /// The `bootstrap.servers` string of this cluster.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (topics are also auto-created on first use, with 1 partition).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), MockError> {
        let name = CString::new(topic).map_err(|e| MockError(e.to_string()))?;
        // SAFETY: live cluster, NUL-terminated name.
        let err = unsafe {
            rdsys::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, 1)
        };
        check(err, &format!("create topic {topic}"))
    }

    /// How long a new group waits for more members before its first rebalance.
    pub fn set_group_initial_rebalance_delay(&self, delay: Duration) {
        // SAFETY: live cluster.
        unsafe {
            rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(
                self.cluster,
                delay.as_millis() as i32,
            )
        }
    }

    /// Takes a broker down (connections refused) until [`MockKafka::broker_up`].
    pub fn broker_down(&self, broker_id: i32) -> Result<(), MockError> {
        // SAFETY: live cluster.
        let err = unsafe { rdsys::rd_kafka_mock_broker_set_down(self.cluster, broker_id) };
        check(err, &format!("broker {broker_id} down"))
    }

    pub fn broker_up(&self, broker_id: i32) -> Result<(), MockError> {
        // SAFETY: live cluster.
        let err = unsafe { rdsys::rd_kafka_mock_broker_set_up(self.cluster, broker_id) };
        check(err, &format!("broker {broker_id} up"))
    }

    /// A producer-side flush helper for tests: waits until `producer` delivered everything.
    pub fn flush<P: Producer>(producer: &P, timeout: Duration) -> Result<(), MockError> {
        producer
            .flush(timeout)
            .map_err(|e| MockError(e.to_string()))
    }
}

fn check(err: rdsys::rd_kafka_resp_err_t, what: &str) -> Result<(), MockError> {
    if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        // SAFETY: rd_kafka_err2str returns a static string.
        let msg = unsafe {
            CStr::from_ptr(rdsys::rd_kafka_err2str(err))
                .to_string_lossy()
                .into_owned()
        };
        Err(MockError(format!("{what}: {msg}")))
    }
}

impl Drop for MockKafka {
    fn drop(&mut self) {
        // SAFETY: created in `start`, destroyed once, before the owning handle.
        unsafe { rdsys::rd_kafka_mock_cluster_destroy(self.cluster) }
    }
}
