"""Cheaper writes: INSERT and DELETE triggers once per statement, and no foreign key on the queue.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

* Every column's ``enqueue_N()`` and triggers are re-created as :mod:`embeddb.column_sql`
  writes them now: on a plain table, INSERT and DELETE fire once per statement and read a
  transition table, so a COPY or a batch INSERT queues its rows in one statement with one
  NOTIFY; UPDATE of a source or key column, and every write to a partitioned table, keep
  their row triggers.
* ``embeddb.pending`` loses its foreign key to ``embeddb.columns``: it cost every queued row a
  referential check; uninstalling a column now deletes its queue entries itself.

Downgrading restores the foreign key (dropping entries of columns no longer in the catalog)
and the row triggers; the new ``enqueue_N()`` serves row triggers as the old one did.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.engine import Connection

from embeddb import catalog, verbatim

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

DROP_FOREIGN_KEY = """
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'embeddb.pending'::regclass AND contype = 'f'
    LOOP
        EXECUTE 'ALTER TABLE embeddb.pending DROP CONSTRAINT ' || quote_ident(c.conname);
    END LOOP;
END
$$
"""

RESTORE_FOREIGN_KEY = [
    "DELETE FROM embeddb.pending WHERE column_id NOT IN (SELECT id FROM embeddb.columns)",
    "ALTER TABLE embeddb.pending ADD CONSTRAINT pending_column_id_fkey FOREIGN KEY (column_id)"
    " REFERENCES embeddb.columns (id) ON DELETE CASCADE",
]


def upgrade_on(conn: Connection) -> None:
    verbatim.execute(conn, DROP_FOREIGN_KEY)
    for entry in catalog.list_entries(conn):
        # no inbox yet (revision 0012 adds it and refreshes the triggers again)
        catalog.refresh_triggers(conn, entry, inbox=False)  # says why when it leaves a column


def downgrade_on(conn: Connection) -> None:
    for statement in RESTORE_FOREIGN_KEY:
        verbatim.execute(conn, statement)
    for entry in catalog.list_entries(conn):
        catalog.refresh_triggers(conn, entry, per_row=True, inbox=False)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
