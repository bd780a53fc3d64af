-- audit_records loses its primary key. Its B-tree on (chain, chain_seq,
-- received_at) was the largest part of PostgreSQL's cost per written record
-- (measured here, the audit bench: 5.1-5.7 us of PostgreSQL CPU per event
-- with it, 3.7-3.9 without), and it served three things, now done without it:
--
-- * A record's place in its chain is unique because one writer at a time
--   appends to a chain (under the chain's advisory lock) and numbers from
--   the head; `verify` reports a repeated or missing number as a break.
-- * `verify` reads the table in storage order and puts each chain's records
--   in order itself (a record that arrives before its predecessor waits in
--   memory: a few, from writers that filled different pages at once).
-- * Retention finds where each chain starts after a dropped month in
--   audit_chain_starts (below), not by looking the next record up.
--
-- Each chain's head keeps the time of its last record. A writer never
-- stamps a chain's record earlier than that (a replica whose clock is
-- behind writes at the head's time), so a chain's records run forward
-- through the monthly partitions, and dropping the oldest partitions
-- removes a prefix of every chain.
ALTER TABLE audit_chain_heads ADD COLUMN IF NOT EXISTS last_received_at timestamptz;
UPDATE audit_chain_heads h
SET last_received_at = (SELECT max(r.received_at) FROM audit_records r WHERE r.chain = h.chain)
WHERE h.last_received_at IS NULL;

-- The first record of each chain in each month's partition: where the chain
-- starts once the months before are dropped. The writer adds a row when a
-- chain first writes in a month (once per chain and month).
CREATE TABLE IF NOT EXISTS audit_chain_starts (
    chain     text COLLATE "C" NOT NULL,
    month     timestamptz NOT NULL,   -- the partition's lower bound
    seq       bigint      NOT NULL,
    prev_hash text        NOT NULL,
    PRIMARY KEY (chain, month)
);
-- The records written before, through the primary key while it exists.
INSERT INTO audit_chain_starts (chain, month, seq, prev_hash)
SELECT f.chain, f.month, f.seq, r.prev_hash
FROM (
    SELECT chain, date_trunc('month', received_at, 'UTC') AS month, min(chain_seq) AS seq
    FROM audit_records
    GROUP BY 1, 2
) f
JOIN audit_records r
  ON r.chain = f.chain AND r.chain_seq = f.seq
 AND r.received_at >= f.month
 AND r.received_at < (f.month AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC'
ON CONFLICT DO NOTHING;

ALTER TABLE audit_records DROP CONSTRAINT IF EXISTS audit_records_pkey;
