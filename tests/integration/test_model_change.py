"""Blue/green model changes with the deterministic test embedder: the live generation serves
searches until the next one is complete; rollback, finish, a change refused while one runs,
and the progress `embeddb status` shows."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

import embeddb
from embeddb import catalog, generations, search
from embeddb.cli import main
from embeddb.embedders import load_embedder
from embeddb.errors import ModelChangeInProgress, SchemaError
from embeddb.worker import Worker, WorkerConfig

from .models import HASH_MODEL, cosine, drain, ticket_model

WIDER = "embeddb-testing/hash-64"


def make_tickets(engine: sa.Engine, count: int = 12) -> Any:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": i, "subject": f"subject {i}", "body": f"body text number {i}"}
            for i in range(1, count + 1)])
    return Ticket


def start_change(engine: sa.Engine, model: str = WIDER) -> Any:
    """Install the same table declared with ``model``: the change begins."""
    _, Changed = ticket_model(model=model)
    embeddb.install(engine, Changed)
    return Changed


def live(engine: sa.Engine) -> catalog.CatalogEntry:
    with engine.connect() as conn:
        entry = catalog.get_entry(conn, "public", "tickets", "embedding")
    assert entry is not None
    return entry


def others(engine: sa.Engine) -> dict[str, catalog.CatalogEntry]:
    with engine.connect() as conn:
        return generations.generations(conn, live(engine))


def table_columns(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {row.name for row in conn.execute(sa.text(
            "SELECT attname AS name FROM pg_attribute WHERE attrelid = 'tickets'::regclass"
            " AND attnum > 0 AND NOT attisdropped"))}


def triggers(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'tickets'::regclass"
            " AND NOT tgisinternal")).scalars())


def stored_vectors(engine: sa.Engine, column: str) -> dict[int, np.ndarray[Any, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, {column}::text AS v FROM tickets"
                                    f" WHERE {column} IS NOT NULL"))
        return {row.id: np.array(row.v.strip("[]").split(","), dtype=np.float32) for row in rows}


def current(engine: sa.Engine, entry: catalog.CatalogEntry) -> int:
    """How many rows of ``entry``'s generation hold the vector of their current text."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            f"SELECT count(*) FROM tickets t WHERE {entry.spec.hash_column}"
            f" = md5(embeddb.render_{entry.id}(t))::uuid")).scalar_one())


def pending_of(engine: sa.Engine, entry: catalog.CatalogEntry) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM embeddb.pending"
                                        " WHERE column_id = :id"), {"id": entry.id}).scalar_one())


def assert_scored_with(hits: Any, model: str, query: str, vectors: dict[int, Any]) -> None:
    query_vector = load_embedder(model).embed_query(query)
    for ticket, similarity in hits:
        assert similarity == pytest.approx(cosine(query_vector, vectors[ticket.id]), abs=1e-5)


def test_searches_use_the_live_generation_until_the_swap(
        engine: sa.Engine, database_url: str) -> None:
    Ticket = make_tickets(engine)
    drain(database_url)
    old_vectors = stored_vectors(engine, "embedding")
    Changed = start_change(engine)
    upcoming = others(engine)["next"]
    assert (upcoming.spec.column, upcoming.spec.dimensions) == ("embedding__next", 64)
    assert pending_of(engine, upcoming) == 12 and live(engine).spec.dimensions == 32
    # writes during the change are queued for both generations
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 13, "subject": "new", "body": "written now"}])
        conn.execute(sa.update(Ticket).where(Ticket.id == 1).values(body="rewritten"))
    assert pending_of(engine, live(engine)) == 2 and pending_of(engine, upcoming) == 13
    with Session(engine) as session:  # old and new declarations alike read the live vectors
        for declared in (Ticket, Changed):
            hits = search(session, declared.embedding, "body text", k=5)
            assert len(hits) == 5
            assert_scored_with(hits, HASH_MODEL, "body text", old_vectors)
    drain(database_url)
    assert live(engine).id == upcoming.id and live(engine).spec.dimensions == 64
    assert set(others(engine)) == {"previous"}
    new_vectors = stored_vectors(engine, "embedding")
    with Session(engine) as session:
        hits = search(session, Changed.embedding, "body text", k=5)
    assert len(hits) == 5
    assert_scored_with(hits, WIDER, "body text", new_vectors)
    # both generations hold a current vector of every row, those written meanwhile included
    assert current(engine, live(engine)) == 13
    assert current(engine, others(engine)["previous"]) == 13
    assert "tickets_embedding_hnsw" in _indexes(engine)


def test_rollback_before_the_swap_leaves_the_column_as_it_was(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine)
    drain(database_url)
    before = (table_columns(engine), triggers(engine), stored_vectors(engine, "embedding"))
    start_change(engine)
    assert "embedding__next" in table_columns(engine)
    assert main(["model", "rollback", "tickets.embedding", "--database-url", database_url]) == 0
    after = (table_columns(engine), triggers(engine), stored_vectors(engine, "embedding"))
    assert after[:2] == before[:2]
    assert {k: v.tolist() for k, v in after[2].items()} == \
        {k: v.tolist() for k, v in before[2].items()}
    assert others(engine) == {} and live(engine).identity.name == HASH_MODEL
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar() == 0


