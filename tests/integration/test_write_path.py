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

from embeddb import Embedding, column_sql
from embeddb import queue as embeddb_queue
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


def dump_tickets(conn: psycopg.Connection[tuple[Any, ...]]) -> str:
    """The tickets table as ``COPY ... TO STDOUT`` writes it, vectors and hashes included."""
    dump = io.StringIO()
    with conn.cursor().copy("COPY tickets TO STDOUT") as copy:
        for chunk in copy:
            dump.write(bytes(chunk).decode())
    return dump.getvalue()


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
    with connect(database_url) as conn:
        dump = dump_tickets(conn)
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
            copy.write(dump)
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


def inbox(engine: sa.Engine) -> list[int]:
    """The number of keys in each inbox entry (jsonb arrays of keys), oldest first."""
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT rows FROM embeddb.inbox ORDER BY id")).scalars())


def ranges(engine: sa.Engine) -> list[tuple[int, int]]:
    """The first and last key of each key range in the inbox, oldest first."""
    with engine.connect() as conn:
        return [(r.first_key, r.last_key) for r in conn.execute(sa.text(
            "SELECT first_key, last_key FROM embeddb.inbox_ranges ORDER BY id"))]


def queued_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar_one())


def copy_tickets(database_url: str, ids: range) -> None:
    with connect(database_url) as conn:
        with conn.cursor().copy(TICKET_COLUMNS) as copy:
            for i in ids:
                copy.write_row((i, f"subject {i}", f"body {i}", "open"))
        conn.commit()


def test_a_copy_leaves_one_key_range_that_status_counts_and_the_worker_embeds_in_full(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    copy_tickets(database_url, range(1, 1201))
    assert ranges(engine) == [(1, 1200)]  # one entry: nothing per row in embeddb.pending
    assert inbox(engine) == [] and queued_rows(engine) == 0
    (column,) = embeddb_queue.status(engine).columns
    assert column["pending"] == 1200 and column["lag_seconds"] >= 0
    stats = drain(database_url, batch_size=100)
    assert stats.embedded == 1200
    assert ranges(engine) == [] and queued_rows(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT count(*) FROM tickets WHERE embedding IS NOT NULL AND embedding_source_hash"
            " = md5(concat(subject, E'\\n\\n', body))::uuid")).scalar() == 1200


