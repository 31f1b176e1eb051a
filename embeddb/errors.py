"""The exceptions embeddb raises.

::

    EmbeddbError                 every error embeddb raises on purpose
    ├── SpecError                an Embedding declaration that cannot work (template, option)
    ├── SchemaError              the database lacks what a declaration needs (table, column)
    ├── DatabaseError            the database cannot be reached or lacks pgvector
    │   └── PgvectorMissing      pgvector is absent or older than embeddb needs
    ├── ModelError               a model cannot be found or loaded
    │   └── ModelUnavailable     the model fails for every input (the worker backs off)
    └── ModelMismatch            the model at hand is not the one a column was embedded with

Messages name the table, column and model involved and say what to do.
"""

from __future__ import annotations


class EmbeddbError(Exception):
    """embeddb could not do what was asked."""


class SpecError(EmbeddbError, ValueError):
    """An Embedding declaration is invalid."""


class SchemaError(EmbeddbError):
    """The database schema does not match what embeddb needs."""


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


class QueryError(EmbeddbError, ValueError):
    """A search was given something it cannot search with (an empty query, say)."""
