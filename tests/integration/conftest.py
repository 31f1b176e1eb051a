from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .workers import WorkerProcess

SpawnWorker = Callable[..., WorkerProcess]


@pytest.fixture
def spawn_worker(database_url: str, tmp_path: Path) -> Iterator[SpawnWorker]:
    """Start `embeddb worker` processes on the test's database; any left running are killed."""
    started: list[WorkerProcess] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(database_url, tmp_path, *args, env=env)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        worker.kill()
