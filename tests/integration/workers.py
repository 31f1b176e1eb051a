"""Running real `embeddb worker` processes in tests, and checking the sync invariant."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from embeddb import column_sql
from embeddb.testing import HashEmbedder


class WorkerProcess:
    """`embeddb worker` in its own process, with its log in a file."""

    def __init__(self, database_url: str, log_dir: Path, *args: str,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.log_path = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "embeddb.cli", "worker", "--database-url", database_url,
             "--poll-seconds", "0.5", *args],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            cwd=cwd,  # `python -m` puts the working directory first on the path
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout)
        self._log.close()
        return code

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot die
            self.process.kill()
        self.wait()


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> float:
    """Poll ``condition`` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def scalar(engine: sa.Engine, statement: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(statement)).scalar()


def nothing_pending(engine: sa.Engine) -> bool:
    return scalar(engine, "SELECT (SELECT count(*) FROM embeddb.pending)"
                          " + (SELECT count(*) FROM embeddb.inbox)"
                          " + (SELECT count(*) FROM embeddb.inbox_ranges)") == 0


def claims(engine: sa.Engine) -> int:
    return int(scalar(engine, "SELECT count(*) FROM embeddb.pending WHERE claim_token IS NOT NULL"))


def assert_in_step(engine: sa.Engine, model: str, table: str = "tickets") -> int:
    """The invariant: every row's stored vector is the model's embedding of its current text,
    its hash is that text's md5, nothing is pending, nothing is parked. Returns the row count."""
    embedder = HashEmbedder(model.split("?")[0])  # same vectors, without a test delay
    with engine.connect() as conn:
        column_id = conn.execute(sa.text(
            "SELECT id FROM embeddb.columns WHERE table_name = :t"), {"t": table}).scalar_one()
        render = column_sql.render_function(column_id).as_string(None)
        rows = conn.execute(sa.text(
            f"SELECT id, {render}(t) AS text, embedding::text AS vector,"
            f" embedding_source_hash AS hash FROM {table} t")).all()
        leftovers = conn.execute(sa.text(
            "SELECT row_key, attempts, parked_at, last_error FROM embeddb.pending")).all()
        leftovers += conn.execute(sa.text("SELECT keys, rows, enqueued_at, id FROM embeddb.inbox")).all()
        leftovers += conn.execute(sa.text(
            "SELECT first_key, last_key, enqueued_at, id FROM embeddb.inbox_ranges")).all()
    assert leftovers == [], f"left pending: {leftovers[:5]}"
    for row in rows:
        if row.text is None:
            assert row.vector is None and row.hash is None, f"row {row.id} has no text"
            continue
        assert row.vector is not None, f"row {row.id} has no vector"
        stored = np.array(row.vector.strip("[]").split(","), dtype=np.float32)
        expected = embedder.embed_documents([row.text])[0]
        assert np.allclose(stored, expected, atol=1e-6), f"row {row.id} has a stale vector"
        assert row.hash.hex == hashlib.md5(row.text.encode()).hexdigest(), f"row {row.id} hash"
    return len(rows)


def children_of(pid: int) -> list[int]:
    """The pids of the processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            # the field after the parenthesised command name: state, then the parent's pid
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)
