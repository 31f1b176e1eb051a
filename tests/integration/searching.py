"""Shared by the query-helper tests: a database per test module, statement capture, plans.

The search tests read far more than they write, so each module loads its rows once into a
database of its own (``CREATE DATABASE ... TEMPLATE``, like the per-test ``database_url``).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy import event
from sqlalchemy.engine import make_url

from embeddb.database import libpq_conninfo

from ..conftest import TEMPLATE

T = TypeVar("T")


@contextmanager
def module_database(server_url: str) -> Iterator[str]:
    """A fresh database with pgvector and embeddb's schema, dropped on exit; yields its URL."""
    name = f"embeddb_search_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE)))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@contextmanager
def captured_statements(engine: sa.Engine) -> Iterator[list[str]]:
    """Every SQL statement ``engine`` sends while the block runs, in order."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def ids(hits: Any) -> list[int]:
    """The ids of ORM hits, in order."""
    return [hit.row.id for hit in hits]


def recall(hits: Any, exact: Any) -> float:
    """recall@k of ``hits`` against the exact answer, counting ties at the k-th similarity."""
    if not exact:
        return 1.0
    floor = min(hit.similarity for hit in exact)
    return sum(hit.similarity >= floor - 1e-6 for hit in hits) / len(exact)


class SearchesWithoutPause(Generic[T]):
    """``search_once(turn)`` called in a thread, turn after turn, while the ``with`` block runs:
    what it returned, in order, and the exception that stopped it (a thread's is lost else)."""

    def __init__(self, search_once: Callable[[int], T]) -> None:
        self.answers: list[T] = []
        self.errors: list[BaseException] = []
        self._search_once = search_once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="searches")

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            turn += 1
            try:
                self.answers.append(self._search_once(turn))
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)
                return

    def __enter__(self) -> SearchesWithoutPause[T]:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)
