"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

A revision of embeddb's own schema. Keep the SQL here (revisions never change once released)
and run it through ``upgrade_on``/``downgrade_on``: embeddb applies revisions on an existing
connection, inside an application's own migration, where Alembic's ``op`` is not ours to use.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.engine import Connection

from embeddb import verbatim

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None

UPGRADE = """
"""

DOWNGRADE = """
"""


def upgrade_on(conn: Connection) -> None:
    verbatim.execute(conn, UPGRADE)


def downgrade_on(conn: Connection) -> None:
    verbatim.execute(conn, DOWNGRADE)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
