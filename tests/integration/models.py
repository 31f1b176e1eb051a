"""Test models, built fresh per test so each test owns its MetaData."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding, catalog, queue
from embeddb.sql import queries

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
HASH_MODEL = "embeddb-testing/hash-32"


def ticket_model(model: str = MINILM, template: str = "{subject}\n\n{body}",
                 **options: Any) -> tuple[type[DeclarativeBase], Any]:
    class Base(DeclarativeBase):
        pass

    class Ticket(Base):
        __tablename__ = "tickets"
        id: Mapped[int] = mapped_column(primary_key=True)
        subject: Mapped[str | None]
        body: Mapped[str | None]
        status: Mapped[str] = mapped_column(default="open", index=True)
        embedding = Embedding(template, model=model, **options)

    return Base, Ticket


def run_worker(database_url: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``embeddb worker --once`` as a separate process that knows only the database URL."""
    return subprocess.run(
        [sys.executable, "-m", "embeddb.cli", "worker", "--once", "--database-url", database_url,
         *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def pending(conn: sa.Connection) -> list[sa.Row[Any]]:
    """The queue entries, once the inbox (bulk INSERTs) is expanded as a worker would, in the
    caller's transaction (rolled back with it when the caller does not commit)."""
    for entry in catalog.list_entries(conn):
        while conn.execute(sa.text(queries["inbox_has_entries"]), {"column_id": entry.id}).scalar():
            queue.expand_inbox(conn, entry, lock_timeout=None)
    return list(conn.execute(sa.text(
        "SELECT row_key, attempts, last_error, parked_at FROM embeddb.pending ORDER BY row_key")))


def stored(conn: sa.Connection, ticket_id: int) -> tuple[Any, Any]:
    """The stored vector (as numpy) and source hash of one ticket."""
    row = conn.execute(sa.text(
        "SELECT embedding::text, embedding_source_hash FROM tickets WHERE id = :id"),
        {"id": ticket_id}).one()
    vector = None if row[0] is None else np.array(row[0].strip("[]").split(","), dtype=np.float32)
    return vector, row[1]


def cosine(a: Any, b: Any) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def drain(database_url: str, **config: Any) -> Any:
    """Run an in-process worker until nothing is ready; returns its stats."""
    from embeddb.worker import Worker, WorkerConfig

    with Worker(database_url, WorkerConfig(**config)) as worker:
        return worker.run_once()