def test_finish_drops_the_previous_vectors_and_rollback_after_the_swap_restores_them(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine)
    drain(database_url)
    old_vectors = stored_vectors(engine, "embedding")
    start_change(engine)
    with engine.begin() as conn, pytest.raises(ModelChangeInProgress, match="still being built"):
        generations.finish(conn, live(engine))
    drain(database_url)
    assert live(engine).identity.name == WIDER
    # rolled back after the swap: the previous vectors (kept current) are live again
    with engine.begin() as conn:
        restored = generations.rollback(conn, live(engine))
    assert restored.identity.name == HASH_MODEL and live(engine).spec.dimensions == 32
    assert {k: v.tolist() for k, v in stored_vectors(engine, "embedding").items()} == \
        {k: v.tolist() for k, v in old_vectors.items()}
    assert others(engine) == {}
    assert "embedding__previous" not in table_columns(engine)
    # again, and this time finished: only the new model's columns are left
    start_change(engine)
    drain(database_url)
    assert main(["model", "finish", "tickets.embedding", "--database-url", database_url]) == 0
    assert others(engine) == {} and live(engine).identity.name == WIDER
    assert not {c for c in table_columns(engine) if "__" in c}
    assert triggers(engine) == {f"embeddb_embedding_{e}" for e in ("ins", "upd", "del", "trunc")}
    with engine.begin() as conn, pytest.raises(SchemaError, match="no model change to finish"):
        generations.finish(conn, live(engine))


def test_a_change_while_one_is_in_progress_is_refused_leaving_the_database_unchanged(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_tickets(engine)
    start_change(engine)
    start_change(engine)  # the same change again: nothing new
    assert set(others(engine)) == {"next"}
    before = (table_columns(engine), triggers(engine))
    with pytest.raises(ModelChangeInProgress, match=r"already changing .* rollback tickets"):
        start_change(engine, "embeddb-testing/hash-16")
    with pytest.raises(ModelChangeInProgress), engine.begin() as conn:
        ops = Operations(MigrationContext.configure(conn))
        ops.alter_embedding("tickets", "embedding", template="{subject}")
    assert main(["model", "change", "tickets.embedding", "--dimensions", "16",
                 "--database-url", database_url]) == 1
    assert "already changing" in capsys.readouterr().err
    assert (table_columns(engine), triggers(engine)) == before
    drain(database_url)
    assert set(others(engine)) == {"previous"}
    start_change(engine, "embeddb-testing/hash-16")  # swapped in: a new change confirms it
    assert {g: e.identity.name for g, e in others(engine).items()} == \
        {"next": "embeddb-testing/hash-16"}
    assert "embedding__previous" not in table_columns(engine)


def test_status_shows_progress_rate_and_eta(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_tickets(engine, count=20)
    drain(database_url)
    start_change(engine)
    upcoming = others(engine)["next"]
    with Worker(database_url, WorkerConfig(batch_size=5)) as worker:
        worker.process_batch(upcoming, load_embedder(WIDER))
    capsys.readouterr()
    assert main(["status", "--json", "--database-url", database_url]) == 0
    (row,) = [c for c in json.loads(capsys.readouterr().out)["columns"]
              if c["generation"] == "next"]
    progress = row["progress"]
    assert (progress["total"], progress["done"], progress["remaining"]) == (20, 5, 15)
    assert progress["rows_per_second"] > 0
    assert progress["eta_seconds"] == pytest.approx(15 / progress["rows_per_second"])
    assert main(["status", "--database-url", database_url]) == 0
    text = capsys.readouterr().out
    assert "next generation of tickets.embedding: 25% (5/20 rows)" in text
    assert "searches use tickets.embedding until it is swapped in" in text


def test_a_swap_waits_for_searches_holding_the_table(
        engine: sa.Engine, database_url: str) -> None:
    Ticket = make_tickets(engine)
    drain(database_url)
    start_change(engine)
    upcoming = others(engine)["next"]
    with Worker(database_url, WorkerConfig(defer_index_rows=0)) as worker:
        worker.process_batch(upcoming, load_embedder(WIDER))
    with engine.connect() as conn:  # build the index the way the worker does, no swap yet
        conn.execute(sa.text("UPDATE embeddb.columns SET index_deferred = false"
                             " WHERE id = :id"), {"id": upcoming.id})
        conn.commit()
    with Session(engine) as reader:
        assert len(search(reader, Ticket.embedding, "body", k=3)) == 3  # its transaction is open
        assert not generations.swap_if_complete(engine, upcoming)
        assert live(engine).identity.name == HASH_MODEL
    assert generations.swap_if_complete(engine, upcoming)
    assert live(engine).identity.name == WIDER


def test_an_alembic_downgrade_rolls_a_change_back(engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine)
    drain(database_url)
    with engine.begin() as conn:
        ops = Operations(MigrationContext.configure(conn))
        ops.alter_embedding("tickets", "embedding", model=WIDER, dimensions=64,
                            existing_model=HASH_MODEL, existing_dimensions=32)
    assert set(others(engine)) == {"next"}
    with engine.begin() as conn:  # the downgrade of that revision
        ops = Operations(MigrationContext.configure(conn))
        ops.alter_embedding("tickets", "embedding", model=HASH_MODEL, dimensions=32,
                            existing_model=WIDER, existing_dimensions=64)
    assert others(engine) == {} and "embedding__next" not in table_columns(engine)


def test_dropping_the_column_drops_its_generations(engine: sa.Engine) -> None:
    Ticket = make_tickets(engine)
    start_change(engine)
    Ticket.metadata.drop_all(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM embeddb.columns")).scalar() == 0
        assert conn.execute(sa.text(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'embeddb'::regnamespace"
            " AND proname ~ '^(render|enqueue)_'")).scalar() == 0


def _indexes(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'tickets'")).scalars())
