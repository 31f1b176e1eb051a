"""Revision 0010 re-creates the triggers of columns installed before it, and drops the queue's
foreign key; its downgrade restores both."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding, migrate
from embeddb.database import libpq_conninfo
from tests.integration.models import HASH_MODEL, pending, ticket_model


def copy_calls(database_url: str, first_id: int, rows: int) -> int:
    """COPY ``rows`` tickets; how often the column's trigger function ran for it."""
    with psycopg.connect(libpq_conninfo(database_url)) as conn:
        conn.execute("SET track_functions = 'pl'")
        with conn.cursor().copy("COPY tickets (id, subject, body, status) FROM STDIN") as copy:
            for i in range(first_id, first_id + rows):
                copy.write_row((i, "s", f"b{i}", "open"))
        calls = conn.execute(
            "SELECT pg_stat_get_xact_function_calls(('embeddb.enqueue_' || id)::regproc)"
            " FROM embeddb.columns WHERE table_name = 'tickets'").fetchone()
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
    assert "0010" in migrate.migrate(engine, downgrade_to="0009")
    # as a column installed before 0010 has it: a trigger call per row, a foreign key
    assert copy_calls(database_url, 1, 20) == 20
    assert queue_foreign_keys(engine) == 1
    assert "0010" in migrate.migrate(engine)
    assert copy_calls(database_url, 21, 20) == 1
    assert queue_foreign_keys(engine) == 0
    with engine.connect() as conn:
        assert sorted(entry.row_key["id"] for entry in pending(conn)) == list(range(1, 41))


def test_0010_leaves_a_column_whose_table_lost_a_watched_column_and_moves_the_others(
        engine: sa.Engine, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    Memos, _ = memo_model()
    Memos.metadata.create_all(engine)
    assert "0010" in migrate.migrate(engine, downgrade_to="0009")
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE memos DROP COLUMN note CASCADE"))  # and its triggers
    assert "0010" in migrate.migrate(engine)
    assert "public.memos.embedding: triggers left as they were" in caplog.text
    assert "has no column 'note'" in caplog.text
    assert copy_calls(database_url, 1, 20) == 1


def memo_model() -> tuple[type[DeclarativeBase], Any]:
    class Base(DeclarativeBase):
        pass

    class Memo(Base):
        __tablename__ = "memos"
        id: Mapped[int] = mapped_column(primary_key=True)
        note: Mapped[str]
        embedding = Embedding("{note}", model=HASH_MODEL)

    return Base, Memo
