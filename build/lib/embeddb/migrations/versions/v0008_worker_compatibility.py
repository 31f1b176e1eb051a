"""Worker compatibility: which workers a schema still serves, so upgrades need no stopped fleet.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

``embeddb.worker_compatibility`` holds one row: ``oldest_worker_revision``, the oldest schema
revision whose workers still work against this schema. A worker from an older embeddb that
meets a revision it does not know reads it: if it knows that revision, the newer schema is one
it can serve and it carries on; otherwise it stops with one line saying to upgrade it.

A later revision that only adds (a column with a default, a new ``..._v2`` function beside the
old one) leaves the row alone, so workers of the previous release keep running while the new
ones roll out; one that old workers cannot survive sets it to itself. The part that removes
what old workers use belongs in a later revision, applied once they are gone.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE IF NOT EXISTS embeddb.worker_compatibility (
    one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    oldest_worker_revision text NOT NULL
);
INSERT INTO embeddb.worker_compatibility (oldest_worker_revision) VALUES ('0008')
ON CONFLICT (one_row) DO UPDATE SET oldest_worker_revision = EXCLUDED.oldest_worker_revision;
"""

DOWNGRADE = """
DROP TABLE IF EXISTS embeddb.worker_compatibility;
"""


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
