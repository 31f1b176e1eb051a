"""One column's trouble stays in that column: a long-running worker, two tables, and the second
table broken in each way a column can break while the first one keeps flowing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding
from embeddb.cli import main

from .models import HASH_MODEL
from .roles import WORKER_GRANTS, Roles
from .workers import WorkerProcess, scalar, wait_until

SLOW_MODEL = "embeddb-testing/hash-32?delay=0.2"  # same vectors, 0.2 s per batch


def two_tables(engine: sa.Engine) -> tuple[Any, Any]:
    class Base(DeclarativeBase):
        pass

    class Good(Base):
        __tablename__ = "good"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str]
        embedding = Embedding("{body}", model=HASH_MODEL)

    class Bad(Base):
        __tablename__ = "bad"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str]
        embedding = Embedding("{body}", model=SLOW_MODEL)

    Base.metadata.create_all(engine)
    return Good, Bad


def insert(engine: sa.Engine, table: str, ids: range) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} (id, body) VALUES (:id, :body)"),
                     [{"id": i, "body": f"{table} row {i}"} for i in ids])


def unembedded(engine: sa.Engine, table: str) -> int:
    return int(scalar(engine, f"SELECT count(*) FROM {table} WHERE embedding IS NULL"))


def fault(engine: sa.Engine, table: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT fault, fault_retry_at FROM embeddb.columns WHERE table_name = :t"),
            {"t": table}).one()


def status(database_url: str, capsys: Any) -> str:
    assert main(["status", "--database-url", database_url]) == 0
    out: str = capsys.readouterr().out
    return out


def broken_then_healed(engine: sa.Engine, worker: WorkerProcess, reason: str,
                       database_url: str, capsys: Any, next_id: int) -> int:
    """With ``bad`` broken: rows of ``good`` are embedded, the fault is shown and retried
    but logged once; returns the next free row id."""
    insert(engine, "good", range(next_id, next_id + 5))
    wait_until(lambda: unembedded(engine, "good") == 0, what="good's rows embedded")
    wait_until(lambda: reason in (fault(engine, "bad").fault or ""), what=f"fault {reason!r}")
    first_try = fault(engine, "bad").fault_retry_at
    wait_until(lambda: fault(engine, "bad").fault_retry_at != first_try, what="a retry")
    second_try = fault(engine, "bad").fault_retry_at
    wait_until(lambda: fault(engine, "bad").fault_retry_at != second_try, what="another retry")
    assert worker.log.count(reason) == 1, worker.log  # logged once, not per retry
    shown = status(database_url, capsys)
    assert "public.bad.embedding" in shown and "failing since" in shown and reason in shown
    assert worker.process.poll() is None, worker.log
    return next_id + 5


def test_a_broken_column_is_isolated_retried_and_shown_while_the_other_flows(
        engine: sa.Engine, database_url: str, roles: Roles, tmp_path: Path,
        capsys: Any) -> None:
    two_tables(engine)
    role = roles.create("iso_worker", *WORKER_GRANTS,
                        "GRANT SELECT, UPDATE ON good, bad TO {role}")
    worker = WorkerProcess(roles.url(role), tmp_path, "--column-backoff-seconds", "0.3",
                           "--defer-index-rows", "50", "--batch-size", "10")
    try:
        insert(engine, "bad", range(1, 4))
        wait_until(lambda: unembedded(engine, "bad") == 0, what="bad's first rows")
        next_id = 10

        # 1. SELECT revoked on the table
        roles.run(f"REVOKE SELECT ON bad FROM {role}")
        insert(engine, "bad", range(next_id, next_id + 5))
        next_id = broken_then_healed(engine, worker, f"role {role} lacks SELECT on public.bad",
                                     database_url, capsys, next_id)
        roles.run(f"GRANT SELECT ON bad TO {role}")
        wait_until(lambda: unembedded(engine, "bad") == 0, what="bad healed after SELECT")
        wait_until(lambda: fault(engine, "bad").fault is None, what="the fault cleared")

        # 2. UPDATE revoked: the vectors cannot be stored
        roles.run(f"REVOKE UPDATE ON bad FROM {role}")
        insert(engine, "bad", range(next_id, next_id + 5))
        next_id = broken_then_healed(  # the columns it writes, which a column grant gives too
            engine, worker,
            f"role {role} lacks UPDATE (embedding, embedding_source_hash) on public.bad",
            database_url, capsys, next_id)
        with engine.connect() as conn:  # nothing parked, no attempt spent
            assert conn.execute(sa.text("SELECT count(*) FROM embeddb.pending WHERE attempts > 0"
                                        " OR parked_at IS NOT NULL")).scalar() == 0
        roles.run(f"GRANT UPDATE ON bad TO {role}")
        wait_until(lambda: unembedded(engine, "bad") == 0, what="bad healed after UPDATE")

        # 3. a backlog large enough to set the index aside, on an index the role does not own
        insert(engine, "bad", range(1000, 1100))
        insert(engine, "good", range(next_id, next_id + 5))
        wait_until(lambda: unembedded(engine, "bad") == 0 and unembedded(engine, "good") == 0,
                   what="the large backlog embedded with the index in place")
        assert "embedded with the HNSW index in place: must be owner of index" in worker.log
        assert scalar(engine, "SELECT to_regclass('bad_embedding_hnsw') IS NOT NULL")
        next_id += 5

        # 4. the table dropped while the worker drains it
        insert(engine, "bad", range(2000, 2300))
        wait_until(lambda: unembedded(engine, "bad") < 280, what="draining under way")
        roles.run("DROP TABLE bad CASCADE")
        broken_then_healed(engine, worker, 'relation "public.bad" does not exist',
                           database_url, capsys, next_id)
        assert "Traceback" not in worker.log
        assert worker.stop() == 0
    finally:
        worker.kill()
