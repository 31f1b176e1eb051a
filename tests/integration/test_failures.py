"""The worker's guarantees when text changes under it, the model fails, or the model differs.

These use the deterministic test model, so they are about the queue, not the model; the same
paths run with the real model in test_sync.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from embeddb import ModelMismatch, search
from embeddb.catalog import CatalogEntry
from embeddb.cli import main
from embeddb.embedders import load_embedder
from embeddb.testing import POISON, HashEmbedder
from embeddb.worker import ModelUnavailable, Worker, WorkerConfig

from .models import HASH_MODEL, cosine, drain, pending, run_worker, stored, ticket_model


def make_tickets(engine: sa.Engine, rows: Sequence[dict[str, Any]], **options: Any) -> Any:
    Base, Ticket = ticket_model(model=HASH_MODEL, **options)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), list(rows))
    return Ticket


class EditsWhileEmbedding(HashEmbedder):
    """Runs ``edit`` (another client's write) while 'the model runs'."""

    def __init__(self, edit: Any) -> None:
        super().__init__(HASH_MODEL)
        self.edit = edit

    def embed_documents(self, texts: Sequence[str]) -> Any:
        if self.edit is not None:
            self.edit()
            self.edit = None
        return super().embed_documents(texts)


def run_with(database_url: str, embedder: HashEmbedder, **config: Any) -> Worker:
    def embedder_for(_: CatalogEntry) -> HashEmbedder:
        return embedder

    with Worker(database_url, WorkerConfig(**config), embedder_for=embedder_for) as worker:
        worker.run_once()
        return worker


def test_text_changed_while_the_model_ran_is_not_stored_and_is_embedded_again(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine, [{"id": 1, "subject": "old", "body": "text"},
                          {"id": 2, "subject": "other", "body": "row"}])

    def edit() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE tickets SET subject = 'new' WHERE id = 1"))

    worker = run_with(database_url, EditsWhileEmbedding(edit))
    assert worker.stats.superseded == 1
    model = HashEmbedder(HASH_MODEL)
    with engine.connect() as conn:
        assert pending(conn) == []
        assert cosine(stored(conn, 1)[0], model.embed_documents(["new\n\ntext"])[0]) > 0.9999
        assert cosine(stored(conn, 2)[0], model.embed_documents(["other\n\nrow"])[0]) > 0.9999


def test_row_deleted_while_the_model_ran_leaves_nothing_behind(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine, [{"id": 1, "subject": "a", "body": "b"},
                          {"id": 2, "subject": "c", "body": "d"}])

    def delete() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM tickets WHERE id = 1"))

    run_with(database_url, EditsWhileEmbedding(delete))
    with engine.connect() as conn:
        assert pending(conn) == []
        assert conn.execute(sa.text("SELECT id FROM tickets")).scalars().all() == [2]
        assert stored(conn, 2)[0] is not None


def test_poison_row_is_retried_then_parked_while_the_rest_flow(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine, [{"id": 1, "subject": "fine", "body": "one"},
                          {"id": 2, "subject": "bad", "body": POISON},
                          {"id": 3, "subject": "fine", "body": "three"}])
    stats = drain(database_url, max_attempts=2, backoff_seconds=0)
    assert (stats.embedded, stats.failed) == (2, 2)  # tried twice: backoff 0 makes it ready again
    with engine.connect() as conn:
        (parked,) = pending(conn)
        assert parked.row_key == {"id": 2} and parked.attempts == 2
        assert parked.parked_at is not None and "poison" in parked.last_error
        assert stored(conn, 1)[0] is not None and stored(conn, 3)[0] is not None
        assert stored(conn, 2)[0] is None
    # status shows it, in both forms
    assert main(["status", "--database-url", database_url]) == 0
    # a fixed row gets a fresh start without any command
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tickets SET body = 'cured' WHERE id = 2"))
        (entry,) = pending(conn)
        assert entry.parked_at is None and entry.attempts == 0
    drain(database_url)
    with engine.connect() as conn:
        assert pending(conn) == [] and stored(conn, 2)[0] is not None


def test_failed_row_backs_off_and_retry_requeues_parked_rows(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_tickets(engine, [{"id": 1, "subject": "bad", "body": POISON}])
    stats = drain(database_url, max_attempts=3, backoff_seconds=60)
    assert stats.failed == 1  # backing off: not retried in the same drain
    with engine.connect() as conn:
        (entry,) = pending(conn)
        assert entry.attempts == 1 and entry.parked_at is None
        assert conn.execute(sa.text(
            "SELECT run_after > now() + interval '50 seconds' FROM embeddb.pending")).scalar()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE embeddb.pending SET parked_at = now()"))
    assert main(["status", "--json", "--database-url", database_url]) == 0
    assert '"parked": 1' in capsys.readouterr().out
    assert main(["retry", "tickets.embedding", "--database-url", database_url]) == 0
    assert "requeued 1 parked rows" in capsys.readouterr().out
    with engine.connect() as conn:
        (entry,) = pending(conn)
        assert entry.parked_at is None and entry.attempts == 0


class BrokenModel(HashEmbedder):
    def embed_documents(self, texts: Sequence[str]) -> Any:
        raise RuntimeError("CUDA out of memory")


def test_a_model_failing_for_everything_spends_no_row_attempts(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine, [{"id": i, "subject": "s", "body": str(i)} for i in range(1, 4)])
    with pytest.raises(ModelUnavailable, match="CUDA out of memory"):
        run_with(database_url, BrokenModel(HASH_MODEL))
    with engine.connect() as conn:
        entries = pending(conn)
        assert len(entries) == 3
        assert all(e.attempts == 0 and e.parked_at is None for e in entries)
        assert conn.execute(sa.text(
            "SELECT count(*) FROM embeddb.pending WHERE claim_token IS NOT NULL")).scalar() == 0


def test_worker_and_search_refuse_a_model_that_does_not_match_naming_both(
        engine: sa.Engine, database_url: str) -> None:
    Ticket = make_tickets(engine, [{"id": 1, "subject": "a", "body": "b"}])
    with engine.begin() as conn:  # as if the column had been embedded by other weights
        conn.execute(sa.text("UPDATE embeddb.columns SET model_fingerprint = 'feedfacecafebeef'"))
    finished = run_worker(database_url)
    assert finished.returncode == 1
    assert "weights feedfacecafebeef" in finished.stderr and "weights hash-v1" in finished.stderr
    with engine.connect() as conn:
        assert len(pending(conn)) == 1
    from sqlalchemy.orm import Session

    with Session(engine) as session, pytest.raises(ModelMismatch, match="feedfacecafebeef") as error:
        search(session, Ticket.embedding, "a query")
    assert str(error.value).startswith("public.tickets.embedding was embedded with")
    # a declaration that names another model than the catalog is refused too
    _, Other = ticket_model(model="embeddb-testing/hash-32?delay=0")
    with Session(engine) as session, pytest.raises(ModelMismatch, match="is declared with model"):
        search(session, Other.embedding, "a query")
    assert load_embedder(HASH_MODEL).identity.fingerprint == "hash-v1"


def test_a_large_backlog_is_embedded_with_the_index_aside_then_rebuilt(
        engine: sa.Engine, database_url: str) -> None:
    from sqlalchemy.orm import Session

    def index_state() -> tuple[Any, Any]:
        with engine.connect() as conn:
            valid = conn.execute(sa.text(
                "SELECT i.indisvalid FROM pg_index i"
                " WHERE i.indexrelid = to_regclass('tickets_embedding_hnsw')")).scalar()
            deferred = conn.execute(sa.text("SELECT index_deferred FROM embeddb.columns")).scalar()
        return valid, deferred

    Ticket = make_tickets(engine, [{"id": i, "subject": "printer", "body": f"problem {i}"}
                                   for i in range(1, 301)])
    seen_during: list[tuple[Any, Any]] = []
    with Worker(database_url, WorkerConfig(batch_size=50, defer_index_rows=100)) as worker:
        worker.run_once(on_batch=lambda _: seen_during.append(index_state()))
    assert seen_during[0] == (None, True)  # no index while the backlog was embedded
    assert index_state() == (True, False)  # rebuilt, valid, and recorded as such
    # later backlogs keep the index in place: one too small, one too small a share of the table
    for changed in (10, 120):  # of 300 rows: 120 >= defer_index_rows, but 40% < 50%
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE tickets SET body = body || ' again' WHERE id <= :n"),
                         {"n": changed})
        seen_during.clear()
        with Worker(database_url, WorkerConfig(defer_index_rows=100)) as worker:
            stats = worker.run_once(on_batch=lambda _: seen_during.append(index_state()))
        assert stats.embedded == changed
        assert seen_during and all(state == (True, False) for state in seen_during)
    with Session(engine) as session:
        assert len(search(session, Ticket.embedding, "printer problem", k=10)) == 10


def test_cli_search_answers_against_any_embedded_column(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_tickets(engine, [{"id": 1, "subject": "printer", "body": "paper jam", "status": "open"},
                          {"id": 2, "subject": "printer", "body": "no toner", "status": "closed"},
                          {"id": 3, "subject": "login", "body": "locked out", "status": "open"}])
    drain(database_url)
    assert main(["search", "tickets.embedding", "printer paper", "-k", "2",
                 "--where", "status = 'open'", "--database-url", database_url]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("2 rows in")
    assert "id=1" in lines[1] and "id=3" in lines[2]
    assert "embedding" not in lines[1]  # the vector itself is not printed
    assert main(["search", "tickets.nothing", "x", "--database-url", database_url]) == 1
    assert "not an embedded column (known: public.tickets.embedding)" in capsys.readouterr().err
