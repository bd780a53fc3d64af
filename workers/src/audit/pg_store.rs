//! The production audit store: PostgreSQL.
//!
//! - Schema: versioned migrations in `workers/migrations/audit/`, applied on
//!   connect under an advisory lock and recorded in
//!   `taskstream_audit_migrations`; everything lives in the configured schema
//!   (`audit.schema`, created if missing).
//! - Table `audit_records`, partitioned by month of `received_at` (partitions
//!   `audit_records_YYYYMM` are created on demand); retention drops whole
//!   partitions.
//! - `append` is one transaction per batch: lock the batch's chains and read
//!   their heads (one round trip), skip the records at or below each chain's
//!   last source offset (a redelivery: a chain is one source partition),
//!   `COPY … BINARY` the new ones, advance the chain heads, COMMIT. A
//!   redelivered message therefore never makes a second row, without a
//!   per-event index lookup.
//! - Indexes: no primary key (migration 6 says why, and what replaces
//!   it); one BRIN index over occurred_at (time ranges) and Bloom filters
//!   of task_id and actor_id (queries by task or user): migrations 4 and 5
//!   say what it costs and saves.
//! - A chain's records never go back in time (a batch is written at the
//!   later of the clock and its chains' last records), so retention, which
//!   drops the oldest months, cuts a prefix off each chain; where each
//!   chain then starts is in `audit_chain_starts`.
//! - Tamper evidence: one SHA-256 chain per source (`topic/partition`), each
//!   row carrying `chain_seq`, `prev_hash` and `hash` over the record's
//!   canonical JSON; `verify` recomputes every chain, reading the table in
//!   storage order and putting each chain in order ([`ChainLinks`]).
//!
//! Connections come from a deadpool-postgres pool; TLS is as the URL's
//! `sslmode`/`sslrootcert` say, with libpq's meanings (see [`super::pg_tls`]).
//! Connecting is bounded by `audit.connect_timeout` and every store operation
//! by `audit.statement_timeout` (client side, so a server that stops answering
//! is noticed too): past it the operation fails as unavailable (the worker is
//! not ready and retries) and its connection is closed, not reused.
//!
//! The store sets `received_at` to the `now` it is given (the pipeline clock,
//! microseconds, as PostgreSQL keeps them), and truncates `occurred_at` to
//! microseconds, so the hash covers exactly what is stored.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Timeouts};
use pipelines::buffers::{BufferPool, Pooled, BATCH_BUFFERS_KEPT};
use tokio_postgres::types::{FromSql, Json, ToSql};
use tokio_postgres::Row;

use super::pg_tls::TlsSettings;
use super::record::{as_stored, AuditRecord, Change, RawJson, RecordSource};
use super::store::{
    chain_hash, ActivityRow, AuditQuery, AuditStore, ChainBreak, StoreError, VerifyReport, GENESIS,
};

/// The migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "create_audit_records",
        include_str!("../../migrations/audit/0001_create_audit_records.sql"),
    ),
    (
        2,
        "dedupe_by_offset",
        include_str!("../../migrations/audit/0002_dedupe_by_offset.sql"),
    ),
    (
        3,
        "batch_index",
        include_str!("../../migrations/audit/0003_batch_index.sql"),
    ),
    (
        4,
        "bloom_index",
        include_str!("../../migrations/audit/0004_bloom_index.sql"),
    ),
    (
        5,
        "one_brin_index",
        include_str!("../../migrations/audit/0005_one_brin_index.sql"),
    ),
    (
        6,
        "no_primary_key",
        include_str!("../../migrations/audit/0006_no_primary_key.sql"),
    ),
];

/// The longest the migrations may take together. They are not held to
/// `audit.statement_timeout`: one that builds an index over a large trail
/// takes minutes, and cutting it off would only start it again. The worker
/// is not ready meanwhile.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// The longest a readiness ping waits (the pipeline's probe waits 5 s).
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Advisory lock namespace (first key) for this store's locks.
const LOCK_SPACE: i32 = 0x7a5d_0001;

/// Locks chains for this transaction: `$1` = [`LOCK_SPACE`], `$2` = keys from
/// `chain_lock_keys`, taken in key order so writers never deadlock.
const LOCK_CHAINS: &str =
    "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) AS k ORDER BY k";

const READ_HEADS: &str = "SELECT chain, seq, hash, last_offset, last_received_at
     FROM audit_chain_heads WHERE chain = ANY($1)";

/// `$5`: the batch's `received_at`, now the chains' latest.
const ADVANCE_HEADS: &str =
    "INSERT INTO audit_chain_heads (chain, seq, hash, last_offset, last_received_at)
     SELECT c, s, h, o, $5::timestamptz FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[]) AS u(c, s, h, o)
     ON CONFLICT (chain) DO UPDATE
     SET seq = excluded.seq, hash = excluded.hash, last_offset = excluded.last_offset,
         last_received_at = excluded.last_received_at";

/// A chain's first record in a month (`$2`: the month's start), for
/// retention: see migration 6.
const ADD_CHAIN_STARTS: &str = "INSERT INTO audit_chain_starts (chain, month, seq, prev_hash)
     SELECT c, $2::timestamptz, s, p FROM unnest($1::text[], $3::int8[], $4::text[]) AS u(c, s, p)
     ON CONFLICT DO NOTHING";

const COLUMNS: &str = "event_id, event_type, operation, actor_id, task_id, project_id, occurred_at, received_at, \
     changes, details, source_topic, source_partition, source_offset, dialect, ip_address, user_agent, \
     chain, chain_seq, prev_hash, hash";

/// Where PostgreSQL counts times from, 2000-01-01 00:00 UTC, in
/// microseconds since the Unix epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The rows of a `COPY … FROM STDIN BINARY` of [`COLUMNS`], in PostgreSQL's
/// binary copy format, in one buffer (of the store's pool: see
/// `pipelines::buffers`).
struct CopyRows<'a> {
    buf: Pooled<'a, BytesMut>,
}

