"""embeddb: embeddings that live in PostgreSQL, next to the rows they describe."""

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
from .orm import Embedding
from .spec import DEFAULT_MODEL, Distance, EmbeddingSpec

__all__ = [
    "DEFAULT_MODEL",
    "CatalogEntry",
    "DatabaseError",
    "Distance",
    "EmbeddbError",
    "Embedding",
    "EmbeddingSpec",
    "ModelError",
    "ModelMismatch",
    "PgvectorMissing",
    "SchemaError",
    "SpecError",
]
