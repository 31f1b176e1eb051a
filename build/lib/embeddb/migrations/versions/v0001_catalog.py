"""embeddb's catalog: what is embedded how, what is waiting, who is working.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Every statement is idempotent (IF NOT EXISTS, OR REPLACE), so upgrading a database whose
catalog was created before embeddb used Alembic records it at this revision without change.

The downgrade removes everything embeddb made: for each embedded column its vector and hash
columns (and with them the HNSW index), the triggers on the user's tables, embeddb's functions
and tables. The ``embeddb`` schema itself, which holds the version table, is dropped by the
runner once the version table is empty.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
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
"""

# No '%' anywhere: the driver would read it as a placeholder.
DOWNGRADE = """
-- The vector and hash columns of every embedded column; the HNSW index goes with them.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM embeddb.columns LOOP
        IF to_regclass(quote_ident(c.table_schema) || '.' || quote_ident(c.table_name))
                IS NOT NULL THEN
            EXECUTE 'ALTER TABLE ' || quote_ident(c.table_schema) || '.'
                || quote_ident(c.table_name)
                || ' DROP COLUMN IF EXISTS ' || quote_ident(c.column_name)
                || ', DROP COLUMN IF EXISTS ' || quote_ident(c.hash_column);
        END IF;
    END LOOP;
END
$$;

-- Triggers on the user's tables: every trigger that calls one of embeddb's functions.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT tg.tgname, tg.tgrelid::regclass AS on_table
        FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
        WHERE p.pronamespace = 'embeddb'::regnamespace AND NOT tg.tgisinternal
    LOOP
        EXECUTE 'DROP TRIGGER ' || quote_ident(t.tgname) || ' ON ' || t.on_table::text;
    END LOOP;
END
$$;

-- embeddb's functions: forget_truncated() and each column's render_N and enqueue_N.
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
             WHERE p.pronamespace = 'embeddb'::regnamespace
    LOOP
        EXECUTE 'DROP FUNCTION ' || f.signature::text;
    END LOOP;
END
$$;

DROP TABLE IF EXISTS embeddb.pending, embeddb.workers, embeddb.columns;
"""


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
