"""What a write costs the application: one trigger call per INSERT or DELETE statement on a
plain table, row triggers where a statement trigger would miss rows (UPDATE of the text,
partitions), and the queue left exactly as the row-at-a-time triggers left it."""

from __future__ import annotations

import io
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding
from embeddb.database import libpq_conninfo

from .models import HASH_MODEL, drain, pending, ticket_model

TICKET_COLUMNS = "COPY tickets (id, subject, body, status) FROM STDIN"


def connect(database_url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection that counts calls of PL/pgSQL functions in its transactions."""
    conn = psycopg.connect(libpq_conninfo(database_url))
    conn.execute("SET track_functions = 'pl'")
    conn.commit()
    return conn


def trigger_calls(conn: psycopg.Connection[tuple[Any, ...]], table: str = "tickets") -> int:
    """How often the table's ``enqueue_N()`` ran in the current transaction."""
    column_id = conn.execute(
        "SELECT id FROM embeddb.columns WHERE table_name = %s", (table,)).fetchone()
    assert column_id is not None
    calls = conn.execute(
        sql.SQL("SELECT pg_stat_get_xact_function_calls({}::regproc)").format(
            sql.Literal(f"embeddb.enqueue_{column_id[0]}"))).fetchone()
    assert calls is not None
    return int(calls[0] or 0)


def keys(conn: sa.Connection) -> list[int]:
    return sorted(entry.row_key["id"] for entry in pending(conn))


def test_a_copy_queues_every_row_with_text_in_one_trigger_call(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with connect(database_url) as conn:
        with conn.cursor().copy(TICKET_COLUMNS) as copy:
            for i in range(1, 1001):
                # every tenth row has no text: nothing to embed, nothing queued
                text = (None, None) if i % 10 == 0 else (f"subject {i}", f"body {i}")
                copy.write_row((i, *text, "open"))
        assert trigger_calls(conn) == 1
        conn.commit()
    with engine.connect() as conn:
        assert keys(conn) == [i for i in range(1, 1001) if i % 10]


def test_a_multi_row_insert_and_delete_each_call_the_trigger_once(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with connect(database_url) as conn:
        conn.execute("INSERT INTO tickets (id, subject, body, status) SELECT i, 's', 'b' || i, 'open'"
                     " FROM generate_series(1, 100) AS i")
        assert trigger_calls(conn) == 1
        conn.execute("DELETE FROM tickets WHERE id > 40")
        assert trigger_calls(conn) == 2
        conn.commit()
    with engine.connect() as conn:
        assert keys(conn) == list(range(1, 41))


def test_rows_copied_with_their_vectors_queue_nothing_and_void_a_leftover_entry(
        engine: sa.Engine, database_url: str) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": "s", "body": f"b{i}"}
                                         for i in (1, 2, 3)])
    drain(database_url)
    dump = io.StringIO()
    with connect(database_url) as conn:
        with conn.cursor().copy("COPY tickets TO STDOUT") as copy:
            for chunk in copy:
                dump.write(bytes(chunk).decode())
        conn.execute("DELETE FROM tickets")
        # entries a deletion left behind while the triggers were off: one still claimed
        column_id = conn.execute("SELECT id FROM embeddb.columns").fetchone()
        assert column_id is not None
        conn.execute("INSERT INTO embeddb.pending (column_id, row_key, claim_token) VALUES"
                     " (%(id)s, '{\"id\": 1}', NULL), (%(id)s, '{\"id\": 2}', gen_random_uuid())",
                     {"id": column_id[0]})
        conn.commit()
        # the dump back, with a fresh row in the same COPY
        with conn.cursor().copy("COPY tickets FROM STDIN") as copy:
            copy.write(dump.getvalue())
        with conn.cursor().copy(TICKET_COLUMNS) as copy:
            copy.write_row((4, "s", "fresh", "open"))
        conn.commit()
    with engine.connect() as conn:
        # the claimed entry is its worker's to finish; the unclaimed one is void
        assert keys(conn) == [2, 4]


def test_an_upsert_queues_new_rows_and_rows_whose_text_changed(
        engine: sa.Engine, database_url: str) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": "s", "body": f"b{i}"}
                                         for i in (1, 2)])
    drain(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO tickets (id, subject, body, status) VALUES (1, 's', 'b1', 'open'),"
            " (2, 's', 'new', 'open'), (3, 's', 'b3', 'open') ON CONFLICT (id) DO UPDATE SET body = excluded.body"))
        assert keys(conn) == [2, 3]


def test_an_update_of_the_key_moves_the_entry(engine: sa.Engine, database_url: str) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": "s", "body": f"b{i}"}
                                         for i in (1, 2)])
        conn.execute(sa.text("UPDATE tickets SET id = id + 10"))
        assert keys(conn) == [11, 12]


def partitioned_docs() -> tuple[type[DeclarativeBase], Any]:
    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = "part_docs"
        __table_args__ = {"postgresql_partition_by": "LIST (tenant)"}  # noqa: RUF012
        id: Mapped[int] = mapped_column(primary_key=True)
        tenant: Mapped[str] = mapped_column(primary_key=True)
        body: Mapped[str]
        embedding = Embedding("{body}", model=HASH_MODEL)

    return Base, Doc


def test_a_partitioned_table_queues_rows_routed_to_a_partition_or_written_into_one(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = partitioned_docs()
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        # partitions made after the install, as applications add them
        for tenant in ("a", "b"):
            conn.exec_driver_sql(f"CREATE TABLE part_{tenant} PARTITION OF part_docs"
                                 f" FOR VALUES IN ('{tenant}')")
    with connect(database_url) as conn:
        with conn.cursor().copy("COPY part_docs (id, tenant, body) FROM STDIN") as copy:
            for i in range(1, 5):
                copy.write_row((i, "ab"[i % 2], f"routed {i}"))
        with conn.cursor().copy("COPY part_a (id, tenant, body) FROM STDIN") as copy:
            copy.write_row((10, "a", "straight into a partition"))
        conn.execute("INSERT INTO part_b (id, tenant, body) VALUES (11, 'b', 'also')")
        conn.execute("DELETE FROM part_b WHERE id = 1")
        conn.commit()
    with engine.connect() as conn:
        assert keys(conn) == [2, 3, 4, 10, 11]


def test_dropping_the_table_forgets_its_queue(engine: sa.Engine) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 1, "subject": "s", "body": "b"}])
    Base.metadata.drop_all(engine)  # uninstalls the column first
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar() == 0