impl<'a> CopyRows<'a> {
    /// Rows of about `bytes` in all, in a buffer of `pool`.
    fn with_capacity(pool: &'a BufferPool<BytesMut>, bytes: usize) -> CopyRows<'a> {
        let mut buf = pool.take(bytes.max(64 * 1024));
        // Signature, flags, header extension length.
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        CopyRows { buf }
    }

    /// Starts a row of `columns` values, each written by one of the calls
    /// below, in [`COLUMNS`]' order: each as its type's binary form, as
    /// tokio-postgres's `ToSql` writes it (a text or `json` value is its
    /// UTF-8 bytes, a `timestamptz` microseconds since 2000 as a big-endian
    /// `int8`), without a call through `dyn ToSql` and a type check per value.
    fn start_row(&mut self, columns: i16) {
        self.buf.put_i16(columns);
    }

    /// A value's bytes; `None` is NULL. A value over 2 GB is the record's fault.
    fn bytes(&mut self, column: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        match value {
            None => self.buf.put_i32(-1),
            Some(v) => {
                let len = i32::try_from(v.len()).map_err(|_| {
                    StoreError::Invalid(format!("audit record {column} is over 2 GB"))
                })?;
                self.buf.put_i32(len);
                self.buf.put_slice(v);
            }
        }
        Ok(())
    }

    fn text(&mut self, column: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.bytes(column, value.map(str::as_bytes))
    }

    fn int4(&mut self, value: i32) {
        self.buf.put_i32(4);
        self.buf.put_i32(value);
    }

    fn int8(&mut self, value: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(value);
    }

    /// Microseconds since 2000 (any time chrono holds is within `i64`'s
    /// range so counted; one outside PostgreSQL's own is refused by it).
    fn timestamptz(&mut self, t: &DateTime<Utc>) {
        self.int8(t.timestamp_micros() - PG_EPOCH_MICROS);
    }

    /// The rows to send; the buffer goes back to its pool, and takes its
    /// allocation back once they have been sent and dropped.
    fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.split().freeze()
    }
}

/// How the store connects: from `[audit]` and `database.url`.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `audit.schema`.
    pub schema: String,
    /// `audit.pool_size`: connections kept.
    pub pool_size: usize,
    /// `audit.connect_timeout`: TCP, TLS and startup of one connection.
    pub connect_timeout: Duration,
    /// `audit.statement_timeout`: one store operation (a batch's
    /// transaction, a ping, a query), measured by the client.
    pub statement_timeout: Duration,
}

impl PgOptions {
    /// Defaults (10 s to connect, 30 s per operation) for `schema`.
    pub fn new(schema: &str, pool_size: usize) -> PgOptions {
        PgOptions {
            schema: schema.to_string(),
            pool_size,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

pub struct PgStore {
    schema: String,
    pool: Pool,
    tls: TlsSettings,
    connect_timeout: Duration,
    statement_timeout: Duration,
    /// Months whose partition is known to exist.
    partitions: StdMutex<HashSet<(i32, u32)>>,
    /// Set once the migrations have been applied.
    migrated: tokio::sync::OnceCell<()>,
    /// Buffers of the batches' `COPY` rows.
    copy_buffers: BufferPool<BytesMut>,
}

/// Maps a driver error: data errors are the record's fault (`Invalid`);
/// everything else (connection, server shutdown, lock timeouts, a missing
/// table) is waited out as `Unavailable`.
fn pg_err(what: &str, e: tokio_postgres::Error) -> StoreError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{what}: {} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(&e) {
            Some(cause) => format!("{what}: {e}: {cause}"),
            None => format!("{what}: {e}"),
        },
    };
    match e.code().map(|c| c.code()) {
        Some(c) if c.starts_with("22") => StoreError::Invalid(detail),
        _ => StoreError::Unavailable(detail),
    }
}

/// A typed column read that fails with an error, never a panic.
fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, StoreError> {
    row.try_get(name)
        .map_err(|e| pg_err(&format!("reading column {name}"), e))
}

/// Runs `op` within `limit` (named `limit_name` in the error): past it the
/// operation fails as unavailable.
async fn within<T>(
    limit: Duration,
    limit_name: &str,
    what: &str,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "{what}: PostgreSQL did not answer within {limit:?} ({limit_name})"
        )))
    })
}

/// Whether `name` is a plain lower-case SQL identifier (what `audit.schema`
/// accepts).
pub fn is_plain_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// `name` as a quoted SQL identifier (validated names are quoted too).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn check_schema(schema: &str) -> Result<(), StoreError> {
    if is_plain_identifier(schema) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "audit.schema has value {schema:?}: expected a lower-case SQL identifier"
        )))
    }
}

fn lock_key(s: &str) -> i32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(s.as_bytes());
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn month_start(year: i32, month: u32) -> Option<DateTime<Utc>> {
    Some(Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)?))
}

fn next_month(year: i32, month: u32) -> (i32, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

fn record_from_row(row: &Row) -> Result<AuditRecord<'static>, StoreError> {
    let changes: Option<Json<BTreeMap<String, Change>>> = col(row, "changes")?;
    let details: Option<Json<RawJson>> = col(row, "details")?;
    let text = |name| col::<String>(row, name).map(Cow::Owned);
    let optional = |name| Ok::<_, StoreError>(col::<Option<String>>(row, name)?.map(Cow::Owned));
    Ok(AuditRecord {
        event_id: text("event_id")?,
        event_type: text("event_type")?,
        operation: text("operation")?,
        actor_id: optional("actor_id")?,
        task_id: optional("task_id")?,
        project_id: optional("project_id")?,
        occurred_at: col(row, "occurred_at")?,
        received_at: col(row, "received_at")?,
        changes: changes.map(|j| j.0).unwrap_or_default(),
        details: details.map(|j| j.0),
        source: RecordSource {
            topic: text("source_topic")?,
            partition: col(row, "source_partition")?,
            offset: col(row, "source_offset")?,
            dialect: text("dialect")?,
        },
        ip_address: optional("ip_address")?,
        user_agent: optional("user_agent")?,
    })
}

