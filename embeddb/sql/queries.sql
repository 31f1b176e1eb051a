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

-- set_column_backend --
UPDATE embeddb.columns SET backend = :backend WHERE id = :id AND backend IS DISTINCT FROM :backend

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

-- inbox_has_entries --
SELECT EXISTS (SELECT FROM embeddb.inbox WHERE column_id = :column_id)
    OR EXISTS (SELECT FROM embeddb.inbox_ranges WHERE column_id = :column_id)

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
-- Keys waiting in the inbox and its key ranges (bulk INSERTs not yet expanded by a worker)
-- count as pending.
SELECT c.id, c.table_schema, c.table_name, c.column_name, c.model_name, c.model_fingerprint,
       c.dimensions, c.normalize, c.backend,
       (SELECT coalesce(sum(t.rows), 0)::float8 / 300 FROM embeddb.throughput t
        WHERE t.column_id = c.id AND t.minute > now() - interval '5 minutes') AS rows_per_second,
       count(p.row_key) FILTER (WHERE p.parked_at IS NULL AND (p.claim_expires_at IS NULL
                                   OR p.claim_expires_at < now()))
           + (SELECT coalesce(sum(i.rows), 0) FROM embeddb.inbox i WHERE i.column_id = c.id)
           + (SELECT coalesce(sum(r.rows), 0) FROM embeddb.inbox_ranges r
              WHERE r.column_id = c.id)
           AS pending,
       count(p.row_key) FILTER (WHERE p.claim_expires_at >= now()) AS in_flight,
       count(p.row_key) FILTER (WHERE p.parked_at IS NOT NULL) AS parked,
       extract(epoch FROM now() - least(
           min(p.enqueued_at) FILTER (WHERE p.parked_at IS NULL),
           (SELECT min(i.enqueued_at) FROM embeddb.inbox i WHERE i.column_id = c.id),
           (SELECT min(r.enqueued_at) FROM embeddb.inbox_ranges r
            WHERE r.column_id = c.id)))::float8
           AS lag_seconds,
       (array_agg(p.last_error ORDER BY p.parked_at DESC)
            FILTER (WHERE p.parked_at IS NOT NULL))[1] AS parked_reason,
       c.fault, c.fault_since,
       greatest(extract(epoch FROM c.fault_retry_at - now()), 0)::float8 AS fault_retry_seconds,
       c.generation, c.generation_of, c.generation_started_at, c.index_deferred
FROM embeddb.columns c
LEFT JOIN embeddb.pending p ON p.column_id = c.id
GROUP BY c.id
ORDER BY c.id

-- workers --
-- A worker that says it is running but has not beaten for longer than it promised is gone
-- (killed, its machine lost): its claims expire with their leases.
SELECT worker_id, hostname, pid,
       CASE WHEN state = 'running'
                 AND heartbeat_at < now() - make_interval(secs => stale_after_seconds)
            THEN 'gone' ELSE state END AS state,
       rows_embedded, started_at,
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

-- inbox_backlog --
-- Keys of bulk INSERTs waiting in the inbox for a worker to queue them.
SELECT (SELECT coalesce(sum(rows), 0) FROM embeddb.inbox WHERE column_id = :column_id)
       + (SELECT coalesce(sum(rows), 0) FROM embeddb.inbox_ranges WHERE column_id = :column_id)

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
INSERT INTO embeddb.workers (worker_id, hostname, pid, rows_embedded, state,
                             stale_after_seconds)
VALUES (:worker_id, :hostname, :pid, :rows_embedded, :state, :stale_after_seconds)
ON CONFLICT (worker_id) DO UPDATE
SET heartbeat_at = now(), rows_embedded = EXCLUDED.rows_embedded, state = EXCLUDED.state

-- catalog_versioned --
SELECT to_regclass('embeddb.alembic_version') IS NOT NULL

-- catalog_version --
SELECT version_num FROM embeddb.alembic_version

-- worker_compatibility_exists --
SELECT to_regclass('embeddb.worker_compatibility') IS NOT NULL

-- oldest_worker_revision --
-- The oldest revision whose workers this schema still serves (see migration 0008).
SELECT oldest_worker_revision FROM embeddb.worker_compatibility

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
WITH inbox AS (DELETE FROM embeddb.inbox WHERE column_id = :id),
     ranges AS (DELETE FROM embeddb.inbox_ranges WHERE column_id = :id)
