"""Chunked columns: a column's chunk settings, and the chunk table embeddb manages for it.

Revision ID: 0007
Revises: 0003
Create Date: 2026-11-23

``chunking`` holds ``{"max_tokens", "overlap", "max_chars"}`` for a column whose text is split
into chunks (NULL for one vector per row); ``chunk_table`` names the table in the parent's
schema that holds the chunks (parent key, chunk number, span, text, vector, hash).

The downgrade drops every chunk table, the triggers that clear chunks with their parent, and
their functions (``embeddb.chunks_gone_N``).
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE embeddb.columns
    ADD COLUMN IF NOT EXISTS chunking jsonb,
    ADD COLUMN IF NOT EXISTS chunk_table text;
"""

DOWNGRADE = """
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT tg.tgname, tg.tgrelid::regclass AS on_table
        FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
        WHERE p.pronamespace = 'embeddb'::regnamespace AND left(p.proname, 12) = 'chunks_gone_'
          AND NOT tg.tgisinternal
    LOOP
        EXECUTE 'DROP TRIGGER ' || quote_ident(t.tgname) || ' ON ' || t.on_table::text;
    END LOOP;
    FOR t IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
             WHERE p.pronamespace = 'embeddb'::regnamespace AND left(p.proname, 12) = 'chunks_gone_'
    LOOP
        EXECUTE 'DROP FUNCTION ' || t.signature::text;
    END LOOP;
    FOR t IN SELECT table_schema, chunk_table FROM embeddb.columns WHERE chunk_table IS NOT NULL
    LOOP
        EXECUTE 'DROP TABLE IF EXISTS ' || quote_ident(t.table_schema) || '.'
            || quote_ident(t.chunk_table);
    END LOOP;
END
$$;
ALTER TABLE embeddb.columns DROP COLUMN IF EXISTS chunking, DROP COLUMN IF EXISTS chunk_table;
"""


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
