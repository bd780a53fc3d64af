-- The audit trail: one row per canonical event, never updated.
-- Identifiers compare bytewise (COLLATE "C"): cheaper index maintenance than a
-- linguistic collation, and ids have no linguistic order anyway.
--
-- Partitioned by month of received_at (when the store wrote the record), so
-- retention drops whole partitions and each hash chain loses only its oldest
-- records. Partitions are created on demand by the writer
-- (audit_records_YYYYMM).
CREATE TABLE IF NOT EXISTS audit_records (
    event_id         text COLLATE "C"        NOT NULL,
    event_type       text COLLATE "C"        NOT NULL,
    operation        text COLLATE "C"        NOT NULL,
    actor_id         text COLLATE "C",
    task_id          text COLLATE "C",
    project_id       text COLLATE "C",
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    changes          json,   -- json, not jsonb: stored as written, cheaper to write; nothing queries inside it
    details          json,
    source_topic     text COLLATE "C"        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    dialect          text COLLATE "C"        NOT NULL,
    ip_address       text,
    user_agent       text,
    -- Tamper evidence: one SHA-256 chain per source (topic/partition).
    chain            text COLLATE "C"        NOT NULL,
    chain_seq        bigint      NOT NULL,
    prev_hash        text        NOT NULL,
    hash             text        NOT NULL,
    -- A unique key must contain the partition key; its leading event_id also
    -- serves the writer's "already stored?" lookup across partitions.
    PRIMARY KEY (event_id, received_at)
) PARTITION BY RANGE (received_at);

-- The queries of `taskstream audit query` / `report`.
CREATE INDEX IF NOT EXISTS audit_records_task_idx ON audit_records (task_id, occurred_at);
CREATE INDEX IF NOT EXISTS audit_records_actor_idx ON audit_records (actor_id, occurred_at);
CREATE INDEX IF NOT EXISTS audit_records_occurred_idx ON audit_records (occurred_at);

-- The last record of each chain, so a deleted last row is detected.
CREATE TABLE IF NOT EXISTS audit_chain_heads (
    chain text COLLATE "C" PRIMARY KEY,
    seq   bigint NOT NULL,
    hash  text   NOT NULL
);

-- Where each chain starts after retention dropped its oldest records.
CREATE TABLE IF NOT EXISTS audit_chain_anchors (
    chain     text COLLATE "C" PRIMARY KEY,
    seq       bigint NOT NULL,
    prev_hash text   NOT NULL
);
