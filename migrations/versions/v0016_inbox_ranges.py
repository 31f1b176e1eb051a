"""Cheaper bulk writes still: a COPY of fresh rows with integer keys leaves its first and last key.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

* ``embeddb.inbox_ranges`` holds, per INSERT statement of at least
  :data:`embeddb.column_sql.INBOX_MIN_ROWS` fresh rows whose key is one integer column without
  gaps (ids from a sequence, a COPY of 1..n), the first and last key of each run of at most
  :data:`embeddb.column_sql.INBOX_MAX_ROWS`: the trigger reads the statement's rows once (a
  count, a minimum and a maximum) instead of building a jsonb array of their keys. The worker
  expands a range as it expands an inbox entry, in the same statement.
* ``embeddb.integer_key(k)`` is ``k`` as bigint for smallint, integer and bigint, and NULL for
  any other type: the trigger takes the key's span through it, so it stays valid whatever type
  the key has (or is later given).
* Every column's ``enqueue_N()`` is re-created as :mod:`embeddb.column_sql` writes it now;
  ``forget_truncated()`` clears the column's ranges too. Roles get on the new table the
  privileges they hold on ``embeddb.inbox``, so a worker granted before keeps expanding.

Other INSERTs are queued as before. Workers of revisions 0012-0015 never read the new table
(a range waits there for the first worker of this revision), so they keep working during a
rolling upgrade. Downgrading turns each range into an ``embeddb.inbox`` entry with its keys,
drops the table and the function, and restores the trigger functions.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.engine import Connection

from embeddb import catalog, verbatim

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# No index but the key: like the inbox, read only by the worker's expansion.
CREATE_RANGES = """
CREATE TABLE IF NOT EXISTS embeddb.inbox_ranges (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    column_id   integer NOT NULL,
    rows        integer NOT NULL,
    first_key   bigint NOT NULL,
    last_key    bigint NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    CHECK (rows = last_key - first_key + 1)
);
"""

# SQL functions this simple are inlined into the trigger's query: no call per row.
INTEGER_KEY = """
CREATE OR REPLACE FUNCTION embeddb.integer_key(k smallint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT k::bigint';
CREATE OR REPLACE FUNCTION embeddb.integer_key(k integer) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT k::bigint';
CREATE OR REPLACE FUNCTION embeddb.integer_key(k bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT k';
CREATE OR REPLACE FUNCTION embeddb.integer_key(k anyelement) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT NULL::bigint';
"""

DROP_INTEGER_KEY = """
DROP FUNCTION IF EXISTS embeddb.integer_key(smallint);
DROP FUNCTION IF EXISTS embeddb.integer_key(integer);
DROP FUNCTION IF EXISTS embeddb.integer_key(bigint);
DROP FUNCTION IF EXISTS embeddb.integer_key(anyelement);
"""

# Whoever may expand the inbox may expand the ranges (a worker granted before this revision).
COPY_INBOX_GRANTS = """
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT a.privilege_type,
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS role
             FROM pg_class c, aclexplode(c.relacl) AS a
             LEFT JOIN pg_roles r ON r.oid = a.grantee
             WHERE c.oid = 'embeddb.inbox'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON embeddb.inbox_ranges TO %s', g.privilege_type, g.role);
    END LOOP;
END
$$;
"""

FORGET_TRUNCATED = """
CREATE OR REPLACE FUNCTION embeddb.forget_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM embeddb.pending WHERE column_id = TG_ARGV[0]::integer;
    DELETE FROM embeddb.inbox WHERE column_id = TG_ARGV[0]::integer;
    {ranges}
    RETURN NULL;
END
$$;
"""

# Each range becomes an inbox entry holding its keys, named by the column's key.
MOVE_RANGES_TO_INBOX = """
INSERT INTO embeddb.inbox (column_id, rows, keys, enqueued_at)
SELECT r.column_id, r.rows,
       (SELECT jsonb_agg(jsonb_build_object(c.key_columns[1], k) ORDER BY k)
        FROM generate_series(r.first_key, r.last_key) AS k),
       r.enqueued_at
FROM embeddb.inbox_ranges AS r JOIN embeddb.columns AS c ON c.id = r.column_id
ORDER BY r.id;
DROP TABLE embeddb.inbox_ranges;
"""


def upgrade_on(conn: Connection) -> None:
    verbatim.execute(conn, CREATE_RANGES)
    verbatim.execute(conn, INTEGER_KEY)
    verbatim.execute(conn, COPY_INBOX_GRANTS)
    verbatim.execute(conn, FORGET_TRUNCATED.replace(
        "{ranges}", "DELETE FROM embeddb.inbox_ranges WHERE column_id = TG_ARGV[0]::integer;"))
    for entry in catalog.list_entries(conn):
        catalog.refresh_triggers(conn, entry)  # says why when it leaves a column as it was


def downgrade_on(conn: Connection) -> None:
    for entry in catalog.list_entries(conn):
        catalog.refresh_triggers(conn, entry, ranges=False)
    verbatim.execute(conn, FORGET_TRUNCATED.replace("{ranges}", ""))
    verbatim.execute(conn, MOVE_RANGES_TO_INBOX)
    verbatim.execute(conn, DROP_INTEGER_KEY)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
