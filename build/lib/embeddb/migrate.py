"""Applying embeddb's own schema: the Alembic revisions in ``migrations/``.

embeddb versions its schema with Alembic in a version table of its own,
``embeddb.alembic_version``, so it never meets an application's ``alembic_version``; dropping
the schema drops its version record with it.

The runner here applies revisions on the caller's connection and inside the caller's
transaction, with Alembic's public revision map and ``MigrationContext.stamp()``. It does not
go through Alembic's global ``op`` and ``context`` proxies, so it is safe wherever embeddb needs
its schema: in ``create_all``, in :func:`embeddb.install`, and inside an application's own
running migration (``op.create_embeddb_schema()``), where those proxies belong to the
application. Each revision module therefore exposes ``upgrade_on(conn)`` and
``downgrade_on(conn)``; its Alembic ``upgrade()``/``downgrade()`` call the same functions.

Example::

    from embeddb import migrate
    with engine.begin() as conn:
        migrate.upgrade(conn)      # or from the shell: embeddb migrate
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import verbatim
from .database import create_engine, ensure_pgvector
from .errors import SchemaError
from .sql import queries

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import Script, ScriptDirectory

# Alembic is imported where it is used, not here: Alembic loads its plugins (embeddb's among
# them) while it is still importing itself, and every embeddb module imports this one.

log = logging.getLogger(__name__)

SCHEMA = "embeddb"
VERSION_TABLE = "alembic_version"


def script_location() -> str:
    """Where embeddb's Alembic environment is: ``migrations/`` in the source tree this package
    was imported from, else the ``embeddb.migrations`` package of an installed wheel."""
    source_root = Path(__file__).resolve().parent.parent
    if (source_root / "pyproject.toml").is_file() and (source_root / "migrations/env.py").is_file():
        return str(source_root / "migrations")
    found = importlib.util.find_spec("embeddb.migrations")
    if found is None or not found.submodule_search_locations:
        raise SchemaError("embeddb's migrations are missing: reinstall embeddb")
    return next(iter(found.submodule_search_locations))


Step = Callable[[Connection], None]


def sql_steps(upgrade_sql: str, downgrade_sql: str) -> tuple[Step, Step]:
    """``upgrade_on`` and ``downgrade_on`` for a revision that is plain SQL, sent as written
    (a ``%`` in it is no placeholder)."""

    def upgrade_on(conn: Connection) -> None:
        verbatim.execute(conn, upgrade_sql)

    def downgrade_on(conn: Connection) -> None:
        verbatim.execute(conn, downgrade_sql)

    return upgrade_on, downgrade_on


def alembic_config() -> Config:
    """An Alembic config for embeddb's environment, for ``alembic.command`` functions."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location())
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision of embeddb's schema that this version of embeddb knows."""
    revision = script_directory().get_current_head()
    if revision is None:
        raise SchemaError("embeddb's migrations have no revisions; the package is incomplete")
    return revision


def current(conn: Connection) -> str | None:
    """The revision of embeddb's schema in this database; None when it has none."""
    if not conn.execute(sa.text(queries["catalog_versioned"])).scalar():
        return None
    versions = list(conn.execute(sa.text(queries["catalog_version"])).scalars())
    return str(versions[0]) if versions else None


def upgrade(conn: Connection, revision: str = "head") -> list[str]:
    """Bring embeddb's schema up to ``revision`` in the caller's transaction.

    Creates pgvector if it is missing. Returns the revisions applied, oldest first. Serialised
    with every other catalog change by an advisory lock held until the transaction ends.
    """
    conn.execute(sa.text(queries["lock_catalog"]))
    ensure_pgvector(conn)
    conn.execute(sa.text(queries["create_catalog_schema"]))
    context = _context(conn)
    steps = list(reversed(_revisions(revision, _known(current(conn)))))
    for script in steps:
        log.info("embeddb schema: upgrading to %s (%s)", script.revision, script.doc)
        script.module.upgrade_on(conn)
        context.stamp(script_directory(), script.revision)
    return [script.revision for script in steps]


def downgrade(conn: Connection, revision: str = "base") -> list[str]:
    """Take embeddb's schema down to ``revision``; ``"base"`` removes everything embeddb made.

    At base that is every embedded column (vector and hash columns, index, triggers,
    functions), the catalog, and the ``embeddb`` schema itself. pgvector stays: other tables
    may use it. Returns the revisions undone, newest first.
    """
    conn.execute(sa.text(queries["lock_catalog"]))
    found = _known(current(conn))
    if revision == "base" and found is not None:
        for row in conn.execute(sa.text(queries["list_columns"])):
            log.warning("removing embedded column %s.%s.%s: its vectors, index and triggers",
                        row.table_schema, row.table_name, row.column_name)
    steps = list(_revisions(found, revision)) if found is not None else []
    context = _context(conn) if steps else None
    for script in steps:
        log.info("embeddb schema: downgrading %s (%s)", script.revision, script.doc)
        script.module.downgrade_on(conn)
        if context is not None:
            context.stamp(script_directory(), _below(script))
    if revision == "base" and conn.execute(sa.text(queries["catalog_versioned"])).scalar():
        conn.execute(sa.text(queries["drop_catalog_version_table"]))
        conn.execute(sa.text(queries["drop_catalog_schema"]))
    return [script.revision for script in steps]


def migrate(
    bind: str | Engine, *, revision: str = "head", downgrade_to: str | None = None
) -> list[str]:
    """``embeddb migrate``: upgrade to ``revision``, or downgrade to ``downgrade_to``; commit.

    ``bind`` is a database URL or an engine. Returns the revisions applied (or undone).
    """
    engine = create_engine(bind, poolclass=sa.pool.NullPool) if isinstance(bind, str) else bind
    try:
        with engine.begin() as conn:
            if downgrade_to is not None:
                return downgrade(conn, downgrade_to)
            return upgrade(conn, revision)
    finally:
        if engine is not bind:
            engine.dispose()


def _context(conn: Connection) -> MigrationContext:
    from alembic.runtime.migration import MigrationContext

    opts: dict[str, Any] = {"version_table": VERSION_TABLE, "version_table_schema": SCHEMA}
    return MigrationContext.configure(connection=conn, opts=opts)


def _known(revision: str | None) -> str | None:
    """``revision`` if this embeddb knows it; a clear error for a schema from a newer embeddb."""
    from alembic.util import CommandError

    if revision is None:
        return None
    try:
        script_directory().get_revision(revision)
    except CommandError as exc:
        raise SchemaError(
            f"embeddb's schema in this database is at revision {revision!r}, which this version"
            f" of embeddb (schema head {head()!r}) does not know; upgrade embeddb"
        ) from exc
    return revision


def _revisions(upper: str | None, lower: str | None) -> list[Script]:
    return list(script_directory().iterate_revisions(upper, lower))


def _below(script: Script) -> str:
    down = script.down_revision
    return down if isinstance(down, str) else "base"
