"""status(), retry() and reconcile() as Python functions: what the CLI commands print, as data."""

from __future__ import annotations

import sqlalchemy as sa

from embeddb import queue
from embeddb.catalog import get_entry
from embeddb.testing import POISON

from .models import HASH_MODEL, drain, pending, ticket_model


def test_status_retry_and_reconcile_from_python(engine: sa.Engine, database_url: str) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    assert [c["pending"] for c in queue.status(engine).columns] == [0]
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": 1, "subject": "ok", "body": "fine"},
            {"id": 2, "subject": "bad", "body": POISON}])
    column = queue.status(engine).columns[0]
    assert (column["table_name"], column["column_name"], column["pending"]) == (
        "tickets", "embedding", 2)

    drain(database_url, max_attempts=1)
    column = queue.status(engine).columns[0]
    assert (column["pending"], column["parked"]) == (0, 1)
    assert queue.status(engine).workers  # the worker that drained it is shown

    with engine.connect() as conn:
        entry = get_entry(conn, "public", "tickets", "embedding")
    assert entry is not None
    assert queue.retry(engine, entry) == 1
    assert queue.status(engine).columns[0]["pending"] == 1

    # a lost queue entry heals: forget every entry, then rebuild them from the table
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM embeddb.pending"))
        conn.execute(sa.text("UPDATE tickets SET embedding = NULL, embedding_source_hash = NULL"
                             " WHERE id = 1"))
    assert queue.reconcile(engine) == {"public.tickets.embedding": 2}
    with engine.connect() as conn:
        assert sorted(row.row_key["id"] for row in pending(conn)) == [1, 2]


def test_status_of_a_database_without_embeddb(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA embeddb CASCADE"))
    report = queue.status(engine)
    assert (report.columns, report.workers) == ([], [])
