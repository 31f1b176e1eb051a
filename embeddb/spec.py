"""What is embedded how: the full description of one embedded column.

An :class:`EmbeddingSpec` is what the ORM declaration produces, what ``install`` writes to the
catalog, and what the worker and the query helpers read back. Everything the database objects
are named after is derived here, in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

from .chunking import Chunking
from .errors import SpecError
from .template import Template

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# pgvector's own HNSW defaults
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 64
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
#: How a column's vectors are stored, and the most dimensions pgvector's HNSW index takes for each.
VECTOR_TYPES = {"vector": 2000, "halfvec": 4000}
#: How an index may quantise the stored vectors (None: it indexes them as stored), and the most
#: dimensions pgvector's HNSW index takes for each.
QUANTIZATIONS = {"halfvec": 4000, "binary": 64000}
#: Candidates per result the binary index hands to the re-rank by full vectors, by default.
DEFAULT_RERANK = 10


class Distance(StrEnum):
    """How similarity is measured; each maps to a pgvector operator class (the operators are
    pgvector-python's comparators: ``cosine_distance``, ``max_inner_product``, ``l2_distance``).

    Example::

        embedding = Embedding("{body}", distance="inner_product")   # or Distance.INNER_PRODUCT
    """

    COSINE = "cosine"
    INNER_PRODUCT = "inner_product"
    L2 = "l2"

    def opclass(self, vector_type: str) -> str:
        suffix = {"cosine": "cosine_ops", "inner_product": "ip_ops", "l2": "l2_ops"}[self.value]
        return f"{vector_type}_{suffix}"

    @classmethod
    def parse(cls, value: str | Distance) -> Distance:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(d.value for d in cls)
            raise SpecError(f"unknown distance {value!r}; choose one of {choices}") from None


@dataclass(frozen=True)
class HnswIndex:
    """Parameters of the HNSW index built on the vector column (pgvector's defaults).

    ``quantize`` indexes an expression over the stored vectors instead of the vectors:
    ``"halfvec"`` (``column::halfvec(n)``, half the index) or ``"binary"``
    (``binary_quantize(column)::bit(n)`` under Hamming distance, a fraction of it), whose
    ``rerank * k`` nearest candidates are re-ranked by the full vectors in the same statement.
    ``rerank`` is a search setting: changing it rebuilds nothing (it is not compared).
    """

    m: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    quantize: str | None = None
    rerank: int = field(default=DEFAULT_RERANK, compare=False)

    def __post_init__(self) -> None:
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise SpecError(f"index quantize must be None or one of {', '.join(QUANTIZATIONS)},"
                            f" got {self.quantize!r}")
        if isinstance(self.rerank, bool) or not isinstance(self.rerank, int) \
                or not 1 <= self.rerank <= 100:
            raise SpecError(f"index rerank must be an integer between 1 and 100,"
                            f" got {self.rerank!r}")
        if not 2 <= self.m <= 100:
            raise SpecError(f"HNSW m must be between 2 and 100, got {self.m}")
        if not 4 <= self.ef_construction <= 1000 or self.ef_construction < 2 * self.m:
            raise SpecError(
                f"HNSW ef_construction must be between 4 and 1000 and at least 2*m ({2 * self.m}),"
                f" got {self.ef_construction}"
            )


@dataclass(frozen=True)
class EncodeOptions:
    """How texts are turned into vectors: part of a column's model identity."""

    normalize: bool = True
    query_prompt: str | None = None
    document_prompt: str | None = None
    #: How a local model runs (``torch``, ``onnx``, ``openvino``, ``onnx-int8``; see
    #: :mod:`embeddb.backends`): a float32 one is the same model, ``onnx-int8`` another.
    backend: str = "torch"


@dataclass(frozen=True)
class EmbeddingSpec:
    """One embedded column: where it lives, what text it is made of, and which model makes it.

    Example::

        entry = embeddb.catalog.get_entry(conn, "public", "tickets", "embedding")
        entry.spec.template.columns, entry.spec.qualified_column, entry.spec.index
    """

    schema: str
    table: str
    column: str
    key_columns: tuple[str, ...]
    template: Template
    model: str
    dimensions: int
    distance: Distance = Distance.COSINE
    index: HnswIndex | None = field(default_factory=HnswIndex)
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    vector_type: str = "vector"
    #: Set for a long-document column: its text is split and each chunk embedded (chunk_sql).
    chunking: Chunking | None = None
    #: The text search configuration (``"english"``) of the full-text index kept with the
    #: vectors, or None for none.
    fulltext: str | None = None

    def __post_init__(self) -> None:
        if self.fulltext is not None:
            check_fulltext_config(self.fulltext)
        if not self.key_columns:
            raise SpecError(
                f"table {self.qualified_table} has no primary key; embeddb identifies rows by it,"
                " so add one"
            )
        if self.column in self.template.columns:
            raise SpecError(
                f"{self.qualified_column}: the template cannot read the embedding column itself"
            )
        if not 1 <= self.dimensions <= 16000:
            raise SpecError(f"{self.qualified_column}: dimensions must be 1..16000")
        if self.vector_type not in VECTOR_TYPES:
            raise SpecError(
                f"{self.qualified_column}: vector_type must be one of"
                f" {', '.join(VECTOR_TYPES)}, got {self.vector_type!r}"
            )
        quantize = self.index.quantize if self.index is not None else None
        if quantize is not None and self.chunking is not None:
            raise SpecError(f"{self.qualified_column} is chunked; its chunks' index cannot be"
                            " quantised (drop quantize)")
        if quantize == "halfvec" and self.vector_type == "halfvec":
            raise SpecError(f"{self.qualified_column} already stores halfvec; its index needs no"
                            " quantize='halfvec'")
        indexed_as = quantize or self.vector_type
        most = QUANTIZATIONS[quantize] if quantize else VECTOR_TYPES[self.vector_type]
        if self.index is not None and self.dimensions > most:
            way_out = "pass index=False" if indexed_as != "vector" else (
                "index it as halfvec (quantize='halfvec') or pass index=False")
            raise SpecError(
                f"{self.qualified_column}: pgvector's HNSW index on {indexed_as} supports at"
                f" most {most:,} dimensions and {self.model} has {self.dimensions}; {way_out}"
            )

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def qualified_column(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"

    @property
    def column_type(self) -> str:
        """The vector column's type as ``format_type`` spells it: ``vector(384)``."""
        return f"{self.vector_type}({self.dimensions})"

    @property
    def index_opclass(self) -> str:
        """The operator class of the column's HNSW index: ``vector_cosine_ops``, or for a
        quantised index ``halfvec_cosine_ops`` or ``bit_hamming_ops``."""
        quantize = self.index.quantize if self.index is not None else None
        if quantize == "binary":
            return "bit_hamming_ops"
        return self.distance.opclass(quantize or self.vector_type)

    @property
    def hash_column(self) -> str:
        """The column that holds md5 of the text the stored vector was computed from."""
        return hash_column_name(self.column)

    @property
    def written_columns(self) -> tuple[str, ...]:
        """The parent table's columns the worker writes: the vector, the hash of its text and,
        for a full-text column, its ``tsvector``."""
        return (self.column, self.hash_column, *([self.fulltext_column] if self.fulltext else []))

    @property
    def index_name(self) -> str:
        return _identifier(f"{self.table}_{self.column}_hnsw")

    @property
    def chunk_table(self) -> str:
        """The table holding a chunked column's chunks, in the parent's schema."""
        return _identifier(f"{self.table}_{self.column}_chunks")

    @property
    def chunk_index_name(self) -> str:
        return _identifier(f"{self.table}_{self.column}_chunks_hnsw")

    @property
    def fulltext_column(self) -> str:
        """The stored ``tsvector`` of the column's text, kept in step by the worker."""
        return fulltext_column_name(self.column)

    @property
    def fulltext_index_name(self) -> str:
        return _identifier(f"{self.table}_{self.column}_fulltext_gin")

    @property
    def postings_table(self) -> str:
        """The BM25 postings of the column's ``tsvector`` (one row per lexeme and row)."""
        return postings_table_name(self.table, self.column)

    @property
    def trigger_prefix(self) -> str:
        return _identifier(f"embeddb_{self.column}", reserve=7)


def hash_column_name(column: str) -> str:
    return _identifier(f"{column}_source_hash")


def fulltext_column_name(column: str) -> str:
    return _identifier(f"{column}_fulltext")


def postings_table_name(table: str, column: str) -> str:
    return _identifier(f"{table}_{column}_postings")


def check_fulltext_config(name: str) -> str:
    """``name`` if it can name a text search configuration (``english``, ``public.my_cfg``).

    Whether the database knows it is checked when the column is installed.
    """
    parts = name.split(".") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(part.isidentifier() for part in parts):
        raise SpecError(
            f"fulltext must be True or the name of a PostgreSQL text search configuration"
            f" such as 'english', got {name!r}"
        )
    return name


def generation_column_name(column: str, generation: str) -> str:
    """Where a column's ``next`` or ``previous`` generation of vectors is stored:
    ``embedding__next`` beside ``embedding`` (see :mod:`embeddb.generations`)."""
    return _identifier(f"{column}__{generation}")


def _identifier(name: str, reserve: int = 0) -> str:
    """Shorten ``name`` to fit PostgreSQL's identifier limit, keeping it unique with a hash.

    The limit is in bytes (PostgreSQL silently truncates a longer name, so ``..._ins`` and
    ``..._upd`` of a long unicode name would collide); the cut falls between characters.
    """
    limit = _MAX_IDENTIFIER - reserve
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.md5(name.encode()).hexdigest()[:8]
    kept = name.encode()[: limit - 9].decode(errors="ignore")  # a split character is dropped
    return f"{kept}_{digest}"
