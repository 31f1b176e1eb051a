"""What embedding a column costs before a backfill: rows, tokens and, given a price, money."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from . import column_sql
from .catalog import CatalogEntry
from .embedders import Embedder, estimate_tokens, load_embedder, token_counts
from .errors import ModelError

_CHUNK = 2000


@dataclass(frozen=True)
class Estimate:
    """Rows and tokens of one embedded column, and their price when one per token is known."""

    column: str
    rows: int
    tokens: int
    tokenizer: str  #: "model" (the model's own tokenizer) or "estimate" (characters / 4)
    price: float | None

    def describe(self) -> str:
        how = ("counted by the model's tokenizer" if self.tokenizer == "model"
               else "estimated as characters / 4")
        lines = [f"{self.column}: {self.rows:,} rows with text, {self.tokens:,} tokens ({how})"]
        if self.price is not None:
            lines.append(f"price: {self.price:,.4f}")
        return "\n".join(lines)


def estimate(conn: sa.Connection, entry: CatalogEntry,
             price_per_million_tokens: float | None = None) -> Estimate:
    """Count the rows and tokens of ``entry``'s column with its model's tokenizer (if it can
    be loaded here; an estimate otherwise).

    Example::

        estimate(conn, entry, price_per_million_tokens=0.02).describe()
    """
    spec = entry.spec
    embedder: Embedder | None
    try:
        embedder = load_embedder(spec.model, spec.encode, spec.dimensions)
    except ModelError:  # e.g. an HTTP model whose key is not set here: estimate
        embedder = None
    counted = embedder is not None and hasattr(embedder, "count_tokens")
    rows = tokens = 0
    result = conn.execution_options(stream_results=True, max_row_buffer=_CHUNK).exec_driver_sql(
        column_sql.all_texts(spec, entry.id))
    for chunk in result.scalars().partitions(_CHUNK):
        texts = list(chunk)
        rows += len(texts)
        counts = token_counts(embedder, texts) if embedder is not None else estimate_tokens(texts)
        tokens += sum(counts)
    price = None if price_per_million_tokens is None else tokens * price_per_million_tokens / 1e6
    return Estimate(spec.qualified_column, rows, tokens, "model" if counted else "estimate", price)
