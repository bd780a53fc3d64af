-- `audit query --task` and `--user` read audit_records through one BRIN
-- index of Bloom filters over task_id and actor_id, instead of through
-- audit_batch_index. That table's GIN indexes took an entry per distinct id
-- of every batch: measured here, 1.3-4.3 us of PostgreSQL time per written
-- record, most of what the trail's indexes cost. A BRIN index costs a
-- writer almost nothing: a new block range is summarized after it fills
-- (autosummarize: by autovacuum, off the writer's transaction), and until
-- then every query reads it whole.
--
-- What a query pays instead: it reads every block range (16 pages, about
-- 128 KB) whose filter may hold the id, false positives about 1% of ranges
-- that do not, and rechecks each row. A task's few records cost a few
-- ranges; a user with records everywhere costs a scan of most of the table
-- (bound it with --from/--to, which the occurred_at BRIN serves).
--
-- Sized for a range's rows: 16 pages of 700-1,000 byte records hold 130-190
-- records, 500 distinct ids leave room for smaller records.
CREATE INDEX IF NOT EXISTS audit_records_ids_bloom ON audit_records USING brin (
    task_id text_bloom_ops (n_distinct_per_range = 500, false_positive_rate = 0.01),
    actor_id text_bloom_ops (n_distinct_per_range = 500, false_positive_rate = 0.01)
) WITH (pages_per_range = 16, autosummarize = on);

DROP TABLE IF EXISTS audit_batch_index;
