"""Worker health: per-column faults, stale heartbeats, and triggers that need no grants.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-23

* ``columns.fault``, ``fault_since``, ``fault_retry_at``: a failure confined to one column (its
  table dropped, a privilege missing, an index that cannot be built) as the worker last saw
  it, so ``embeddb status`` can show it while the other columns keep flowing.
* ``workers.stale_after_seconds``: how long after its last heartbeat a worker counts as gone
  (a ``kill -9`` leaves its row saying ``running``); each worker derives it from its own
  heartbeat interval, poll interval and lease.
* ``forget_truncated()`` runs as its owner with a pinned ``search_path``, like each column's
  ``enqueue_N()``, so an application role needs no rights on schema ``embeddb`` to write its
  own tables, and gets none over other tables' queue entries.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE embeddb.columns
    ADD COLUMN IF NOT EXISTS fault text,
    ADD COLUMN IF NOT EXISTS fault_since timestamptz,
    ADD COLUMN IF NOT EXISTS fault_retry_at timestamptz;
ALTER TABLE embeddb.workers
    ADD COLUMN IF NOT EXISTS stale_after_seconds float8 NOT NULL DEFAULT 300;
ALTER FUNCTION embeddb.forget_truncated() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
"""

DOWNGRADE = """
ALTER FUNCTION embeddb.forget_truncated() SECURITY INVOKER RESET search_path;
ALTER TABLE embeddb.workers DROP COLUMN IF EXISTS stale_after_seconds;
ALTER TABLE embeddb.columns
    DROP COLUMN IF EXISTS fault,
    DROP COLUMN IF EXISTS fault_since,
    DROP COLUMN IF EXISTS fault_retry_at;
"""


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