DELETE FROM embeddb.pending WHERE column_id = :id

-- index_state --
-- The index an embedded column actually has: access method, operator class, options.
SELECT am.amname AS method, opc.opcname AS opclass, c.reloptions AS options
FROM pg_class c
JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_am am ON am.oid = c.relam
JOIN pg_opclass opc ON opc.oid = i.indclass[0]
WHERE c.oid = to_regclass(:qualified_index)

-- render_context --
-- Whether the text of every given column is the same in every session: strings, integers,
-- numeric, booleans, enums, network addresses, bit strings, uuid, json, xml, tsvector, and
-- domains and arrays of those. Anything else (times, floats, money, bytea, composites...) may
-- depend on a setting. And the database's encoding.
WITH RECURSIVE source(type_oid) AS (
    SELECT a.atttypid FROM pg_attribute a
    WHERE a.attrelid = to_regclass(:qualified_table) AND a.attname = ANY(:columns)
      AND a.attnum > 0 AND NOT a.attisdropped
  UNION
    SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
    FROM source s JOIN pg_type t ON t.oid = s.type_oid
    WHERE t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0)
)
SELECT coalesce(bool_and(
           t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0)
           OR t.typcategory IN ('S', 'B', 'E', 'I', 'V')
           OR t.oid = ANY(CAST('{int2,int4,int8,numeric,oid,uuid,json,jsonb,xml,tsvector}'
                               AS regtype[]))), true) AS session_independent,
       current_setting('server_encoding') AS encoding
FROM source s JOIN pg_type t ON t.oid = s.type_oid

-- table_exists --
SELECT to_regclass(:qualified_table) IS NOT NULL

-- metrics_queue --
-- Per column, for a Prometheus scrape: what waits, what is being embedded, what is parked, and
-- the age of the oldest entry not parked. One pass over embeddb.pending.
SELECT c.table_schema || '.' || c.table_name || '.' || c.column_name AS qualified_column,
       count(p.row_key) FILTER (WHERE p.parked_at IS NULL AND (p.claim_expires_at IS NULL
                                   OR p.claim_expires_at < now()))
           + (SELECT coalesce(sum(i.rows), 0) FROM embeddb.inbox i WHERE i.column_id = c.id)
           + (SELECT coalesce(sum(r.rows), 0) FROM embeddb.inbox_ranges r
              WHERE r.column_id = c.id)
           AS pending,
       count(p.row_key) FILTER (WHERE p.claim_expires_at >= now()) AS in_flight,
       count(p.row_key) FILTER (WHERE p.parked_at IS NOT NULL) AS parked,
       coalesce(extract(epoch FROM now() - least(
           min(p.enqueued_at) FILTER (WHERE p.parked_at IS NULL),
           (SELECT min(i.enqueued_at) FROM embeddb.inbox i WHERE i.column_id = c.id),
           (SELECT min(r.enqueued_at) FROM embeddb.inbox_ranges r WHERE r.column_id = c.id))),
           0)::float8 AS lag_seconds
FROM embeddb.columns c
LEFT JOIN embeddb.pending p ON p.column_id = c.id
GROUP BY c.id
ORDER BY c.id

-- doctor_index_state --
-- Whether a column's HNSW index exists and is valid, and whether a worker is building it now
-- (backfill holds the advisory lock (hashtext('embeddb.index'), column id) while it builds).
SELECT c.index_deferred,
       i.indexrelid IS NOT NULL AS index_exists,
       coalesce(i.indisvalid, false) AS index_valid,
       EXISTS (
           SELECT 1 FROM pg_locks l
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND l.classid = hashtext('embeddb.index')::oid AND l.objid = c.id::oid
       ) AS being_built
FROM embeddb.columns c
LEFT JOIN pg_index i ON i.indexrelid = to_regclass(
    quote_ident(c.table_schema) || '.' || quote_ident(c.index_name))
WHERE c.id = :column_id

-- doctor_functions --
-- embeddb's per-column functions (render_N, enqueue_N) and the catalog id N they belong to.
SELECT p.oid::regprocedure::text AS signature, p.proname AS name,
       substring(p.proname FROM '[0-9]+$')::int AS column_id
FROM pg_proc p
WHERE p.pronamespace = to_regnamespace('embeddb') AND p.proname ~ '^(render|enqueue)_[0-9]+$'
ORDER BY p.proname

