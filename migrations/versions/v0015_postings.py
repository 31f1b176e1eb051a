"""BM25 postings: every full-text column gets the table its text leg now reads.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

Hybrid search's BM25 leg reads ``<table>_<column>_postings`` (one row per lexeme and row, kept
in step with the stored ``tsvector`` by the triggers ``embeddb_<column>_pins|pupd|pdel|ptrunc``;
:mod:`embeddb.fulltext_sql`) instead of every matching row's ``tsvector``. Upgrading creates
them for each column declared with ``fulltext=`` and writes its postings from the
``tsvector`` s already stored; downgrading drops them (the ``tsvector`` column and its GIN
index stay, as revision 0006 made them). A column whose table is gone is left with a warning.
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy.engine import Connection

from embeddb import catalog, fulltext_sql, verbatim

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)


def upgrade_on(conn: Connection) -> None:
    for entry in catalog.list_entries(conn):
        if entry.spec.fulltext is None:
            continue
        if not catalog.table_exists(conn, entry.spec):
            log.warning("%s: its table is gone; no postings made", entry.spec.qualified_column)
            continue
        catalog.install_postings(conn, entry.spec, entry.id, refill=True)


def downgrade_on(conn: Connection) -> None:
    for entry in catalog.list_entries(conn):
        if entry.spec.fulltext is None:
            continue
        for statement in fulltext_sql.drop_postings(entry.spec, entry.id):
            verbatim.execute(conn, statement)


def upgrade() -> None:
    upgrade_on(op.get_bind())


def downgrade() -> None:
    downgrade_on(op.get_bind())
