-- Static queries, in SQLAlchemy text() style (:name binds). Row keys travel as one JSON
-- array (:keys), so a batch is one statement whatever its size.

-- server_version --
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version

-- pgvector_installed --
SELECT extversion FROM pg_extension WHERE extname = 'vector'

-- pgvector_available --
SELECT default_version FROM pg_available_extensions WHERE name = 'vector'

-- catalog_exists --
SELECT to_regclass('embeddb.columns') IS NOT NULL

-- lock_catalog --
SELECT pg_advisory_xact_lock(hashtext('embeddb.catalog'))

-- table_columns --
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute a
WHERE a.attrelid = to_regclass(:qualified_table)
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum

-- current_schema --
SELECT current_schema()

-- get_column --
SELECT * FROM embeddb.columns
WHERE table_schema = :schema AND table_name = :table AND column_name = :column

-- list_columns --
SELECT * FROM embeddb.columns ORDER BY id

-- insert_column --
INSERT INTO embeddb.columns (
    table_schema, table_name, column_name, hash_column, key_columns, source_columns,
    template, model_name, model_fingerprint, dimensions, normalize, query_prompt,
    document_prompt, distance, vector_type, index_name, index_options)
VALUES (
    :schema, :table, :column, :hash_column, :key_columns, :source_columns,
    :template, :model_name, :model_fingerprint, :dimensions, :normalize, :query_prompt,
    :document_prompt, :distance, :vector_type, :index_name, CAST(:index_options AS jsonb))
RETURNING id

-- update_column --
UPDATE embeddb.columns SET
    key_columns = :key_columns, source_columns = :source_columns, template = :template,
    distance = :distance, vector_type = :vector_type, index_name = :index_name,
    index_options = CAST(:index_options AS jsonb), updated_at = now()
WHERE id = :id

-- delete_column --
DELETE FROM embeddb.columns WHERE id = :id

-- claim --
-- Take up to :limit ready rows of one column under a lease. SKIP LOCKED lets many workers
-- claim side by side; an expired lease (a dead worker) makes a row claimable again.
WITH ready AS (
    SELECT column_id, row_key
    FROM embeddb.pending
    WHERE column_id = :column_id
      AND parked_at IS NULL
      AND run_after <= now()
      AND (claim_expires_at IS NULL OR claim_expires_at < now())
    ORDER BY enqueued_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE embeddb.pending AS p
SET claim_token = :token,
    claimed_by = :worker_id,
    claim_expires_at = now() + make_interval(secs => :lease_seconds)
FROM ready
WHERE p.column_id = ready.column_id AND p.row_key = ready.row_key
RETURNING p.row_key, p.attempts

-- complete --
-- Forget rows whose vector was stored, but only if this worker still holds them.
DELETE FROM embeddb.pending
WHERE column_id = :column_id AND claim_token = :token
  AND row_key IN (SELECT jsonb_array_elements(CAST(:keys AS jsonb)))

-- release --
-- Hand rows back without counting an attempt (the source changed, or the model is down).
UPDATE embeddb.pending
SET claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL
WHERE column_id = :column_id AND claim_token = :token
  AND row_key IN (SELECT jsonb_array_elements(CAST(:keys AS jsonb)))

-- fail --
-- Count a failed attempt per row, back off exponentially, and park after :max_attempts.
UPDATE embeddb.pending AS p
SET attempts = p.attempts + 1,
    last_error = f.error,
    claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL,
    run_after = now() + make_interval(
        secs => least(:backoff_seconds * power(2, p.attempts), :backoff_max_seconds)),
    parked_at = CASE WHEN p.attempts + 1 >= :max_attempts THEN now() END
FROM jsonb_to_recordset(CAST(:failures AS jsonb)) AS f(row_key jsonb, error text)
WHERE p.column_id = :column_id AND p.claim_token = :token AND p.row_key = f.row_key

-- release_worker_claims --
UPDATE embeddb.pending
SET claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL
WHERE claimed_by = :worker_id

-- retry_parked --
UPDATE embeddb.pending
SET parked_at = NULL, attempts = 0, run_after = now(), last_error = NULL
WHERE parked_at IS NOT NULL AND (CAST(:column_id AS integer) IS NULL OR column_id = :column_id)

-- status --
-- Per column: the queue's state, its lag, and rows stored per second over the last 5 minutes.
SELECT c.id, c.table_schema, c.table_name, c.column_name, c.model_name, c.model_fingerprint,
       c.dimensions, c.normalize,
       (SELECT coalesce(sum(t.rows), 0)::float8 / 300 FROM embeddb.throughput t
        WHERE t.column_id = c.id AND t.minute > now() - interval '5 minutes') AS rows_per_second,
       count(p.row_key) FILTER (WHERE p.parked_at IS NULL AND (p.claim_expires_at IS NULL
                                   OR p.claim_expires_at < now())) AS pending,
       count(p.row_key) FILTER (WHERE p.claim_expires_at >= now()) AS in_flight,
       count(p.row_key) FILTER (WHERE p.parked_at IS NOT NULL) AS parked,
       extract(epoch FROM now() - min(p.enqueued_at) FILTER (WHERE p.parked_at IS NULL))::float8
           AS lag_seconds
FROM embeddb.columns c
LEFT JOIN embeddb.pending p ON p.column_id = c.id
GROUP BY c.id
ORDER BY c.id

-- workers --
SELECT worker_id, hostname, pid, state, rows_embedded, started_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds
FROM embeddb.workers
WHERE heartbeat_at > now() - interval '1 hour'
ORDER BY started_at

-- record_throughput --
INSERT INTO embeddb.throughput AS t (column_id, minute, rows)
VALUES (:column_id, date_trunc('minute', now()), :rows)
ON CONFLICT (column_id, minute) DO UPDATE SET rows = t.rows + EXCLUDED.rows

-- prune_throughput --
DELETE FROM embeddb.throughput WHERE minute < now() - interval '1 day'

-- column_backlog --
SELECT count(*) FROM embeddb.pending WHERE column_id = :column_id AND parked_at IS NULL

-- table_row_estimate --
-- The planner's row count of a table: -1 before its first VACUUM or ANALYZE.
SELECT coalesce((SELECT reltuples FROM pg_class WHERE oid = to_regclass(:table)), -1)

-- lock_column_for_index --
-- One worker at a time sets a column's index aside or builds it again; the others skip.
SELECT index_deferred FROM embeddb.columns WHERE id = :column_id FOR UPDATE SKIP LOCKED

-- set_index_deferred --
UPDATE embeddb.columns SET index_deferred = :deferred WHERE id = :column_id

-- index_is_deferred --
SELECT index_deferred FROM embeddb.columns WHERE id = :column_id

-- try_index_build_lock --
SELECT pg_try_advisory_lock(hashtext('embeddb.index'), :column_id)

-- index_build_unlock --
SELECT pg_advisory_unlock(hashtext('embeddb.index'), :column_id)

-- index_is_invalid --
SELECT NOT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:qualified_index)

