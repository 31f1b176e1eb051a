"""Partitioned tables, crashed workers, and parked rows whose model error quotes their text."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embeddb import Embedding, explain, search
from embeddb.catalog import CatalogEntry
from embeddb.cli import main
from embeddb.database import create_engine
from embeddb.testing import HashEmbedder
from embeddb.worker import Worker, WorkerConfig

from .models import HASH_MODEL, pending, ticket_model
from .workers import scalar, wait_until


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


def hnsw_indexes(engine: sa.Engine) -> dict[str, bool]:
    """Each HNSW index on the partitioned table or one of its partitions, and its validity."""
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT t.relid::text, i.indisvalid FROM pg_partition_tree('part_docs') t"
            " JOIN pg_index i ON i.indrelid = t.relid"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
            " WHERE am.amname = 'hnsw'")).all())


def test_a_partitioned_table_keeps_its_index_through_a_large_backlog_and_search_is_truthful(
        engine: sa.Engine, database_url: str) -> None:
    Base, Doc = partitioned_docs()
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        for tenant in ("a", "b", "c"):
            conn.exec_driver_sql(f"CREATE TABLE part_{tenant} PARTITION OF part_docs"
                                 f" FOR VALUES IN ('{tenant}')")
        conn.execute(sa.insert(Doc), [{"id": i, "tenant": "abc"[i % 3],
                                       "body": f"printer problem {i}"} for i in range(300)])
    # a backlog of every row, well past the threshold that sets an index aside
    with Worker(database_url, WorkerConfig(batch_size=50, defer_index_rows=100)) as worker:
        stats = worker.run_once()
    assert stats.embedded == 300
    with engine.connect() as conn:
        assert pending(conn) == []
        assert conn.execute(sa.text("SELECT index_deferred FROM embeddb.columns")).scalar() is False
        assert conn.execute(sa.text(
            "SELECT count(*) FROM part_docs WHERE embedding IS NULL")).scalar() == 0
    assert hnsw_indexes(engine) == {"part_docs": True, "part_a": True, "part_b": True,
                                    "part_c": True}
    with Session(engine) as session:
        hits = search(session, Doc.embedding, "printer problem", k=5)
        assert len(hits) == 5 and hits.plan == "index"
        shown = str(explain(session, Doc.embedding, "printer problem", k=5, analyze=True))
        assert "Index Scan using part_a_embedding_idx" in shown and "Seq Scan" not in shown

    # an index left set aside by an older worker: search says, and runs, the exact plan;
    # the next worker builds it again (on a partitioned table, not CONCURRENTLY)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX part_docs_embedding_hnsw"))
        conn.execute(sa.text("UPDATE embeddb.columns SET index_deferred = true"))
    fresh = create_engine(database_url, poolclass=sa.pool.NullPool)  # no remembered index
    with Session(fresh) as session:
        hits = search(session, Doc.embedding, "printer problem", k=5)
        assert len(hits) == 5 and hits.plan == "exact"
    fresh.dispose()
    with Worker(database_url, WorkerConfig()) as worker:
        worker.run_once()
    assert hnsw_indexes(engine) == {"part_docs": True, "part_a": True, "part_b": True,
                                    "part_c": True}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT index_deferred FROM embeddb.columns")).scalar() is False


_RUN_WORKER = """
import sys
from embeddb.worker import Worker, WorkerConfig
Worker(sys.argv[1], WorkerConfig(heartbeat_seconds=0.5, lease_seconds=1, poll_seconds=0.5)).run()
"""


def status_workers(database_url: str, capsys: pytest.CaptureFixture[str]) -> list[Any]:
    assert main(["status", "--json", "--database-url", database_url]) == 0
    workers: list[Any] = json.loads(capsys.readouterr().out)["workers"]
    return workers


def test_a_killed_worker_shows_as_gone_once_its_heartbeat_is_overdue(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    process = subprocess.Popen([sys.executable, "-c", _RUN_WORKER, database_url],
                               env={**os.environ})
    try:
        wait_until(lambda: [w["state"] for w in status_workers(database_url, capsys)]
                   == ["running"], what="the worker's first heartbeat")
        with engine.connect() as conn:
            assert conn.execute(sa.text(
                "SELECT stale_after_seconds FROM embeddb.workers")).scalar() == 2.5
        # alive for longer than that threshold (3 heartbeats + a lease: 2.5 s): still running
        wait_until(lambda: bool(scalar(engine, "SELECT now() - started_at > interval '4 s'"
                                               " FROM embeddb.workers")), what="4 s of work")
        assert [w["state"] for w in status_workers(database_url, capsys)] == ["running"]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    wait_until(lambda: status_workers(database_url, capsys)[0]["state"] == "gone",
               timeout=20, what="the killed worker shown as gone")
    assert main(["status", "--database-url", database_url]) == 0
    assert ": gone," in capsys.readouterr().out


SECRET = "hunter2-zebra-staple-battery"


class QuotingModel(HashEmbedder):
    """A model whose error quotes its input, as many tokenizers' do."""

    def embed_documents(self, texts: Sequence[str]) -> Any:
        for text in texts:
            if SECRET in text:
                raise ValueError(f"cannot tokenize {text!r}: unexpected byte at 17")
        return super().embed_documents(texts)


def test_a_parked_rows_error_keeps_its_type_and_reason_but_not_its_text(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": 1, "subject": "login", "body": f"my password is {SECRET}, please reset"},
            {"id": 2, "subject": "printer", "body": "paper jam"}])

    def embedder_for(_: CatalogEntry) -> HashEmbedder:
        return QuotingModel(HASH_MODEL)

    caplog.set_level(logging.DEBUG)
    with Worker(database_url, WorkerConfig(max_attempts=1), embedder_for=embedder_for) as worker:
        worker.run_once()
    with engine.connect() as conn:
        (parked,) = pending(conn)
    assert parked.row_key == {"id": 1} and parked.parked_at is not None
    assert parked.last_error == "ValueError: cannot tokenize '[row text]': unexpected byte at 17"
    assert main(["status", "--database-url", database_url]) == 0
    assert main(["status", "--json", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "1 parked" in out and "unexpected byte at 17" in out
    for seen in (out, caplog.text, parked.last_error):
        assert "hunter2" not in seen and "zebra-staple" not in seen and "password is" not in seen
