//! The value types of the richer state operations: atomic multi-key updates
//! ([`StateOp`]) and sorted-set score ranges ([`ScoreRange`]).

use std::time::Duration;

/// One write of an atomic update ([`super::StateStore::apply`]). Every op of
/// one `apply` call takes effect together or not at all (`MULTI`/`EXEC` on
/// Redis), so a counter and the idempotency mark of the event that moved it
/// can never disagree.
#[derive(Debug, Clone, PartialEq)]
pub enum StateOp {
    /// `SET key value [PX ttl]`.
    Set {
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    /// `DEL key`.
    Delete { key: String },
    /// `INCRBY key by`, then `PEXPIRE key ttl NX` (the expiry is set once,
    /// when the counter is created).
    IncrBy {
        key: String,
        by: i64,
        ttl: Option<Duration>,
    },
    /// `HSET key field value [field value ...]`.
    HashSet {
        key: String,
        fields: Vec<(String, Vec<u8>)>,
    },
    /// `HINCRBY key field by`.
    HashIncrBy { key: String, field: String, by: i64 },
    /// `HINCRBY key field by` for each field: many counters of one hash in
    /// one step (in [`super::StateStore::apply_checked`]'s script, one
    /// `HMGET` and one `HSET` however many fields, instead of a command per
    /// field). Sums are exact up to 2^53.
    HashIncrByMany {
        key: String,
        fields: Vec<(String, i64)>,
    },
    /// `HDEL key field [field ...]`.
    HashDelete { key: String, fields: Vec<String> },
    /// `ZADD key score member`.
    ZAdd {
        key: String,
        member: String,
        score: f64,
    },
    /// `ZADD key score member [score member ...]`: many members in one
    /// command (see [`merge_sorted_set_adds`]).
    ZAddMany {
        key: String,
        members: Vec<(String, f64)>,
    },
    /// `ZREM key member`.
    ZRem { key: String, member: String },
    /// `PFADD key member [member ...]`: a mergeable distinct count.
    DistinctAdd { key: String, members: Vec<String> },
    /// `PEXPIRE key ttl`.
    Expire { key: String, ttl: Duration },
    /// First-time marks, a precondition of the rest of the update: when
    /// none of `fields` is a field of `into` or of any hash of `seen` and none of `keys`
    /// exists, sets each of `fields` in the hash `into` (and `into`'s expiry
    /// to `ttl`); otherwise no op after this one takes effect (the ops
    /// before it do). For a worker that commits its events' idempotency
    /// marks with its effect ([`crate::Ctx::apply_once_for_all`]): marks of
    /// one period share a hash, one write per update instead of a key per
    /// event. [`super::StateStore::apply_checked`] reports it like a
    /// top-level [`StateOp::IfAbsent`] (true: none was there, the rest
    /// ran), and reports nothing for the ops it stopped.
    MarkOnce {
        into: String,
        seen: Vec<String>,
        fields: Vec<String>,
        keys: Vec<String>,
        ttl: Duration,
    },
    /// A conditional group, decided inside the same atomic unit: when `key`
    /// does not exist, `then` is applied, else `otherwise` (a write that must
    /// not land once a close mark or a claim exists). A Lua script on Redis.
    /// [`super::StateStore::apply_checked`] reports which branch ran.
    IfAbsent {
        key: String,
        then: Vec<StateOp>,
        otherwise: Vec<StateOp>,
    },
}

impl StateOp {
    /// The logical key the op writes.
    pub fn key(&self) -> &str {
        match self {
            StateOp::Set { key, .. }
            | StateOp::Delete { key }
            | StateOp::IncrBy { key, .. }
            | StateOp::HashSet { key, .. }
            | StateOp::HashIncrBy { key, .. }
            | StateOp::HashIncrByMany { key, .. }
            | StateOp::HashDelete { key, .. }
            | StateOp::ZAdd { key, .. }
            | StateOp::ZAddMany { key, .. }
            | StateOp::ZRem { key, .. }
            | StateOp::DistinctAdd { key, .. }
            | StateOp::Expire { key, .. }
            | StateOp::IfAbsent { key, .. } => key,
            StateOp::MarkOnce { into, .. } => into,
        }
    }
}

/// The same writes with the [`StateOp::ZAdd`]s of each sorted set gathered
/// into one [`StateOp::ZAddMany`], for an `apply` of many events' ops: one
/// command per set instead of one per member. The result leaves the store
/// as `ops` would: a member's last add wins, a `ZRem` after an add of the
/// same member cancels it (and still runs), and any other op on the set
/// (delete, expiry) first gets the adds gathered before it.
pub fn merge_sorted_set_adds(ops: Vec<StateOp>) -> Vec<StateOp> {
    use std::collections::HashMap;
    /// A set's adds not yet placed: member -> slot, and the slots in order
    /// (`None`: cancelled by a later `ZRem`).
    #[derive(Default)]
    struct Adds {
        slot: HashMap<String, usize>,
        members: Vec<Option<(String, f64)>>,
    }
    fn place(out: &mut Vec<StateOp>, key: String, adds: Adds) {
        let members: Vec<(String, f64)> = adds.members.into_iter().flatten().collect();
        if !members.is_empty() {
            out.push(StateOp::ZAddMany { key, members });
        }
    }
    let mut pending: HashMap<String, Adds> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            StateOp::ZAdd { key, member, score } => {
                let adds = pending.entry(key).or_insert_with_key(|k| {
                    order.push(k.clone());
                    Adds::default()
                });
                match adds.slot.get(&member) {
                    Some(&i) => adds.members[i] = Some((member, score)),
                    None => {
                        adds.slot.insert(member.clone(), adds.members.len());
                        adds.members.push(Some((member, score)));
                    }
                }
            }
            StateOp::ZRem { key, member } => {
                if let Some(adds) = pending.get_mut(&key) {
                    if let Some(i) = adds.slot.remove(&member) {
                        adds.members[i] = None;
                    }
                }
                out.push(StateOp::ZRem { key, member });
            }
            // A conditional group may write any key: everything gathered
            // so far goes before it.
            op @ StateOp::IfAbsent { .. } => {
                for key in order.drain(..) {
                    if let Some(adds) = pending.remove(&key) {
                        place(&mut out, key, adds);
                    }
                }
                out.push(op);
            }
            op => {
                if let Some(adds) = pending.remove(op.key()) {
                    order.retain(|k| k != op.key());
                    place(&mut out, op.key().to_string(), adds);
                }
                out.push(op);
            }
        }
    }
    for key in order {
        if let Some(adds) = pending.remove(&key) {
            place(&mut out, key, adds);
        }
    }
    out
}

