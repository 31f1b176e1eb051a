"""The fault scenarios of test_worker_faults on a chunked column, with the invariant extended
to chunks: once things are quiet, every document's chunk rows are exactly the split of its
current text and every chunk vector is the model's embedding of that chunk."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import sqlalchemy as sa

from embeddb.worker import FAILPOINT_VARIABLE

from .chunked import CHUNKS, HASH_MODEL, check_chunk_invariant, doc_model, paragraphs
from .conftest import SpawnWorker
from .workers import claims, nothing_pending, scalar, wait_until


def make_docs(engine: sa.Engine, count: int, model: str = HASH_MODEL) -> Any:
    Base, Doc = doc_model(model=model)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [{"id": i, "title": f"doc {i}", "body": paragraphs(i, 4)}
                                      for i in range(1, count + 1)])
    return Doc


def in_step(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        assert scalar(engine, "SELECT count(*) FROM embeddb.pending") == 0
        return check_chunk_invariant(conn)


@pytest.mark.parametrize("point", ["claimed", "embedded", "stored"])
def test_kill_9_at_any_point_leaves_no_half_written_document(
        point: str, engine: sa.Engine, spawn_worker: SpawnWorker) -> None:
    make_docs(engine, 20)
    doomed = spawn_worker("--lease-seconds", "2", env={FAILPOINT_VARIABLE: point})
    assert doomed.wait() == -signal.SIGKILL
    assert claims(engine) == 20
    assert scalar(engine, f"SELECT count(*) FROM {CHUNKS}") == 0  # nothing half-written
    rescuer = spawn_worker("--lease-seconds", "2")
    wait_until(lambda: nothing_pending(engine), 30, "the rescuer to finish")
    assert rescuer.stop() == 0
    assert in_step(engine) >= 20 * 4


def test_a_document_edited_while_it_is_embedded_is_done_again(
        engine: sa.Engine, spawn_worker: SpawnWorker) -> None:
    make_docs(engine, 5, model=f"{HASH_MODEL}?delay=1.5")
    worker = spawn_worker()
    wait_until(lambda: claims(engine) == 5, 30, "a claim")
    with engine.begin() as conn:  # while "the model runs"
        conn.execute(sa.text("UPDATE docs SET body = :b WHERE id = 2"), {"b": paragraphs(99, 7)})
        conn.execute(sa.text("UPDATE docs SET body = :b WHERE id = 3"), {"b": paragraphs(3, 1)})
    wait_until(lambda: nothing_pending(engine), 30, "the edited documents to be done again")
    assert worker.stop() == 0
    assert in_step(engine) == 3 * 4 + 7 + 1


def test_a_worker_stopped_past_its_lease_cannot_overwrite_newer_chunks(
        engine: sa.Engine, spawn_worker: SpawnWorker) -> None:
    make_docs(engine, 5, model=f"{HASH_MODEL}?delay=1")
    late = spawn_worker("--lease-seconds", "1")
    wait_until(lambda: claims(engine) == 5, 30, "a claim")
    late.signal(signal.SIGSTOP)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE docs SET body = :b WHERE id = 1"), {"b": paragraphs(50, 2)})
    other = spawn_worker("--lease-seconds", "1")
    wait_until(lambda: nothing_pending(engine), 30, "the other worker")
    late.signal(signal.SIGCONT)
    # the late worker wakes, its guarded write is refused, and it goes idle: its log says so
    wait_until(lambda: "superseded" in late.log or "stored" in late.log, 30, "the late write")
    assert other.stop() == 0 and late.stop() == 0
    assert in_step(engine) == 4 * 4 + 2