/// The chain of records read from `topic`'s `partition`.
fn chain_of(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// A chain's head as the batch advances it.
struct ChainHead {
    seq: i64,
    hash: String,
    /// The last source offset written to the chain (-1: none).
    last_offset: i64,
    /// When the chain's last record was written (`None`: never, or every
    /// record dropped before migration 6 recorded it).
    last_received_at: Option<DateTime<Utc>>,
    /// The batch's first record of the chain: its number and `prev_hash`
    /// (`None`: the batch wrote none, and the head is unchanged).
    first_new: Option<(i64, String)>,
}

impl ChainHead {
    fn new(seq: i64, hash: String, last_offset: i64) -> Self {
        ChainHead {
            seq,
            hash,
            last_offset,
            last_received_at: None,
            first_new: None,
        }
    }
}

/// The time a batch is written at: the clock's, unless one of its chains
/// has a later record (a replica whose clock is ahead wrote it), so that a
/// chain's records never go back in time (see migration 6).
fn batch_time(now: DateTime<Utc>, heads: &[ChainHead]) -> DateTime<Utc> {
    heads
        .iter()
        .filter_map(|h| h.last_received_at)
        .fold(now, DateTime::max)
}

/// The start of `at`'s month (UTC).
fn month_of(at: DateTime<Utc>) -> DateTime<Utc> {
    month_start(at.year(), at.month()).unwrap_or(at)
}

impl PgStore {
    /// A store in `schema` (created if missing), connected and migrated, with
    /// the default timeouts (tests and benchmarks).
    pub async fn connect_with_schema(
        url: &str,
        pool_size: usize,
        schema: &str,
    ) -> Result<PgStore, StoreError> {
        let store = Self::new(url, &PgOptions::new(schema, pool_size))?;
        store.ready().await?;
        Ok(store)
    }

    /// A store that connects on first use: the worker starts even while the
    /// database is down, and waits for it (not ready) instead of exiting.
    pub fn new(url: &str, options: &PgOptions) -> Result<PgStore, StoreError> {
        check_schema(&options.schema)?;
        let bad_url = |e: &dyn std::fmt::Display| {
            StoreError::Invalid(format!(
                "database.url has value {:?}: {e}",
                pipelines::config::mask_url(url)
            ))
        };
        let (rest, tls) = TlsSettings::split_url(url)?;
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| bad_url(&e))?;
        config.ssl_mode(tls.driver_mode());
        config.connect_timeout(options.connect_timeout);
        config.options(format!("-c search_path={}", ident(&options.schema)));
        if config.get_application_name().is_none() {
            config.application_name("taskstream-audit");
        }
        let manager = Manager::from_config(
            config,
            tls.connector()?,
            ManagerConfig {
                // A closed connection is replaced; a broken one fails its
                // operation, which then closes it (see `release`).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(options.statement_timeout),
                create: Some(options.connect_timeout),
                recycle: Some(options.connect_timeout),
            })
            .build()
            .map_err(|e| bad_url(&e))?;
        Ok(PgStore {
            schema: options.schema.clone(),
            pool,
            tls,
            connect_timeout: options.connect_timeout,
            statement_timeout: options.statement_timeout,
            partitions: StdMutex::new(HashSet::new()),
            migrated: tokio::sync::OnceCell::new(),
            copy_buffers: BufferPool::new(BATCH_BUFFERS_KEPT),
        })
    }

    /// A pooled connection, connected if new.
    async fn client(&self) -> Result<Object, StoreError> {
        use deadpool_postgres::{PoolError, TimeoutType};
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => {
                let err = pg_err("connecting to PostgreSQL", e);
                match err {
                    StoreError::Unavailable(m) => {
                        StoreError::Unavailable(format!("{m} ({})", self.tls.describe()))
                    }
                    other => other,
                }
            }
            PoolError::Timeout(TimeoutType::Wait) => StoreError::Unavailable(format!(
                "every PostgreSQL connection stayed busy for {:?} (audit.statement_timeout)",
                self.statement_timeout
            )),
            PoolError::Timeout(_) => StoreError::Unavailable(format!(
                "connecting to PostgreSQL took longer than {:?} (audit.connect_timeout; {})",
                self.connect_timeout,
                self.tls.describe()
            )),
            other => StoreError::Unavailable(format!("PostgreSQL connection pool: {other}")),
        })
    }

    /// Runs `op` within `audit.statement_timeout`.
    async fn bounded<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.statement_timeout, "audit.statement_timeout", what, op).await
    }

    /// Returns `client` to the pool, or closes it when its operation failed
    /// as unavailable (timed out, connection lost): a connection in an
    /// unknown state is never reused.
    fn release<T>(client: Object, result: &Result<T, StoreError>) {
        if matches!(result, Err(StoreError::Unavailable(_))) {
            drop(Object::take(client));
        }
    }

    /// Advisory-lock keys of `chains`, for [`LOCK_CHAINS`].
    fn chain_lock_keys(&self, chains: &[String]) -> Vec<i32> {
        chains
            .iter()
            .map(|c| lock_key(&format!("{}:chain:{c}", self.schema)))
            .collect()
    }

    /// Connects and migrates, once.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                let mut client = self.client().await?;
                // Not `bounded`: a migration that reads the stored trail
                // (3 and 4 do) can take longer than a statement may.
                let result = within(
                    MIGRATION_TIMEOUT,
                    "the migrations' limit",
                    "migrating",
                    self.migrate(&mut client),
                )
                .await;
                Self::release(client, &result);
                result
            })
            .await
            .map(|_| ())
    }

    /// Applies the migrations not yet applied, one transaction each.
    async fn migrate(&self, client: &mut Object) -> Result<(), StoreError> {
        let e = |what: &'static str| move |e| pg_err(what, e);
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                ident(&self.schema)
            ))
            .await
            .or_else(|err| {
                // Concurrent creators race on the catalog; the schema exists.
                if err
                    .code()
                    .is_some_and(|c| c.code() == "23505" || c.code() == "42P06")
                {
                    Ok(())
                } else {
                    Err(pg_err("creating the audit schema", err))
                }
            })?;
        let key = lock_key(&format!("{}:migrations", self.schema));
        client
            .execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK_SPACE, &key])
            .await
            .map_err(e("locking migrations"))?;
        let result = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS taskstream_audit_migrations (
                         version integer PRIMARY KEY,
                         name text NOT NULL,
                         applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await
                .map_err(e("creating the migrations table"))?;
            let mut applied = HashSet::new();
            for row in client
                .query("SELECT version FROM taskstream_audit_migrations", &[])
                .await
                .map_err(e("reading applied migrations"))?
            {
                applied.insert(col::<i32>(&row, "version")?);
            }
            for (version, name, sql) in MIGRATIONS {
                if applied.contains(version) {
                    continue;
                }
                tracing::info!(
                    version,
                    name,
                    schema = %self.schema,
                    "applying audit migration (on a large trail this can take minutes)"
                );
                let tx = client
                    .transaction()
                    .await
                    .map_err(e("starting a migration"))?;
                tx.batch_execute(sql).await.map_err(|err| {
                    pg_err(&format!("applying migration {version:04}_{name}"), err)
                })?;
                tx.execute(
                    "INSERT INTO taskstream_audit_migrations (version, name) VALUES ($1, $2)",
                    &[version, name],
                )
                .await
                .map_err(e("recording a migration"))?;
                tx.commit().await.map_err(e("committing a migration"))?;
                tracing::info!(version, name, schema = %self.schema, "applied audit migration");
            }
            Ok(())
        }
        .await;
        client
            .execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK_SPACE, &key])
            .await
            .map_err(e("unlocking migrations"))?;
        result
    }

    /// Drops the schema and everything in it (tests and benchmarks).
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let result = self
            .bounded("dropping the audit schema", async {
                client
                    .batch_execute(&format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE",
                        ident(&self.schema)
                    ))
                    .await
                    .map_err(|e| pg_err("dropping the audit schema", e))
            })
            .await;
        Self::release(client, &result);
        result
    }

    /// The pids of the server's processes (`pg_stat_activity`: backends and
    /// background processes) when the server runs on this machine (reached
    /// over a Unix socket or loopback), for the benchmark's CPU figure;
    /// `None` for a server elsewhere, whose pids mean nothing here.
    pub async fn local_server_pids(&self) -> Result<Option<Vec<u32>>, StoreError> {
        let client = self.client().await?;
        let result = self
            .bounded("listing PostgreSQL's processes", async {
                let row = client
                    .query_one(
                        "SELECT inet_server_addr() IS NULL
                                OR host(inet_server_addr()) IN ('127.0.0.1', '::1') AS local,
                                (SELECT array_agg(pid) FROM pg_stat_activity) AS pids",
                        &[],
                    )
                    .await
                    .map_err(|e| pg_err("listing PostgreSQL's processes", e))?;
                let local: bool = col(&row, "local")?;
                let pids: Option<Vec<i32>> = col(&row, "pids")?;
                Ok(local.then(|| {
                    pids.unwrap_or_default()
                        .into_iter()
                        .filter_map(|p| u32::try_from(p).ok())
                        .collect()
                }))
            })
            .await;
        Self::release(client, &result);
        result
    }

    /// Whether the partition of `at`'s month is known to exist.
    fn partition_known(&self, at: DateTime<Utc>) -> bool {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(at.year(), at.month()))
    }

    /// Notes that the partition of `at`'s month exists.
    fn remember_partition(&self, at: DateTime<Utc>) {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((at.year(), at.month()));
    }

    /// The statements that create the partition of `at`'s month, if
    /// missing, in the caller's transaction.
    fn partition_sql(&self, at: DateTime<Utc>) -> Result<String, StoreError> {
        let (y, m) = (at.year(), at.month());
        let (ny, nm) = next_month(y, m);
        let (Some(from), Some(to)) = (month_start(y, m), month_start(ny, nm)) else {
            return Err(StoreError::Invalid(format!(
                "no audit partition for the month of {at}"
            )));
        };
        Ok(format!(
            "SELECT pg_advisory_xact_lock({LOCK_SPACE}, {key});
             CREATE TABLE IF NOT EXISTS {name} PARTITION OF audit_records
                 FOR VALUES FROM ('{from}') TO ('{to}');",
            key = lock_key(&format!("{}:partitions", self.schema)),
            name = ident(&format!("audit_records_{y:04}{m:02}")),
            from = from.to_rfc3339(),
            to = to.to_rfc3339(),
        ))
    }

    /// Creates the month's partition if it is not known to exist.
    async fn ensure_partition(&self, client: &Object, at: DateTime<Utc>) -> Result<(), StoreError> {
        if self.partition_known(at) {
            return Ok(());
        }
        let sql = self.partition_sql(at)?;
        client
            .batch_execute(&format!("BEGIN; {sql} COMMIT;"))
            .await
            .map_err(|e| pg_err("creating an audit partition", e))?;
        self.remember_partition(at);
        Ok(())
    }

    async fn append_on(
        &self,
        client: &mut Object,
        records: &[AuditRecord<'_>],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let e = |what: &'static str| move |e| pg_err(what, e);
        let now = chrono::SubsecRound::trunc_subsecs(now, 6);
        self.ensure_partition(client, now).await?;
        let copy_sql = format!("COPY audit_records ({COLUMNS}) FROM STDIN BINARY");
        let (lock, read_heads, advance, starts, copy) = futures::try_join!(
            client.prepare_cached(LOCK_CHAINS),
            client.prepare_cached(READ_HEADS),
            client.prepare_cached(ADVANCE_HEADS),
            client.prepare_cached(ADD_CHAIN_STARTS),
            client.prepare_cached(&copy_sql),
        )
        .map_err(e("preparing an audit write"))?;
        let statements = [&lock, &read_heads, &advance, &starts, &copy];
        let result = self.write_batch(client, statements, records, now).await;
        if let Ok((written, at)) = result {
            if written > 0 {
                // Made in the batch's transaction, which committed (one
                // that wrote nothing rolled back).
                self.remember_partition(at);
            }
        }
        let result = result.map(|(n, _)| n);
        if result.is_err() {
            // No transaction is left open on a connection that goes back to
            // the pool (a broken one is closed: see `release`).
            client.batch_execute("ROLLBACK").await.ok();
        }
        result
    }

    /// One batch's transaction, in four round trips: BEGIN with the chain
    /// locks and heads; the COPY's start; its rows and end; the heads'
    /// advance (and, in a chain's first batch of a month, its start) with
    /// COMMIT. On an error the caller rolls back. Returns the
    /// records written and the time they were written at.
    async fn write_batch(
        &self,
        client: &Object,
        [lock, read_heads, advance, starts, copy]: [&tokio_postgres::Statement; 5],
        records: &[AuditRecord<'_>],
        now: DateTime<Utc>,
    ) -> Result<(usize, DateTime<Utc>), StoreError> {
        let e = |what: &'static str| move |e| pg_err(what, e);

        // Each record's chain (an index into `chains`): a batch holds few
        // source partitions, and each chain's name is made once.
        let mut sources: Vec<(&str, i32)> = Vec::new();
        let chain_at: Vec<usize> = records
            .iter()
            .map(|r| {
                let source = (&*r.source.topic, r.source.partition);
                sources
                    .iter()
                    .position(|s| *s == source)
                    .unwrap_or_else(|| {
                        sources.push(source);
                        sources.len() - 1
                    })
            })
            .collect();
        let chains: Vec<String> = sources.iter().map(|s| chain_of(s.0, s.1)).collect();
        // Serialize writers of the same chains (sorted: no lock-order
        // deadlock) and read their heads, in one round trip.
        let mut sorted = chains.clone();
        sorted.sort();
        let keys = self.chain_lock_keys(&sorted);
        let lock_params: [&(dyn ToSql + Sync); 2] = [&LOCK_SPACE, &keys];
        let chain_params: [&(dyn ToSql + Sync); 1] = [&sorted];
        let (_, _, heads) = futures::try_join!(
            client.batch_execute("BEGIN"),
            client.execute(lock, &lock_params),
            client.query(read_heads, &chain_params),
        )
        .map_err(e("reading the audit chain heads"))?;

        let mut head: Vec<ChainHead> = chains
            .iter()
            .map(|_| ChainHead::new(0, GENESIS.to_string(), -1))
            .collect();
        for row in &heads {
            let chain: String = col(row, "chain")?;
            let last: Option<i64> = col(row, "last_offset")?;
            if let Some(at) = chains.iter().position(|c| *c == chain) {
                head[at] = ChainHead::new(col(row, "seq")?, col(row, "hash")?, last.unwrap_or(-1));
                head[at].last_received_at = col(row, "last_received_at")?;
            }
        }
        let at_time = batch_time(now, &head);
        if !self.partition_known(at_time) {
            // Only a clock behind a chain's last record gets here: `now`'s
            // partition was made before the transaction.
            client
                .batch_execute(&self.partition_sql(at_time)?)
                .await
                .map_err(e("creating an audit partition"))?;
        }

        // The new records, with their place in their chain, straight into
        // the COPY … BINARY buffer (the cheapest way into PostgreSQL for a
        // batch, sent as one message: tokio-postgres's writer sends every
        // 4 KB, a system call each). A record at or below its chain's last
        // offset is a redelivery: already written.
        let mut copy_rows = CopyRows::with_capacity(&self.copy_buffers, records.len() * 1024);
        let mut new = 0;
        let mut json = Vec::with_capacity(1024);
        for (record, &at) in records.iter().zip(&chain_at) {
            let h = &mut head[at];
            if record.source.offset <= h.last_offset {
                continue;
            }
            let r = as_stored(record, at_time);
            json.clear();
            let spans = r
                .write_json(&mut json)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let seq = h.seq + 1;
            let hash = chain_hash(seq as u64, &h.hash, &json);
            let prev_hash = std::mem::replace(&mut h.hash, hash);
            h.seq = seq;
            h.last_offset = r.source.offset;
            if h.first_new.is_none() {
                h.first_new = Some((seq, prev_hash.clone()));
            }
            // The `changes` and `details` columns are the same bytes as in
            // the hashed JSON.
            let rows = &mut copy_rows;
            rows.start_row(20);
            rows.text("event_id", Some(&r.event_id))?;
            rows.text("event_type", Some(&r.event_type))?;
            rows.text("operation", Some(&r.operation))?;
            rows.text("actor_id", r.actor_id.as_deref())?;
            rows.text("task_id", r.task_id.as_deref())?;
            rows.text("project_id", r.project_id.as_deref())?;
            rows.timestamptz(&r.occurred_at);
            rows.timestamptz(&r.received_at);
            rows.bytes("changes", spans.changes.map(|s| &json[s]))?;
            rows.bytes("details", spans.details.map(|s| &json[s]))?;
            rows.text("source_topic", Some(&r.source.topic))?;
            rows.int4(r.source.partition);
            rows.int8(r.source.offset);
            rows.text("dialect", Some(&r.source.dialect))?;
            rows.text("ip_address", r.ip_address.as_deref())?;
            rows.text("user_agent", r.user_agent.as_deref())?;
            rows.text("chain", Some(&chains[at]))?;
            rows.int8(seq);
            rows.text("prev_hash", Some(&prev_hash))?;
            rows.text("hash", Some(&h.hash))?;
            new += 1;
        }
        if new == 0 {
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(e("ending an audit write"))?;
            return Ok((0, at_time));
        }
        let changed: Vec<(&String, &ChainHead)> = chains
            .iter()
            .zip(&head)
            .filter(|(_, h)| h.first_new.is_some())
            .collect();
        let head_chains: Vec<&str> = changed.iter().map(|(c, _)| c.as_str()).collect();
        let head_seqs: Vec<i64> = changed.iter().map(|(_, h)| h.seq).collect();
        let head_hashes: Vec<&str> = changed.iter().map(|(_, h)| h.hash.as_str()).collect();
        let head_offsets: Vec<i64> = changed.iter().map(|(_, h)| h.last_offset).collect();
        // The chains whose first record in this month the batch wrote.
        let month = month_of(at_time);
        let starting: Vec<(&str, &(i64, String))> = changed
            .iter()
            .filter(|(_, h)| h.last_received_at.is_none_or(|t| month_of(t) != month))
            .filter_map(|(c, h)| Some((c.as_str(), h.first_new.as_ref()?)))
            .collect();
        let start_chains: Vec<&str> = starting.iter().map(|s| s.0).collect();
        let start_seqs: Vec<i64> = starting.iter().map(|s| s.1 .0).collect();
        let start_hashes: Vec<&str> = starting.iter().map(|s| s.1 .1.as_str()).collect();

        let sink = client
            .copy_in(copy)
            .await
            .map_err(e("writing audit records"))?;
        futures::pin_mut!(sink);
        use futures::SinkExt;
        sink.send(copy_rows.finish())
            .await
            .map_err(e("writing audit records"))?;
        sink.finish().await.map_err(e("writing audit records"))?;
        // The COMMIT is sent behind the advance: if the advance fails, its
        // error is what returns (PostgreSQL answers the COMMIT of a failed
        // transaction with a rollback, and the caller rolls back anyway).
        futures::try_join!(
            async {
                client
                    .execute(
                        advance,
                        &[
                            &head_chains,
                            &head_seqs,
                            &head_hashes,
                            &head_offsets,
                            &at_time,
                        ],
                    )
                    .await
                    .map_err(e("advancing the audit chain heads"))
            },
            async {
                if start_chains.is_empty() {
                    return Ok(0);
                }
                client
                    .execute(starts, &[&start_chains, &month, &start_seqs, &start_hashes])
                    .await
                    .map_err(e("recording where the audit chains start"))
            },
            async {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(e("committing audit records"))
            },
        )?;
        Ok((new, at_time))
    }

    async fn query_on(
        &self,
        client: &Object,
        q: &AuditQuery,
    ) -> Result<Vec<AuditRecord<'static>>, StoreError> {
        type Param = Box<dyn ToSql + Sync + Send>;
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        let mut add = |clause: &str, p: Param| {
            params.push(p);
            clauses.push(format!("{clause} ${}", params.len()));
        };
        // task_id, actor_id and occurred_at are served by the BRIN index
        // (Bloom filters for the ids, ranges for the time).
        if let Some(t) = &q.task_id {
            add("task_id =", Box::new(t.clone()));
        }
        if let Some(u) = &q.user_id {
            add("actor_id =", Box::new(u.clone()));
        }
        if let Some(t) = &q.event_type {
            add("event_type =", Box::new(t.clone()));
        }
        if let Some(f) = q.from {
            add("occurred_at >=", Box::new(f));
        }
        if let Some(t) = q.to {
            add("occurred_at <", Box::new(t));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = match q.limit {
            // Newest `limit`, returned oldest first.
            Some(limit) => format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM audit_records {filter}
                 ORDER BY occurred_at DESC, event_id DESC LIMIT {limit}) r
                 ORDER BY occurred_at, event_id"
            ),
            None => format!(
                "SELECT {COLUMNS} FROM audit_records {filter} ORDER BY occurred_at, event_id"
            ),
        };
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client
            .query(sql.as_str(), &refs)
            .await
            .map_err(|e| pg_err("querying audit records", e))?;
        rows.iter().map(record_from_row).collect()
    }

    async fn report_on(
        &self,
        client: &Object,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        let rows = client
            .query(
                "SELECT coalesce(actor_id, '(unknown)') AS user_id, event_type, count(*) AS count
                 FROM audit_records WHERE occurred_at >= $1 AND occurred_at < $2
                 GROUP BY 1, 2 ORDER BY 1, 2",
                &[&from, &to],
            )
            .await
            .map_err(|e| pg_err("reporting audit activity", e))?;
        rows.iter()
            .map(|r| {
                Ok(ActivityRow {
                    user_id: col(r, "user_id")?,
                    event_type: col(r, "event_type")?,
                    count: col::<i64>(r, "count")?.max(0) as u64,
                })
            })
            .collect()
    }

    /// Verifies on `client`, in one read-only snapshot; each round trip is
    /// bounded by the statement timeout, not the whole scan (which grows
    /// with the trail). The records are read in storage order (the table
    /// has no index in chain order: see migration 6) and each chain is put
    /// in order by its [`ChainLinks`]. The caller ends the transaction.
    async fn verify_on(&self, client: &Object) -> Result<VerifyReport, StoreError> {
        let e = |what: &'static str| move |e| pg_err(what, e);
        self.bounded("starting verification", async {
            // One snapshot for heads and records; storage order, which a
            // parallel or synchronized scan would scramble.
            client
                .batch_execute(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
                     SET LOCAL max_parallel_workers_per_gather = 0;
                     SET LOCAL synchronize_seqscans = off",
                )
                .await
                .map_err(e("starting verification"))
        })
        .await?;
        let mut heads: BTreeMap<String, (i64, String)> = BTreeMap::new();
        let rows = self
            .bounded("reading chain heads", async {
                client
                    .query("SELECT chain, seq, hash FROM audit_chain_heads", &[])
                    .await
                    .map_err(e("reading chain heads"))
            })
            .await?;
        for r in &rows {
            heads.insert(col(r, "chain")?, (col(r, "seq")?, col(r, "hash")?));
        }
        let mut anchors: BTreeMap<String, (i64, String)> = BTreeMap::new();
        let rows = self
            .bounded("reading chain anchors", async {
                client
                    .query("SELECT chain, seq, prev_hash FROM audit_chain_anchors", &[])
                    .await
                    .map_err(e("reading chain anchors"))
            })
            .await?;
        for r in &rows {
            anchors.insert(col(r, "chain")?, (col(r, "seq")?, col(r, "prev_hash")?));
        }
        let sql = format!("SELECT {COLUMNS} FROM audit_records");
        let rows = self
            .bounded("reading audit records", async {
                client
                    .query_raw(sql.as_str(), std::iter::empty::<i32>())
                    .await
                    .map_err(e("reading audit records"))
            })
            .await?;
        futures::pin_mut!(rows);
        let mut checked = 0u64;
        let mut chains: BTreeMap<String, ChainLinks> = BTreeMap::new();
        let broken = |(location, reason): ChainBreakAt, checked: u64| VerifyReport {
            records_checked: checked,
            first_break: Some(ChainBreak { location, reason }),
        };
        use futures::TryStreamExt;
        while let Some(row) = self
            .bounded("reading audit records", async {
                rows.try_next().await.map_err(e("reading audit records"))
            })
            .await?
        {
            let chain: String = col(&row, "chain")?;
            let seq: i64 = col(&row, "chain_seq")?;
            let prev_hash: String = col(&row, "prev_hash")?;
            let hash: String = col(&row, "hash")?;
            let event_id: String = col(&row, "event_id")?;
            let record = record_from_row(&row)?;
            let json =
                serde_json::to_vec(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let link = Link {
                content_ok: chain_hash(seq as u64, &prev_hash, &json) == hash,
                prev_hash,
                hash,
                location: format!("chain {chain} record {seq} (event {event_id})"),
            };
            let links = chains.entry(chain).or_insert_with_key(|c| {
                ChainLinks::new(anchors.get(c).cloned().unwrap_or((1, GENESIS.into())))
            });
            match links.add(seq, link) {
                Ok(linked) => checked += linked,
                Err(b) => return Ok(broken(b, checked)),
            }
        }
        for (chain, links) in chains.iter() {
            if let Some(b) = links.end(chain, &heads) {
                return Ok(broken(b, checked));
            }
        }
        // A chain whose records are all gone, though its head says otherwise.
        for (c, (seq, _)) in &heads {
            let start = anchors.get(c).map_or(1, |a| a.0);
            if !chains.contains_key(c) && *seq >= start {
                return Ok(broken(
                    (
                        format!("chain {c}"),
                        format!("the chain's head is record {seq} but its records are missing: records were deleted"),
                    ),
                    checked,
                ));
            }
        }
        Ok(VerifyReport {
            records_checked: checked,
            first_break: None,
        })
    }

    async fn retention_on(
        &self,
        client: &mut Object,
        cutoff: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let e = |what: &'static str| move |e| pg_err(what, e);
        let mut names: Vec<String> = Vec::new();
        for row in client
            .query(
                "SELECT c.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 JOIN pg_namespace n ON n.oid = p.relnamespace
                 WHERE p.relname = 'audit_records' AND n.nspname = $1",
                &[&self.schema],
            )
            .await
            .map_err(e("listing audit partitions"))?
        {
            names.push(col(&row, "relname")?);
        }
        // audit_records_YYYYMM holds [month start, next month start).
        // Each old partition with the end of its month.
        let old: Vec<(String, DateTime<Utc>)> = names
            .into_iter()
            .filter_map(|n| {
                let ym = n.strip_prefix("audit_records_")?;
                let y = ym.get(..4)?.parse::<i32>().ok()?;
                let m = ym.get(4..)?.parse::<u32>().ok()?;
                if !(1..=12).contains(&m) {
                    return None;
                }
                let (ny, nm) = next_month(y, m);
                let end = month_start(ny, nm).filter(|end| *end <= cutoff)?;
                Some((n, end))
            })
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let tx = client
            .transaction()
            .await
            .map_err(e("starting retention"))?;
        // Stop every chain's writers while the chains' starts move.
        let mut chains: Vec<String> = Vec::new();
        for row in tx
            .query("SELECT chain FROM audit_chain_heads ORDER BY chain", &[])
            .await
            .map_err(e("reading chain heads"))?
        {
            chains.push(col(&row, "chain")?);
        }
        let keys = self.chain_lock_keys(&chains);
        tx.execute(LOCK_CHAINS, &[&LOCK_SPACE, &keys])
            .await
            .map_err(e("locking chains for retention"))?;
        for (name, _) in &old {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", ident(name)))
                .await
                .map_err(e("dropping an audit partition"))?;
        }
        // Each chain now starts at its first record in the oldest month
        // left (its records run forward through the months: see migration
        // 6), or after its head.
        let kept_from = old.iter().map(|(_, end)| *end).max();
        tx.execute(
            "DELETE FROM audit_chain_starts WHERE month < $1",
            &[&kept_from],
        )
        .await
        .map_err(e("moving chain anchors"))?;
        tx.batch_execute(
            "INSERT INTO audit_chain_anchors (chain, seq, prev_hash)
             SELECT h.chain,
                    coalesce(f.seq, h.seq + 1),
                    coalesce(f.prev_hash, h.hash)
             FROM audit_chain_heads h
             LEFT JOIN LATERAL (
                 SELECT seq, prev_hash FROM audit_chain_starts s
                 WHERE s.chain = h.chain ORDER BY month LIMIT 1
             ) f ON true
             ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, prev_hash = excluded.prev_hash",
        )
        .await
        .map_err(e("moving chain anchors"))?;
        // A chain whose records are all gone starts afresh: its next record
        // is its first in whatever month that is, and nothing holds its time.
        tx.execute(
            "UPDATE audit_chain_heads SET last_received_at = NULL WHERE last_received_at < $1",
            &[&kept_from],
        )
        .await
        .map_err(e("moving chain anchors"))?;
        tx.commit().await.map_err(e("committing retention"))?;
        let mut known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        known.clear();
        Ok(old.len())
    }
}