-- doctor_triggers --
-- Every trigger that calls one of embeddb's functions, with the catalog id it serves: the N of
-- enqueue_N, or forget_truncated's argument.
SELECT t.tgname AS name, t.tgrelid::regclass::text AS on_table, t.tgrelid AS table_oid,
       p.proname AS function_name,
       CASE WHEN p.proname ~ '^enqueue_[0-9]+$' THEN substring(p.proname FROM '[0-9]+$')::int
            WHEN p.proname = 'forget_truncated' AND t.tgnargs = 1
                THEN nullif(split_part(encode(t.tgargs, 'escape'), '\000', 1), '')::int
       END AS column_id
FROM pg_trigger t
JOIN pg_proc p ON p.oid = t.tgfoid
WHERE p.pronamespace = to_regnamespace('embeddb') AND NOT t.tgisinternal
ORDER BY t.tgrelid, t.tgname

-- doctor_expired_claims --
-- Claims whose lease ran out more than :grace_seconds ago and that no worker has taken since:
-- their worker died and nobody is left to take them.
SELECT c.table_schema || '.' || c.table_name || '.' || c.column_name AS qualified_column,
       p.claimed_by, count(*) AS rows,
       extract(epoch FROM now() - min(p.claim_expires_at))::float8 AS overdue_seconds
FROM embeddb.pending p
JOIN embeddb.columns c ON c.id = p.column_id
WHERE p.claim_token IS NOT NULL
  AND p.claim_expires_at < now() - make_interval(secs => :grace_seconds)
GROUP BY c.id, p.claimed_by
ORDER BY c.id, p.claimed_by

-- doctor_silent_workers --
-- Workers that say they are running but have not sent a heartbeat for :seconds.
SELECT worker_id, hostname, pid,
       extract(epoch FROM now() - heartbeat_at)::float8 AS silent_seconds
FROM embeddb.workers
WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => :seconds)
ORDER BY heartbeat_at

-- doctor_live_workers --
SELECT count(*) FROM embeddb.workers
WHERE state = 'running' AND heartbeat_at >= now() - make_interval(secs => :seconds)

-- doctor_parked --
SELECT c.id, c.table_schema || '.' || c.table_name || '.' || c.column_name AS qualified_column,
       count(*) AS rows
FROM embeddb.pending p
JOIN embeddb.columns c ON c.id = p.column_id
WHERE p.parked_at IS NOT NULL
GROUP BY c.id
ORDER BY c.id

-- doctor_table_triggers --
SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(:qualified_table) AND NOT tgisinternal

-- embeddb_schema_usage --
SELECT has_schema_privilege('embeddb', 'USAGE')

-- missing_table_privileges --
-- Of the (table, privilege) pairs asked, those the current role lacks; absent tables are skipped.
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS table_name, t.privilege
FROM unnest(CAST(:tables AS text[]), CAST(:privileges AS text[])) WITH ORDINALITY
         AS t(table_name, privilege, n)
JOIN pg_class c ON c.oid = to_regclass(t.table_name)
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT has_table_privilege(c.oid, t.privilege)
ORDER BY t.n

-- missing_column_privileges --
-- Of the (table, column, privilege) triples asked, those the current role lacks on the column
-- and on the whole table; absent tables and columns are skipped.
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS table_name,
       t.column_name, t.privilege
FROM unnest(CAST(:tables AS text[]), CAST(:columns AS text[]), CAST(:privileges AS text[]))
         WITH ORDINALITY AS t(table_name, column_name, privilege, n)
JOIN pg_class c ON c.oid = to_regclass(t.table_name)
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = t.column_name AND NOT a.attisdropped
WHERE NOT has_column_privilege(c.oid, a.attnum, t.privilege)
ORDER BY t.n

-- owns_table --
-- Whether the current role may act as the table's owner (owns it, or is a member of its owner).
SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = to_regclass(:qualified_table)

-- park --
-- Set rows aside at once with a reason that no retry would change (rows hidden by row-level
-- security); `embeddb retry` brings them back.
UPDATE embeddb.pending
SET parked_at = now(), last_error = :reason,
    claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL
WHERE column_id = :column_id AND claim_token = :token
  AND row_key IN (SELECT jsonb_array_elements(CAST(:keys AS jsonb)))

-- row_security_active --
SELECT row_security_active(CAST(:table AS regclass)) AS active, current_user AS role,
       (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = CAST(:table AS regclass)) AS table_name

