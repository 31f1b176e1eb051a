"""Render functions that give the same text in every session, and NULL for blank text.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Render functions made before this revision cast ``timestamptz``, ``date``, ``interval``, floats,
``bytea``, ``money``... to text in the session's settings, so a worker or ``reconcile`` in
another time zone saw changed text and re-queued unchanged rows; and a row whose text was only
whitespace got a vector. This revision re-creates every column's render function as
:mod:`embeddb.rendering` writes it now (settings pinned where the source columns need them,
blank text NULL) and queues the rows whose text that changes: rows embedded from text rendered
in another time zone or style once, and blank rows, whose vectors the worker then clears.

Downgrading keeps the new functions: an older embeddb renders the same text with them, and
re-creates its own form the next time it installs the column.
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy.engine import Connection

from embeddb import catalog

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)


def upgrade_on(conn: Connection) -> None:
    for entry in catalog.list_entries(conn):
        queued = catalog.refresh_render_function(conn, entry)
        if queued:
            log.info("%s: %d rows render differently now and were queued",
                     entry.spec.qualified_column, queued)


def downgrade_on(conn: Connection) -> None:
    """Nothing to undo: the functions stay as they are (see the module docstring)."""


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