/// The same writes with the [`StateOp::HashSet`]s of each hash gathered into
/// one, by the rules of [`merge_sorted_set_adds`]: a field's last value
/// wins, a `HashDelete` of a field set before it cancels that value (and
/// still runs), and any other op on the hash (delete, expiry) or a
/// conditional group first gets the fields gathered before it.
pub fn merge_hash_sets(ops: Vec<StateOp>) -> Vec<StateOp> {
    use std::collections::HashMap;
    /// A hash's fields not yet placed: field -> slot, and the slots in order.
    #[derive(Default)]
    struct Fields {
        slot: HashMap<String, usize>,
        values: Vec<Option<(String, Vec<u8>)>>,
    }
    fn place(out: &mut Vec<StateOp>, key: String, f: Fields) {
        let fields: Vec<(String, Vec<u8>)> = f.values.into_iter().flatten().collect();
        if !fields.is_empty() {
            out.push(StateOp::HashSet { key, fields });
        }
    }
    let mut pending: HashMap<String, Fields> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            StateOp::HashSet { key, fields } => {
                let f = pending.entry(key).or_insert_with_key(|k| {
                    order.push(k.clone());
                    Fields::default()
                });
                for (field, value) in fields {
                    match f.slot.get(&field) {
                        Some(&i) => f.values[i] = Some((field, value)),
                        None => {
                            f.slot.insert(field.clone(), f.values.len());
                            f.values.push(Some((field, value)));
                        }
                    }
                }
            }
            StateOp::HashDelete { key, fields } => {
                if let Some(f) = pending.get_mut(&key) {
                    for field in &fields {
                        if let Some(i) = f.slot.remove(field) {
                            f.values[i] = None;
                        }
                    }
                }
                out.push(StateOp::HashDelete { key, fields });
            }
            op @ StateOp::IfAbsent { .. } => {
                for key in order.drain(..) {
                    if let Some(f) = pending.remove(&key) {
                        place(&mut out, key, f);
                    }
                }
                out.push(op);
            }
            op => {
                if let Some(f) = pending.remove(op.key()) {
                    order.retain(|k| k != op.key());
                    place(&mut out, op.key().to_string(), f);
                }
                out.push(op);
            }
        }
    }
    for key in order {
        if let Some(f) = pending.remove(&key) {
            place(&mut out, key, f);
        }
    }
    out
}

