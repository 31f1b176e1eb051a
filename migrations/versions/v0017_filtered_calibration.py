"""Search calibration under filters: the index plan's recall and time at several selectivities.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

``embeddb.calibrations.filtered`` holds what :mod:`embeddb.calibration` measured with the
index plan under filters that keep a share of the rows clustered in vector space (the rows
nearest a pivot, away from most queries: the hard case for an HNSW walk): per selectivity and
``ef_search``, recall@k and the mean and 95th percentile of the time per query;
``exact_p95_ms`` is the exact scan's 95th percentile. The planner weighs the walk's tail
against the exact scan's for the same share of rows. ``filtered_at`` is the ``calibrated_at``
they were measured with: a worker from before this revision recalibrates without touching
them, and the planner then leaves them aside.

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
    ADD COLUMN IF NOT EXISTS exact_p95_ms float8,
    ADD COLUMN IF NOT EXISTS filtered_at timestamptz;
"""

DOWNGRADE = """
ALTER TABLE embeddb.calibrations
    DROP COLUMN IF EXISTS filtered,
    DROP COLUMN IF EXISTS exact_p95_ms,
    DROP COLUMN IF EXISTS filtered_at;
"""


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