-- parked_rows --
SELECT row_key, attempts, last_error, parked_at FROM embeddb.pending
WHERE column_id = :column_id AND parked_at IS NOT NULL
ORDER BY parked_at
LIMIT :limit

-- heartbeat --
INSERT INTO embeddb.workers (worker_id, hostname, pid, rows_embedded, state)
VALUES (:worker_id, :hostname, :pid, :rows_embedded, :state)
ON CONFLICT (worker_id) DO UPDATE
SET heartbeat_at = now(), rows_embedded = EXCLUDED.rows_embedded, state = EXCLUDED.state

-- catalog_versioned --
SELECT to_regclass('embeddb.alembic_version') IS NOT NULL

-- catalog_version --
SELECT version_num FROM embeddb.alembic_version

-- create_catalog_schema --
CREATE SCHEMA IF NOT EXISTS embeddb

-- drop_catalog_version_table --
DROP TABLE embeddb.alembic_version

-- drop_catalog_schema --
-- Once every revision is undone only the version table was left; RESTRICT, so that anything
-- else someone put in the schema stops the drop rather than vanishing with it.
DROP SCHEMA embeddb RESTRICT

-- update_column_model --
UPDATE embeddb.columns SET
    model_name = :model_name, model_fingerprint = :model_fingerprint,
    dimensions = :dimensions, normalize = :normalize, query_prompt = :query_prompt,
    document_prompt = :document_prompt, distance = :distance, updated_at = now()
WHERE id = :id

-- forget_pending --
DELETE FROM embeddb.pending WHERE column_id = :id

-- index_state --
-- The index an embedded column actually has: access method, operator class, options.
SELECT am.amname AS method, opc.opcname AS opclass, c.reloptions AS options
FROM pg_class c
JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_am am ON am.oid = c.relam
JOIN pg_opclass opc ON opc.oid = i.indclass[0]
WHERE c.oid = to_regclass(:qualified_index)

-- set_fulltext --
UPDATE embeddb.columns SET fulltext_config = :config, fulltext_column = :fulltext_column
WHERE id = :id

-- fulltext_config_exists --
SELECT EXISTS (
    SELECT FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace
    WHERE c.cfgname = :name
      AND (n.nspname = :schema OR (CAST(:schema AS text) IS NULL
                                   AND pg_ts_config_is_visible(c.oid))))
