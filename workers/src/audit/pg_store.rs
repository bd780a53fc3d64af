//! The production audit store: PostgreSQL.
//!
//! - Schema: versioned migrations in `workers/migrations/audit/`, applied on
//!   connect under an advisory lock and recorded in
//!   `taskstream_audit_migrations`; everything lives in the configured schema
//!   (`audit.schema`, created if missing).
//! - Table `audit_records`, partitioned by month of `received_at` (partitions
//!   `audit_records_YYYYMM` are created on demand); retention drops whole
//!   partitions.
//! - `append` is one transaction per batch: lock the batch's chains, find the
//!   event ids already stored (any partition), insert the new records with one
//!   multi-row `INSERT … SELECT FROM unnest(…)`, advance the chain heads,
//!   COMMIT. A redelivered message therefore never makes a second row.
//! - Tamper evidence: one SHA-256 chain per source (`topic/partition`), each
//!   row carrying `chain_seq`, `prev_hash` and `hash` over the record's
//!   canonical JSON; `verify` recomputes every chain.
//!
//! Connections use TLS as the URL's `sslmode` says (`prefer` by default), like
//! libpq: encrypted, the server certificate not verified.
//!
//! The store sets `received_at` to the moment it writes (microseconds, as
//! PostgreSQL keeps them), and truncates `occurred_at` to microseconds, so the
//! hash covers exactly what is stored.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, SubsecRound, TimeZone, Utc};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};
use tokio_postgres::{Client, Row};

use super::record::{AuditRecord, Change, RecordSource};
use super::store::{
    chain_hash, ActivityRow, AuditQuery, AuditStore, ChainBreak, StoreError, VerifyReport, GENESIS,
};

/// The migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "create_audit_records",
    include_str!("../../migrations/audit/0001_create_audit_records.sql"),
)];

/// Advisory lock namespace (first key) for this store's locks.
const LOCK_SPACE: i32 = 0x7a5d_0001;

/// The column types of [`COLUMNS`], for COPY BINARY.
const COPY_TYPES: [Type; 20] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::JSON,
    Type::JSON,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
];

/// Locks chains for this transaction: `$1` = [`LOCK_SPACE`], `$2` = keys from
/// `chain_lock_keys`, taken in key order so writers never deadlock.
const LOCK_CHAINS: &str =
    "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) AS k ORDER BY k";

const COLUMNS: &str = "event_id, event_type, operation, actor_id, task_id, project_id, occurred_at, received_at, \
     changes, details, source_topic, source_partition, source_offset, dialect, ip_address, user_agent, \
     chain, chain_seq, prev_hash, hash";

pub struct PgStore {
    config: tokio_postgres::Config,
    schema: String,
    pool: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    /// Months whose partition is known to exist.
    partitions: StdMutex<HashSet<(i32, u32)>>,
    /// Set once the migrations have been applied.
    migrated: tokio::sync::OnceCell<()>,
    /// TLS as the URL's `sslmode` asks (`prefer` by default: TLS when the
    /// server offers it), verified against the system's CA certificates.
    tls: postgres_openssl::MakeTlsConnector,
}

/// Maps a driver error: data errors are the record's fault (`Invalid`);
/// everything else (connection, server shutdown, lock timeouts, a missing
/// table) is waited out as `Unavailable`.
fn pg_err(what: &str, e: tokio_postgres::Error) -> StoreError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{what}: {} ({})", db.message(), db.code().code()),
        None => format!("{what}: {e}"),
    };
    match e.code().map(|c| c.code()) {
        Some(c) if c.starts_with("22") => StoreError::Invalid(detail),
        _ => StoreError::Unavailable(detail),
    }
}

/// Validates an identifier we interpolate into SQL.
/// Whether `name` is a plain lower-case SQL identifier (what `audit.schema`
/// accepts; it is interpolated into SQL).
pub fn is_plain_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
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

fn month_start(year: i32, month: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(
        &NaiveDate::from_ymd_opt(year, month, 1)
            .expect("valid month")
            .and_hms_opt(0, 0, 0)
            .expect("midnight"),
    )
}

