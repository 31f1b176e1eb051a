"""Real PostgreSQL roles for privilege and row-level security tests.

Roles belong to the server, not to a test's database, so each gets a unique name and is
dropped (with what it owns or was granted in the test's database) when the test ends.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url

from embeddb.database import create_engine, libpq_conninfo
from embeddb.privileges import WORKER_CATALOG_PRIVILEGES

from .models import HASH_MODEL, ticket_model

#: The grants README's "Roles and privileges" gives a worker role, as statements.
WORKER_GRANTS = [
    "GRANT USAGE ON SCHEMA embeddb TO {role}",
    *[f"GRANT {', '.join(privileges)} ON {table} TO {{role}}"
      for table, privileges in WORKER_CATALOG_PRIVILEGES.items()],
]


class Roles:
    """Creates login roles on the test's database; ``url(role)`` connects as one."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.created: list[str] = []
        self._passwords: dict[str, str] = {}

    def create(self, prefix: str, *grants: str, options: str = "") -> str:
        """A new role; ``grants`` are statements with ``{role}`` for its name."""
        role = f"{prefix}_{uuid.uuid4().hex[:8]}"
        password = secrets.token_hex(8)
        with psycopg.connect(libpq_conninfo(self.database_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} {}").format(
                sql.Identifier(role), sql.Literal(password), sql.SQL(options)))
        self.created.append(role)
        self._passwords[role] = password
        self.grant(role, *grants)
        return role

    def grant(self, role: str, *statements: str) -> None:
        self.run(*(statement.format(role=sql.Identifier(role).as_string(None))
                   for statement in statements))

    def run(self, *statements: str) -> None:
        """Statements as the test's (superuser) role."""
        with psycopg.connect(libpq_conninfo(self.database_url), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def url(self, role: str) -> str:
        return make_url(self.database_url).set(
            username=role, password=self._passwords[role]).render_as_string(hide_password=False)

    def engine(self, role: str) -> sa.Engine:
        return create_engine(self.url(role), poolclass=sa.pool.NullPool)

    def drop_all(self) -> None:
        with psycopg.connect(libpq_conninfo(self.database_url), autocommit=True) as conn:
            for role in self.created:
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(
                    sql.Identifier(role)))
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def make_tickets(engine: sa.Engine, rows: list[dict[str, Any]]) -> Any:
    """The tickets table (hash test model), created with ``rows`` in it."""
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    if rows:
        with engine.begin() as conn:
            conn.execute(sa.insert(Ticket), rows)
    return Ticket


def embedded(engine: sa.Engine) -> dict[int, bool]:
    """Which tickets have a vector, by id (read as the test's superuser, past any policy)."""
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT id, embedding IS NOT NULL FROM tickets ORDER BY id")).all())
