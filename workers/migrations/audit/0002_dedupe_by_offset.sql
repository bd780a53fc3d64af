-- Redelivery is recognised from each chain's last source offset (a chain is
-- one source partition, and a redelivered message comes from that partition
-- at or below it), not by looking each event id up: the heads keep it.
ALTER TABLE audit_chain_heads ADD COLUMN IF NOT EXISTS last_offset bigint;
UPDATE audit_chain_heads h
SET last_offset = (SELECT max(r.source_offset) FROM audit_records r WHERE r.chain = h.chain)
WHERE h.last_offset IS NULL;

-- The primary key on (event_id, received_at) served only that lookup; its
-- random inserts were most of a write's index cost. Rows are identified by
-- their place in their chain instead, which is also the order `verify`
-- reads them in (the partition key must be part of a unique key).
ALTER TABLE audit_records DROP CONSTRAINT IF EXISTS audit_records_pkey;
ALTER TABLE audit_records ADD PRIMARY KEY (chain, chain_seq, received_at);
