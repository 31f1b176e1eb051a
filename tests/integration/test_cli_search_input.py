"""``embeddb search`` input: tables named with dots or schemas, --where parameters, bad input.

Three embedded tables: ``public.tickets``, ``public."dot.ted"`` and ``other.tickets`` (the same
table name in another schema), each with rows whose subject says which table they are in.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding
from embeddb.cli import main
from embeddb.database import create_engine

from .models import HASH_MODEL, drain
from .searching import module_database


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str]
    embedding = Embedding("{subject}", model=HASH_MODEL, fulltext=True)


class Dotted(Base):
    __tablename__ = "dot.ted"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str]
    embedding = Embedding("{subject}", model=HASH_MODEL)


class OtherTicket(Base):
    __tablename__ = "tickets"
    __table_args__ = {"schema": "other"}  # noqa: RUF012 (SQLAlchemy's declarative form)
    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str]
    embedding = Embedding("{subject}", model=HASH_MODEL)


@pytest.fixture(scope="module")
def url(server_url: str, template_url: str) -> Iterator[str]:
    with module_database(server_url) as url:
        engine = create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA other"))
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            for model, where in ((Ticket, "public tickets"), (Dotted, "dotted"),
                                 (OtherTicket, "other tickets")):
                conn.execute(sa.insert(model), [{"id": i, "subject": f"{where} row {i}"}
                                                for i in range(1, 6)])
        drain(url)
        engine.dispose()
        yield url


def run(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["search", *args, "--database-url", url])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def subjects(out: str) -> set[str]:
    return {line.split("subject=")[1].rsplit(" row", 1)[0] for line in out.splitlines()[1:]}


@pytest.mark.parametrize(("name", "table"), [
    ("tickets.embedding", "public tickets"),
    ("public.tickets.embedding", "public tickets"),
    ("other.tickets.embedding", "other tickets"),
    ('"dot.ted".embedding', "dotted"),
    ('public."dot.ted".embedding', "dotted"),
    ('"public"."dot.ted"."embedding"', "dotted"),
])
def test_a_column_is_named_by_table_schema_and_quoted_names(
        url: str, capsys: pytest.CaptureFixture[str], name: str, table: str) -> None:
    code, out, err = run(url, capsys, name, "row", "-k", "5")
    assert code == 0, err
    assert out.startswith("5 rows in")
    assert subjects(out) == {table}


def test_a_dotted_name_unquoted_is_a_clear_error_that_shows_the_quoting(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(url, capsys, "dot.ted.embedding", "row")
    assert code == 1 and out == ""
    assert err.startswith("embeddb: error: dot.ted.embedding is not an embedded column (known: ")
    assert "public.\"dot.ted\".embedding" in err and "other.tickets.embedding" in err
    assert "quote a name that has a dot in it: 'public.\"dot.ted\".embedding'" in err


@pytest.mark.parametrize("params", [["--param", "id=3"], ["--param", "id=3", "--param", "s=x"]])
def test_where_parameters_are_given_with_param(
        url: str, capsys: pytest.CaptureFixture[str], params: list[str]) -> None:
    where = "id = :id" if len(params) == 2 else "id = :id AND subject <> :s"
    code, out, err = run(url, capsys, "tickets.embedding", "row", "--where", where, *params)
    assert code == 0, err
    header, *lines = out.strip().splitlines()
    assert header.startswith("1 rows in") and "id=3 " in lines[0]

    code, out, err = run(url, capsys, "tickets.embedding", "row", "--hybrid",
                         "--where", where, *params)
    assert code == 0, err
    assert out.startswith("1 rows in") and "id=3 " in out


def test_a_cast_in_where_is_not_a_parameter(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(url, capsys, "tickets.embedding", "row", "--where", "id::text = '2'")
    assert code == 0, err
    assert out.startswith("1 rows in") and "id=2 " in out


@pytest.mark.parametrize(("args", "error"), [
    (["tickets.embedding", "row", "--where", "id = :id"],
     "--where uses :id; give its value with --param id=VALUE"),
    (["tickets.embedding", "row", "--where", "id = :id or id = :other"],
     "--where uses :id, :other; give each value with --param id=VALUE --param other=VALUE"),
    (["tickets.embedding", "row", "--where", "id = 1", "--param", "id=1"],
     "--param id: --where has no :id"),
    (["tickets.embedding", "row", "--param", "id=1"], "there is no --where"),
    (["tickets.embedding", "row", "--where", "id = :id", "--param", "id"],
     "--param 'id': write NAME=VALUE"),
    (["tickets.embedding", "row", "--where", "id = :id", "--param", "id=x"],
     'the search failed: invalid input syntax for type integer: "x"'),
    (["nothing.embedding", "row"], "public.nothing.embedding is not an embedded column (known: "),
    (["tickets.nothing", "row"], "public.tickets.nothing is not an embedded column"),
    (["nope.tickets.embedding", "row"], "nope.tickets.embedding is not an embedded column"),
    (["tickets", "row"], "name a column as TABLE.COLUMN or SCHEMA.TABLE.COLUMN"),
    (['"dot.ted.embedding', "row"], "a double quote is not closed"),
    (["tickets.embedding", ""], "the query text is empty"),
    (["tickets.embedding", "  ", "--hybrid"], "the query text is empty (only whitespace)"),
    (["tickets.embedding", "row", "-k", "2147483648"], "-k must be at most 10000"),
])
def test_bad_input_is_a_one_line_error(
        url: str, capsys: pytest.CaptureFixture[str], args: list[str], error: str) -> None:
    code, out, err = run(url, capsys, *args)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("embeddb: error: ")
    assert error in err


def test_a_table_dropped_behind_the_catalog_is_a_clear_error(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    class Gone(Base):
        __tablename__ = "gone"
        id: Mapped[int] = mapped_column(primary_key=True)
        subject: Mapped[str]
        embedding = Embedding("{subject}", model=HASH_MODEL)

    engine = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        Gone.__table__.create(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE gone CASCADE"))  # the render function too
        code, out, err = run(url, capsys, "gone.embedding", "row")
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM embeddb.columns WHERE table_name = 'gone'"))
        Base.metadata.remove(Gone.__table__)
        engine.dispose()
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("embeddb: error: public.gone.embedding "), err
    assert "its table is gone" in err
