"""GRANT statements for embeddb's roles, composed with psycopg.sql (role and table names are
the user's: quoted, never pasted)."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from .spec import EmbeddingSpec


def _text(composable: sql.Composable) -> str:
    return composable.as_string(None)


def _privileges(privileges: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(privilege) for privilege in privileges)


def usage_on_schema(schema: str, role: str) -> str:
    return _text(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
        sql.Identifier(schema), sql.Identifier(role)))


def on_table(qualified_table: str, privileges: Sequence[str], role: str) -> str:
    """``qualified_table`` as embeddb's own tables are named: ``embeddb.pending``."""
    schema, _, name = qualified_table.partition(".")
    return _text(sql.SQL("GRANT {} ON {} TO {}").format(
        _privileges(privileges), sql.Identifier(schema, name), sql.Identifier(role)))


def select_on(spec: EmbeddingSpec, role: str) -> str:
    return _text(sql.SQL("GRANT SELECT ON {} TO {}").format(
        sql.Identifier(spec.schema, spec.table), sql.Identifier(role)))


def on_managed_table(spec: EmbeddingSpec, name: str, privileges: Sequence[str],
                     role: str) -> str:
    """``privileges`` on a table embeddb keeps beside ``spec``'s (chunks, postings)."""
    return _text(sql.SQL("GRANT {} ON {} TO {}").format(
        _privileges(privileges), sql.Identifier(spec.schema, name), sql.Identifier(role)))


def update_columns(specs: Sequence[EmbeddingSpec], role: str) -> str:
    """UPDATE on the columns the worker writes for ``specs`` (all of one table): the vector,
    the hash of its text and, for a full-text column, its ``tsvector``; nothing else."""
    columns = [name for spec in specs for name in spec.written_columns]
    first = specs[0]
    return _text(sql.SQL("GRANT UPDATE ({}) ON {} TO {}").format(
        sql.SQL(", ").join(sql.Identifier(name) for name in columns),
        sql.Identifier(first.schema, first.table), sql.Identifier(role)))


def create_on_database(database: str, role: str) -> str:
    return _text(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
        sql.Identifier(database), sql.Identifier(role)))
