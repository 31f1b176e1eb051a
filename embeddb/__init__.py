"""embeddb: embeddings that live in PostgreSQL, next to the rows they describe.

Declare with :func:`Embedding`, install with ``create_all`` or :func:`install`, keep in step
with :class:`Worker` (or ``embeddb worker``), query with :func:`search` and :func:`nearest`,
:func:`hybrid_search`, :func:`more_like_this` and :func:`near_duplicates`; check a database's
health with :func:`doctor`; give roles their least privileges with :func:`grants`.
"""

from .catalog import CatalogEntry
from .database import create_engine, database_url
from .doctor import Finding, doctor
from .errors import (
    DatabaseError,
    EmbeddbError,
    ModelError,
    ModelMismatch,
    PgvectorMissing,
    SchemaError,
    SchemaNotReady,
    SchemaTooNew,
    SpecError,
)
from .grants import Grant, grants
from .importing import ImportRefused, ImportResult, import_vectors
from .orm import Embedding, install
from .query import (
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
    hybrid_search,
    more_like_this,
    near_duplicates,
    nearest,
    search,
)
from .spec import DEFAULT_MODEL, Distance, EmbeddingSpec
from .worker import Worker, WorkerConfig

__all__ = [
    "DEFAULT_MODEL",
    "CatalogEntry",
    "DatabaseError",
    "Distance",
    "DuplicatePair",
    "EmbeddbError",
    "Embedding",
    "EmbeddingSpec",
    "Explanation",
    "Finding",
    "Grant",
    "Hit",
    "HybridHit",
    "ImportRefused",
    "ImportResult",
    "ModelError",
    "ModelMismatch",
    "PgvectorMissing",
    "SchemaError",
    "SchemaNotReady",
    "SchemaTooNew",
    "SearchResult",
    "SpecError",
    "Worker",
    "WorkerConfig",
    "ahybrid_search",
    "amore_like_this",
    "anear_duplicates",
    "asearch",
    "create_engine",
    "database_url",
    "doctor",
    "duplicate_groups",
    "explain",
    "grants",
    "hybrid_search",
    "import_vectors",
    "install",
    "more_like_this",
    "near_duplicates",
    "nearest",
    "search",
]
