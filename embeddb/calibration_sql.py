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


def filtered_truth(spec: EmbeddingSpec) -> str:
    """For one query and one pivot, per share of the rows in ``fractions``: the distance to the
    pivot that keeps that share (the rows at most that far from it), and the distances of the
    exact k nearest to ``q`` among them. One scan of the table for every share. Params: q,
    pivot (vector texts), fractions (float8[]), k."""
    column = sql.Identifier(spec.column)
    kind = vector_type(spec)
    return _with_parameters(sql.SQL(
        "WITH d AS MATERIALIZED ("
        " SELECT {column} {op} %(q)s::{type} AS to_query,"
        " {column} {op} %(pivot)s::{type} AS to_pivot"
        " FROM {table} WHERE {column} IS NOT NULL),"
        " radii AS (SELECT percentile_disc(%(fractions)s::float8[])"
        " WITHIN GROUP (ORDER BY to_pivot) AS r FROM d)"
        " SELECT share.radius, ARRAY(SELECT to_query FROM d WHERE to_pivot <= share.radius"
        " ORDER BY to_query LIMIT %(k)s)"
        " FROM radii, unnest(radii.r) WITH ORDINALITY AS share(radius, i) ORDER BY share.i"
    ).format(column=column, op=distance_operator(spec), type=kind, table=table(spec)))


def filtered_neighbours(spec: EmbeddingSpec) -> str:
    """The index plan's k nearest to ``q`` among the rows at most ``radius`` from ``pivot``
    (the filter is evaluated on each row the walk visits). Params: q, pivot, radius, k."""
    column = sql.Identifier(spec.column)
    kind = vector_type(spec)
    distance = sql.SQL("{column} {op} %(q)s::{type}").format(
        column=column, op=distance_operator(spec), type=kind)
    return _with_parameters(sql.SQL(
        "SELECT {distance} FROM {table} WHERE {column} IS NOT NULL"
        " AND {column} {op} %(pivot)s::{type} <= %(radius)s"
        " ORDER BY {distance} LIMIT %(k)s"
    ).format(distance=distance, table=table(spec), column=column, op=distance_operator(spec),
             type=kind))
