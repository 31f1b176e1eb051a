"""The rendered text depends only on the row: the same text and hash in every session whatever
its time zone, date and interval style, float digits, bytea output or search path; and a row
whose text is blank has nothing to embed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from embeddb import catalog, column_sql, migrate, search
from embeddb.database import create_engine
from embeddb.embedders import load_embedder
from embeddb.testing import HashEmbedder

from .models import HASH_MODEL, MINILM, drain, pending, stored, ticket_model

# Each differs from the others in every setting that changes how a value is cast to text.
SESSIONS: dict[str, dict[str, str]] = {
    "utc": {"TimeZone": "UTC"},
    "tokyo": {"TimeZone": "Asia/Tokyo", "DateStyle": "ISO, DMY", "IntervalStyle": "sql_standard",
              "extra_float_digits": "-3", "bytea_output": "escape", "lc_monetary": "C.utf8",
              "search_path": "other, public"},
    "st_johns": {"TimeZone": "America/St_Johns", "DateStyle": "ISO, YMD",
                 "IntervalStyle": "iso_8601", "extra_float_digits": "3",
                 "search_path": "public, other"},
}
# Date styles other than ISO, which psycopg cannot read timestamps in (so no embeddb process
# runs in them), but a session of another client may still use to call embeddb.render_N.
RENDER_ONLY_SESSIONS: dict[str, dict[str, str]] = {
    "sydney": {"TimeZone": "Australia/Sydney", "DateStyle": "SQL, DMY", "bytea_output": "escape"},
    "berlin": {"TimeZone": "Europe/Berlin", "DateStyle": "German",
               "IntervalStyle": "postgres_verbose"},
    "kathmandu": {"TimeZone": "Asia/Kathmandu", "DateStyle": "Postgres, MDY",
                  "extra_float_digits": "0"},
}


def options(settings: dict[str, str]) -> str:
    """libpq's ``options`` for a session with ``settings``."""
    return " ".join(f"-c {name}={value.replace(' ', '')}" for name, value in settings.items())


EVENTS_TEMPLATE = ("{at} | {local_at} | {day} | {clock} | {span} | {ratio} | {score} | {price}"
                   " | {blob} | {stamps} | {during} | {rel} | {amount} | {note}")


