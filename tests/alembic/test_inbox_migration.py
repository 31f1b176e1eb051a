"""Revision 0012 gives installed columns the inbox for bulk INSERTs; its downgrade queues what
the inbox holds in embeddb.pending and goes back to a queue entry per row."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from embeddb import migrate
from embeddb.database import libpq_conninfo
from tests.integration.models import HASH_MODEL, drain, ticket_model


def copy_tickets(database_url: str, ids: range) -> None:
    with psycopg.connect(libpq_conninfo(database_url)) as conn, \
            conn.cursor().copy("COPY tickets (id, subject, body, status) FROM STDIN") as copy:
        for i in ids:
            copy.write_row((i, "s", f"b{i}", "open"))


def count(engine: sa.Engine, statement: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(statement)).scalar_one())


def inbox_exists(engine: sa.Engine) -> bool:
    return count(engine, "SELECT count(*) FROM pg_class"
                         " WHERE oid = to_regclass('embeddb.inbox')") == 1


def test_0012_adds_the_inbox_to_an_installed_column_and_its_downgrade_keeps_every_row(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    copy_tickets(database_url, range(1, 301))  # waits in the inbox
    assert count(engine, "SELECT count(*) FROM embeddb.pending") == 0

    assert migrate.migrate(engine, downgrade_to="0011")[-1] == "0012"
    assert not inbox_exists(engine)
    assert count(engine, "SELECT count(*) FROM embeddb.pending") == 300  # moved, not lost
    copy_tickets(database_url, range(301, 601))  # as before 0012: an entry per row
    assert count(engine, "SELECT count(*) FROM embeddb.pending") == 600

    assert migrate.migrate(engine)[0] == "0012"
    copy_tickets(database_url, range(601, 901))
    assert count(engine, "SELECT coalesce(sum(rows), 0) FROM embeddb.inbox") == 300
    assert drain(database_url).embedded == 900
    assert count(engine, "SELECT count(*) FROM embeddb.pending") == 0
    assert count(engine, "SELECT count(*) FROM embeddb.inbox") == 0
    with engine.begin() as conn:  # a truncate empties the inbox again once upgraded
        conn.execute(sa.text("TRUNCATE tickets"))
    copy_tickets(database_url, range(1, 301))
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE tickets"))
    assert count(engine, "SELECT count(*) FROM embeddb.inbox") == 0
