"""Generations: a column's new vectors built beside the old ones, then swapped in.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

A model change (model, dimensions, prompts, normalisation) no longer clears a column: it adds
a second catalog row for the same column, its *next generation*, with its own vector and hash
columns (``<column>__next``), index, render and trigger functions, which the worker fills like
any column. Searches keep reading the live generation until the next one is complete; then one
transaction renames the columns and updates both catalog rows (``embeddb.generations``).

* ``columns.generation``: ``live`` (what searches read), ``next`` (being built) or
  ``previous`` (swapped out, kept until ``embeddb model finish`` or ``rollback``).
* ``columns.generation_of``: for a next or previous generation, the column name searches use.
* ``columns.generation_started_at``: when the change began, for ``status``'s rate and ETA.
* ``embeddb.live_column_id(table, column)``: the id of the live generation, read after taking
  the table's ACCESS SHARE lock, so a query helper that embeds its text with that generation's
  model also reads that generation's vectors (a swap waits for the lock, and is seen once it
  has committed).
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE embeddb.columns
    ADD COLUMN IF NOT EXISTS generation text NOT NULL DEFAULT 'live'
        CHECK (generation IN ('live', 'next', 'previous')),
    ADD COLUMN IF NOT EXISTS generation_of text,
    ADD COLUMN IF NOT EXISTS generation_started_at timestamptz;

CREATE OR REPLACE FUNCTION embeddb.live_column_id(on_table regclass, column_name text)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    live integer;
BEGIN
    -- VOLATILE: the SELECT below takes a fresh snapshot, after the lock is held.
    EXECUTE 'LOCK TABLE ' || on_table::text || ' IN ACCESS SHARE MODE';
    SELECT c.id INTO live FROM embeddb.columns c JOIN pg_class r ON r.oid = on_table
        JOIN pg_namespace n ON n.oid = r.relnamespace
    WHERE c.table_schema = n.nspname AND c.table_name = r.relname
      AND c.column_name = live_column_id.column_name;
    RETURN live;
END
$$;
"""

DOWNGRADE = """
DROP FUNCTION IF EXISTS embeddb.live_column_id(regclass, text);
ALTER TABLE embeddb.columns
    DROP COLUMN IF EXISTS generation,
    DROP COLUMN IF EXISTS generation_of,
    DROP COLUMN IF EXISTS generation_started_at;
"""


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
