"""Full-text indexes kept with the vectors.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-29

A column declared with ``fulltext=`` gets a stored ``tsvector`` column next to its vector,
written by the worker with the vector, and a GIN index. Its BM25 statistics are
read from the table and the index at query time, so nothing else is kept here but the
column's configuration.

``embeddb.fulltext_vector`` makes a ``tsvector`` that never fails on size: a text whose
``tsvector`` would pass PostgreSQL's 1 MB limit is indexed by its longest prefix that fits.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE embeddb.columns
    ADD COLUMN IF NOT EXISTS fulltext_config text,
    ADD COLUMN IF NOT EXISTS fulltext_column text;

CREATE OR REPLACE FUNCTION embeddb.fulltext_vector(config regconfig, body text)
RETURNS tsvector LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    kept integer;
BEGIN
    -- Far below the limit (1 MB of lexemes): no subtransaction, the common case stays cheap.
    IF body IS NULL OR octet_length(body) < 500000 THEN
        RETURN to_tsvector(config, body);
    END IF;
    kept := length(body);
    LOOP
        BEGIN
            RETURN to_tsvector(config, left(body, kept));
        EXCEPTION WHEN program_limit_exceeded THEN
            kept := kept / 2;
        END;
    END LOOP;
END
$$;
"""

DOWNGRADE = """
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM embeddb.columns WHERE fulltext_column IS NOT NULL LOOP
        IF to_regclass(quote_ident(c.table_schema) || '.' || quote_ident(c.table_name))
                IS NOT NULL THEN
            EXECUTE 'ALTER TABLE ' || quote_ident(c.table_schema) || '.'
                || quote_ident(c.table_name)
                || ' DROP COLUMN IF EXISTS ' || quote_ident(c.fulltext_column);
        END IF;
    END LOOP;
END
$$;

DROP FUNCTION IF EXISTS embeddb.fulltext_vector(regconfig, text);
ALTER TABLE embeddb.columns
    DROP COLUMN IF EXISTS fulltext_config,
    DROP COLUMN IF EXISTS fulltext_column;
"""


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
