"""embeddb: embeddings that live in PostgreSQL, next to the rows they describe.

Declare with :func:`Embedding`, install with ``create_all`` or :func:`install`, keep in step
with :class:`Worker` (or ``embeddb worker``), query with :func:`search` and :func:`nearest`,
:func:`hybrid_search`, :func:`more_like_this` and :func:`near_duplicates`; long documents
with ``Embedding(..., chunks=Chunking(...))`` and :func:`search_chunks`; see what is in a
column with :func:`clusters` and :func:`outliers`; check a database's health with
:func:`doctor`; give roles their least privileges with :func:`grants`.
"""

from .catalog import CatalogEntry
from .chunking import Chunking
from .database import create_engine, database_url
from .doctor import Finding, doctor
from .errors import (
    DatabaseError,
    EmbeddbError,
    ModelError,
    ModelMismatch,
    PgvectorMissing,
    QueryError,
    SchemaError,
    SchemaNotReady,
    SchemaTooNew,
    SpecError,
)
from .grants import Grant, grants
from .importing import ImportRefused, ImportResult, import_vectors
from .orm import Embedding, install
from .partial_index import PartialIndex
from .query import (
    BM25,
    ChunkHit,
    ChunkSpan,
    Cluster,
    DuplicatePair,
    Explanation,
    Hit,
    HybridHit,
    Outlier,
    SearchResult,
    aclusters,
    aexplain,
    ahybrid_search,
    amore_like_this,
    anear_duplicates,
    aoutliers,
    asearch,
    asearch_chunks,
    clusters,
    duplicate_groups,
    explain,
    explain_hybrid,
    hybrid_search,
    more_like_this,
    near_duplicates,
    nearest,
    outliers,
    search,
    search_chunks,
)
from .spec import DEFAULT_MODEL, Distance, EmbeddingSpec
from .worker import Worker, WorkerConfig

__all__ = [
    "BM25",
    "DEFAULT_MODEL",
    "CatalogEntry",
    "ChunkHit",
    "ChunkSpan",
    "Chunking",
    "Cluster",
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
    "Outlier",
    "PartialIndex",
    "PgvectorMissing",
    "QueryError",
    "SchemaError",
    "SchemaNotReady",
    "SchemaTooNew",
    "SearchResult",
    "SpecError",
    "Worker",
    "WorkerConfig",
    "aclusters",
    "aexplain",
    "ahybrid_search",
    "amore_like_this",
    "anear_duplicates",
    "aoutliers",
    "asearch",
    "asearch_chunks",
    "clusters",
    "create_engine",
    "database_url",
    "doctor",
    "duplicate_groups",
    "explain",
    "explain_hybrid",
    "grants",
    "hybrid_search",
    "import_vectors",
    "install",
    "more_like_this",
    "near_duplicates",
    "nearest",
    "outliers",
    "search",
    "search_chunks",
]
