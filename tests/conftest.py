"""Fixtures: one real PostgreSQL with pgvector per test session, one fresh database per test.

The server is ``$EMBEDDB_TEST_DATABASE_URL`` when set (any PostgreSQL 14+ with pgvector 0.8+,
the URL naming a database the tests may use to create others), else an embedded PostgreSQL in a
temporary directory, stopped at the end. Each test gets ``CREATE DATABASE ... TEMPLATE`` of a
template that already has pgvector and embeddb's schema, which keeps isolation cheap.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url

from embeddb import catalog
from embeddb.database import create_engine, libpq_conninfo
from embeddb.server import EmbeddedServer

TEMPLATE = "embeddb_test_template"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
HASH_MODEL = "embeddb-testing/hash-32"


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer | None]:
    """The embedded server the tests run against, or None when they use an external one."""
    if os.environ.get("EMBEDDB_TEST_DATABASE_URL"):
        yield None
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("embeddb-home"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server_url(embedded_server: EmbeddedServer | None) -> str:
    if embedded_server is None:
        return os.environ["EMBEDDB_TEST_DATABASE_URL"]
    return embedded_server.start()  # already running: returns its URL


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(libpq_conninfo(url), autocommit=True)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = make_url(server_url).set(database=TEMPLATE).render_as_string(hide_password=False)
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        catalog.ensure_catalog(conn)
    engine.dispose()
    return url


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh database with pgvector and embeddb's schema, dropped after the test."""
    name = f"embeddb_test_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE)))
    yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