def make_events(engine: sa.Engine) -> catalog.CatalogEntry:
    """A table with a column of each type whose text depends on a session setting."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA other; CREATE TABLE other.thing (id int)"))
        conn.execute(sa.text(
            "CREATE TABLE events (id int PRIMARY KEY, at timestamptz, local_at timestamp,"
            " day date, clock timetz, span interval, ratio float4, score float8, price money,"
            " blob bytea, stamps timestamptz[], during tstzrange, rel regclass, amount numeric,"
            " note text)"))
        conn.execute(sa.text(
            "INSERT INTO events VALUES (1, '2026-01-02 03:04:05.25+00', '2026-01-02 03:04:05',"
            " '2026-01-02', '03:04:05+02', '1 day 02:03:04', 0.1, 0.1, 1234.5, '\\x00ff41',"
            " ARRAY['2026-01-02 03:04:05+00'::timestamptz], '[2026-01-02, 2026-01-03)',"
            " 'other.thing', 1.50, 'note')"))
    with engine.begin() as conn:
        op = _operations(conn)
        op.create_embedding("events", "embedding", template=EVENTS_TEMPLATE, model=HASH_MODEL,
                            dimensions=32, key_columns=["id"])
        entry = catalog.get_entry(conn, "public", "events", "embedding")
    assert entry is not None
    return entry


def _operations(conn: sa.Connection) -> Any:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    return Operations(MigrationContext.configure(conn))


def rendered(database_url: str, settings: dict[str, str], column_id: int,
             table: str = "events") -> Any:
    """The text and its md5 that ``embeddb.render_N`` gives in a session with ``settings``."""
    engine = create_engine(database_url, poolclass=sa.pool.NullPool,
                           connect_args={"options": options(settings)})
    try:
        with engine.connect() as conn:
            render = column_sql.render_function(column_id).as_string(None)
            return conn.execute(sa.text(
                f"SELECT {render}(t) AS text, md5({render}(t)) AS hash FROM {table} t")).one()
    finally:
        engine.dispose()


def test_same_row_renders_the_same_text_and_hash_in_every_session(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    entry = make_events(engine)
    texts = {name: rendered(database_url, settings, entry.id)
             for name, settings in {**SESSIONS, **RENDER_ONLY_SESSIONS}.items()}
    assert len({row.text for row in texts.values()}) == 1, texts
    assert len({row.hash for row in texts.values()}) == 1
    # the pinned settings: UTC, ISO dates, postgres intervals, shortest exact floats, hex bytea
    assert texts["utc"].text == (
        "2026-01-02 03:04:05.25+00 | 2026-01-02 03:04:05 | 2026-01-02 | 03:04:05+02"
        " | 1 day 02:03:04 | 0.1 | 0.1 | $1,234.50 | \\x00ff41 | {\"2026-01-02 03:04:05+00\"}"
        " | [\"2026-01-02 00:00:00+00\",\"2026-01-03 00:00:00+00\") | other.thing | 1.50 | note")


@pytest.fixture
def role_urls(database_url: str) -> Iterator[dict[str, str]]:
    """A login role per entry of SESSIONS whose settings are that session's, as role defaults:
    the worker sets its own ``options``, so only the role's (or database's) defaults reach it."""
    suffix = uuid.uuid4().hex[:8]
    names = {session: f"{session}_{suffix}" for session in SESSIONS}
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for session, role in names.items():
            conn.execute(sa.text(f"CREATE ROLE {role} LOGIN SUPERUSER"))
            for name, value in SESSIONS[session].items():
                conn.execute(sa.text(f"ALTER ROLE {role} SET {name} = {value!r}"
                                     if name != "search_path" else
                                     f"ALTER ROLE {role} SET {name} = {value}"))
    yield {session: make_url(database_url).set(username=role).render_as_string(
        hide_password=False) for session, role in names.items()}
    with engine.begin() as conn:
        for role in names.values():
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
    engine.dispose()


def test_worker_in_tokyo_and_reconcile_in_utc_do_not_requeue_each_others_rows(  # type: ignore[no-untyped-def]
        engine, database_url, role_urls) -> None:
    entry = make_events(engine)

    def embeddb(session: str, *args: str) -> subprocess.CompletedProcess[str]:
        finished = subprocess.run(
            [sys.executable, "-m", "embeddb.cli", *args, "--database-url", role_urls[session]],
            capture_output=True, text=True, timeout=120, check=False)
        assert finished.returncode == 0, finished.stderr
        return finished

    tokyo = create_engine(role_urls["tokyo"], poolclass=sa.pool.NullPool)
    with tokyo.connect() as conn:  # what every session of the role starts with
        assert conn.execute(sa.text("SELECT current_setting('TimeZone')")).scalar() == "Asia/Tokyo"
    tokyo.dispose()
    embeddb("tokyo", "worker", "--once")
    assert "0 rows queued" in embeddb("utc", "reconcile").stdout
    assert "0 rows queued" in embeddb("st_johns", "reconcile").stdout
    with engine.begin() as conn:
        assert pending(conn) == []
        conn.execute(sa.text("UPDATE events SET at = at + interval '1 hour'"))
    embeddb("utc", "worker", "--once")
    assert "0 rows queued" in embeddb("tokyo", "reconcile").stdout
    # the stored hash is the md5 of the text in any session, and the vector is made from it
    text = rendered(database_url, SESSIONS["st_johns"], entry.id).text
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT embedding::text AS vector, embedding_source_hash AS hash FROM events")).one()
    assert row.hash.hex == hashlib.md5(text.encode()).hexdigest()
    expected = HashEmbedder(HASH_MODEL).embed_documents([text])[0]
    assert [round(float(x), 5) for x in row.vector.strip("[]").split(",")] == \
        [round(float(x), 5) for x in expected]


def test_only_templates_over_session_dependent_types_pin_settings(engine) -> None:  # type: ignore[no-untyped-def]
    """A template over text, numbers, enums, uuid or json keeps the plain function, which
    PostgreSQL inlines into the trigger, the worker's fetch and reconcile."""
    entry = make_events(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TYPE mood AS ENUM ('calm', 'upset')"))
        conn.execute(sa.text("CREATE DOMAIN short_text AS varchar(40)"))
        conn.execute(sa.text(
            "CREATE TABLE notes (id int PRIMARY KEY, body text, tags short_text[], feeling mood,"
            " amount numeric, n int8, ref uuid, extra jsonb)"))
        _operations(conn).create_embedding(
            "notes", "embedding", template="{body} {tags} {feeling} {amount} {n} {ref} {extra}",
            model=HASH_MODEL, dimensions=32, key_columns=["id"])
        plain = catalog.get_entry(conn, "public", "notes", "embedding")
        assert plain is not None

        def settings(column_id: int, table: str) -> Any:
            signature = f"{column_sql.render_function(column_id).as_string(None)}({table})"
            return conn.execute(sa.text(
                "SELECT proconfig FROM pg_proc WHERE oid = CAST(:f AS regprocedure)"),
                {"f": signature}).scalar()

        assert "TimeZone=UTC" in settings(entry.id, "events")
        assert settings(plain.id, "notes") is None
        plan = "\n".join(conn.execute(sa.text(
            f"EXPLAIN (VERBOSE) SELECT {column_sql.render_function(plain.id).as_string(None)}(x)"
            " FROM notes x")).scalars())
        assert "render_" not in plan and "btrim" in plan  # inlined


def test_upgrade_re_creates_older_render_functions_and_queues_rows_they_rendered_otherwise(  # type: ignore[no-untyped-def]
        engine, database_url) -> None:
    """An installation from before revision 0004: its render function casts in the session's
    settings and embeds blank text. Upgrading replaces it and queues the rows that change."""
    Base, Ticket = ticket_model(HASH_MODEL, template="{subject}\n\n{body}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 1, "subject": "Printer", "body": "It jams"},
                                         {"id": 2, "subject": " ", "body": "\u3000"}])
        entry = catalog.get_entry(conn, "public", "tickets", "embedding")
        assert entry is not None
        render = column_sql.render_function(entry.id).as_string(None)
        conn.execute(sa.text(
            f"CREATE OR REPLACE FUNCTION {render}(r tickets) RETURNS text LANGUAGE sql STABLE"
            " AS $$SELECT CASE WHEN coalesce(r.subject, '') = '' AND coalesce(r.body, '') = ''"
            " THEN NULL ELSE concat(r.subject, E'\\n\\n', r.body) END$$"))
        conn.execute(sa.text("DELETE FROM embeddb.pending"))
        conn.execute(sa.text(
            f"UPDATE tickets t SET embedding_source_hash = md5({render}(t))::uuid,"
            " embedding = array_fill(0.1, ARRAY[32])::vector"))
        conn.execute(sa.text("UPDATE embeddb.alembic_version SET version_num = '0003'"))
    with engine.begin() as conn:
        assert migrate.upgrade(conn)[0] == "0004"  # and any revision after it
        assert [row.row_key for row in pending(conn)] == [{"id": 2}]
        assert conn.execute(sa.text(f"SELECT {render}(t) FROM tickets t WHERE id = 2")).scalar() \
            is None
    drain_stats = drain(database_url)
    assert drain_stats.cleared == 1
    with engine.connect() as conn:
        assert stored(conn, 2) == (None, None)
        assert stored(conn, 1)[0] is not None


