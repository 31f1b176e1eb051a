"""The SQL :mod:`embeddb.calibration` sends: it names the user's table and column, so it is
composed with ``psycopg.sql`` (like :mod:`embeddb.column_sql`) and run with driver parameters
(``%(name)s``)."""

from __future__ import annotations

from psycopg import sql

from .column_sql import _with_parameters, distance_operator, table, vector_type
from .spec import EmbeddingSpec


def sample_vectors(spec: EmbeddingSpec) -> str:
    """``limit`` stored vectors drawn at random, as text. Params: limit."""
    column = sql.Identifier(spec.column)
    return _with_parameters(sql.SQL(
        "SELECT {column}::text FROM {table} WHERE {column} IS NOT NULL"
        " ORDER BY random() LIMIT %(limit)s"
    ).format(column=column, table=table(spec)))


def neighbours(spec: EmbeddingSpec, *, exact: bool) -> str:
    """The distances of the k rows nearest to ``q``; ``exact`` orders by an expression no
    index serves. Params: q (vector text), k."""
    column = sql.Identifier(spec.column)
    distance = sql.SQL("{column} {op} %(q)s::{type}").format(
        column=column, op=distance_operator(spec), type=vector_type(spec))
    ordering = sql.SQL("({}) + 0").format(distance) if exact else distance
    return _with_parameters(sql.SQL(
        "SELECT {distance} FROM {table} WHERE {column} IS NOT NULL"
        " ORDER BY {ordering} LIMIT %(k)s"
    ).format(distance=distance, table=table(spec), column=column, ordering=ordering))
