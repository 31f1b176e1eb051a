"""Search calibration: the measured recall of each column's HNSW index at several ef_search.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

``embeddb.calibrations`` holds, per embedded column, what :mod:`embeddb.calibration` measured:
recall@k against an exact scan and the mean time per query at each ``hnsw.ef_search`` tried
(``curve``), the exact scan's time, and the facts it was measured under (the table's rows and
the index's oid), so the planner can tell a calibration made before the table grew or the index
was rebuilt and leave it aside.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE IF NOT EXISTS embeddb.calibrations (
    column_id     integer PRIMARY KEY REFERENCES embeddb.columns (id) ON DELETE CASCADE,
    calibrated_at timestamptz NOT NULL DEFAULT now(),
    table_rows    float8 NOT NULL,
    index_oid     oid NOT NULL,
    k             integer NOT NULL CHECK (k > 0),
    samples       integer NOT NULL CHECK (samples > 0),
    exact_ms      float8 NOT NULL,
    curve         jsonb NOT NULL
);
"""

DOWNGRADE = "DROP TABLE IF EXISTS embeddb.calibrations;"


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
