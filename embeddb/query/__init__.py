"""The query helpers: similarity search with SQL filters, hybrid search, neighbours.

The public names are importable from :mod:`embeddb` itself; the modules here are private
(their names start with ``_``) and may change between releases:

* ``_search``: :func:`search`, :func:`nearest`, :func:`explain` and their async twins;
* ``_planner``: which plan a filter gets (exact scan or iterative HNSW scan);
* ``_settings``: transaction-local settings, put back after the query;
* ``_statement_cache``: one compiled statement per filter structure;
* ``_target``: which column is searched, its distance and similarity expressions;
* ``_query_vectors``: a query text embedded with the column's own model, checked and cached;
* ``_hybrid``: :func:`hybrid_search`, full text and vectors fused, and :func:`explain_hybrid`;
* ``_neighbours``: :func:`more_like_this`, :func:`near_duplicates`, :func:`duplicate_groups`.
"""

from ._hybrid import BM25, HybridHit, ahybrid_search, explain_hybrid, hybrid_search
from ._neighbours import (
    DuplicatePair,
    amore_like_this,
    anear_duplicates,
    duplicate_groups,
    more_like_this,
    near_duplicates,
)
from ._search import Explanation, Hit, SearchResult, asearch, explain, nearest, search

__all__ = [
    "BM25",
    "DuplicatePair",
    "Explanation",
    "Hit",
    "HybridHit",
    "SearchResult",
    "ahybrid_search",
    "amore_like_this",
    "anear_duplicates",
    "asearch",
    "duplicate_groups",
    "explain",
    "explain_hybrid",
    "hybrid_search",
    "more_like_this",
    "near_duplicates",
    "nearest",
    "search",
]
