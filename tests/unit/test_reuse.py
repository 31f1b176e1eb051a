"""Reusing a search statement across filters of one structure, without a database.

These pin the SQLAlchemy behaviour :mod:`embeddb.query._statement_cache` relies on: parameter names that depend
on the structure alone, found through the compiler's ``bind_names``, and execution parameters
given under those names overriding the values bound in the statement.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding
from embeddb.query import _statement_cache as reuse
from embeddb.query._search import _statement
from embeddb.query._target import resolve

DIALECT = postgresql.dialect()


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]
    status: Mapped[str]
    embedding = Embedding("{body}", model="embeddb-testing/hash-4")


class Opaque(sa.ColumnElement[bool]):
    """A filter SQLAlchemy cannot cache."""

    inherit_cache = False
    type = sa.Boolean()


@compiles(Opaque)
def _compile_opaque(element: Opaque, compiler: Any, **kw: Any) -> str:
    return "true"


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    reuse.clear()
    yield
    reuse.clear()


def prepare(column: Any, where: Any, exact: bool = True) -> reuse.Prepared:
    target = resolve(column)
    return reuse.prepare(DIALECT, (target.column, target.entity, exact), where,
                         lambda: _statement(target, where, None, exact))


def bound(prepared: reuse.Prepared) -> dict[str, Any]:
    """The values the statement would run with, given ``prepared.values`` at execution."""
    compiled = prepared.statement.compile(dialect=DIALECT)
    given = {**prepared.values, "query_vector": "[1,0,0,0]", "k": 3}
    return {name: value for name, value in compiled.construct_params(given).items()
            if name not in reuse.RESERVED}


@pytest.mark.parametrize("column", [Note.embedding, Note.__table__.c.embedding],
                         ids=["orm", "core"])
def test_a_filter_of_the_same_structure_reuses_the_statement_with_its_values(
        column: Any) -> None:
    table = Note.__table__
    status = Note.status if column is Note.embedding else table.c.status
    first = prepare(column, status == "open")
    second = prepare(column, status == "closed")
    third = prepare(column, status == "rare")
    assert first.values == {} and bound(first) == {"status_1": "open"}
    assert second.statement is first.statement and second.values == {"status_1": "closed"}
    assert bound(second) == {"status_1": "closed"} and bound(third) == {"status_1": "rare"}


def test_several_parameters_keep_their_order_and_lists_expand() -> None:
    prepare(Note.embedding, sa.and_(Note.id.in_([1, 2]), Note.status != "x", Note.id > 3))
    again = prepare(Note.embedding, sa.and_(Note.id.in_([7, 8, 9]), Note.status != "y",
                                            Note.id > 10))
    assert again.values == {"id_1": [7, 8, 9], "status_1": "y", "id_2": 10}
    assert bound(again) == {"id_1": [7, 8, 9], "status_1": "y", "id_2": 10}


def test_a_different_structure_or_plan_gets_its_own_statement() -> None:
    first = prepare(Note.embedding, Note.status == "a")
    assert prepare(Note.embedding, Note.status != "a").statement is not first.statement
    assert prepare(Note.embedding, Note.status == "a", exact=False).statement \
        is not first.statement
    assert prepare(Note.embedding, Note.body == "a").statement is not first.statement


def test_filters_that_cannot_be_reused_are_built_afresh() -> None:
    for where in (None, Opaque(), sa.and_(Opaque(), Note.id > 1)):
        first, second = prepare(Note.embedding, where), prepare(Note.embedding, where)
        assert second.values == {}
        assert (second.statement is first.statement) == (where is None)  # None: the template
    # a filter binding a name the search binds itself is not reused either
    shadowing = Note.id == sa.bindparam("k", 3)
    prepare(Note.embedding, shadowing)
    assert prepare(Note.embedding, Note.id == sa.bindparam("k", 4)).values == {}


def test_bind_names_maps_each_parameter_to_its_compiled_name() -> None:
    where = sa.or_(Note.status == "a", Note.status == "b")
    stmt = _statement(resolve(Note.embedding), where, None, True)
    binds = where._generate_cache_key().bindparams
    assert reuse.parameter_names(stmt, binds, DIALECT) == ("status_1", "status_2")