fn next_month(year: i32, month: u32) -> (i32, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

/// The record as stored: times at microsecond precision.
fn normalized(r: &AuditRecord, received_at: DateTime<Utc>) -> AuditRecord {
    let mut r = r.clone();
    r.occurred_at = r.occurred_at.trunc_subsecs(6);
    r.received_at = received_at;
    r
}

fn record_from_row(row: &Row) -> Result<AuditRecord, StoreError> {
    let changes: Option<Json<BTreeMap<String, Change>>> = row
        .try_get("changes")
        .map_err(|e| pg_err("reading changes", e))?;
    let details: Option<Json<serde_json::Value>> = row
        .try_get("details")
        .map_err(|e| pg_err("reading details", e))?;
    let get = |e| pg_err("reading a record", e);
    Ok(AuditRecord {
        event_id: row.try_get("event_id").map_err(get)?,
        event_type: row.try_get("event_type").map_err(get)?,
        operation: row.try_get("operation").map_err(get)?,
        actor_id: row.try_get("actor_id").map_err(get)?,
        task_id: row.try_get("task_id").map_err(get)?,
        project_id: row.try_get("project_id").map_err(get)?,
        occurred_at: row.try_get("occurred_at").map_err(get)?,
        received_at: row.try_get("received_at").map_err(get)?,
        changes: changes.map(|j| j.0).unwrap_or_default(),
        details: details.map(|j| j.0),
        source: RecordSource {
            topic: row.try_get("source_topic").map_err(get)?,
            partition: row.try_get("source_partition").map_err(get)?,
            offset: row.try_get("source_offset").map_err(get)?,
            dialect: row.try_get("dialect").map_err(get)?,
        },
        ip_address: row.try_get("ip_address").map_err(get)?,
        user_agent: row.try_get("user_agent").map_err(get)?,
    })
}

/// TLS as libpq does it for `sslmode=prefer` (the default: TLS when the server
/// offers it) and `require` (TLS or fail): encrypted, the server certificate
/// not verified. tokio-postgres knows no `verify-ca`/`verify-full`.
fn tls_connector() -> Result<postgres_openssl::MakeTlsConnector, StoreError> {
    let fail = |e: openssl::error::ErrorStack| {
        StoreError::Invalid(format!("cannot set up TLS for PostgreSQL: {e}"))
    };
    let mut builder =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).map_err(fail)?;
    builder.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let mut connector = postgres_openssl::MakeTlsConnector::new(builder.build());
    connector.set_callback(|config, _| {
        config.set_verify_hostname(false);
        Ok(())
    });
    Ok(connector)
}

fn chain_of(r: &AuditRecord) -> String {
    format!("{}/{}", r.source.topic, r.source.partition)
}

impl PgStore {
    /// A store in `schema` (created if missing), connected and migrated.
    pub async fn connect_with_schema(
        url: &str,
        pool_size: usize,
        schema: &str,
    ) -> Result<PgStore, StoreError> {
        let store = Self::new(url, pool_size, schema)?;
        store.ready().await?;
        Ok(store)
    }

