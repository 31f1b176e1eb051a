"""The query helpers: similarity search with SQL filters, hybrid search, neighbours.

The public names are importable from :mod:`embeddb` itself; the modules here are private
(their names start with ``_``) and may change between releases:

* ``_search``: :func:`search`, :func:`nearest`, :func:`explain` and their async twins;
* ``_checks``: the arguments every helper shares (k, query text, where=), checked first;
* ``_planner``: which plan a filter gets (exact scan or iterative HNSW scan);
* ``_settings``: transaction-local settings, put back after the query;
* ``_statement_cache``: one compiled statement per filter structure;
* ``_target``: which column is searched, its distance and similarity expressions;
* ``_query_vectors``: a query text embedded with the column's own model, checked and cached;
* ``_hybrid``: :func:`hybrid_search`, full text and vectors fused, and :func:`explain_hybrid`;
* ``_neighbours``: :func:`more_like_this`, :func:`near_duplicates`, :func:`duplicate_groups`;
* ``_chunks``: documents of a chunked column ranked by their best chunk;
* ``_rag``: :func:`search_chunks`, the best chunks with their documents, for RAG;
* ``_clusters``: :func:`clusters` (k-means, rows assigned in SQL) and :func:`outliers`.
"""

from ._chunks import ChunkSpan
from ._clusters import Cluster, Outlier, aclusters, aoutliers, clusters, outliers
from ._hybrid import BM25, HybridHit, ahybrid_search, explain_hybrid, hybrid_search
from ._neighbours import (
    DuplicatePair,
    amore_like_this,
    anear_duplicates,
    duplicate_groups,
    more_like_this,
    near_duplicates,
)
from ._rag import ChunkHit, asearch_chunks, search_chunks
from ._search import (
    Explanation,
    Hit,
    SearchResult,
    aexplain,
    asearch,
    explain,
    nearest,
    search,
)

__all__ = [
    "BM25",
    "ChunkHit",
    "ChunkSpan",
    "Cluster",
    "DuplicatePair",
    "Explanation",
    "Hit",
    "HybridHit",
    "Outlier",
    "SearchResult",
    "aclusters",
    "aexplain",
    "ahybrid_search",
    "amore_like_this",
    "anear_duplicates",
    "aoutliers",
    "asearch",
    "asearch_chunks",
    "clusters",
    "duplicate_groups",
    "explain",
    "explain_hybrid",
    "hybrid_search",
    "more_like_this",
    "near_duplicates",
    "nearest",
    "outliers",
    "search",
    "search_chunks",
]
