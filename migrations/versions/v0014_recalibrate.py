"""Forget the search calibrations made with stored vectors as queries: they over-promise recall.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

Calibrations before this revision measured ``ef_search`` against queries that were stored
vectors, whose neighbours the graph walk finds easily: on SciFact one promised recall@10 0.999
at ``ef_search`` 10, and real claims searched at that setting scored nDCG@10 0.614 instead of
0.645. :mod:`embeddb.calibration` now measures with midpoints of pairs of stored vectors (or the
application's own queries, ``embeddb tune --queries``). Deleting the old rows makes searches use
the default ``ef_search`` until the worker (or ``embeddb tune``) calibrates the column again.
Downgrading keeps whatever calibrations exist then.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UPGRADE = "DELETE FROM embeddb.calibrations;"
DOWNGRADE = "SELECT 1;"  # nothing to restore: the old calibrations were wrong

upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
