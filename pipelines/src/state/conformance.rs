//! The behaviour every [`StateStore`] promises, as one suite that runs against
//! each implementation (memory in unit tests, Redis in integration tests).
//! Each check panics with a message naming the broken promise.

use std::time::Duration;

use super::StateStore;

/// Runs every check. Use a fresh prefix (or database) per call: keys are fixed.
pub async fn run_all(store: &dyn StateStore) {
    ping_succeeds(store).await;
    get_set_delete_round_trip(store).await;
    set_nx_sets_only_when_absent(store).await;
    ttl_expires_keys(store).await;
    set_nx_get_many_claims_each_key_once(store).await;
    set_many_overwrites_with_ttl(store).await;
    compare_and_set_swaps_only_the_expected_value(store).await;
    incr_by_counts_from_zero(store).await;
    sorted_set_orders_by_score(store).await;
}

async fn compare_and_set_swaps_only_the_expected_value(s: &dyn StateStore) {
    assert!(
        !s.compare_and_set("conf:cas", b"a", b"b", None)
            .await
            .unwrap(),
        "an absent key is not the expected value"
    );
    s.set("conf:cas", b"a", None).await.unwrap();
    assert!(
        !s.compare_and_set("conf:cas", b"x", b"b", None)
            .await
            .unwrap(),
        "a different value is left alone"
    );
    assert_eq!(s.get("conf:cas").await.unwrap(), Some(b"a".to_vec()));
    assert!(s
        .compare_and_set("conf:cas", b"a", b"b", Some(Duration::from_millis(200)))
        .await
        .unwrap());
    assert_eq!(s.get("conf:cas").await.unwrap(), Some(b"b".to_vec()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        s.get("conf:cas").await.unwrap(),
        None,
        "the new value carries the new ttl"
    );
}

async fn ping_succeeds(s: &dyn StateStore) {
    s.ping().await.expect("ping must succeed on a live store");
}

async fn get_set_delete_round_trip(s: &dyn StateStore) {
    assert_eq!(
        s.get("conf:a").await.unwrap(),
        None,
        "absent key reads as None"
    );
    s.set("conf:a", b"1", None).await.unwrap();
    assert_eq!(s.get("conf:a").await.unwrap(), Some(b"1".to_vec()));
    s.set("conf:a", b"2", None).await.unwrap();
    assert_eq!(
        s.get("conf:a").await.unwrap(),
        Some(b"2".to_vec()),
        "set overwrites"
    );
    let n = s
        .delete(&["conf:a".into(), "conf:none".into()])
        .await
        .unwrap();
    assert_eq!(n, 1, "delete counts only keys that existed");
    assert_eq!(s.get("conf:a").await.unwrap(), None);
}

async fn set_nx_sets_only_when_absent(s: &dyn StateStore) {
    assert!(s.set_nx("conf:nx", b"first", None).await.unwrap());
    assert!(!s.set_nx("conf:nx", b"second", None).await.unwrap());
    assert_eq!(s.get("conf:nx").await.unwrap(), Some(b"first".to_vec()));
    s.delete(&["conf:nx".into()]).await.unwrap();
}

async fn ttl_expires_keys(s: &dyn StateStore) {
    s.set("conf:ttl", b"x", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(s.get("conf:ttl").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        s.get("conf:ttl").await.unwrap(),
        None,
        "key expires after its ttl"
    );
    assert!(
        s.set_nx("conf:ttl", b"y", Some(Duration::from_secs(5)))
            .await
            .unwrap(),
        "an expired key counts as absent for set_nx"
    );
    s.delete(&["conf:ttl".into()]).await.unwrap();
}

async fn set_nx_get_many_claims_each_key_once(s: &dyn StateStore) {
    let keys: Vec<String> = vec!["conf:c1".into(), "conf:c2".into(), "conf:c1".into()];
    s.set("conf:c2", b"done", None).await.unwrap();
    let got = s
        .set_nx_get_many(&keys, b"pending", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![None, Some(b"done".to_vec()), Some(b"pending".to_vec())],
        "absent keys are claimed (None), present keys return their value, a repeat sees the claim"
    );
    assert_eq!(
        s.set_nx_get_many(&[], b"p", Duration::from_secs(1))
            .await
            .unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
    s.delete(&["conf:c1".into(), "conf:c2".into()])
        .await
        .unwrap();
}

async fn set_many_overwrites_with_ttl(s: &dyn StateStore) {
    let keys: Vec<String> = vec!["conf:m1".into(), "conf:m2".into()];
    s.set("conf:m1", b"pending", None).await.unwrap();
    s.set_many(&keys, b"done", Duration::from_millis(80))
        .await
        .unwrap();
    assert_eq!(s.get("conf:m1").await.unwrap(), Some(b"done".to_vec()));
    assert_eq!(s.get("conf:m2").await.unwrap(), Some(b"done".to_vec()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        s.get("conf:m1").await.unwrap(),
        None,
        "set_many applies the ttl"
    );
}

async fn incr_by_counts_from_zero(s: &dyn StateStore) {
    assert_eq!(s.incr_by("conf:n", 2, None).await.unwrap(), 2);
    assert_eq!(
        s.incr_by("conf:n", 3, Some(Duration::from_secs(5)))
            .await
            .unwrap(),
        5
    );
    assert_eq!(s.incr_by("conf:n", -1, None).await.unwrap(), 4);
    assert_eq!(s.get("conf:n").await.unwrap(), Some(b"4".to_vec()));
    s.delete(&["conf:n".into()]).await.unwrap();
}

async fn sorted_set_orders_by_score(s: &dyn StateStore) {
    s.zadd("conf:z", "late", 30.0).await.unwrap();
    s.zadd("conf:z", "early", 10.0).await.unwrap();
    s.zadd("conf:z", "middle", 20.0).await.unwrap();
    s.zadd("conf:z", "late", 25.0).await.unwrap();
    let first = s.zfirst("conf:z").await.unwrap().expect("non-empty set");
    assert_eq!((first.member.as_str(), first.score), ("early", 10.0));
    let due: Vec<String> = s
        .zrange_by_score("conf:z", f64::NEG_INFINITY, 25.0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.member)
        .collect();
    assert_eq!(
        due,
        vec!["early", "middle", "late"],
        "zadd moves an existing member"
    );
    let limited = s.zrange_by_score("conf:z", 0.0, 100.0, 2).await.unwrap();
    assert_eq!(limited.len(), 2, "limit is honoured");
    assert!(s.zrem("conf:z", "early").await.unwrap());
    assert!(!s.zrem("conf:z", "early").await.unwrap());
    assert!(s.zrem("conf:z", "middle").await.unwrap());
    assert!(s.zrem("conf:z", "late").await.unwrap());
    assert_eq!(s.zfirst("conf:z").await.unwrap(), None);
}