-- release_column_claims --
UPDATE embeddb.pending
SET claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL
WHERE column_id = :column_id AND claimed_by = :worker_id

-- record_fault --
UPDATE embeddb.columns
SET fault = :fault, fault_since = CASE WHEN fault IS DISTINCT FROM :fault THEN now()
                                       ELSE coalesce(fault_since, now()) END,
    fault_retry_at = now() + make_interval(secs => :retry_seconds)
WHERE id = :column_id

-- clear_fault --
UPDATE embeddb.columns SET fault = NULL, fault_since = NULL, fault_retry_at = NULL
WHERE id = :column_id AND fault IS NOT NULL

-- table_is_partitioned --
SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(:table)), false)

-- hnsw_index_ready --
-- Whether a valid HNSW index serves the column (a partitioned table's is valid once every
-- partition has its own): on the column itself, or on an expression of it (a quantised index,
-- which depends on the column in pg_depend).
SELECT EXISTS (
    SELECT 1
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_am am ON am.oid = c.relam
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = :column
    WHERE i.indrelid = to_regclass(:table) AND am.amname = 'hnsw' AND i.indisvalid
      AND (a.attnum = i.indkey[0] OR (i.indkey[0] = 0 AND EXISTS (
          SELECT 1 FROM pg_depend d
          WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
            AND d.refobjid = i.indrelid AND d.refobjsubid = a.attnum))))

-- set_column_chunking --
UPDATE embeddb.columns
SET chunking = CAST(:chunking AS jsonb), chunk_table = :chunk_table, updated_at = now()
WHERE id = :id

-- set_fulltext --
UPDATE embeddb.columns SET fulltext_config = :config, fulltext_column = :fulltext_column
WHERE id = :id

-- fulltext_config_exists --
SELECT EXISTS (
    SELECT FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace
    WHERE c.cfgname = :name
      AND (n.nspname = :schema OR (CAST(:schema AS text) IS NULL
                                   AND pg_ts_config_is_visible(c.oid))))

-- live_column_id --
-- The live generation's catalog id, read once the table's ACCESS SHARE lock is held (0009).
SELECT embeddb.live_column_id(CAST(:table AS regclass), :column)

-- column_generations --
-- The next or previous generation of a column (see embeddb.generations).
SELECT * FROM embeddb.columns
WHERE table_schema = :schema AND table_name = :table AND generation_of = :column
ORDER BY id

-- set_generation --
UPDATE embeddb.columns SET
    column_name = :column, hash_column = :hash_column, index_name = :index_name,
    generation = :generation, generation_of = :generation_of, updated_at = now()
WHERE id = :id

-- start_generation --
UPDATE embeddb.columns SET
    generation = 'next', generation_of = :generation_of,
    generation_started_at = clock_timestamp(), index_deferred = :index_deferred
WHERE id = :id

-- generation_backlog --
-- Every queue entry of a generation, parked ones included, and its inbox's keys: a swap waits
-- for all of them.
SELECT (SELECT count(*) FROM embeddb.pending WHERE column_id = :column_id)
       + (SELECT coalesce(sum(rows), 0) FROM embeddb.inbox WHERE column_id = :column_id)
       + (SELECT coalesce(sum(rows), 0) FROM embeddb.inbox_ranges WHERE column_id = :column_id)

-- lock_generation --
-- One worker swaps; NO KEY: a worker storing vectors meanwhile (throughput's foreign key
-- takes KEY SHARE on this row) is not blocked by it, so the two cannot deadlock.
SELECT generation, index_deferred FROM embeddb.columns WHERE id = :column_id FOR NO KEY UPDATE

-- generation_rate --
-- Rows a next generation stored per second over the last 5 minutes, or since it started.
WITH since AS (
    SELECT greatest(generation_started_at, now() - interval '5 minutes') AS at
    FROM embeddb.columns WHERE id = :column_id
)
SELECT coalesce(sum(t.rows), 0)::float8
       / greatest(extract(epoch FROM now() - (SELECT at FROM since)), 1)::float8
FROM embeddb.throughput t
WHERE t.column_id = :column_id AND t.minute >= date_trunc('minute', (SELECT at FROM since))

-- set_lock_timeout --
-- For the rest of this transaction only: a generation swap (or an inbox expansion) waits this
-- long for its lock.
SELECT set_config('lock_timeout', :timeout, true)

