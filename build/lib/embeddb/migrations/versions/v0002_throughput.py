"""Rows stored per column and minute, so `embeddb status` can show recent throughput.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

The worker adds each batch's count to the current minute's row in the same transaction that
stores the vectors; minutes older than a day are pruned as it goes.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE IF NOT EXISTS embeddb.throughput (
    column_id   integer NOT NULL REFERENCES embeddb.columns (id) ON DELETE CASCADE,
    minute      timestamptz NOT NULL,
    rows        bigint NOT NULL,
    PRIMARY KEY (column_id, minute)
);
"""

DOWNGRADE = "DROP TABLE IF EXISTS embeddb.throughput;"


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