def test_blank_rows_get_no_vector_and_are_never_ranked(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    """With the real model: text of only spaces, tabs, newlines or Unicode spaces is nothing to
    embed, like an all-empty row; it gets no vector and no search returns it."""
    Base, Ticket = ticket_model(MINILM)
    Base.metadata.create_all(engine)
    blank = {2: ("   ", "\t\n"), 3: ("\u00a0", "\u3000 \u2003\r\n"), 4: (None, "\u200b \ufeff"),
             5: ("", " ")}
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": 1, "subject": "Refund", "body": "I want my money back for the broken kettle"},
            {"id": 6, "subject": "Printer", "body": "It jams on every page"},
            {"id": 7, "subject": "  ", "body": "Where is my parcel?"},
            *({"id": key, "subject": s, "body": b} for key, (s, b) in blank.items()),
        ])
    drain(database_url)
    with engine.begin() as conn:
        assert pending(conn) == []
        for key in blank:
            assert stored(conn, key) == (None, None), f"blank row {key} got a vector"
        assert all(stored(conn, key)[0] is not None for key in (1, 6, 7))
        conn.execute(sa.text("UPDATE tickets SET subject = E' \\n', body = '\u00a0' WHERE id = 6"))
    stats = drain(database_url)
    assert stats.cleared == 1
    with engine.connect() as conn:
        assert stored(conn, 6) == (None, None)
    blank_query = load_embedder(MINILM).embed_query("\t ")
    with Session(engine) as session:
        # not even a query vector made from blank text itself finds them
        for query in ("refund", "printer jams", "where is my parcel", blank_query):
            hits = search(session, Ticket.embedding, query, k=10)
            assert {ticket.id for ticket, _ in hits} == {1, 7}, query


def test_upgrade_leaves_a_column_whose_table_lost_a_source_column_and_refreshes_the_others(  # type: ignore[no-untyped-def]
        engine, caplog) -> None:
    Base, Ticket = ticket_model(HASH_MODEL)
    Base.metadata.create_all(engine)
    make_events(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 1, "subject": "\u3000", "body": " "}])
        tickets = catalog.get_entry(conn, "public", "tickets", "embedding")
        assert tickets is not None
        render = column_sql.render_function(tickets.id).as_string(None)
        conn.execute(sa.text(f"CREATE OR REPLACE FUNCTION {render}(r tickets) RETURNS text"
                             " LANGUAGE sql STABLE AS $$SELECT r.subject || r.body$$"))
        conn.execute(sa.text("ALTER TABLE events DROP COLUMN note CASCADE"))  # and its triggers
        conn.execute(sa.text("UPDATE embeddb.alembic_version SET version_num = '0003'"))
    with engine.begin() as conn:
        assert migrate.upgrade(conn)[0] == "0004"  # and any revision after it
        assert conn.execute(sa.text(f"SELECT {render}(t) FROM tickets t")).scalar() is None
    assert "public.events.embedding: render function left as it was" in caplog.text
    assert "has no column 'note'" in caplog.text
