"""The lease-expired path, driven without waiting: the worker's clock and the claims' expiry in
the database are moved on by the test, and the order of the worker's steps is fixed by events
(no sleep, no lease of a second that a loaded machine may or may not outlast)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from embeddb import worker as worker_module
from embeddb.embedders import Vectors, load_embedder
from embeddb.worker import Worker, WorkerConfig

from .models import HASH_MODEL, ticket_model
from .workers import assert_in_step

LEASE_SECONDS = 600.0
GATE_SECONDS = 30.0  # a deadline for a step that should come at once, not a synchronisation


class DrivenClock:
    """``time`` as the worker module sees it, whose ``monotonic()`` the test moves on."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class ExpiringEmbedder:
    """The hash model; while it embeds the first batch, that batch's lease runs out, in the
    worker's clock and in the database at once, as if the model had taken longer than it."""

    def __init__(self, engine: sa.Engine, clock: DrivenClock) -> None:
        self._inner = load_embedder(HASH_MODEL)
        self._engine, self._clock = engine, clock
        self.calls: list[list[str]] = []
        self.embedding_again = threading.Event()

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            with self._engine.begin() as conn:
                conn.execute(sa.text("UPDATE embeddb.pending SET claim_expires_at ="
                                     " now() - interval '1 second' WHERE claim_token IS NOT NULL"))
            self._clock.offset += LEASE_SECONDS + 1
        else:
            self.embedding_again.set()
        return self._inner.embed_documents(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_batch_whose_lease_ran_out_is_written_before_the_next_claim_can_take_it_back(
        engine: sa.Engine, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    for first in (1, 3):  # two transactions: tickets 1-2 are queued first, so claimed first
        with engine.begin() as conn:
            conn.execute(sa.insert(Ticket), [{"id": i, "subject": f"ticket {i}",
                                              "body": f"body of ticket {i}"}
                                             for i in (first, first + 1)])
    clock = DrivenClock()
    embedder = ExpiringEmbedder(engine, clock)
    monkeypatch.setattr(worker_module, "time", clock)
    monkeypatch.setattr(worker_module, "load_embedder", lambda *args: embedder)

    with Worker(database_url, WorkerConfig(batch_size=2, lease_seconds=LEASE_SECONDS,
                                           defer_index_rows=0)) as worker:
        # The first batch's write waits until the worker either waits for it (the lease path)
        # or embeds another batch first (which could then hold the first batch's rows).
        write, finish = worker._write, worker._finish

        def gated_write(batch: Any) -> Any:
            assert embedder.embedding_again.wait(GATE_SECONDS), \
                "the worker neither waited for its write nor claimed again"
            return write(batch)

        def waited_for(*args: Any) -> Any:
            embedder.embedding_again.set()  # nothing else happens before this write now
            return finish(*args)

        monkeypatch.setattr(worker, "_write", gated_write)
        monkeypatch.setattr(worker, "_finish", waited_for)
        stats = worker.run_once()

    first, *rest = embedder.calls
    assert sorted(first) == ["ticket 1\n\nbody of ticket 1", "ticket 2\n\nbody of ticket 2"]
    # the second claim found tickets 1-2 written, not expired and claimable again
    assert [sorted(batch) for batch in rest] == [["ticket 3\n\nbody of ticket 3",
                                                  "ticket 4\n\nbody of ticket 4"]]
    assert stats.embedded == 4 and stats.superseded == 0
    assert assert_in_step(engine, HASH_MODEL) == 4
