from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from embeddb.database import create_engine

from .roles import Roles
from .searching import module_database
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


@pytest.fixture(scope="module")
def module_url(server_url: str, template_url: str) -> Iterator[str]:
    """A database of the test module's own, for query tests that load their rows once."""
    with module_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
def db(module_url: str) -> Iterator[sa.Engine]:
    """An engine on :func:`module_url`."""
    engine = create_engine(module_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def roles(database_url: str) -> Iterator[Roles]:
    """Login roles on the test's database, dropped with what they own when the test ends."""
    made = Roles(database_url)
    yield made
    made.drop_all()