def test_a_small_insert_queues_its_rows_at_once_and_a_big_one_is_split(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    copy_tickets(database_url, range(1, column_sql.INBOX_MIN_ROWS))  # one short of the inbox
    assert inbox(engine) == [] and ranges(engine) == []
    assert queued_rows(engine) == column_sql.INBOX_MIN_ROWS - 1
    big = column_sql.INBOX_MAX_ROWS + 5
    copy_tickets(database_url, range(1000, 1000 + big))
    assert ranges(engine) == [(1000, 1000 + column_sql.INBOX_MAX_ROWS - 1),
                              (1000 + column_sql.INBOX_MAX_ROWS, 1000 + big - 1)]
    copy_tickets(database_url, range(20_000, 20_000 + 2 * big, 2))  # gaps: the keys themselves
    assert sorted(inbox(engine)) == [5, column_sql.INBOX_MAX_ROWS]
    (column,) = embeddb_queue.status(engine).columns
    assert column["pending"] == column_sql.INBOX_MIN_ROWS - 1 + 2 * big
    assert drain(database_url, batch_size=500).embedded == column_sql.INBOX_MIN_ROWS - 1 + 2 * big
    assert inbox(engine) == [] and ranges(engine) == [] and queued_rows(engine) == 0


def test_truncate_and_uninstall_forget_the_inbox(engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    copy_tickets(database_url, range(1, 301))
    copy_tickets(database_url, range(1001, 1601, 2))
    assert ranges(engine) == [(1, 300)] and inbox(engine) == [300]
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE tickets"))
    assert ranges(engine) == [] and inbox(engine) == []
    copy_tickets(database_url, range(1, 301))
    copy_tickets(database_url, range(1001, 1601, 2))
    Base.metadata.drop_all(engine)
    assert ranges(engine) == [] and inbox(engine) == []


def test_the_expansion_queues_only_rows_that_still_need_a_vector_and_resets_failed_ones(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    copy_tickets(database_url, range(1, 201))
    drain(database_url)
    with engine.begin() as conn:
        # rows 1-150 deleted and copied back: they have no vector again
        conn.execute(sa.text("DELETE FROM tickets WHERE id <= 150"))
    copy_tickets(database_url, range(1, 151))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM tickets WHERE id > 100 AND id <= 150"))
        conn.execute(sa.text("UPDATE tickets SET subject = NULL, body = ' ' WHERE id = 100"))
        # row 1 was parked before it was deleted (as if the DELETE trigger had been off)
        conn.execute(sa.text(
            "INSERT INTO embeddb.pending (column_id, row_key, attempts, parked_at)"
            " SELECT id, '{\"id\": 1}', 5, now() FROM embeddb.columns"))
    with engine.connect() as conn:
        entries = pending(conn)
    assert sorted(e.row_key["id"] for e in entries) == list(range(1, 100))
    assert all(e.attempts == 0 and e.parked_at is None for e in entries)


def test_a_bulk_copy_of_rows_with_their_vectors_leaves_nothing_in_the_inbox(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    copy_tickets(database_url, range(1, 201))
    drain(database_url)
    with connect(database_url) as conn:
        dump = dump_tickets(conn)
        conn.execute("DELETE FROM tickets")
        conn.commit()
        with conn.cursor().copy("COPY tickets FROM STDIN") as copy:
            copy.write(dump)  # all 200 back, each with the vector of its text
        conn.commit()
    assert inbox(engine) == [] and ranges(engine) == [] and queued_rows(engine) == 0


def keyed_docs(key_type: sa.types.TypeEngine[Any]) -> tuple[type[DeclarativeBase], Any]:
    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = "keyed_docs"
        id: Mapped[Any] = mapped_column(key_type, primary_key=True)
        body: Mapped[str]
        embedding = Embedding("{body}", model=HASH_MODEL)

    return Base, Doc


def test_a_bulk_insert_keyed_by_text_or_uuid_leaves_its_keys_not_a_range(
        engine: sa.Engine, database_url: str) -> None:
    for key_type, key in ((sa.Text(), "doc {}"), (sa.Uuid(), "00000000-0000-0000-0000-{:012d}")):
        Base, _ = keyed_docs(key_type)
        Base.metadata.create_all(engine)  # PostgreSQL has no min(uuid): the trigger needs none
        with connect(database_url) as conn:
            with conn.cursor().copy("COPY keyed_docs (id, body) FROM STDIN") as copy:
                for i in range(1, 201):
                    copy.write_row((key.format(i), f"body {i}"))
            conn.commit()
        assert inbox(engine) == [200] and ranges(engine) == []
        with engine.connect() as conn:
            assert len(pending(conn)) == 200
        assert drain(database_url).embedded == 200
        Base.metadata.drop_all(engine)


def test_an_insert_of_ids_from_a_sequence_leaves_a_range_that_only_covers_its_rows(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SEQUENCE ticket_ids START 500"))
        conn.execute(sa.text("INSERT INTO tickets (id, subject, body, status) SELECT"
                             " nextval('ticket_ids'), 's', 'b' || g, 'open'"
                             " FROM generate_series(1, 300) AS g"))
        # a row inside the range that was there before, with its vector, and one without text
        conn.execute(sa.text("UPDATE tickets SET subject = NULL, body = NULL WHERE id = 600"))
    assert ranges(engine) == [(500, 799)]
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM tickets WHERE id = 700"))
        assert keys(conn) == [k for k in range(500, 800) if k not in (600, 700)]
