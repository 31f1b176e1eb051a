"""Connecting to PostgreSQL: which URL, which driver, and whether pgvector is there."""

from __future__ import annotations

import os
import re
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import URL, Connection, Engine, make_url

from .errors import DatabaseError, PgvectorMissing, first_line
from .sql import queries

URL_VARIABLE = "EMBEDDB_DATABASE_URL"
MIN_PGVECTOR = (0, 8, 0)
MIN_POSTGRES = 140000
#: libpq connection parameters that hold a secret (a file *path* such as passfile does not).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def database_url(explicit: str | None = None) -> str:
    """The database to use: ``explicit``, else ``$EMBEDDB_DATABASE_URL``, else the embedded server.

    The embedded server is started (or reused) on demand; see :mod:`embeddb.server`.

    Example::

        url = database_url()     # or database_url("postgresql://app@db/app")
    """
    if explicit:
        return explicit
    if os.environ.get(URL_VARIABLE):
        return os.environ[URL_VARIABLE]
    from .server import EmbeddedServer

    return EmbeddedServer.default().start()


def sqlalchemy_url(url: str | URL) -> URL:
    """``url`` with the psycopg 3 driver, which embeddb's worker and helpers are written for."""
    parsed = parse_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def libpq_conninfo(url: str | URL) -> str:
    """The same URL as libpq (and so psycopg.connect) understands it."""
    parsed = parse_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def parse_url(url: str | URL) -> URL:
    """``url`` as a SQLAlchemy URL: a URL (``postgresql://...``) or a libpq keyword string
    (``host=db dbname=app user=app``).

    A string that is neither is refused without being repeated, since it may hold a password.

    Example::

        parse_url("host=/run/postgresql dbname=app").database  # 'app'
    """
    if isinstance(url, URL):
        return url
    try:
        if "://" in url or not url.strip():
            return make_url(url)
        return _keyword_url(conninfo_to_dict(url))
    except (sa.exc.ArgumentError, psycopg.ProgrammingError, ValueError) as exc:
        raise DatabaseError(
            "the database URL cannot be parsed (not shown: it may hold a password); give a URL"
            " like postgresql://user@host:5432/dbname or libpq keywords like"
            " 'host=... dbname=... user=...'"
        ) from exc


def _keyword_url(keywords: dict[str, Any]) -> URL:
    """A libpq keyword string's settings as a URL: the database in its path, every other setting
    (host, port, user, password, ...) as a query parameter, which libpq reads the same way."""
    rest = {name: str(value) for name, value in keywords.items() if name != "dbname"}
    return URL.create("postgresql", database=keywords.get("dbname"), query=rest)


def redacted(url: str | URL) -> str:
    """``url`` fit to print: its password hidden, whether written as ``user:password@`` or as
    a query parameter (``?password=``, ``?sslpassword=``), and a keyword string shown as a URL.

    Example::

        redacted("postgresql://app@db/app?password=s3cret")  # 'postgresql://app@db/app?password=***'
    """
    parsed = parse_url(url)
    hidden = {name: "***" for name in parsed.query if name in SECRET_PARAMETERS}
    text = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return text.replace("=%2A%2A%2A", "=***")  # the marker, not an escaped password


def create_engine(url: str | URL, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine on psycopg 3 with keepalives, so a dead peer is noticed.

    Example::

        engine = create_engine(database_url())
        Base.metadata.create_all(engine)
    """
    connect_args = {
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "connect_timeout": 10,
        **kwargs.pop("connect_args", {}),
    }
    return sa.create_engine(sqlalchemy_url(url), connect_args=connect_args, **kwargs)


def connect_check(engine: Engine) -> None:
    """Fail early, with the URL (minus password) and a fix, if the database is unreachable."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = first_line(exc.orig) if exc.orig is not None else str(exc)
        raise DatabaseError(
            f"cannot connect to {redacted(engine.url.set(drivername='postgresql'))}: {reason}."
            " Check that the server is running"
            f" and the URL is right (set {URL_VARIABLE} or pass --database-url)."
        ) from exc



def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def ensure_pgvector(conn: Connection) -> tuple[int, ...]:
    """Make sure pgvector >= 0.8 is installed in this database, creating it if it is available."""
    server = conn.execute(sa.text(queries["server_version"])).one()
    if server.version_num < MIN_POSTGRES:
        raise DatabaseError(f"PostgreSQL {server.version} is too old; embeddb needs 14 or newer")
    where = f"PostgreSQL {server.version}, database {database_name(conn)}"
    installed = conn.execute(sa.text(queries["pgvector_installed"])).scalar()
    if installed is None:
        available = conn.execute(sa.text(queries["pgvector_available"])).scalar()
        require_pgvector(available, "available", where)
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        installed = available
    return require_pgvector(installed, "installed", where)


def require_pgvector(version: str | None, state: str, where: str) -> tuple[int, ...]:
    """The parsed version, or PgvectorMissing saying what was found and what to do."""
    if version is None:
        raise PgvectorMissing(
            f"the pgvector extension is not available on {where}; install pgvector 0.8 or newer"
            " on the server (https://github.com/pgvector/pgvector#installation), or unset"
            f" {URL_VARIABLE} to use embeddb's embedded PostgreSQL"
        )
    parsed = parse_version(version)
    if parsed < MIN_PGVECTOR:
        raise PgvectorMissing(
            f"pgvector {version} is {state} on {where}, but embeddb needs 0.8 or newer (for"
            " iterative index scans); upgrade the package on the server, then run"
            " ALTER EXTENSION vector UPDATE"
        )
    return parsed


def database_name(conn: Connection) -> str:
    return str(conn.engine.url.database or "(default)")