-- calibrations_readable --
-- Whether this role may read the calibrations (and the catalog they join), asked without
-- naming them, so a role with no rights on schema embeddb gets false, not an error.
SELECT coalesce((
    SELECT has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(cal.oid, 'SELECT')
           AND has_table_privilege(col.oid, 'SELECT')
    FROM pg_namespace n
    JOIN pg_class cal ON cal.relnamespace = n.oid AND cal.relname = 'calibrations'
    JOIN pg_class col ON col.relnamespace = n.oid AND col.relname = 'columns'
    WHERE n.nspname = 'embeddb'), false)

-- column_calibration --
-- A column's calibration, whether its index is still the one measured, and the table's rows now.
-- The filtered points count only if measured with this curve (filtered_at = calibrated_at): a
-- worker from before revision 0017 recalibrates without them. They are read through the row's
-- jsonb, so that a search by this embeddb in a database still at revision 0016 (no such
-- columns yet) finds none instead of failing.
SELECT cal.k, cal.samples, cal.exact_ms, cal.curve, cal.table_rows, cal.calibrated_at,
       CASE WHEN measured.current THEN measured.row -> 'filtered'
            ELSE '[]'::jsonb END AS filtered,
       CASE WHEN measured.current THEN (measured.row ->> 'exact_p95_ms')::float8
            END AS exact_p95_ms,
       measured.current IS TRUE AS filtered_current,
       cal.index_oid IS NOT DISTINCT FROM
           to_regclass(format('%I.%I', col.table_schema, col.index_name))::oid AS same_index,
       greatest(coalesce(t.reltuples, 0), 0)::float8 AS rows_now
FROM embeddb.columns col
JOIN embeddb.calibrations cal ON cal.column_id = col.id
CROSS JOIN LATERAL (
    SELECT to_jsonb(cal) AS row,
           (to_jsonb(cal) ->> 'filtered_at')::timestamptz = cal.calibrated_at AS current
) AS measured
LEFT JOIN pg_class t ON t.oid = to_regclass(format('%I.%I', col.table_schema, col.table_name))
WHERE col.table_schema = coalesce(:schema, current_schema()) AND col.table_name = :table
  AND col.column_name = :column

-- save_calibration --
INSERT INTO embeddb.calibrations
    (column_id, table_rows, index_oid, k, samples, exact_ms, curve, filtered, exact_p95_ms,
     filtered_at)
VALUES (:column_id, :table_rows, to_regclass(:index)::oid, :k, :samples, :exact_ms,
        CAST(:curve AS jsonb), CAST(:filtered AS jsonb), :exact_p95_ms, now())
ON CONFLICT (column_id) DO UPDATE
SET calibrated_at = now(), table_rows = excluded.table_rows, index_oid = excluded.index_oid,
    k = excluded.k, samples = excluded.samples, exact_ms = excluded.exact_ms,
    curve = excluded.curve, filtered = excluded.filtered,
    exact_p95_ms = excluded.exact_p95_ms, filtered_at = now()

-- partial_hnsw_indexes --
-- The valid partial HNSW indexes on the column (CREATE INDEX ... USING hnsw ... WHERE ...).
SELECT c.relname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = to_regclass(:table) AND am.amname = 'hnsw' AND a.attname = :column
  AND i.indisvalid AND i.indpred IS NOT NULL
ORDER BY c.relname

-- column_update_grantees --
-- The roles other than the owner that hold UPDATE on a column by a column-level grant (a
-- table-level UPDATE already covers the columns added later).
SELECT DISTINCT pg_get_userbyid(acl.grantee) AS grantee
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
CROSS JOIN LATERAL aclexplode(a.attacl) AS acl
WHERE a.attrelid = to_regclass(:table) AND a.attname = :column
  AND acl.privilege_type = 'UPDATE' AND acl.grantee NOT IN (0, c.relowner)
ORDER BY 1

-- table_grantees --
-- The roles other than the owner holding privileges on a table, with those privileges.
SELECT pg_get_userbyid(acl.grantee) AS grantee,
       string_agg(acl.privilege_type, ', ' ORDER BY acl.privilege_type) AS privileges
FROM pg_class c
CROSS JOIN LATERAL aclexplode(c.relacl) AS acl
WHERE c.oid = to_regclass(:table) AND acl.grantee NOT IN (0, c.relowner)
GROUP BY acl.grantee
ORDER BY 1
