"""Revision 0012 gives installed columns the inbox for bulk INSERTs; its downgrade queues what
the inbox holds in embeddb.pending and goes back to a queue entry per row. Revision 0016 adds
key ranges; its downgrade turns them into inbox entries."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from embeddb import migrate
from embeddb.database import libpq_conninfo
from tests.integration.models import HASH_MODEL, drain, ticket_model
from tests.integration.roles import Roles


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
    assert count(engine, "SELECT coalesce(sum(rows), 0) FROM embeddb.inbox_ranges") == 300
    assert drain(database_url).embedded == 900
    assert count(engine, "SELECT count(*) FROM embeddb.pending") == 0
    assert count(engine, "SELECT count(*) FROM embeddb.inbox") == 0
    with engine.begin() as conn:  # a truncate empties the inbox again once upgraded
        conn.execute(sa.text("TRUNCATE tickets"))
    copy_tickets(database_url, range(1, 301))
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE tickets"))
    assert count(engine, "SELECT count(*) FROM embeddb.inbox") == 0


def test_0016_downgrade_turns_key_ranges_into_inbox_entries_and_loses_no_row(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    roles = Roles(database_url)
    try:
        # a worker role granted before 0016 gets the same rights on the ranges
        worker = roles.create("inbox_reader", "GRANT SELECT, DELETE ON embeddb.inbox TO {role}")
        downgrade_and_upgrade_again(engine, database_url, worker)
    finally:
        roles.drop_all()


def downgrade_and_upgrade_again(engine: sa.Engine, database_url: str, worker: str) -> None:
    copy_tickets(database_url, range(1, 301))  # a range
    assert count(engine, "SELECT count(*) FROM embeddb.inbox_ranges") == 1

    assert migrate.migrate(engine, downgrade_to="0015") == ["0017", "0016"]
    assert count(engine, "SELECT count(*) FROM pg_class"
                         " WHERE oid = to_regclass('embeddb.inbox_ranges')") == 0
    assert count(engine, "SELECT coalesce(sum(rows), 0) FROM embeddb.inbox") == 300
    assert count(engine, "SELECT count(*) FROM embeddb.inbox,"
                         " jsonb_array_elements(keys) AS k WHERE k->'id' IS NOT NULL") == 300
    copy_tickets(database_url, range(301, 601))  # as in 0012-0015: an array of keys
    assert count(engine, "SELECT coalesce(sum(rows), 0) FROM embeddb.inbox") == 600

    assert migrate.migrate(engine)[0] == "0016"
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT array_agg(privilege_type::text ORDER BY privilege_type)"
            " FROM information_schema.role_table_grants"
            " WHERE grantee = :role AND table_name = 'inbox_ranges'"),
            {"role": worker}).scalar() == ["DELETE", "SELECT"]
    copy_tickets(database_url, range(601, 901))
    assert count(engine, "SELECT coalesce(sum(rows), 0) FROM embeddb.inbox_ranges") == 300
    assert drain(database_url).embedded == 900
    assert count(engine, "SELECT count(*) FROM embeddb.pending") == 0
    assert count(engine, "SELECT count(*) FROM embeddb.inbox") == 0
    assert count(engine, "SELECT count(*) FROM embeddb.inbox_ranges") == 0
