"""The exceptions embeddb raises.

::

    EmbeddbError                 every error embeddb raises on purpose
    ├── SpecError                an Embedding declaration that cannot work (template, option)
    ├── SchemaError              the database lacks what a declaration needs (table, column)
    │   ├── SchemaNotReady       embeddb's schema is missing or older: `embeddb migrate`
    │   └── SchemaTooNew         embeddb's schema is newer than this embeddb can serve
    ├── DatabaseError            the database cannot be reached or lacks pgvector
    │   ├── PgvectorMissing      pgvector is absent or older than embeddb needs
    │   └── PrivilegeError       the role lacks a privilege (the message names which)
    ├── ModelError               a model cannot be found or loaded
    │   └── ModelUnavailable     the model fails for every input (the worker backs off)
    ├── ModelMismatch            the model at hand is not the one a column was embedded with
    └── QueryError               a search's arguments cannot work (k, query, vector, filter)

Messages name the table, column and model involved and say what to do.
"""

from __future__ import annotations


class EmbeddbError(Exception):
    """embeddb could not do what was asked."""


class SpecError(EmbeddbError, ValueError):
    """An Embedding declaration is invalid."""


class SchemaError(EmbeddbError):
    """The database schema does not match what embeddb needs."""


class SchemaNotReady(SchemaError):
    """embeddb's schema is missing or older than this embeddb; ``embeddb migrate`` fixes it."""


class SchemaTooNew(SchemaError):
    """embeddb's schema comes from a newer embeddb that this one cannot work with."""


class DatabaseError(EmbeddbError):
    """The database cannot be used."""


class PgvectorMissing(DatabaseError):
    """pgvector is not installed, or is too old."""


class ModelError(EmbeddbError):
    """An embedding model cannot be found or loaded."""


class ModelUnavailable(ModelError):
    """The model failed for every input, including a known-good probe."""


class ModelMismatch(EmbeddbError):
    """The model at hand differs from the one recorded for a column."""


class ModelChangeInProgress(SchemaError):
    """A column's model is already being changed (or a change awaits ``finish``/``rollback``)."""


class QueryError(EmbeddbError, ValueError):
    """A query helper was given arguments it cannot answer; nothing was sent to the database."""


class PrivilegeError(DatabaseError):
    """The database role lacks a privilege embeddb needs; the message names it."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (PostgreSQL's own for a driver error), for logs and
    one-line errors; the exception's type when it has no message."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(exc).__name__
