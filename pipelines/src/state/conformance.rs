//! The behaviour every [`StateStore`] promises, as one suite that runs against
//! each implementation (memory in unit tests, Redis in integration tests).
//! Each check panics with a message naming the broken promise.

use std::time::Duration;

use super::{ScoreBound, ScoreRange, Scored, StateOp, StateStore};

/// Runs every check. Use a fresh prefix (or database) per call: keys are fixed.
pub async fn run_all(store: &dyn StateStore) {
    ping_succeeds(store).await;
    get_set_delete_round_trip(store).await;
    set_nx_sets_only_when_absent(store).await;
    ttl_expires_keys(store).await;
    claim_fields_claims_each_field_once(store).await;
    any_key_with_prefix_finds_only_live_keys_of_the_prefix(store).await;
    claim_fields_answers_a_large_batch_in_order(store).await;
    set_many_overwrites_with_ttl(store).await;
    compare_and_set_swaps_only_the_expected_value(store).await;
    incr_by_counts_from_zero(store).await;
    sorted_set_orders_by_score(store).await;
    sorted_set_ranges_have_exclusive_bounds_and_pages(store).await;
    claim_due_hands_each_member_to_one_claimer_until_the_lease(store).await;
    zmove_if_score_moves_only_an_unchanged_member(store).await;
    claim_due_re_scores_every_member_of_a_large_claim(store).await;
    delete_if_eq_checks_the_owner(store).await;
    hashes_round_trip(store).await;
    apply_writes_every_op(store).await;
    merged_sorted_set_adds_leave_the_same_set(store).await;
    merged_hash_sets_leave_the_same_hashes(store).await;
    hget_all_many_reads_each_hash(store).await;
    apply_if_absent_takes_one_branch_atomically(store).await;
    checked_runs_of_expiring_sets_write_each_key_with_its_expiry(store).await;
    hash_incr_by_many_adds_to_each_field(store).await;
    mark_once_marks_or_stops_the_rest_of_the_unit(store).await;
    distinct_counts_merge(store).await;
    get_many_reads_in_order(store).await;
}

async fn get_many_reads_in_order(s: &dyn StateStore) {
    s.set("conf:m1", b"one", None).await.unwrap();
    s.set("conf:m3", b"three", None).await.unwrap();
    let got = s
        .get_many(&["conf:m1".into(), "conf:m2".into(), "conf:m3".into()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Some(b"one".to_vec()), None, Some(b"three".to_vec())]
    );
    assert!(s.get_many(&[]).await.unwrap().is_empty());
    s.delete(&["conf:m1".into(), "conf:m3".into()])
        .await
        .unwrap();
}

