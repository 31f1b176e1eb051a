"""Upgrades while workers run, against the previous release's code (commit 904f9eb, schema head
0003) and HEAD on one database.

* HEAD migrates a database whose old worker is running: the old worker keeps embedding; when
  restarted it stops with one line saying to upgrade it.
* A HEAD worker never migrates: on an older schema it says to run ``embeddb migrate`` and waits,
  then carries on once the owner has.
* A HEAD worker meeting a newer schema carries on when that schema still serves its revision
  (``embeddb.worker_compatibility``), else stops with one line.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from embeddb import EmbeddingSpec, catalog, migrate
from embeddb.cli import main
from embeddb.database import create_engine
from embeddb.errors import SchemaNotReady, SchemaTooNew
from embeddb.template import Template
from embeddb.worker import Worker, WorkerConfig

from ..integration.workers import WorkerProcess, wait_until

HEAD = migrate.head()  # this embeddb's newest schema revision
PREVIOUS_RELEASE = "904f9eb"  # the last main before the production work; schema head 0003
ROOT = Path(__file__).resolve().parents[2]

# Run with the previous release on the path: declare a table with an embedded column and
# create it (which migrates embeddb's schema to that release's head).
OLD_INSTALL = textwrap.dedent("""
    import sys
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
    import embeddb
    from embeddb import Embedding
    from embeddb.database import create_engine

    assert embeddb.__file__.startswith(sys.argv[2]), embeddb.__file__

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str]
        embedding = Embedding("{body}", model="embeddb-testing/hash-32")

    engine = create_engine(sys.argv[1])
    Base.metadata.create_all(engine)
""")


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's source tree, from git."""
    target = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE, "embeddb"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def with_path(source: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(source)}


def old_install(release: Path, url: str) -> None:
    subprocess.run([sys.executable, "-c", OLD_INSTALL, url, str(release)], check=True,
                   env={**os.environ, **with_path(release)}, cwd=release, timeout=120)


def insert(engine: sa.Engine, ids: range) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO notes (id, body) VALUES (:id, :body)"),
                     [{"id": i, "body": f"note {i}"} for i in ids])


def embedded(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM notes WHERE embedding IS NOT NULL AND embedding_source_hash"
            " = md5(body)::uuid")).scalar_one())


def revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return migrate.current(conn)


@pytest.fixture
def url(bare_database: Callable[[], str]) -> str:
    return bare_database()


@pytest.fixture
def db(url: str) -> sa.Engine:
    return create_engine(url, poolclass=sa.pool.NullPool)


def test_an_old_worker_keeps_working_while_head_migrates_and_restarted_says_upgrade_in_one_line(
        previous_release: Path, url: str, db: sa.Engine, tmp_path: Path) -> None:
    old_install(previous_release, url)
    assert revision(db) == "0003"
    insert(db, range(1, 4))
    old = WorkerProcess(url, tmp_path, env=with_path(previous_release), cwd=previous_release)
    try:
        wait_until(lambda: embedded(db) == 3, 60, "the old worker to embed the first rows")

        applied = migrate.migrate(db)  # HEAD, as the owner
        assert applied[0] == "0004" and applied[-1] == migrate.head()
        insert(db, range(4, 7))
        with db.begin() as conn:
            conn.execute(sa.text("UPDATE notes SET body = 'rewritten' WHERE id = 1"))
        wait_until(lambda: embedded(db) == 6, 60, "the old worker to embed under the new schema")
        assert old.stop() == 0
        assert "Traceback" not in old.log
    finally:
        old.kill()

    restarted = WorkerProcess(url, tmp_path, env=with_path(previous_release), cwd=previous_release)
    try:
        assert restarted.wait(60) == 1
    finally:
        restarted.kill()
    errors = [line for line in restarted.log.splitlines() if "error" in line.lower()]
    assert errors == [f"embeddb: error: embeddb's schema in this database is at revision '{HEAD}',"
                      " which this version of embeddb (schema head '0003') does not know;"
                      " upgrade embeddb"], restarted.log
    assert "Traceback" not in restarted.log


def test_a_head_worker_on_the_previous_schema_asks_for_migrate_waits_and_then_embeds(
        previous_release: Path, url: str, db: sa.Engine, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    old_install(previous_release, url)
    insert(db, range(1, 5))

    with Worker(url, WorkerConfig()) as worker, \
            pytest.raises(SchemaNotReady, match=rf"at revision 0003, older than this worker's {HEAD};"
                                                r" run `embeddb migrate` as the role that owns"):
        worker.run_once()
    assert main(["worker", "--once", "--database-url", url]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"embeddb: error: embeddb's schema is at revision 0003, older than this worker's {HEAD};"
        " run `embeddb migrate` as the role that owns embeddb's schema"]
    assert revision(db) == "0003"  # the worker changed nothing

    new = WorkerProcess(url, tmp_path, env=with_path(ROOT))
    try:
        wait_until(lambda: "waiting: embeddb's schema is at revision 0003" in new.log, 60,
                   "the worker to say what to run")
        assert embedded(db) == 0
        assert main(["migrate", "--database-url", url]) == 0  # the deploy's one-shot step
        wait_until(lambda: embedded(db) == 4, 60, "the worker to embed after the migration")
        assert new.stop() == 0
    finally:
        new.kill()
    assert new.log.count("waiting: embeddb's schema") == 1, new.log  # said once
    assert "Traceback" not in new.log


def future_schema(db: sa.Engine, oldest_worker_revision: str) -> None:
    """What a later release's migration leaves: a revision this embeddb does not know, and the
    oldest worker revision it still serves."""
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE embeddb.alembic_version SET version_num = '0099'"))
        conn.execute(sa.text("UPDATE embeddb.worker_compatibility"
                             " SET oldest_worker_revision = :oldest"),
                     {"oldest": oldest_worker_revision})


def test_a_worker_carries_on_under_a_newer_schema_that_still_serves_it_and_stops_if_not(
        url: str, db: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    migrate.migrate(db)
    spec = EmbeddingSpec(schema="public", table="notes", column="embedding", key_columns=("id",),
                         template=Template.parse("{body}"), model="embeddb-testing/hash-32",
                         dimensions=32)
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)"))
        catalog.install(conn, spec)
    insert(db, range(1, 4))
    future_schema(db, "0008")

    with caplog.at_level(logging.WARNING, "embeddb.worker"), Worker(url) as worker:
        worker.run_once()
    assert embedded(db) == 3
    assert f"schema is at revision 0099, newer than this worker's {HEAD}; it still serves workers" \
           " from revision 0008: carrying on" in caplog.text

    future_schema(db, "0099")
    running = WorkerProcess(url, tmp_path, env=with_path(ROOT))
    try:
        assert running.wait(60) == 1
    finally:
        running.kill()
    assert ("embeddb: error: embeddb's schema is at revision 0099, which needs workers of"
            f" revision 0099 or later; this worker knows revisions up to {HEAD}: upgrade embeddb on"
            " this worker") in running.log.splitlines()
    assert "Traceback" not in running.log
    with Worker(url) as worker, pytest.raises(SchemaTooNew):
        worker.run_once()
