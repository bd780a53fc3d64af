//! The state store on a real three-master Redis Cluster (started by the
//! harness): the conformance suite through a worker's scoped store, a slot
//! migration in the middle of a batch, and a master lost mid-batch. Whatever
//! the cluster does, a failure is `Unavailable` (the pipeline waits), never a
//! `Protocol` error (which would dead-letter the message).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pipelines::config::RedisConfig;
use pipelines::state::slot::{for_worker, slot_key};
use pipelines::state::{RedisStore, StateError, StateOp, StateStore};
use pipelines::testing::cluster::RedisCluster;
use pipelines::testing::unique;

fn config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig {
        url: cluster.url(),
        key_prefix: format!("{}:", unique("c")),
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(1000),
    }
}

async fn worker_store(cfg: &RedisConfig, worker: &str) -> Arc<dyn StateStore> {
    let store: Arc<dyn StateStore> = Arc::new(RedisStore::connect(cfg).await.unwrap());
    assert!(cfg.is_cluster());
    for_worker(&store, true, worker)
}

/// The full name and slot of a worker's logical key.
fn physical(cluster: &RedisCluster, cfg: &RedisConfig, worker: &str, key: &str) -> (String, u16) {
    let full = format!("{}{}", cfg.key_prefix, slot_key(worker, key));
    let slot = cluster.keyslot(&full).unwrap();
    (full, slot)
}

fn is_unavailable<T: std::fmt::Debug>(r: &Result<T, StateError>) -> bool {
    matches!(r, Err(StateError::Unavailable(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_store_passes_the_conformance_suite_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let cfg = config(&cluster);
    // Several workers, so their slots sit on different masters.
    for worker in ["audit", "reminders", "aggregates"] {
        let store = worker_store(&cfg, worker).await;
        pipelines::state::conformance::run_all(store.as_ref()).await;
    }
    // Keys without a tag scatter over the masters: the unscoped store cannot
    // run a transaction over them (CROSSSLOT), which is why workers only see
    // scoped stores.
    let raw = RedisStore::connect(&cfg).await.unwrap();
    let keys: Vec<String> = (0..8).map(|i| format!("scatter:{i}")).collect();
    let slots: std::collections::BTreeSet<u16> = keys
        .iter()
        .map(|k| cluster.keyslot(&format!("{}{k}", cfg.key_prefix)).unwrap())
        .collect();
    assert!(slots.len() > 1);
    let ops: Vec<StateOp> = keys
        .iter()
        .map(|k| StateOp::IncrBy {
            key: k.clone(),
            by: 1,
            ttl: None,
        })
        .collect();
    assert!(raw.apply(&ops).await.is_err());
    let scoped = worker_store(&cfg, "audit").await;
    scoped.apply(&ops).await.unwrap();
    assert_eq!(
        scoped.get(&keys[3]).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_mid_batch_is_unavailable_then_heals() {
    let cluster = RedisCluster::start().unwrap();
    let cfg = config(&cluster);
    let store = worker_store(&cfg, "w").await;
    let keys: Vec<String> = vec!["idem:w:e1".into(), "idem:w:e2".into()];
    store
        .set_many(&keys, b"done", Duration::from_secs(600))
        .await
        .unwrap();
    let (full1, slot) = physical(&cluster, &cfg, "w", &keys[0]);
    let (full2, slot2) = physical(&cluster, &cfg, "w", &keys[1]);
    assert_eq!(slot, slot2, "one worker, one slot");
    let from = cluster.owner_of(slot).unwrap();
    let to = (from + 1) % 3;

    // Half of the batch has moved: the source answers ASK for the moved key
    // (followed by the client) and TRYAGAIN for the batch as a whole.
    cluster.begin_migration(slot, from, to).unwrap();
    cluster.migrate_keys(from, to, &[&full1]).unwrap();
    assert_eq!(
        store.get(&keys[0]).await.unwrap().as_deref(),
        Some(&b"done"[..]),
        "ASK is followed for a single key"
    );
    let batch = store.get_many(&keys).await;
    assert!(
        is_unavailable(&batch),
        "a batch split by a migration: {batch:?}"
    );
    let tx = store
        .apply(&[
            StateOp::Set {
                key: keys[0].clone(),
                value: b"x".to_vec(),
                ttl: None,
            },
            StateOp::Set {
                key: keys[1].clone(),
                value: b"x".to_vec(),
                ttl: None,
            },
        ])
        .await;
    // The source aborts the transaction (EXECABORT after an ASK): nothing of
    // it is applied, and the caller waits and retries.
    assert!(
        is_unavailable(&tx),
        "a transaction split by a migration: {tx:?}"
    );

    // The migration ends: the old owner answers MOVED, the client learns the
    // new map, the batch works again and nothing was lost.
    cluster.migrate_keys(from, to, &[&full2]).unwrap();
    cluster.end_migration(slot, to).unwrap();
    assert_eq!(cluster.owner_of(slot).unwrap(), to);
    let deadline = Instant::now() + Duration::from_secs(30);
    let healed = loop {
        match store.get_many(&keys).await {
            Ok(v) => break v,
            Err(e) => {
                assert!(matches!(e, StateError::Unavailable(_)), "{e:?}");
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        healed,
        vec![Some(b"done".to_vec()), Some(b"done".to_vec())],
        "the aborted transaction left nothing behind, the migration lost nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_lost_mid_batch_is_unavailable_and_its_slots_come_back() {
    let mut cluster = RedisCluster::start().unwrap();
    let cfg = config(&cluster);
    let store = worker_store(&cfg, "w").await;
    let ids: Vec<String> = (0..50).map(|i| format!("idem:w:e{i}")).collect();
    let fields: Vec<String> = (0..50).map(|i| format!("e{i}")).collect();
    let hashes: Vec<String> = vec!["idem-gen:w:2".into(), "idem-gen:w:1".into()];
    let claim = |value: &'static [u8]| {
        store.claim_fields(&hashes, &ids, &fields, &[], value, Duration::from_secs(600))
    };
    assert!(claim(b"p:1:t").await.unwrap().iter().all(Option::is_none));
    let (_, slot) = physical(&cluster, &cfg, "w", &ids[0]);
    let owner = cluster.owner_of(slot).unwrap();

    // The master of the worker's slot dies (no replica to fail over to).
    cluster.node_mut(owner).stop();
    let claims = claim(b"p:2:u").await;
    assert!(is_unavailable(&claims), "{claims:?}");
    let tx = store
        .apply(&[StateOp::IncrBy {
            key: "agg:w:1m:0".into(),
            by: 1,
            ttl: None,
        }])
        .await;
    assert!(is_unavailable(&tx), "{tx:?}");
    let script = store.zclaim_due("due", 10.0, 20.0, 10).await;
    assert!(is_unavailable(&script), "{script:?}");

    // It comes back (empty: persistence is off) with its slots.
    cluster.node_mut(owner).restart().unwrap();
    cluster.wait_ok(Duration::from_secs(60)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match claim(b"p:3:v").await {
            Ok(v) => {
                assert_eq!(v.len(), ids.len());
                break;
            }
            Err(e) => {
                assert!(matches!(e, StateError::Unavailable(_)), "{e:?}");
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