    /// A store that connects on first use: the worker starts even while the
    /// database is down, and waits for it (not ready) instead of exiting.
    pub fn new(url: &str, pool_size: usize, schema: &str) -> Result<PgStore, StoreError> {
        check_schema(schema)?;
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            StoreError::Invalid(format!(
                "database.url has value {:?}: {e}",
                pipelines::config::mask_url(url)
            ))
        })?;
        config.options(format!("-c search_path={schema}"));
        if config.get_application_name().is_none() {
            config.application_name("taskstream-audit");
        }
        Ok(PgStore {
            config,
            schema: schema.to_string(),
            pool: (0..pool_size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            partitions: StdMutex::new(HashSet::new()),
            migrated: tokio::sync::OnceCell::new(),
            tls: tls_connector()?,
        })
    }

    async fn connect_client(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| pg_err("connecting to PostgreSQL", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// A pooled connection, (re)connected if it is new or was closed.
    async fn client(&self) -> Result<MappedMutexGuard<'_, Client>, StoreError> {
        let n = self.pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Prefer an idle connection; otherwise queue on one.
        let mut guard = None;
        for i in 0..n {
            if let Ok(g) = self.pool[(start + i) % n].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => self.pool[start % n].lock().await,
        };
        let client = match guard.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect_client().await?,
        };
        Ok(MutexGuard::map(guard, |slot| slot.insert(client)))
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
            .get_or_try_init(|| self.migrate())
            .await
            .map(|_| ())
    }

    /// Applies the migrations not yet applied, one transaction each.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let e = |what: &'static str| move |e| pg_err(what, e);
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema))
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
            let applied: HashSet<i32> = client
                .query("SELECT version FROM taskstream_audit_migrations", &[])
                .await
                .map_err(e("reading applied migrations"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for (version, name, sql) in MIGRATIONS {
                if applied.contains(version) {
                    continue;
                }
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
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await
            .map_err(|e| pg_err("dropping the audit schema", e))
    }

    /// Creates the month's partition if it is not known to exist.
    async fn ensure_partition(&self, client: &Client, at: DateTime<Utc>) -> Result<(), StoreError> {
        let month = (at.year(), at.month());
        if self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&month)
        {
            return Ok(());
        }
        let (y, m) = month;
        let (ny, nm) = next_month(y, m);
        let sql = format!(
            "SELECT pg_advisory_xact_lock({LOCK_SPACE}, {key});
             CREATE TABLE IF NOT EXISTS audit_records_{y:04}{m:02} PARTITION OF audit_records
                 FOR VALUES FROM ('{from}') TO ('{to}');",
            key = lock_key(&format!("{}:partitions", self.schema)),
            from = month_start(y, m).to_rfc3339(),
            to = month_start(ny, nm).to_rfc3339(),
        );
        client
            .batch_execute(&format!("BEGIN; {sql} COMMIT;"))
            .await
            .map_err(|e| pg_err("creating an audit partition", e))?;
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(month);
        Ok(())
    }

    async fn append_on(
        &self,
        client: &mut Client,
        records: &[AuditRecord],
    ) -> Result<usize, StoreError> {
        let now = Utc::now().trunc_subsecs(6);
        self.ensure_partition(client, now).await?;
        let e = |what: &'static str| move |e| pg_err(what, e);
        let tx = client
            .transaction()
            .await
            .map_err(e("starting an audit write"))?;
        // The "already stored?" lookup must use the event_id index: a fresh
        // partition has no statistics and the planner would scan it whole.
        tx.batch_execute("SET LOCAL enable_seqscan = off")
            .await
            .map_err(e("starting an audit write"))?;

        // Serialize writers of the same chains (sorted: no lock-order deadlock).
        let mut chains: Vec<String> = records.iter().map(chain_of).collect();
        chains.sort();
        chains.dedup();
        let keys = self.chain_lock_keys(&chains);
        let ids: Vec<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&LOCK_SPACE, &keys];
        let id_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
        let chain_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&chains];
        let (_, existing, heads) = futures::try_join!(
            tx.execute(LOCK_CHAINS, &lock_params),
            tx.query(
                "SELECT event_id FROM audit_records WHERE event_id = ANY($1)",
                &id_params
            ),
            tx.query(
                "SELECT chain, seq, hash FROM audit_chain_heads WHERE chain = ANY($1)",
                &chain_params
            ),
        )
        .map_err(e("reading the audit chain heads"))?;

        let mut seen: HashSet<String> = existing.iter().map(|r| r.get::<_, String>(0)).collect();
        let mut head: BTreeMap<String, (i64, String)> = chains
            .iter()
            .map(|c| (c.clone(), (0, GENESIS.to_string())))
            .collect();
        for row in &heads {
            head.insert(row.get(0), (row.get(1), row.get(2)));
        }

        // The new records, with their place in their chain.
        let mut rows: Vec<(AuditRecord, String, i64, String, String)> =
            Vec::with_capacity(records.len());
        let mut json = Vec::with_capacity(512);
        for r in records {
            if !seen.insert(r.event_id.clone()) {
                continue;
            }
            let r = normalized(r, now);
            let chain = chain_of(&r);
            let (seq, prev) = head.get_mut(&chain).expect("chain listed");
            json.clear();
            serde_json::to_writer(&mut json, &r).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let next = *seq + 1;
            let hash = chain_hash(next as u64, prev, &json);
            let prev_hash = std::mem::replace(prev, hash.clone());
            rows.push((r, chain, next, prev_hash, hash));
            *seq = next;
        }
        let new = rows.len();
        if new == 0 {
            tx.rollback().await.map_err(e("ending an audit write"))?;
            return Ok(0);
        }
        let changed: Vec<(&String, &(i64, String))> =
            head.iter().filter(|(_, (seq, _))| *seq > 0).collect();
        let head_chains: Vec<&str> = changed.iter().map(|(c, _)| c.as_str()).collect();
        let head_seqs: Vec<i64> = changed.iter().map(|(_, (s, _))| *s).collect();
        let head_hashes: Vec<&str> = changed.iter().map(|(_, (_, h))| h.as_str()).collect();

        // COPY … BINARY: the cheapest way into PostgreSQL for a batch.
        let sink = tx
            .copy_in(format!("COPY audit_records ({COLUMNS}) FROM STDIN BINARY").as_str())
            .await
            .map_err(e("writing audit records"))?;
        let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
        futures::pin_mut!(writer);
        for (r, chain, seq, prev_hash, hash) in &rows {
            let changes = (!r.changes.is_empty()).then_some(Json(&r.changes));
            let details = r.details.as_ref().map(Json);
            writer
                .as_mut()
                .write(&[
                    &r.event_id,
                    &r.event_type,
                    &r.operation,
                    &r.actor_id,
                    &r.task_id,
                    &r.project_id,
                    &r.occurred_at,
                    &r.received_at,
                    &changes,
                    &details,
                    &r.source.topic,
                    &r.source.partition,
                    &r.source.offset,
                    &r.source.dialect,
                    &r.ip_address,
                    &r.user_agent,
                    chain,
                    seq,
                    prev_hash,
                    hash,
                ])
                .await
                .map_err(e("writing audit records"))?;
        }
        writer.finish().await.map_err(e("writing audit records"))?;
        tx.execute(
            "INSERT INTO audit_chain_heads (chain, seq, hash)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[])
             ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            &[&head_chains, &head_seqs, &head_hashes],
        )
        .await
        .map_err(e("advancing the audit chain heads"))?;
        tx.commit().await.map_err(e("committing audit records"))?;
        Ok(new)
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| pg_err("ping", e))
    }

    async fn append(&self, records: &[AuditRecord]) -> Result<usize, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        self.ready().await?;
        // A connection that broke is replaced by the next `client()`.
        let mut client = self.client().await?;
        self.append_on(&mut client, records).await
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.ready().await?;
        let mut clauses = Vec::new();
        let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        let mut add = |clause: &str, p: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
            params.push(p);
            clauses.push(format!("{clause} ${}", params.len()));
        };
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
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let client = self.client().await?;
        let rows = client
            .query(sql.as_str(), &refs)
            .await
            .map_err(|e| pg_err("querying audit records", e))?;
        rows.iter().map(record_from_row).collect()
    }

    async fn report(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        self.ready().await?;
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT coalesce(actor_id, '(unknown)') AS user_id, event_type, count(*)
                 FROM audit_records WHERE occurred_at >= $1 AND occurred_at < $2
                 GROUP BY 1, 2 ORDER BY 1, 2",
                &[&from, &to],
            )
            .await
            .map_err(|e| pg_err("reporting audit activity", e))?;
        Ok(rows
            .iter()
            .map(|r| ActivityRow {
                user_id: r.get(0),
                event_type: r.get(1),
                count: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.ready().await?;
        let client = self.client().await?;
        let e = |what: &'static str| move |e| pg_err(what, e);
        let heads: BTreeMap<String, (i64, String)> = client
            .query("SELECT chain, seq, hash FROM audit_chain_heads", &[])
            .await
            .map_err(e("reading chain heads"))?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let anchors: BTreeMap<String, (i64, String)> = client
            .query("SELECT chain, seq, prev_hash FROM audit_chain_anchors", &[])
            .await
            .map_err(e("reading chain anchors"))?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let sql = format!("SELECT {COLUMNS} FROM audit_records ORDER BY chain, chain_seq");
        let rows = client
            .query_raw(sql.as_str(), std::iter::empty::<i32>())
            .await
            .map_err(e("reading audit records"))?;
        futures::pin_mut!(rows);
        let mut checked = 0u64;
        let mut chain = String::new();
        let mut expect: (i64, String) = (1, GENESIS.into());
        let mut seen_chains: HashSet<String> = HashSet::new();
        let broken = |location: String, reason: String, checked: u64| VerifyReport {
            records_checked: checked,
            first_break: Some(ChainBreak { location, reason }),
        };
        use futures::TryStreamExt;
        while let Some(row) = rows.try_next().await.map_err(e("reading audit records"))? {
            let this: String = row.get("chain");
            let seq: i64 = row.get("chain_seq");
            let prev_hash: String = row.get("prev_hash");
            let hash: String = row.get("hash");
            if this != chain {
                if !chain.is_empty() {
                    if let Some(b) = check_end(&chain, &expect, &heads) {
                        return Ok(broken(b.0, b.1, checked));
                    }
                }
                chain = this.clone();
                seen_chains.insert(this.clone());
                expect = anchors.get(&chain).cloned().unwrap_or((1, GENESIS.into()));
            }
            let event_id: String = row.get("event_id");
            let location = format!("chain {chain} record {seq} (event {event_id})");
            if seq != expect.0 {
                let reason = format!(
                    "sequence number {seq} where {} was expected: a record was deleted, inserted or moved",
                    expect.0
                );
                return Ok(broken(location, reason, checked));
            }
            if prev_hash != expect.1 {
                let reason = "prev_hash does not match the previous record's hash: a record was deleted, inserted or moved";
                return Ok(broken(location, reason.into(), checked));
            }
            let record = record_from_row(&row)?;
            let json =
                serde_json::to_vec(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
            if chain_hash(seq as u64, &prev_hash, &json) != hash {
                let reason = "hash does not match the record's content: the record was edited";
                return Ok(broken(location, reason.into(), checked));
            }
            checked += 1;
            expect = (seq + 1, hash);
        }
        if !chain.is_empty() {
            if let Some(b) = check_end(&chain, &expect, &heads) {
                return Ok(broken(b.0, b.1, checked));
            }
        }
        // A chain whose records are all gone, though its head says otherwise.
        for (c, (seq, _)) in &heads {
            let start = anchors.get(c).map_or(1, |a| a.0);
            if !seen_chains.contains(c) && *seq >= start {
                return Ok(broken(
                    format!("chain {c}"),
                    format!("the chain's head is record {seq} but its records are missing: records were deleted"),
                    checked,
                ));
            }
        }
        Ok(VerifyReport {
            records_checked: checked,
            first_break: None,
        })
    }

    async fn enforce_retention(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        self.ready().await?;
        let mut client = self.client().await?;
        let e = |what: &'static str| move |e| pg_err(what, e);
        let names: Vec<String> = client
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
            .iter()
            .map(|r| r.get(0))
            .collect();
        // audit_records_YYYYMM holds [month start, next month start).
        let old: Vec<String> = names
            .into_iter()
            .filter(|n| {
                let Some(ym) = n.strip_prefix("audit_records_") else {
                    return false;
                };
                let (Ok(y), Ok(m)) = (
                    ym.get(..4).unwrap_or("").parse::<i32>(),
                    ym.get(4..).unwrap_or("").parse::<u32>(),
                ) else {
                    return false;
                };
                if !(1..=12).contains(&m) {
                    return false;
                }
                let (ny, nm) = next_month(y, m);
                month_start(ny, nm) <= cutoff
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
        let chains: Vec<String> = tx
            .query("SELECT chain FROM audit_chain_heads ORDER BY chain", &[])
            .await
            .map_err(e("reading chain heads"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let keys = self.chain_lock_keys(&chains);
        tx.execute(LOCK_CHAINS, &[&LOCK_SPACE, &keys])
            .await
            .map_err(e("locking chains for retention"))?;
        for name in &old {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                .await
                .map_err(e("dropping an audit partition"))?;
        }
        // Each chain now starts at its oldest remaining record, or after its head.
        tx.batch_execute(
            "INSERT INTO audit_chain_anchors (chain, seq, prev_hash)
             SELECT h.chain,
                    coalesce(f.chain_seq, h.seq + 1),
                    coalesce(f.prev_hash, h.hash)
             FROM audit_chain_heads h
             LEFT JOIN LATERAL (
                 SELECT chain_seq, prev_hash FROM audit_records r
                 WHERE r.chain = h.chain ORDER BY chain_seq LIMIT 1
             ) f ON true
             ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, prev_hash = excluded.prev_hash",
        )
        .await
        .map_err(e("moving chain anchors"))?;
        tx.commit().await.map_err(e("committing retention"))?;
        let mut known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        known.clear();
        Ok(old.len())
    }
}

/// The end of a chain must be its recorded head.
fn check_end(
    chain: &str,
    expect: &(i64, String),
    heads: &BTreeMap<String, (i64, String)>,
) -> Option<(String, String)> {
    let last = expect.0 - 1;
    match heads.get(chain) {
        Some((seq, hash)) if *seq == last && *hash == expect.1 => None,
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