#[async_trait]
impl AuditStore for PgStore {
    /// Readiness: a connection and `SELECT 1` within [`PING_TIMEOUT`] (or the
    /// statement timeout, if shorter), so the pipeline's probe, which waits
    /// 5 s, always gets an answer: a hung server reads as not ready.
    async fn ping(&self) -> Result<(), StoreError> {
        let limit = PING_TIMEOUT.min(self.statement_timeout);
        let deadline = tokio::time::Instant::now() + limit;
        let late =
            || StoreError::Unavailable(format!("ping: PostgreSQL did not answer within {limit:?}"));
        let client = tokio::time::timeout_at(deadline, self.client())
            .await
            .map_err(|_| late())??;
        let result = match tokio::time::timeout_at(deadline, client.simple_query("SELECT 1")).await
        {
            Ok(answer) => answer.map(|_| ()).map_err(|e| pg_err("ping", e)),
            Err(_) => Err(late()),
        };
        Self::release(client, &result);
        result
    }

    async fn append(
        &self,
        records: &[AuditRecord<'_>],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        self.ready().await?;
        let mut client = self.client().await?;
        let result = self
            .bounded(
                "writing audit records",
                self.append_on(&mut client, records, now),
            )
            .await;
        Self::release(client, &result);
        result
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord<'static>>, StoreError> {
        self.ready().await?;
        let client = self.client().await?;
        let result = self
            .bounded("querying audit records", self.query_on(&client, q))
            .await;
        Self::release(client, &result);
        result
    }

    async fn report(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        self.ready().await?;
        let client = self.client().await?;
        let result = self
            .bounded(
                "reporting audit activity",
                self.report_on(&client, from, to),
            )
            .await;
        Self::release(client, &result);
        result
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.ready().await?;
        let client = self.client().await?;
        let result = self.verify_on(&client).await;
        // Ends the read-only transaction, whatever happened in it.
        client.batch_execute("ROLLBACK").await.ok();
        Self::release(client, &result);
        result
    }

    async fn enforce_retention(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        self.ready().await?;
        let mut client = self.client().await?;
        let result = self
            .bounded(
                "enforcing retention",
                self.retention_on(&mut client, cutoff),
            )
            .await;
        Self::release(client, &result);
        result
    }
}

/// Where a chain breaks and why.
type ChainBreakAt = (String, String);

/// One record as `verify` links it into its chain.
struct Link {
    prev_hash: String,
    hash: String,
    /// Whether `hash` is the hash of the record's content (checked as it is
    /// read; reported when the record's turn comes).
    content_ok: bool,
    location: String,
}

/// One chain's records, taken in any order and checked in chain order: a
/// record is linked to its predecessor when that has been linked, and
/// waits until then. A table read in storage order holds a few such (two
/// writers of one chain filled different pages), a tampered one any number.
struct ChainLinks {
    /// The number the next record must carry, and the hash it must follow.
    next: (i64, String),
    waiting: BTreeMap<i64, Link>,
}

impl ChainLinks {
    /// A chain that starts at `start` (its anchor, or record 1 after the
    /// genesis hash).
    fn new(start: (i64, String)) -> ChainLinks {
        ChainLinks {
            next: start,
            waiting: BTreeMap::new(),
        }
    }

