"""embeddb: embeddings that live in PostgreSQL, next to the rows they describe.

Declare with :func:`Embedding`, install with ``create_all`` or :func:`install`, keep in step
with :class:`Worker` (or ``embeddb worker``), query with :func:`search` and :func:`nearest`.
"""

from .catalog import CatalogEntry
from .errors import (
    DatabaseError,
    EmbeddbError,
    ModelError,
    ModelMismatch,
    PgvectorMissing,
    SchemaError,
    SpecError,
)
from .orm import Embedding, install
from .search import Hit, SearchResult, asearch, nearest, search
from .spec import DEFAULT_MODEL, Distance, EmbeddingSpec
from .worker import Worker, WorkerConfig

__all__ = [
    "DEFAULT_MODEL",
    "CatalogEntry",
    "DatabaseError",
    "Distance",
    "EmbeddbError",
    "Embedding",
    "EmbeddingSpec",
    "Hit",
    "ModelError",
    "ModelMismatch",
    "PgvectorMissing",
    "SchemaError",
    "SearchResult",
    "SpecError",
    "Worker",
    "WorkerConfig",
    "asearch",
    "install",
    "nearest",
    "search",
]
