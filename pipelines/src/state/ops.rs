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
/// (delete, expiry) or a conditional group first gets the adds gathered
/// before it.
pub fn merge_sorted_set_adds(ops: Vec<StateOp>) -> Vec<StateOp> {
    gather(
        ops,
        |op| match op {
            StateOp::ZAdd { key, member, score } => Ok((key, vec![(member, score)])),
            op => Err(op),
        },
        |op| match op {
            StateOp::ZRem { key, member } => Some((key, std::slice::from_ref(member))),
            _ => None,
        },
        |key, members| StateOp::ZAddMany { key, members },
    )
}

/// The same writes with the [`StateOp::HashSet`]s of each hash gathered into
/// one, by the rules of [`merge_sorted_set_adds`]: a field's last value
/// wins, a `HashDelete` of a field set before it cancels that value (and
/// still runs), and any other op on the hash (delete, expiry) or a
/// conditional group first gets the fields gathered before it.
pub fn merge_hash_sets(ops: Vec<StateOp>) -> Vec<StateOp> {
    gather(
        ops,
        |op| match op {
            StateOp::HashSet { key, fields } => Ok((key, fields)),
            op => Err(op),
        },
        |op| match op {
            StateOp::HashDelete { key, fields } => Some((key, fields.as_slice())),
            _ => None,
        },
        |key, fields| StateOp::HashSet { key, fields },
    )
}

/// [`merge_sorted_set_adds`] then [`merge_hash_sets`]: a batch's writes with
/// one command per sorted set and per hash.
pub fn merge_writes(ops: Vec<StateOp>) -> Vec<StateOp> {
    merge_hash_sets(merge_sorted_set_adds(ops))
}

/// Gathers the entries that `adds` takes out of ops, per key, into one op
/// per key (`place`), placed where the ops one by one would leave the same
/// state: an entry's last value wins; an op that `removes` entries cancels
/// those gathered before it (and still runs); any other op on the key, or a
/// conditional group (which may write any key), first gets what was
/// gathered before it; the rest go at the end, in the order keys were met.
fn gather<V>(
    ops: Vec<StateOp>,
    adds: impl Fn(StateOp) -> Result<(String, Vec<(String, V)>), StateOp>,
    removes: impl for<'a> Fn(&'a StateOp) -> Option<(&'a String, &'a [String])>,
    place: impl Fn(String, Vec<(String, V)>) -> StateOp,
) -> Vec<StateOp> {
    use std::collections::HashMap;
    /// A key's entries not yet placed: entry name -> slot, the slots in
    /// order (`None`: cancelled).
    struct Pending<V> {
        slot: HashMap<String, usize>,
        entries: Vec<Option<(String, V)>>,
    }
    let flush = |out: &mut Vec<StateOp>, key: String, p: Pending<V>| {
        let entries: Vec<(String, V)> = p.entries.into_iter().flatten().collect();
        if !entries.is_empty() {
            out.push(place(key, entries));
        }
    };
    let mut pending: HashMap<String, Pending<V>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let op = match adds(op) {
            Ok((key, new)) => {
                let p = pending.entry(key).or_insert_with_key(|k| {
                    order.push(k.clone());
                    Pending {
                        slot: HashMap::new(),
                        entries: Vec::new(),
                    }
                });
                for (name, value) in new {
                    match p.slot.get(&name) {
                        Some(&i) => p.entries[i] = Some((name, value)),
                        None => {
                            p.slot.insert(name.clone(), p.entries.len());
                            p.entries.push(Some((name, value)));
                        }
                    }
                }
                continue;
            }
            Err(op) => op,
        };
        if let Some((key, names)) = removes(&op) {
            if let Some(p) = pending.get_mut(key) {
                for name in names {
                    if let Some(i) = p.slot.remove(name) {
                        p.entries[i] = None;
                    }
                }
            }
        } else if matches!(op, StateOp::IfAbsent { .. }) {
            for key in order.drain(..) {
                if let Some(p) = pending.remove(&key) {
                    flush(&mut out, key, p);
                }
            }
        } else if let Some(p) = pending.remove(op.key()) {
            order.retain(|k| k != op.key());
            flush(&mut out, op.key().to_string(), p);
        }
        out.push(op);
    }
    for key in order {
        if let Some(p) = pending.remove(&key) {
            flush(&mut out, key, p);
        }
    }
    out
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
