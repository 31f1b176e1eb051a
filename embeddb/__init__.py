"""embeddb: embeddings that live in PostgreSQL, next to the rows they describe.

Declare with :func:`Embedding`, install with ``create_all`` or :func:`install`, keep in step
with :class:`Worker` (or ``embeddb worker``), query with :func:`search` and :func:`nearest`,
:func:`hybrid_search`, :func:`more_like_this` and :func:`near_duplicates`.
"""

from .catalog import CatalogEntry
from .errors import (
    DatabaseError,
    EmbeddbError,
    ModelError,
    ModelMismatch,
    PgvectorMissing,
    QueryError,
    SchemaError,
    SpecError,
)
from .orm import Embedding, install
from .query import (
    BM25,
    DuplicatePair,
    Explanation,
    Hit,
    HybridHit,
    SearchResult,
    ahybrid_search,
    amore_like_this,
    anear_duplicates,
    asearch,
    duplicate_groups,
    explain,
    explain_hybrid,
    hybrid_search,
    more_like_this,
    near_duplicates,
    nearest,
    search,
)
from .spec import DEFAULT_MODEL, Distance, EmbeddingSpec
from .worker import Worker, WorkerConfig

__all__ = [
    "BM25",
    "DEFAULT_MODEL",
    "CatalogEntry",
    "DatabaseError",
    "Distance",
    "DuplicatePair",
    "EmbeddbError",
    "Embedding",
    "EmbeddingSpec",
    "Explanation",
    "Hit",
    "HybridHit",
    "ModelError",
    "ModelMismatch",
    "PgvectorMissing",
    "QueryError",
    "SchemaError",
    "SearchResult",
    "SpecError",
    "Worker",
    "WorkerConfig",
    "ahybrid_search",
    "amore_like_this",
    "anear_duplicates",
    "asearch",
    "duplicate_groups",
    "explain",
    "explain_hybrid",
    "hybrid_search",
    "install",
    "more_like_this",
    "near_duplicates",
    "nearest",
    "search",
]
