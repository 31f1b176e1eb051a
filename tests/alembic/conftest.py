"""Fixtures for the Alembic tests: the example application in a temporary directory, and bare
databases (no pgvector, no embeddb schema) for migrations that start from nothing."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url

from embeddb.database import create_engine, libpq_conninfo

from .example import EXAMPLE


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of examples/alembic_app, so generated revisions never land in the repository."""
    target = tmp_path / "alembic_app"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def bare_database(server_url: str) -> Iterator[Callable[[], str]]:
    """Makes databases with nothing in them: no pgvector, no embeddb schema."""
    names: list[str] = []

    def make() -> str:
        name = f"embeddb_bare_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        names.append(name)
        return make_url(server_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture
def bare_engine(bare_database: Callable[[], str]) -> Iterator[sa.Engine]:
    engine = create_engine(bare_database(), poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()
