"""Alembic environment and versions for embeddb's own schema (``embeddb.*``).

It lives inside the package, not in a top-level ``migrations/``, because embeddb applies it at
run time (``ensure_catalog``, ``embeddb migrate``, ``op.create_embeddb_schema()``), so it must
ship in the wheel as ordinary package files. Run it with :mod:`embeddb.migrate`; the Alembic
CLI works too (``alembic -c embeddb/migrations/alembic.ini upgrade head``), for example to
write a new revision.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection

Step = Callable[[Connection], None]


def sql_steps(upgrade_sql: str, downgrade_sql: str) -> tuple[Step, Step]:
    """``upgrade_on`` and ``downgrade_on`` for a revision that is plain SQL.

    The SQL must hold no ``%``: the driver would read it as a placeholder.
    """

    def upgrade_on(conn: Connection) -> None:
        conn.exec_driver_sql(upgrade_sql)

    def downgrade_on(conn: Connection) -> None:
        conn.exec_driver_sql(downgrade_sql)

    return upgrade_on, downgrade_on
