"""Cheaper bulk writes: an INSERT of many rows leaves one inbox entry, not one queue entry a row.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

* ``embeddb.inbox`` holds, per INSERT statement of at least
  :data:`embeddb.column_sql.INBOX_MIN_ROWS` rows, the keys of its rows as one jsonb array. The
  worker expands an entry into ``embeddb.pending`` in a transaction of its own (the entry is
  deleted in the same statement that queues its rows, so a crash loses neither), checking then
  which rows still need a vector. ``status`` counts the keys waiting there as pending.
* Every column's ``enqueue_N()`` and triggers are re-created as :mod:`embeddb.column_sql`
  writes them now; ``forget_truncated()`` clears the column's inbox entries too.

Smaller INSERTs, UPDATEs and every write to a partitioned table queue their rows in
``embeddb.pending`` as before, so workers of earlier revisions keep working during a rolling
upgrade; only bulk INSERTs made meanwhile wait in the inbox for the first worker of this
revision. Downgrading queues what the inbox holds in ``embeddb.pending`` (a key whose row is
gone is completed by the worker's claim), drops the inbox and restores the functions.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.engine import Connection

from embeddb import catalog, verbatim

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# No index but the key: the inbox is read only by the worker's expansion, a short scan.
CREATE_INBOX = """
CREATE TABLE IF NOT EXISTS embeddb.inbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    column_id   integer NOT NULL,
    rows        integer NOT NULL,
    keys        jsonb NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
-- the keys of a big COPY are a large value: stored out of line, but not compressed on the
-- application's write (the compression cost more than the rest of the inbox insert)
ALTER TABLE embeddb.inbox ALTER COLUMN keys SET STORAGE EXTERNAL;
"""

FORGET_TRUNCATED = """
CREATE OR REPLACE FUNCTION embeddb.forget_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM embeddb.pending WHERE column_id = TG_ARGV[0]::integer;
    {inbox}
    RETURN NULL;
END
$$;
"""

MOVE_INBOX_TO_PENDING = """
INSERT INTO embeddb.pending AS p (column_id, row_key, enqueued_at)
SELECT DISTINCT ON (i.column_id, k.row_key) i.column_id, k.row_key, i.enqueued_at
FROM embeddb.inbox AS i, jsonb_array_elements(i.keys) AS k(row_key)
ORDER BY i.column_id, k.row_key, i.enqueued_at
ON CONFLICT (column_id, row_key) DO UPDATE
    SET attempts = 0, run_after = now(), last_error = NULL, parked_at = NULL
    WHERE p.attempts > 0 OR p.parked_at IS NOT NULL;
DROP TABLE embeddb.inbox;
"""


def upgrade_on(conn: Connection) -> None:
    verbatim.execute(conn, CREATE_INBOX)
    verbatim.execute(conn, FORGET_TRUNCATED.replace(
        "{inbox}", "DELETE FROM embeddb.inbox WHERE column_id = TG_ARGV[0]::integer;"))
    for entry in catalog.list_entries(conn):
        # no key ranges yet (revision 0016 adds them and refreshes the triggers again)
        catalog.refresh_triggers(conn, entry, ranges=False)  # says why when it leaves a column


def downgrade_on(conn: Connection) -> None:
    for entry in catalog.list_entries(conn):
        catalog.refresh_triggers(conn, entry, inbox=False)
    verbatim.execute(conn, FORGET_TRUNCATED.replace("{inbox}", ""))
    verbatim.execute(conn, MOVE_INBOX_TO_PENDING)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
