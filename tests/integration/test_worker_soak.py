"""A long run under steady writes and repeated faults: the invariant holds at the end, and a
long-lived worker's memory stays flat.

Not run by default (marker ``slow``): ``pytest -m slow tests/integration/test_worker_soak.py``,
``EMBEDDB_SOAK_SECONDS`` sets its length (default 300).
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from .conftest import SpawnWorker
from .models import HASH_MODEL, ticket_model
from .workers import WorkerProcess, assert_in_step, nothing_pending, wait_until

pytestmark = pytest.mark.slow

ROWS = 2_000  # ids the writer picks from
LEASE = "3"
MODEL = f"{HASH_MODEL}?delay=0.002"  # 2 ms per text: the model, not the database, is busy


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) / 1024


class Writer(threading.Thread):
    """Inserts, updates and deletes random rows, about 50 statements a second, until stopped."""

    def __init__(self, engine: sa.Engine, table: sa.Table) -> None:
        super().__init__(daemon=True)
        self.engine, self.table = engine, table
        self.stopping = threading.Event()
        self.statements = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        chance = random.Random(11)
        try:
            while not self.stopping.is_set():
                ticket = chance.randint(1, ROWS)
                with self.engine.begin() as conn:
                    action = chance.random()
                    if action < 0.15:
                        conn.execute(sa.delete(self.table).where(self.table.c.id == ticket))
                    elif action < 0.55:
                        conn.execute(sa.update(self.table).where(self.table.c.id == ticket)
                                     .values(body=f"edited {chance.random()}"))
                    else:
                        conn.execute(sa.text(
                            "INSERT INTO tickets (id, subject, body, status)"
                            " VALUES (:id, :subject, :body, 'open') ON CONFLICT (id)"
                            " DO UPDATE SET subject = excluded.subject"),
                            {"id": ticket, "subject": f"subject {chance.random()}",
                             "body": f"body {ticket}"})
                self.statements += 1
                time.sleep(0.02)
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc


def test_workers_keep_the_invariant_through_a_long_run_of_writes_and_faults(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    seconds = float(os.environ.get("EMBEDDB_SOAK_SECONDS", "300"))
    Base, Ticket = ticket_model(model=MODEL)
    Base.metadata.create_all(engine)
    writer = Writer(engine, Ticket.__table__)
    steady = spawn_worker("--lease-seconds", LEASE)  # never faulted: its memory is watched
    victims: list[WorkerProcess] = [spawn_worker("--lease-seconds", LEASE)]
    faults = random.Random(5)
    memory: list[float] = []
    writer.start()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(5)
        memory.append(rss_mib(steady.process.pid))
        victim = victims[-1]
        fault = faults.choice(["kill", "term", "stop", "connections", "none"])
        if fault == "kill":
            victim.kill()
        elif fault == "term":
            victim.stop()
        elif fault == "stop":  # past its lease: its late writes must be harmless
            victim.signal(signal.SIGSTOP)
            time.sleep(float(LEASE) + 1)
            victim.signal(signal.SIGCONT)
        elif fault == "connections":
            with engine.connect() as conn:
                conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'embeddb-worker'"))
        if victim.process.poll() is not None:
            victims.append(spawn_worker("--lease-seconds", LEASE))
    writer.stopping.set()
    writer.join(30)
    assert writer.error is None, writer.error
    wait_until(lambda: nothing_pending(engine), 60, "the workers to catch up")
    assert steady.process.poll() is None, steady.log[-2000:]  # it rode out every fault
    assert steady.stop() == 0
    for victim in victims:
        victim.stop()
    logs = steady.log + "".join(victim.log for victim in victims)
    assert "deadlock" not in logs.lower()
    assert writer.statements > seconds * 10
    assert assert_in_step(engine, HASH_MODEL) > 0
    # after the first minute, the steady worker's memory does not keep growing
    settled = memory[len(memory) // 5:]
    assert max(settled) - settled[0] < 50, f"RSS MiB over time: {memory}"
