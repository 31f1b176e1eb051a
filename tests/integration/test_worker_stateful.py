"""A randomised stateful test: inserts, updates, deletes, worker batches, crashed workers and
restarts in any interleaving; once quiet, every vector matches its row's current text."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from embeddb.catalog import CatalogEntry
from embeddb.testing import HashEmbedder
from embeddb.worker import Worker, WorkerConfig

from .models import HASH_MODEL, ticket_model
from .workers import assert_in_step

LEASE = 0.3
ids = st.integers(min_value=1, max_value=12)
texts = st.sampled_from(["", "printer jams", "cannot log in", "refund please", "ünïcode ✓",
                         "printer jams again", "x" * 3000])


class SimulatedCrash(BaseException):
    """Escapes the worker like a kill: no handler runs, its claims stay until the lease ends."""


class EditingModel(HashEmbedder):
    """Another client writes the row while the model runs."""

    def __init__(self, edit: Any) -> None:
        super().__init__(HASH_MODEL)
        self.edit = edit

    def embed_documents(self, texts: Sequence[str]) -> Any:
        self.edit()
        return super().embed_documents(texts)


class CrashingModel(HashEmbedder):
    def embed_documents(self, texts: Sequence[str]) -> Any:
        raise SimulatedCrash


def test_any_interleaving_of_writes_and_worker_faults_ends_in_step(
        engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    config = WorkerConfig(batch_size=3, lease_seconds=LEASE, backoff_seconds=0)

    class Interleavings(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            with engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE tickets"))
            self.worker = Worker(database_url, config)

        @rule(ticket=ids, body=texts)
        def insert(self, ticket: int, body: str) -> None:
            with engine.begin() as conn:
                conn.execute(sa.text(
                    "INSERT INTO tickets (id, subject, body, status) VALUES (:id, 's', :b, 'open')"
                    " ON CONFLICT (id) DO NOTHING"), {"id": ticket, "b": body})

        @rule(ticket=ids, subject=texts, body=texts)
        def update(self, ticket: int, subject: str, body: str) -> None:
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE tickets SET subject = :s, body = :b WHERE id = :id"),
                             {"id": ticket, "s": subject, "b": body})

        @rule(ticket=ids)
        def touch_other_column(self, ticket: int) -> None:
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE tickets SET status = 'closed' WHERE id = :id"),
                             {"id": ticket})

        @rule(ticket=ids)
        def delete(self, ticket: int) -> None:
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM tickets WHERE id = :id"), {"id": ticket})

        @rule()
        def worker_batch(self) -> None:
            with engine.connect() as conn:
                (entry,) = _entries(conn)
            self.worker.process_batch(entry, HashEmbedder(HASH_MODEL))

        @rule(ticket=ids, body=texts, delete=st.booleans())
        def worker_batch_while_a_row_changes(self, ticket: int, body: str, delete: bool) -> None:
            def edit() -> None:
                if delete:
                    self.delete(ticket)
                else:
                    self.update(ticket, "edited", body)

            with engine.connect() as conn:
                (entry,) = _entries(conn)
            self.worker.process_batch(entry, EditingModel(edit))

        @rule()
        def worker_crashes_mid_batch(self) -> None:
            crashing = Worker(database_url, config,
                              embedder_for=lambda _: CrashingModel(HASH_MODEL))
            try:
                crashing.run_once()
            except SimulatedCrash:
                pass
            finally:
                crashing.close()

        @rule()
        def worker_restarts(self) -> None:
            self.worker.close()
            self.worker = Worker(database_url, config)

        def teardown(self) -> None:
            time.sleep(LEASE + 0.1)  # let the crashed workers' leases run out
            self.worker.run_once()
            self.worker.close()
            assert_in_step(engine, HASH_MODEL)

    run_state_machine_as_test(
        Interleavings,
        settings=settings(max_examples=30, stateful_step_count=25, deadline=None),
    )


def _entries(conn: sa.Connection) -> list[CatalogEntry]:
    from embeddb import catalog

    return catalog.list_entries(conn)
