-- embeddb's own schema: what is embedded how (columns), what is waiting (pending),
-- and who is working (workers). Every object embeddb creates for a user's column is
-- listed in embeddb.columns, so this schema is the one place to look.

CREATE SCHEMA IF NOT EXISTS embeddb;

CREATE TABLE IF NOT EXISTS embeddb.columns (
    id                serial PRIMARY KEY,
    table_schema      text NOT NULL,
    table_name        text NOT NULL,
    column_name       text NOT NULL,
    hash_column       text NOT NULL,
    key_columns       text[] NOT NULL,
    source_columns    text[] NOT NULL,
    template          text NOT NULL,
    model_name        text NOT NULL,
    model_fingerprint text NOT NULL,
    dimensions        integer NOT NULL CHECK (dimensions > 0),
    normalize         boolean NOT NULL,
    query_prompt      text,
    document_prompt   text,
    distance          text NOT NULL CHECK (distance IN ('cosine', 'inner_product', 'l2')),
    vector_type       text NOT NULL DEFAULT 'vector',
    index_name        text,
    index_options     jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (table_schema, table_name, column_name)
);

-- One entry per row whose vector is missing or out of date. The trigger upserts it, the
-- worker claims it with a lease (claim_token, claim_expires_at) and deletes it once the
-- vector is stored. Failed rows wait until run_after; after too many attempts they are parked.
CREATE TABLE IF NOT EXISTS embeddb.pending (
    column_id         integer NOT NULL REFERENCES embeddb.columns (id) ON DELETE CASCADE,
    row_key           jsonb NOT NULL,
    enqueued_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts          integer NOT NULL DEFAULT 0,
    run_after         timestamptz NOT NULL DEFAULT now(),
    claim_token       uuid,
    claimed_by        text,
    claim_expires_at  timestamptz,
    last_error        text,
    parked_at         timestamptz,
    PRIMARY KEY (column_id, row_key)
);

CREATE INDEX IF NOT EXISTS pending_claimable
    ON embeddb.pending (column_id, enqueued_at) WHERE parked_at IS NULL;

CREATE TABLE IF NOT EXISTS embeddb.workers (
    worker_id         text PRIMARY KEY,
    hostname          text NOT NULL,
    pid               integer NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    heartbeat_at      timestamptz NOT NULL DEFAULT now(),
    rows_embedded     bigint NOT NULL DEFAULT 0,
    state             text NOT NULL DEFAULT 'running'
);

-- TRUNCATE fires no row triggers: forget the column's pending rows in one go.
CREATE OR REPLACE FUNCTION embeddb.forget_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM embeddb.pending WHERE column_id = TG_ARGV[0]::integer;
    RETURN NULL;
END
$$;
