"""embeddb: embeddings that live in PostgreSQL, next to the rows they describe.

Declare with :func:`Embedding`, install with ``create_all`` or :func:`install`, keep in step
with :class:`Worker` (or ``embeddb worker``), query with :func:`search` and :func:`nearest`,
:func:`hybrid_search`, :func:`more_like_this` and :func:`near_duplicates`; see what is in a
column with :func:`clusters` and :func:`outliers`.
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
from .query import (
    Cluster,
    DuplicatePair,
    Explanation,
    Hit,
    HybridHit,
    Outlier,
    SearchResult,
    aclusters,
    ahybrid_search,
    amore_like_this,
    anear_duplicates,
    aoutliers,
    asearch,
    clusters,
    duplicate_groups,
    explain,
    hybrid_search,
    more_like_this,
    near_duplicates,
    nearest,
    outliers,
    search,
)
from .spec import DEFAULT_MODEL, Distance, EmbeddingSpec
from .worker import Worker, WorkerConfig

__all__ = [
    "DEFAULT_MODEL",
    "CatalogEntry",
    "Cluster",
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
    "Outlier",
    "PgvectorMissing",
    "SchemaError",
    "SearchResult",
    "SpecError",
    "Worker",
    "WorkerConfig",
    "aclusters",
    "ahybrid_search",
    "amore_like_this",
    "anear_duplicates",
    "aoutliers",
    "asearch",
    "clusters",
    "duplicate_groups",
    "explain",
    "hybrid_search",
    "install",
    "more_like_this",
    "near_duplicates",
    "nearest",
    "outliers",
    "search",
]