async fn sorted_set_ranges_have_exclusive_bounds_and_pages(s: &dyn StateStore) {
    for (m, score) in [("a", 1.0), ("b", 2.0), ("c", 2.0), ("d", 3.0), ("e", 4.0)] {
        s.zadd("conf:zr", m, score).await.unwrap();
    }
    let members = |v: Vec<Scored>| v.into_iter().map(|x| x.member).collect::<Vec<_>>();
    let r = s
        .zrange(
            "conf:zr",
            ScoreRange {
                min: ScoreBound::Exclusive(1.0),
                max: ScoreBound::Exclusive(4.0),
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        members(r),
        vec!["b", "c", "d"],
        "exclusive bounds leave the ends out"
    );
    let page = s
        .zrange(
            "conf:zr",
            ScoreRange {
                min: ScoreBound::Unbounded,
                max: ScoreBound::Unbounded,
                offset: 2,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        members(page),
        vec!["c", "d"],
        "offset and limit page through ties by member"
    );
    assert_eq!(s.zcard("conf:zr").await.unwrap(), 5);
    assert_eq!(s.zscore("conf:zr", "d").await.unwrap(), Some(3.0));
    assert_eq!(s.zscore("conf:zr", "zz").await.unwrap(), None);
    s.delete(&["conf:zr".into()]).await.unwrap();
    assert_eq!(s.zcard("conf:zr").await.unwrap(), 0);
}

async fn claim_due_hands_each_member_to_one_claimer_until_the_lease(s: &dyn StateStore) {
    s.zadd("conf:due", "r1", 100.0).await.unwrap();
    s.zadd("conf:due", "r2", 200.0).await.unwrap();
    s.zadd("conf:due", "r3", 900.0).await.unwrap();
    let first = s.zclaim_due("conf:due", 250.0, 1250.0, 10).await.unwrap();
    assert_eq!(
        first,
        vec![
            Scored {
                member: "r1".into(),
                score: 100.0
            },
            Scored {
                member: "r2".into(),
                score: 200.0
            },
        ],
        "due members come back with the score they had"
    );
    let second = s.zclaim_due("conf:due", 250.0, 1250.0, 10).await.unwrap();
    assert!(
        second.is_empty(),
        "a claimed member is not handed out again within its lease"
    );
    assert!(
        s.zrem_if_score("conf:due", "r1", 1250.0).await.unwrap(),
        "the claimer acks"
    );
    // r2's claimer "crashed": after the lease, r2 is due again, with r3.
    let after = s.zclaim_due("conf:due", 1300.0, 2300.0, 10).await.unwrap();
    let names: Vec<&str> = after.iter().map(|x| x.member.as_str()).collect();
    assert_eq!(names, vec!["r3", "r2"], "an expired claim comes back");
    s.zadd("conf:due", "r3", 5000.0).await.unwrap(); // rescheduled meanwhile
    assert!(
        !s.zrem_if_score("conf:due", "r3", 2300.0).await.unwrap(),
        "an ack never removes a member rescheduled since the claim"
    );
    assert_eq!(s.zscore("conf:due", "r3").await.unwrap(), Some(5000.0));
    let limited = s
        .zclaim_due("conf:due", 10_000.0, 20_000.0, 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1, "limit is honoured");
    s.delete(&["conf:due".into()]).await.unwrap();
}

async fn zmove_if_score_moves_only_an_unchanged_member(s: &dyn StateStore) {
    s.zadd("conf:mv", "held", 1000.0).await.unwrap();
    let claimed = s
        .zclaim_due("conf:mv", 1000.0, 1_700_000_000_123.0, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        s.zmove_if_score("conf:mv", "held", 1_700_000_000_123.0, 1_700_000_500_456.0)
            .await
            .unwrap(),
        "the claimer moves its own claim (millisecond scores round-trip exactly)"
    );
    assert_eq!(
        s.zscore("conf:mv", "held").await.unwrap(),
        Some(1_700_000_500_456.0)
    );
    assert!(
        !s.zmove_if_score("conf:mv", "held", 1_700_000_000_123.0, 5.0)
            .await
            .unwrap(),
        "a member whose score changed since the claim is not moved"
    );
    assert_eq!(
        s.zscore("conf:mv", "held").await.unwrap(),
        Some(1_700_000_500_456.0)
    );
    assert!(
        !s.zmove_if_score("conf:mv", "gone", 1000.0, 5.0)
            .await
            .unwrap(),
        "an absent member is not re-added"
    );
    assert_eq!(s.zscore("conf:mv", "gone").await.unwrap(), None);
    assert!(!s
        .zmove_if_score("conf:absent", "x", 1.0, 2.0)
        .await
        .unwrap());
    assert_eq!(s.zcard("conf:absent").await.unwrap(), 0);
    s.delete(&["conf:mv".into()]).await.unwrap();
}

async fn delete_if_eq_checks_the_owner(s: &dyn StateStore) {
    s.set("conf:lease", b"me", None).await.unwrap();
    assert!(!s.delete_if_eq("conf:lease", b"you").await.unwrap());
    assert_eq!(s.get("conf:lease").await.unwrap(), Some(b"me".to_vec()));
    assert!(s.delete_if_eq("conf:lease", b"me").await.unwrap());
    assert_eq!(s.get("conf:lease").await.unwrap(), None);
    assert!(
        !s.delete_if_eq("conf:lease", b"me").await.unwrap(),
        "absent: nothing to delete"
    );
}

async fn hashes_round_trip(s: &dyn StateStore) {
    assert!(s.hget_all("conf:h").await.unwrap().is_empty());
    s.apply(&[StateOp::HashSet {
        key: "conf:h".into(),
        fields: vec![("a".into(), b"1".to_vec()), ("b".into(), b"x".to_vec())],
    }])
    .await
    .unwrap();
    assert_eq!(s.hget("conf:h", "b").await.unwrap(), Some(b"x".to_vec()));
    assert_eq!(s.hget("conf:h", "zz").await.unwrap(), None);
    s.apply(&[
        StateOp::HashIncrBy {
            key: "conf:h".into(),
            field: "a".into(),
            by: 4,
        },
        StateOp::HashDelete {
            key: "conf:h".into(),
            fields: vec!["b".into()],
        },
    ])
    .await
    .unwrap();
    let all = s.hget_all("conf:h").await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all.get("a").map(Vec::as_slice), Some(&b"5"[..]));
    s.delete(&["conf:h".into()]).await.unwrap();
}

async fn apply_writes_every_op(s: &dyn StateStore) {
    s.apply(&[
        StateOp::Set {
            key: "conf:ap:s".into(),
            value: b"v".to_vec(),
            ttl: None,
        },
        StateOp::IncrBy {
            key: "conf:ap:n".into(),
            by: 3,
            ttl: Some(Duration::from_secs(60)),
        },
        StateOp::IncrBy {
            key: "conf:ap:n".into(),
            by: 2,
            ttl: Some(Duration::from_secs(60)),
        },
        StateOp::ZAdd {
            key: "conf:ap:z".into(),
            member: "m".into(),
            score: 7.0,
        },
        StateOp::Set {
            key: "conf:ap:gone".into(),
            value: b"x".to_vec(),
            ttl: None,
        },
        StateOp::Delete {
            key: "conf:ap:gone".into(),
        },
        StateOp::Expire {
            key: "conf:ap:s".into(),
            ttl: Duration::from_millis(300),
        },
    ])
    .await
    .unwrap();
    assert_eq!(s.get("conf:ap:s").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get("conf:ap:n").await.unwrap(), Some(b"5".to_vec()));
    assert_eq!(s.zscore("conf:ap:z", "m").await.unwrap(), Some(7.0));
    assert_eq!(
        s.get("conf:ap:gone").await.unwrap(),
        None,
        "ops apply in order"
    );
    s.apply(&[StateOp::ZRem {
        key: "conf:ap:z".into(),
        member: "m".into(),
    }])
    .await
    .unwrap();
    assert_eq!(s.zcard("conf:ap:z").await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.get("conf:ap:s").await.unwrap(), None, "Expire sets a ttl");
    s.apply(&[]).await.expect("an empty update is a no-op");
    s.delete(&["conf:ap:n".into()]).await.unwrap();
}

async fn apply_if_absent_takes_one_branch_atomically(s: &dyn StateStore) {
    let guarded = |tag: &str| StateOp::IfAbsent {
        key: "conf:if:mark".into(),
        then: vec![
            StateOp::HashIncrBy {
                key: "conf:if:h".into(),
                field: format!("then-{tag}"),
                by: 1,
            },
            StateOp::IncrBy {
                key: "conf:if:n".into(),
                by: 2,
                ttl: Some(Duration::from_secs(60)),
            },
        ],
        otherwise: vec![StateOp::HashIncrBy {
            key: "conf:if:h".into(),
            field: format!("else-{tag}"),
            by: 1,
        }],
    };
    let plain = StateOp::Set {
        key: "conf:if:plain".into(),
        value: b"p".to_vec(),
        ttl: None,
    };
    let absent = s
        .apply_checked(&[plain.clone(), guarded("a")])
        .await
        .unwrap();
    assert_eq!(absent, vec![true], "no mark: the first branch runs");
    // The mark is set inside the same unit, before the second guard.
    let absent = s
        .apply_checked(&[
            guarded("b"),
            StateOp::Set {
                key: "conf:if:mark".into(),
                value: b"closed".to_vec(),
                ttl: None,
            },
            guarded("c"),
        ])
        .await
        .unwrap();
    assert_eq!(
        absent,
        vec![true, false],
        "guards see earlier ops of the unit"
    );
    s.apply(&[guarded("d")]).await.unwrap();
    let h = s.hget_all("conf:if:h").await.unwrap();
    let fields: Vec<&str> = h.keys().map(String::as_str).collect();
    assert_eq!(fields, vec!["else-c", "else-d", "then-a", "then-b"]);
    assert_eq!(s.get("conf:if:n").await.unwrap(), Some(b"4".to_vec()));
    assert_eq!(s.get("conf:if:plain").await.unwrap(), Some(b"p".to_vec()));
    assert!(s.apply_checked(&[]).await.unwrap().is_empty());
    s.delete(&[
        "conf:if:mark".into(),
        "conf:if:h".into(),
        "conf:if:n".into(),
        "conf:if:plain".into(),
    ])
    .await
    .unwrap();
}

async fn checked_runs_of_expiring_sets_write_each_key_with_its_expiry(s: &dyn StateStore) {
    let set = |k: &str, ms: Option<u64>| StateOp::Set {
        key: format!("conf:run:{k}"),
        value: format!("v-{k}").into_bytes(),
        ttl: ms.map(Duration::from_millis),
    };
    let absent = s
        .apply_checked(&[
            StateOp::IfAbsent {
                key: "conf:run:mark".into(),
                then: vec![
                    set("a", Some(60_000)),
                    set("b", Some(60_000)),
                    set("c", None),
                ],
                otherwise: vec![set("no", Some(60_000)), set("no2", Some(60_000))],
            },
            set("d", Some(80)),
            set("e", Some(80)),
            set("f", Some(60_000)),
            set("g", Some(60_000)),
        ])
        .await
        .unwrap();
    assert_eq!(absent, vec![true]);
    for k in ["a", "b", "c", "d", "e", "f", "g"] {
        assert_eq!(
            s.get(&format!("conf:run:{k}")).await.unwrap(),
            Some(format!("v-{k}").into_bytes()),
            "{k} written with its own value"
        );
    }
    for k in ["no", "no2"] {
        assert_eq!(s.get(&format!("conf:run:{k}")).await.unwrap(), None);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (k, kept) in [
        ("a", true),
        ("c", true),
        ("d", false),
        ("e", false),
        ("g", true),
    ] {
        assert_eq!(
            s.get(&format!("conf:run:{k}")).await.unwrap().is_some(),
            kept,
            "{k} keeps its own expiry"
        );
    }
    let keys: Vec<String> = ["a", "b", "c", "f", "g"]
        .iter()
        .map(|k| format!("conf:run:{k}"))
        .collect();
    s.delete(&keys).await.unwrap();
}

async fn hash_incr_by_many_adds_to_each_field(s: &dyn StateStore) {
    let many = |fields: &[(&str, i64)]| StateOp::HashIncrByMany {
        key: "conf:hm".into(),
        fields: fields.iter().map(|(f, n)| (f.to_string(), *n)).collect(),
    };
    s.apply(&[many(&[("a", 2), ("b", 5_000_000_000)])])
        .await
        .unwrap();
    // Inside a conditional unit (the script on Redis), and past one chunk.
    let wide: Vec<(String, i64)> = (0..1200).map(|i| (format!("w{i}"), i)).collect();
    let absent = s
        .apply_checked(&[
            many(&[("a", 3), ("c", -1)]),
            StateOp::IfAbsent {
                key: "conf:hm:mark".into(),
                then: vec![StateOp::HashIncrByMany {
                    key: "conf:hm".into(),
                    fields: wide,
                }],
                otherwise: vec![],
            },
        ])
        .await
        .unwrap();
    assert_eq!(absent, vec![true]);
    let h = s.hget_all("conf:hm").await.unwrap();
    assert_eq!(h.len(), 3 + 1200);
    assert_eq!(h["a"], b"5");
    assert_eq!(h["b"], b"5000000000");
    assert_eq!(h["c"], b"-1");
    assert_eq!(h["w1199"], b"1199");
    s.delete(&["conf:hm".into()]).await.unwrap();
}

async fn mark_once_marks_or_stops_the_rest_of_the_unit(s: &dyn StateStore) {
    let mark = |fields: &[&str]| StateOp::MarkOnce {
        into: "conf:once:today".into(),
        seen: vec!["conf:once:yesterday".into(), "conf:once:today".into()],
        fields: fields.iter().map(|f| f.to_string()).collect(),
        keys: fields
            .iter()
            .map(|f| format!("conf:once:key:{f}"))
            .collect(),
        ttl: Duration::from_secs(60),
    };
    let unit = |fields: &[&str], n: i64| {
        vec![
            StateOp::IncrBy {
                key: "conf:once:before".into(),
                by: 1,
                ttl: None,
            },
            mark(fields),
            StateOp::IncrBy {
                key: "conf:once:n".into(),
                by: n,
                ttl: None,
            },
            StateOp::IfAbsent {
                key: "conf:once:none".into(),
                then: vec![],
                otherwise: vec![],
            },
        ]
    };
    s.apply(&[StateOp::HashSet {
        key: "conf:once:yesterday".into(),
        fields: vec![("old".into(), b"1".to_vec())],
    }])
    .await
    .unwrap();
    s.set("conf:once:key:legacy", b"done", None).await.unwrap();
    assert_eq!(
        s.apply_checked(&unit(&["a", "b"], 5)).await.unwrap(),
        vec![true, true]
    );
    for (fields, what) in [
        (&["c", "b"][..], "marked in this hash"),
        (&["old"][..], "marked in an earlier hash"),
        (&["legacy"][..], "marked as a key"),
    ] {
        assert_eq!(
            s.apply_checked(&unit(fields, 7)).await.unwrap(),
            vec![false],
            "{what}: nothing after the marks lands"
        );
    }
    s.apply(&unit(&["d"], 2)).await.unwrap();
    assert_eq!(s.get("conf:once:n").await.unwrap(), Some(b"7".to_vec()));
    assert_eq!(
        s.get("conf:once:before").await.unwrap(),
        Some(b"5".to_vec()),
        "ops before the marks land"
    );
    let today = s.hget_all("conf:once:today").await.unwrap();
    let marked: Vec<&str> = today.keys().map(String::as_str).collect();
    assert_eq!(marked, vec!["a", "b", "d"], "a stopped unit marks nothing");
    assert_eq!(
        s.apply_checked(&[mark(&[])]).await.unwrap(),
        vec![true],
        "no marks: nothing to stop"
    );
    s.delete(&[
        "conf:once:today".into(),
        "conf:once:yesterday".into(),
        "conf:once:key:legacy".into(),
        "conf:once:n".into(),
        "conf:once:before".into(),
    ])
    .await
    .unwrap();
}

async fn distinct_counts_merge(s: &dyn StateStore) {
    let add = |key: &str, members: &[&str]| StateOp::DistinctAdd {
        key: key.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    };
    s.apply(&[
        add("conf:d1", &["u1", "u2", "u3", "u2"]),
        add("conf:d2", &["u3", "u4"]),
    ])
    .await
    .unwrap();
    assert_eq!(s.distinct_count(&["conf:d1".into()]).await.unwrap(), 3);
    assert_eq!(
        s.distinct_count(&["conf:d1".into(), "conf:d2".into()])
            .await
            .unwrap(),
        4,
        "a count over several keys is of their union"
    );
    s.distinct_merge("conf:d3", &["conf:d1".into(), "conf:d2".into()])
        .await
        .unwrap();
    assert_eq!(s.distinct_count(&["conf:d3".into()]).await.unwrap(), 4);
    assert_eq!(s.distinct_count(&["conf:absent".into()]).await.unwrap(), 0);
    s.delete(&["conf:d1".into(), "conf:d2".into(), "conf:d3".into()])
        .await
        .unwrap();
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

async fn claim_fields_claims_each_field_once(s: &dyn StateStore) {
    let hashes: Vec<String> = vec!["conf:g2".into(), "conf:g1".into()];
    let hset = |key: &str, field: &str, value: &str| StateOp::HashSet {
        key: key.into(),
        fields: vec![(field.into(), value.as_bytes().to_vec())],
    };
    s.apply(&[
        hset("conf:g1", "b", "done"),
        hset("conf:g2", "d", "new"),
        hset("conf:g1", "d", "old"),
        hset("conf:g1", "e", "in-hash"),
    ])
    .await
    .unwrap();
    s.set("conf:k:c", b"p:1:x", None).await.unwrap();
    s.set("conf:k:e", b"in-key", None).await.unwrap();
    s.set("conf:k:z", b"done", None).await.unwrap();
    let fields: Vec<String> = ["a", "b", "c", "a", "d", "e"].map(String::from).to_vec();
    let keys: Vec<String> = fields.iter().map(|f| format!("conf:k:{f}")).collect();
    let ttl = Duration::from_secs(5);
    let got = s
        .claim_fields(&hashes, &keys, &fields, &[], b"p:2:me", ttl)
        .await
        .unwrap();
    let some = |v: &str| Some(v.as_bytes().to_vec());
    assert_eq!(
        got,
        vec![
            None,
            some("done"),
            some("p:1:x"),
            some("p:2:me"),
            some("new"),
            some("in-hash")
        ],
        "a field found nowhere is claimed (None); else the value of the first hash \
         holding it, then of its key; a repeat finds the claim"
    );
    assert_eq!(s.hget("conf:g2", "a").await.unwrap(), some("p:2:me"));
    assert_eq!(
        s.hget("conf:g1", "a").await.unwrap(),
        None,
        "only the first hash is written"
    );
    // A compare-and-set: taken where the value found is still the one expected.
    let cas: Vec<String> = ["c", "b", "y"].map(String::from).to_vec();
    let cas_keys: Vec<String> = cas.iter().map(|f| format!("conf:k:{f}")).collect();
    let expected = vec![b"p:1:x".to_vec(), b"p:0:gone".to_vec(), Vec::new()];
    assert_eq!(
        s.claim_fields(&hashes, &cas_keys, &cas, &expected, b"p:3:me", ttl)
            .await
            .unwrap(),
        vec![None, some("done"), None],
        "equal (or absent, expected empty): set; different: the value found"
    );
    assert_eq!(s.hget("conf:g2", "c").await.unwrap(), some("p:3:me"));
    // Without keys, only the hashes are asked.
    assert_eq!(
        s.claim_fields(&hashes, &[], &["z".to_string()], &[], b"p:4:me", ttl)
            .await
            .unwrap(),
        vec![None]
    );
    assert_eq!(
        s.claim_fields(&hashes, &[], &[], &[], b"p", ttl)
            .await
            .unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
    // Keys or expected values not one per field are refused, as is no hash.
    let two: Vec<String> = ["a", "b"].map(String::from).to_vec();
    assert!(s
        .claim_fields(&hashes, &keys[..1], &two, &[], b"p", ttl)
        .await
        .is_err());
    assert!(s
        .claim_fields(&hashes, &[], &two, &expected[..1], b"p", ttl)
        .await
        .is_err());
    assert!(s
        .claim_fields(&[], &[], &two, &[], b"p", ttl)
        .await
        .is_err());
    let mut all = hashes.clone();
    all.extend(["conf:k:c", "conf:k:e", "conf:k:z"].map(String::from));
    s.delete(&all).await.unwrap();
}

/// Answers `None` only where the store cannot tell (a cluster); a glob
/// character in the prefix is a plain character.
async fn any_key_with_prefix_finds_only_live_keys_of_the_prefix(s: &dyn StateStore) {
    let tells = |got: Option<bool>, want: bool| got.is_none() || got == Some(want);
    assert!(tells(
        s.any_key_with_prefix("conf:pfx*:", 10).await.unwrap(),
        false
    ));
    s.set("conf:pfxa:1", b"x", None).await.unwrap();
    s.set("conf:gone:1", b"x", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(tells(
        s.any_key_with_prefix("conf:pfx*:", 1_000_000)
            .await
            .unwrap(),
        false
    ));
    assert!(tells(
        s.any_key_with_prefix("conf:pfx", 1_000_000).await.unwrap(),
        true
    ));
    s.set("conf:pfx*:2", b"x", None).await.unwrap();
    assert!(tells(
        s.any_key_with_prefix("conf:pfx*:", 1_000_000)
            .await
            .unwrap(),
        true
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tells(
        s.any_key_with_prefix("conf:gone:", 1_000_000)
            .await
            .unwrap(),
        false
    ));
    s.delete(&["conf:pfxa:1".into(), "conf:pfx*:2".into()])
        .await
        .unwrap();
}

/// A batch the size the pipeline claims, with values found at scattered
/// places (first, last, repeats) of an older hash: each answer is its own
/// field's, and the claims expire with the hash they were written to.
/// 1,001 fields: on Redis, three script calls (`CLAIM_CALL_FIELDS`), the
/// repeat at the end in another call than its first.
async fn claim_fields_answers_a_large_batch_in_order(s: &dyn StateStore) {
    let hashes: Vec<String> = vec!["conf:big:new".into(), "conf:big:old".into()];
    let fields: Vec<String> = (0..1000).map(|i| format!("e{i}")).collect();
    let present = [0usize, 1, 499, 998, 999];
    s.apply(&[StateOp::HashSet {
        key: hashes[1].clone(),
        fields: present
            .iter()
            .map(|&i| (fields[i].clone(), format!("was{i}").into_bytes()))
            .collect(),
    }])
    .await
    .unwrap();
    let mut asked = fields.clone();
    asked.push(fields[5].clone());
    let got = s
        .claim_fields(&hashes, &[], &asked, &[], b"p", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(got.len(), asked.len(), "one answer per field");
    for (i, v) in got.iter().enumerate().take(fields.len()) {
        let want = present.contains(&i).then(|| format!("was{i}").into_bytes());
        assert_eq!(v, &want, "answer for field {i}");
    }
    assert_eq!(got[1000], Some(b"p".to_vec()), "a repeat sees the claim");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let again = s
        .claim_fields(
            &hashes,
            &[],
            &fields[2..4],
            &[],
            b"q",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(again, vec![None, None], "claims expire with their hash");
    s.delete(&hashes).await.unwrap();
}

/// Adds gathered by [`super::merge_sorted_set_adds`] into `ZAddMany`s end
/// where the ops one by one would: last add wins, a later remove cancels,
/// a delete of the set drops what was added before it.
async fn merged_sorted_set_adds_leave_the_same_set(s: &dyn StateStore) {
    let add = |key: &str, member: &str, score: f64| StateOp::ZAdd {
        key: key.into(),
        member: member.into(),
        score,
    };
    let rem = |key: &str, member: &str| StateOp::ZRem {
        key: key.into(),
        member: member.into(),
    };
    let ops = vec![
        add("conf:mz:a", "x", 1.0),
        add("conf:mz:b", "x", 5.0),
        add("conf:mz:a", "y", 2.0),
        add("conf:mz:a", "x", 3.0),
        rem("conf:mz:a", "y"),
        add("conf:mz:c", "gone", 1.0),
        StateOp::Delete {
            key: "conf:mz:c".into(),
        },
        add("conf:mz:c", "kept", 4.0),
        rem("conf:mz:b", "x"),
        add("conf:mz:b", "x", 6.0),
        add("conf:mz:a", "", 0.5),
    ];
    let merged = super::merge_sorted_set_adds(ops);
    let adds = merged
        .iter()
        .filter(|o| matches!(o, StateOp::ZAdd { .. } | StateOp::ZAddMany { .. }))
        .count();
    assert_eq!(
        adds, 4,
        "one ZAddMany per set, one more after the delete: {merged:?}"
    );
    s.apply(&merged).await.unwrap();
    let all = |key: &'static str| async move {
        s.zrange_by_score(key, f64::NEG_INFINITY, f64::INFINITY, 10)
            .await
            .unwrap()
    };
    let scored = |m: &str, score: f64| Scored {
        member: m.into(),
        score,
    };
    assert_eq!(
        all("conf:mz:a").await,
        vec![scored("", 0.5), scored("x", 3.0)]
    );
    assert_eq!(all("conf:mz:b").await, vec![scored("x", 6.0)]);
    assert_eq!(all("conf:mz:c").await, vec![scored("kept", 4.0)]);
    s.delete(&["conf:mz:a".into(), "conf:mz:b".into(), "conf:mz:c".into()])
        .await
        .unwrap();
}

/// Fields gathered by [`super::merge_hash_sets`] into one `HashSet` per
/// hash end where the ops one by one would: last value wins, a later
/// `HashDelete` cancels, a delete of the hash drops what was set before it,
/// and a conditional group sees what was set before it.
async fn merged_hash_sets_leave_the_same_hashes(s: &dyn StateStore) {
    let set = |key: &str, field: &str, value: &str| StateOp::HashSet {
        key: key.into(),
        fields: vec![(field.into(), value.as_bytes().to_vec())],
    };
    let del = |key: &str, field: &str| StateOp::HashDelete {
        key: key.into(),
        fields: vec![field.into()],
    };
    let ops = vec![
        set("conf:mh:a", "x", "1"),
        set("conf:mh:b", "x", "5"),
        set("conf:mh:a", "y", "2"),
        set("conf:mh:a", "x", "3"),
        del("conf:mh:a", "y"),
        set("conf:mh:c", "gone", "1"),
        StateOp::Delete {
            key: "conf:mh:c".into(),
        },
        set("conf:mh:c", "kept", "4"),
        del("conf:mh:b", "x"),
        set("conf:mh:b", "x", "6"),
        set("conf:mh:d", "seen", "1"),
        StateOp::IfAbsent {
            key: "conf:mh:d".into(),
            then: vec![set("conf:mh:e", "branch", "then")],
            otherwise: vec![set("conf:mh:e", "branch", "otherwise")],
        },
        set("conf:mh:a", "z", "7"),
    ];
    let merged = super::merge_hash_sets(ops);
    let sets = merged
        .iter()
        .filter(|o| matches!(o, StateOp::HashSet { .. }))
        .count();
    assert_eq!(
        sets, 6,
        "a before and after the conditional group, b, c after its delete, d: {merged:?}"
    );
    s.apply(&merged).await.unwrap();
    let all = |key: &'static str| async move {
        let mut h: Vec<(String, String)> = s
            .hget_all(key)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect();
        h.sort();
        h
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(all("conf:mh:a").await, pairs(&[("x", "3"), ("z", "7")]));
    assert_eq!(all("conf:mh:b").await, pairs(&[("x", "6")]));
    assert_eq!(all("conf:mh:c").await, pairs(&[("kept", "4")]));
    assert_eq!(
        all("conf:mh:e").await,
        pairs(&[("branch", "otherwise")]),
        "the condition saw the field set before it"
    );
    let keys: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|k| format!("conf:mh:{k}"))
        .collect();
    s.delete(&keys).await.unwrap();
}

async fn hget_all_many_reads_each_hash(s: &dyn StateStore) {
    s.apply(&[StateOp::HashSet {
        key: "conf:hm:1".into(),
        fields: vec![("f".into(), b"one".to_vec()), ("g".into(), b"two".to_vec())],
    }])
    .await
    .unwrap();
    let got = s
        .hget_all_many(&["conf:hm:1".into(), "conf:hm:none".into()])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].get("g"), Some(&b"two".to_vec()));
    assert_eq!(got[0].len(), 2);
    assert!(got[1].is_empty(), "an absent hash reads empty");
    assert!(s.hget_all_many(&[]).await.unwrap().is_empty());
    s.delete(&["conf:hm:1".into()]).await.unwrap();
}

/// More members than one re-scoring command takes (500 on Redis).
async fn claim_due_re_scores_every_member_of_a_large_claim(s: &dyn StateStore) {
    let ops = (0..1_200)
        .map(|i| StateOp::ZAdd {
            key: "conf:bigdue".into(),
            member: format!("m{i}"),
            score: f64::from(i % 7),
        })
        .collect();
    s.apply(&super::merge_sorted_set_adds(ops)).await.unwrap();
    let claimed = s
        .zclaim_due("conf:bigdue", 10.0, 5_000.0, 2_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1_200, "every due member is claimed");
    assert!(
        s.zclaim_due("conf:bigdue", 10.0, 5_000.0, 2_000)
            .await
            .unwrap()
            .is_empty(),
        "every claimed member was re-scored to the lease"
    );
    let leased = s
        .zrange_by_score("conf:bigdue", 5_000.0, 5_000.0, 2_000)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1_200);
    s.delete(&["conf:bigdue".into()]).await.unwrap();
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
