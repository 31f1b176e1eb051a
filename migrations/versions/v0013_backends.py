"""Inference backends: the backend a column's local model runs on.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

``embeddb.columns.backend`` names how the worker computes the column's vectors (``torch``,
``onnx``, ``openvino``, ``onnx-int8``; see :mod:`embeddb.backends`). A float32 backend is the
same model as ``torch``, so it is not part of the model's identity; ``onnx-int8`` is another
model and shows in the recorded fingerprint as well.
"""

from __future__ import annotations

from alembic import op

from embeddb.migrate import sql_steps

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE embeddb.columns ADD COLUMN IF NOT EXISTS backend text NOT NULL DEFAULT 'torch';
"""

DOWNGRADE = "ALTER TABLE embeddb.columns DROP COLUMN IF EXISTS backend;"


upgrade_on, downgrade_on = sql_steps(UPGRADE, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
