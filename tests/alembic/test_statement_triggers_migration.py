"""Revision 0010 re-creates the triggers of columns installed before it, and drops the queue's
foreign key; its downgrade restores both."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from embeddb import migrate
from embeddb.database import libpq_conninfo
from tests.integration.models import HASH_MODEL, pending, ticket_model


def copy_calls(database_url: str, first_id: int, rows: int) -> int:
    """COPY ``rows`` tickets; how often the column's trigger function ran for it."""
    with psycopg.connect(libpq_conninfo(database_url)) as conn:
        conn.execute("SET track_functions = 'pl'")
        with conn.cursor().copy("COPY tickets (id, subject, body, status) FROM STDIN") as copy:
            for i in range(first_id, first_id + rows):
                copy.write_row((i, "s", f"b{i}", "open"))
        calls = conn.execute("SELECT pg_stat_get_xact_function_calls(p.oid) FROM pg_proc p"
                             " WHERE p.proname ~ '^enqueue_[0-9]+$'").fetchone()
        assert calls is not None
        return int(calls[0] or 0)


def queue_foreign_keys(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_constraint"
            " WHERE conrelid = 'embeddb.pending'::regclass AND contype = 'f'")).scalar_one())


def test_0010_moves_an_installed_column_to_statement_triggers_and_back(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    assert migrate.migrate(engine, downgrade_to="0005") == ["0010"]
    # as a column installed before 0010 has it: a trigger call per row, a foreign key
    assert copy_calls(database_url, 1, 20) == 20
    assert queue_foreign_keys(engine) == 1
    assert migrate.migrate(engine) == ["0010"]
    assert copy_calls(database_url, 21, 20) == 1
    assert queue_foreign_keys(engine) == 0
    with engine.connect() as conn:
        assert sorted(entry.row_key["id"] for entry in pending(conn)) == list(range(1, 41))
