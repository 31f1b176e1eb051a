"""embeddb's own schema is versioned by Alembic, in its own version table, from one source."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from alembic import command

from embeddb import SchemaError, catalog, migrate
from embeddb.cli import main
from embeddb.database import create_engine
from embeddb.orm import install
from tests.integration.models import HASH_MODEL, ticket_model

from .inspect_db import embeddb_traces, snapshot

LEGACY_TABLES = {"columns", "pending", "workers"}
HEAD = migrate.head()
ALL = [script.revision for script in reversed(list(migrate.script_directory().walk_revisions()))]


def version_rows(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.text("SELECT version_num FROM embeddb.alembic_version")).scalars())


def test_ensure_catalog_migrates_a_bare_database_to_head_once(bare_engine: sa.Engine) -> None:
    with bare_engine.begin() as conn:
        assert migrate.current(conn) is None
        catalog.ensure_catalog(conn)
        catalog.ensure_catalog(conn)
        assert migrate.current(conn) == HEAD and ALL[0] == "0001"
        assert version_rows(conn) == [HEAD]
        tables = set(conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'embeddb'")).scalars())
        assert tables >= {*LEGACY_TABLES, "alembic_version"}
        assert conn.execute(sa.text(
            "SELECT extname FROM pg_extension WHERE extname = 'vector'")).scalar()


def test_concurrent_first_use_migrates_once(bare_database: Callable[[], str]) -> None:
    engine = create_engine(bare_database(), poolclass=sa.pool.NullPool)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def first_use() -> None:
        try:
            start.wait()
            with engine.begin() as conn:
                catalog.ensure_catalog(conn)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with engine.connect() as conn:
        assert errors == [] and version_rows(conn) == [HEAD]
    engine.dispose()


def test_alembic_command_and_embeddb_runner_build_the_same_schema(
        bare_database: Callable[[], str]) -> None:
    by_runner = create_engine(bare_database(), poolclass=sa.pool.NullPool)
    by_alembic = create_engine(bare_database(), poolclass=sa.pool.NullPool)
    assert migrate.migrate(by_runner) == ALL
    with by_alembic.begin() as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    with by_runner.connect() as a, by_alembic.connect() as b:
        assert snapshot(a) == snapshot(b)
        assert version_rows(a) == version_rows(b) == [HEAD]
    with by_alembic.begin() as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    with by_alembic.connect() as conn:
        assert not any(embeddb_traces(conn).values())
    by_runner.dispose()
    by_alembic.dispose()


def test_a_catalog_made_before_alembic_is_recorded_without_change(bare_engine: sa.Engine) -> None:
    """Revision 0001 is idempotent: a catalog from the old schema.sql is just stamped."""
    script = migrate.script_directory().get_revision("0001")
    assert script is not None
    with bare_engine.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        script.module.upgrade_on(conn)
        conn.execute(sa.text(
            "INSERT INTO embeddb.workers (worker_id, hostname, pid) VALUES ('w', 'h', 1)"))
    with bare_engine.begin() as conn:
        catalog.ensure_catalog(conn)
        assert version_rows(conn) == [HEAD]
        assert conn.execute(sa.text("SELECT worker_id FROM embeddb.workers")).scalar() == "w"


def test_a_schema_from_a_newer_embeddb_is_refused_by_name(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE embeddb.alembic_version SET version_num = '9999'"))
    with engine.begin() as conn, pytest.raises(SchemaError, match=r"revision '9999'.*upgrade"):
        catalog.ensure_catalog(conn)


def test_downgrade_base_removes_every_trace_of_embeddb_even_installed_columns(
        engine: sa.Engine) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 1, "subject": "s", "body": "b"}])
    assert migrate.migrate(engine, downgrade_to="base") == ALL[::-1]
    with engine.connect() as conn:
        assert embeddb_traces(conn) == {key: [] for key in embeddb_traces(conn)}
        columns = {c["name"] for c in sa.inspect(conn).get_columns("tickets")}
        assert columns == {"id", "subject", "body", "status"}
        assert conn.execute(sa.text("SELECT count(*) FROM tickets")).scalar() == 1
    # and it comes back on first use
    install(engine, Ticket)
    with engine.connect() as conn:
        assert migrate.current(conn) == HEAD
        assert conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar() == 1


def test_the_cli_migrates_and_downgrades(
        bare_database: Callable[[], str], capsys: pytest.CaptureFixture[str]) -> None:
    url = bare_database()
    assert main(["migrate", "--database-url", url]) == 0
    assert f"embeddb schema at {HEAD} ({', '.join(ALL)})" in capsys.readouterr().out
    assert main(["migrate", "--database-url", url]) == 0
    assert "already there" in capsys.readouterr().out
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert version_rows(conn) == [HEAD]
    assert main(["migrate", "--database-url", url, "--downgrade", "base"]) == 0
    assert f"downgraded to base ({', '.join(reversed(ALL))})" in capsys.readouterr().out
    with engine.connect() as conn:
        assert not any(embeddb_traces(conn).values())
    engine.dispose()
