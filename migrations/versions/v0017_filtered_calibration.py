"""Search calibration under filters: the index plan's recall and time at several selectivities.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

``embeddb.calibrations.filtered`` holds what :mod:`embeddb.calibration` measured with the
index plan under filters that keep a share of the rows clustered in vector space (the rows
nearest a pivot, away from most queries: the hard case for an HNSW walk): per selectivity and
``ef_search``, recall@k and the mean time per query. The planner weighs it against the exact
scan's time for the same share of rows. ``filtered_at`` is the ``calibrated_at`` it was
measured with: a worker from before this revision recalibrates without touching ``filtered``,
and the planner then leaves the older filtered points aside.

Only adds columns with defaults: workers of the previous revisions keep running.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE embeddb.calibrations
    ADD COLUMN IF NOT EXISTS filtered jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN IF NOT EXISTS filtered_at timestamptz;
"""

DOWNGRADE = """
ALTER TABLE embeddb.calibrations
    DROP COLUMN IF EXISTS filtered,
    DROP COLUMN IF EXISTS filtered_at;
"""


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