    /// Takes record `seq`; returns how many records it let be linked, or
    /// the first break found.
    fn add(&mut self, seq: i64, link: Link) -> Result<u64, ChainBreakAt> {
        if seq < self.next.0 || self.waiting.contains_key(&seq) {
            return Err((link.location, self.unexpected(seq)));
        }
        if seq > self.next.0 {
            self.waiting.insert(seq, link);
            return Ok(0);
        }
        let mut linked = 0;
        let mut link = link;
        loop {
            if link.prev_hash != self.next.1 {
                let reason = "prev_hash does not match the previous record's hash: a record was deleted, inserted or moved";
                return Err((link.location, reason.into()));
            }
            if !link.content_ok {
                let reason = "hash does not match the record's content: the record was edited";
                return Err((link.location, reason.into()));
            }
            self.next = (self.next.0 + 1, link.hash);
            linked += 1;
            match self.waiting.remove(&self.next.0) {
                Some(following) => link = following,
                None => return Ok(linked),
            }
        }
    }

    fn unexpected(&self, seq: i64) -> String {
        format!(
            "sequence number {seq} where {} was expected: a record was deleted, inserted or moved",
            self.next.0
        )
    }

    /// After the last record: none may still wait (one before it is
    /// missing), and the chain must end at its recorded head.
    fn end(&self, chain: &str, heads: &BTreeMap<String, (i64, String)>) -> Option<ChainBreakAt> {
        if let Some((seq, link)) = self.waiting.iter().next() {
            return Some((link.location.clone(), self.unexpected(*seq)));
        }
        let last = self.next.0 - 1;
        match heads.get(chain) {
            Some((seq, hash)) if *seq == last && *hash == self.next.1 => None,
            Some((seq, _)) if *seq > last => Some((
                format!("chain {chain} after record {last}"),
                format!("the chain's head is record {seq}: records were deleted from the end"),
            )),
            Some((seq, _)) => Some((
                format!("chain {chain} record {last}"),
                format!("the chain's head is record {seq} but the chain continues: records were added or the head was edited"),
            )),
            None => Some((format!("chain {chain}"), "the chain has no head: it was not written by taskstream".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::types::{IsNull, Type};

    /// What tokio-postgres's `ToSql` writes for `value` as `ty`, framed as
    /// a COPY BINARY field (length, then bytes; -1 for NULL).
    fn framed(value: &(dyn ToSql + Sync), ty: &Type) -> Vec<u8> {
        let mut b = BytesMut::new();
        match value.to_sql_checked(ty, &mut b).unwrap() {
            IsNull::Yes => (-1i32).to_be_bytes().to_vec(),
            IsNull::No => [&(b.len() as i32).to_be_bytes()[..], &b[..]].concat(),
        }
    }

    /// Records as `verify` reads them: (seq, link).
    type Records = Vec<(i64, Link)>;

    /// A chain of `n` records.
    fn chain(n: i64) -> Records {
        let hash = |i: i64| {
            if i == 0 {
                GENESIS.to_string()
            } else {
                format!("h{i}")
            }
        };
        (1..=n)
            .map(|i| {
                let link = Link {
                    prev_hash: hash(i - 1),
                    hash: hash(i),
                    content_ok: true,
                    location: format!("record {i}"),
                };
                (i, link)
            })
            .collect()
    }

    fn check(records: Records, head: i64) -> Result<u64, ChainBreakAt> {
        let mut links = ChainLinks::new((1, GENESIS.into()));
        let mut linked = 0;
        for (seq, link) in records {
            linked += links.add(seq, link)?;
        }
        let heads = BTreeMap::from([("c".to_string(), (head, format!("h{head}")))]);
        match links.end("c", &heads) {
            Some(b) => Err(b),
            None => Ok(linked),
        }
    }

    /// In any order a whole chain verifies; a record missing, repeated or
    /// edited is found whatever the order.
    #[test]
    fn a_chain_is_checked_in_its_order_whatever_the_order_read() {
        let orders: [fn(&mut Records); 4] = [
            |_| {},
            |c| c.reverse(),
            |c| c.rotate_left(7),
            |c| {
                // Pairs swapped, as two writers' pages interleave.
                for pair in c.chunks_mut(2) {
                    pair.reverse();
                }
            },
        ];
        for order in orders {
            let mut c = chain(20);
            order(&mut c);
            assert_eq!(check(c, 20), Ok(20));

            let mut c = chain(20);
            c.retain(|(seq, _)| *seq != 8);
            order(&mut c);
            let b = check(c, 20).unwrap_err();
            assert!(
                b.1.contains("sequence number 9 where 8 was expected"),
                "{b:?}"
            );

            let mut c = chain(20);
            let (seq, l) = &c[4];
            let copy = Link {
                prev_hash: l.prev_hash.clone(),
                hash: l.hash.clone(),
                content_ok: true,
                location: "copy".into(),
            };
            c.push((*seq, copy));
            order(&mut c);
            let b = check(c, 20).unwrap_err();
            assert!(b.1.contains("sequence number 5 where"), "{b:?}");

            let mut c = chain(20);
            c[11].1.content_ok = false;
            order(&mut c);
            assert_eq!(check(c, 20).unwrap_err().0, "record 12");

            let mut c = chain(20);
            c.pop();
            order(&mut c);
            let b = check(c, 20).unwrap_err();
            assert!(b.1.contains("deleted from the end"), "{b:?}");
        }
    }

    /// The row writer's encodings are the driver's, value for value.
    #[test]
    fn copy_values_are_written_as_the_driver_writes_them() {
        let pool = BufferPool::new(1);
        let field = |write: &dyn Fn(&mut CopyRows)| {
            let mut rows = CopyRows::with_capacity(&pool, 0);
            let header = rows.buf.len();
            write(&mut rows);
            rows.buf[header..].to_vec()
        };
        let times = [
            "2026-11-27T19:00:00.123456Z",
            "2000-01-01T00:00:00Z",
            "1999-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
        ];
        // The first and last times chrono holds: the count cannot overflow.
        let ends = [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC];
        for t in times.iter().map(|t| t.parse().unwrap()).chain(ends) {
            let t: DateTime<Utc> = chrono::SubsecRound::trunc_subsecs(t, 6);
            assert_eq!(
                field(&|r| r.timestamptz(&t)),
                framed(&t, &Type::TIMESTAMPTZ),
                "{t}"
            );
        }
        for s in [None, Some(""), Some("task-events/0"), Some("é 🦀")] {
            assert_eq!(field(&|r| r.text("s", s).unwrap()), framed(&s, &Type::TEXT));
        }
        let json = serde_json::json!({"a": [1, "x"]});
        assert_eq!(
            field(&|r| r.bytes("j", Some(json.to_string().as_bytes())).unwrap()),
            framed(&Json(&json), &Type::JSON)
        );
        for v in [i32::MIN, -1, 0, 7, i32::MAX] {
            assert_eq!(field(&|r| r.int4(v)), framed(&v, &Type::INT4));
        }
        for v in [i64::MIN, -1, 0, 7, i64::MAX] {
            assert_eq!(field(&|r| r.int8(v)), framed(&v, &Type::INT8));
        }
    }
}
