"""What users type, fuzzed: table, column and key names and templates (quotes, spaces, reserved
words, unicode, names of 63 bytes, braces and % in literal text) go through install, insert, the
worker, search and uninstall. Each either works, with the literal text stored as written, or is
refused with an EmbeddbError that says what is wrong; nothing in between."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from embeddb import EmbeddbError, EmbeddingSpec, SpecError, catalog
from embeddb.cli import main
from embeddb.column_names import quoted_column_name
from embeddb.testing import HashEmbedder
from embeddb.verbatim import execute
from embeddb.worker import Worker, WorkerConfig

from .models import HASH_MODEL

_PRINTABLE = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
_RESERVED = ["select", "user", "order", "table", "group", "Embedding", "from", "where"]
_TRICKY = ['a"b', "a b", " lead", "trail ", "%s", "%(x)s", "{x}", "a}b", "a{b", "ä.ö", "日本語",
           "emoji🙂", "semi;colon", "back\\slash", "it's", "a:b", "a!r", "[0]", "123"]


def _sixty_three_bytes(unit: str) -> str:
    """A name of exactly 63 bytes in UTF-8, PostgreSQL's longest, made of ``unit``."""
    name = ""
    while len((name + unit).encode()) <= 63:
        name += unit
    return name + "x" * (63 - len(name.encode()))


names = st.one_of(
    st.text(_PRINTABLE, min_size=1, max_size=12),
    st.sampled_from(_RESERVED + _TRICKY),
    st.sampled_from(["a", "é", "日", '"', "%", "{"]).map(_sixty_three_bytes),
)
literals = st.text(st.one_of(_PRINTABLE, st.sampled_from("{}%\n\t'\"\\")), max_size=20)
values = st.lists(st.one_of(st.text(_PRINTABLE, max_size=30),
                            st.sampled_from(["", "  ", "%", "{body}", "%(x)s", "100%"])),
                  min_size=1, max_size=4)


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def _usable_field(name: str) -> bool:
    """Whether a format-string field can name this column (else the template is refused)."""
    return not (set(name) & set("{}:!.[") or name.isdigit())


def _rendered(prefix: str, value: str, suffix: str) -> str | None:
    """The text the column's render function must produce (None: nothing to embed)."""
    return None if not value.strip() else prefix + value + suffix


def test_fuzzed_names_and_templates_work_or_are_refused_clearly(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    embedder = HashEmbedder(HASH_MODEL)
    outcomes: list[str] = []

    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(table=names, key=names, source=names, vector=names, prefix=literals, suffix=literals,
           texts=values)
    # what the fuzzing found: a 63-byte unicode name made trigger names collide once cut
    @example(table="0", key="1", source=";", vector=_sixty_three_bytes("é"), prefix="{%",
             suffix="%}", texts=["100%"])
    def round_trip(table: str, key: str, source: str, vector: str, prefix: str, suffix: str,
                   texts: list[str]) -> None:
        assume(len({key, source, vector}) == 3)
        template = _escape(prefix) + "{" + source + "}" + _escape(suffix)
        with engine.begin() as conn:
            execute(conn, sql.SQL("CREATE TABLE {} ({} int PRIMARY KEY, {} text)").format(
                sql.Identifier("public", table), sql.Identifier(key),
                sql.Identifier(source)).as_string(None))
        try:
            _install_embed_search(table, key, source, vector, template, prefix, suffix, texts)
        finally:
            with engine.begin() as conn:
                execute(conn, sql.SQL("DROP TABLE {} CASCADE").format(
                    sql.Identifier("public", table)).as_string(None))
                conn.execute(sa.text("DELETE FROM embeddb.columns"))
        capsys.readouterr()

    def _install_embed_search(table: str, key: str, source: str, vector: str, template: str,
                              prefix: str, suffix: str, texts: list[str]) -> None:
        try:
            spec = EmbeddingSpec(schema="public", table=table, column=vector, key_columns=(key,),
                                 template=_parse(template), model=HASH_MODEL, dimensions=32)
            with engine.begin() as conn:
                entry = catalog.install(conn, spec)
        except EmbeddbError as exc:
            # refused: only a template that cannot name the column, or a name too long for
            # what embeddb derives from it, and the message says which
            message = str(exc)
            assert message and "Traceback" not in message
            if isinstance(exc, SpecError) and "template" in message:
                assert not _usable_field(source), message
            else:
                assert "63" in message or "long" in message, message
            outcomes.append("refused")
            return
        assert _usable_field(source), f"template {template!r} should have been refused"
        assert spec.template.source == template

        with engine.begin() as conn:
            execute(conn, sql.SQL("INSERT INTO {} ({}, {}) VALUES {}").format(
                sql.Identifier("public", table), sql.Identifier(key), sql.Identifier(source),
                sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(i), sql.Literal(text))
                                   for i, text in enumerate(texts))).as_string(None))
        with Worker(database_url, WorkerConfig(defer_index_rows=0)) as worker:
            worker.run_once()

        with engine.connect() as conn:
            rows = execute(conn, sql.SQL(
                "SELECT {key}, {render}(t), {vector}::text FROM {table} AS t ORDER BY 1").format(
                key=sql.Identifier("t", key), render=sql.Identifier("embeddb",
                                                                    f"render_{entry.id}"),
                vector=sql.Identifier("t", vector),
                table=sql.Identifier("public", table)).as_string(None)).all()
            assert conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar() == 0
        for row_key, rendered, stored in rows:
            expected = _rendered(prefix, texts[row_key], suffix)
            assert rendered == expected  # the literal text exactly as written
            if expected is None:
                assert stored is None
            else:
                assert stored is not None
                np.testing.assert_allclose(_parse_vector(stored),
                                           embedder.embed_documents([expected])[0], atol=1e-6)

        name = quoted_column_name("public", table, vector)
        assert main(["search", name, prefix + texts[0] + suffix or "x", "-k", "1",
                     "--database-url", database_url]) == 0, capsys.readouterr().err
        with engine.begin() as conn:
            assert catalog.uninstall(conn, spec, drop_columns=True)
            assert catalog.get_entry(conn, "public", table, vector) is None
        outcomes.append("worked")

    round_trip()
    assert outcomes.count("worked") >= 10, outcomes  # the fuzzing reached the worker and search


def _parse(template: str) -> Any:
    from embeddb.template import Template

    return Template.parse(template)


def _parse_vector(text: str) -> np.ndarray[Any, Any]:
    return np.array(text.strip("[]").split(","), dtype=np.float32)