/// [`merge_sorted_set_adds`] then [`merge_hash_sets`]: a batch's writes with
/// one command per sorted set and per hash.
pub fn merge_writes(ops: Vec<StateOp>) -> Vec<StateOp> {
    merge_hash_sets(merge_sorted_set_adds(ops))
}

/// One end of a score range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreBound {
    /// No bound (`-inf` / `+inf`).
    Unbounded,
    /// `score >= x` (or `<=`).
    Inclusive(f64),
    /// `score > x` (or `<`): Redis's `(x`.
    Exclusive(f64),
}

impl ScoreBound {
    /// Redis's argument form; `low` picks `-inf` or `+inf` for `Unbounded`.
    pub(crate) fn redis_arg(&self, low: bool) -> String {
        match self {
            ScoreBound::Unbounded if low => "-inf".into(),
            ScoreBound::Unbounded => "+inf".into(),
            ScoreBound::Inclusive(x) => fmt_score(*x),
            ScoreBound::Exclusive(x) => format!("({}", fmt_score(*x)),
        }
    }

    fn admits_from_below(&self, score: f64) -> bool {
        match self {
            ScoreBound::Unbounded => true,
            ScoreBound::Inclusive(x) => score >= *x,
            ScoreBound::Exclusive(x) => score > *x,
        }
    }

    fn admits_from_above(&self, score: f64) -> bool {
        match self {
            ScoreBound::Unbounded => true,
            ScoreBound::Inclusive(x) => score <= *x,
            ScoreBound::Exclusive(x) => score < *x,
        }
    }
}

fn fmt_score(x: f64) -> String {
    if x == f64::NEG_INFINITY {
        "-inf".into()
    } else if x == f64::INFINITY {
        "+inf".into()
    } else {
        x.to_string()
    }
}

/// Which members of a sorted set to read, lowest score first: those within
/// `min..max`, skipping `offset`, at most `limit` (paging).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRange {
    pub min: ScoreBound,
    pub max: ScoreBound,
    pub offset: usize,
    pub limit: usize,
}

impl ScoreRange {
    /// Every member with `min <= score <= max`, at most `limit`.
    pub fn inclusive(min: f64, max: f64, limit: usize) -> Self {
        ScoreRange {
            min: ScoreBound::Inclusive(min),
            max: ScoreBound::Inclusive(max),
            offset: 0,
            limit,
        }
    }

    /// Whether `score` lies within the bounds (paging aside).
    pub fn admits(&self, score: f64) -> bool {
        self.min.admits_from_below(score) && self.max.admits_from_above(score)
    }
}
