"""Record that a column's HNSW index is set aside while a large backlog is embedded.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Keeping an HNSW index up to date costs about a millisecond of database CPU per stored vector;
building it once after a large backfill costs a fraction of that. The worker drops the index
when it meets a large backlog, sets ``index_deferred``, and builds the index again
(CONCURRENTLY) once the backlog is gone.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE embeddb.columns
    ADD COLUMN IF NOT EXISTS index_deferred boolean NOT NULL DEFAULT false;
"""

DOWNGRADE = "ALTER TABLE embeddb.columns DROP COLUMN IF EXISTS index_deferred;"


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
