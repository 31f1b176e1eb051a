"""The worker's part for a chunked column: split each document, embed only changed chunks.

For a claimed batch of documents the worker (:mod:`embeddb.worker`) calls
:func:`embed_documents` instead of embedding whole texts: each rendered text is split with the
column's :class:`~embeddb.chunking.Splitter`; a chunk whose text (md5) the document already
has stored keeps its vector; the other chunk texts are embedded together, once per distinct
text. The document's own vector (the parent column) is the mean of its chunk vectors.

:func:`write_chunks` then runs inside the worker's write transaction, after the guarded
``UPDATE`` of the parent rows: only documents whose text is still the text that was split get
their chunks written (all of them in one go), and chunks past a shrunken document's new end
are deleted. Chunks that did not change are not written at all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from . import chunk_sql
from .catalog import CatalogEntry
from .chunking import Chunk, Splitter
from .embedders import Vectors
from .errors import EmbeddbError

#: Embeds distinct texts: (vectors by text, error by text the model failed on).
EmbedTexts = Callable[[Sequence[str]], tuple[dict[str, Vectors], dict[str, str]]]


@dataclass
class Document:
    """A document's chunks as they will be stored, each with its vector."""

    chunks: list[Chunk]
    vectors: list[Vectors]


@dataclass
class ChunkedBatch:
    """What :func:`embed_documents` made of a batch of rendered documents."""

    #: by text: the document vector (mean of its chunks), None for a text without chunks
    vectors: dict[str, Vectors | None] = field(default_factory=dict)
    #: by text: why the document could not be embedded
    failures: dict[str, str] = field(default_factory=dict)
    #: by row key (see :func:`key_id`): the chunks to store
    documents: dict[str, Document] = field(default_factory=dict)
    encoded: int = 0  # chunk texts the model embedded
    reused: int = 0  # chunks that kept a stored vector


def key_id(key: Any) -> str:
    return json.dumps(key, sort_keys=True)


def stored_chunk_vectors(
    conn: sa.Connection, entry: CatalogEntry, keys: Sequence[Any]
) -> dict[str, dict[uuid.UUID, Vectors]]:
    """The vectors each document already has, by row key and chunk text hash."""
    stored: dict[str, dict[uuid.UUID, Vectors]] = {}
    if not keys:
        return stored
    rows = conn.exec_driver_sql(chunk_sql.fetch_chunks(entry.spec),
                                {"keys": json.dumps(list(keys))})
    for row in rows:
        vector = row.embedding
        values = vector.to_numpy() if hasattr(vector, "to_numpy") else vector
        stored.setdefault(key_id(row.row_key), {})[row.text_hash] = np.asarray(values, np.float32)
    return stored


def embed_documents(
    entry: CatalogEntry, rows: Sequence[Any], stored: dict[str, dict[uuid.UUID, Vectors]],
    embed: EmbedTexts,
) -> ChunkedBatch:
    """Split ``rows`` (row_key, text), reuse stored chunk vectors, embed the other chunks."""
    assert entry.spec.chunking is not None
    splitter = Splitter(entry.spec.model, entry.spec.chunking)
    batch = ChunkedBatch()
    split: dict[str, list[Chunk]] = {}
    for row in rows:
        if row.text is None or row.text in split or row.text in batch.failures:
            continue
        try:
            split[row.text] = splitter.split(row.text)
        except EmbeddbError as exc:
            batch.failures[row.text] = f"{entry.spec.qualified_column}: {exc}"
    wanted = {
        chunk.text
        for row in rows if row.text in split
        for chunk in split[row.text]
        if chunk.text_hash not in stored.get(key_id(row.row_key), {})
    }
    vectors, failed = embed(sorted(wanted, key=len)) if wanted else ({}, {})
    batch.encoded = len(vectors)
    for row in rows:
        if row.text is None:
            batch.documents[key_id(row.row_key)] = Document([], [])
            continue
        chunks = split.get(row.text)
        if chunks is None:
            continue
        broken = next((chunk for chunk in chunks if chunk.text in failed), None)
        if broken is not None:
            batch.failures[row.text] = (
                f"chunk {broken.number} (characters {broken.start}-{broken.end}):"
                f" {failed[broken.text]}")
            continue
        mine = stored.get(key_id(row.row_key), {})
        chunk_vectors = [mine.get(chunk.text_hash, vectors.get(chunk.text)) for chunk in chunks]
        batch.reused += sum(1 for chunk in chunks if chunk.text_hash in mine)
        document = Document(chunks, [v for v in chunk_vectors if v is not None])
        batch.documents[key_id(row.row_key)] = document
        batch.vectors[row.text] = _mean(document.vectors, entry.spec.encode.normalize)
    return batch


def write_chunks(
    conn: sa.Connection, entry: CatalogEntry, stored_keys: Sequence[Any],
    documents: dict[str, Document],
) -> int:
    """Write the chunks of the documents whose parent write passed its guard; returns how many
    chunk rows were sent. Runs in the worker's write transaction, after the parent ``UPDATE``."""
    keys = [key for key in stored_keys if key_id(key) in documents]
    if not keys:
        return 0
    spec = entry.spec
    conn.exec_driver_sql(chunk_sql.delete_extra_chunks(spec), {
        "keys": [json.dumps(key) for key in keys],
        "counts": [len(documents[key_id(key)].chunks) for key in keys],
    })
    rows = [(key, chunk, vector)
            for key in keys
            for chunk, vector in zip(documents[key_id(key)].chunks,
                                     documents[key_id(key)].vectors, strict=True)]
    if rows:
        conn.exec_driver_sql(chunk_sql.upsert_chunks(spec), {
            "keys": [json.dumps(key) for key, _, _ in rows],
            "numbers": [chunk.number for _, chunk, _ in rows],
            "starts": [chunk.start for _, chunk, _ in rows],
            "ends": [chunk.end for _, chunk, _ in rows],
            "texts": [chunk.text for _, chunk, _ in rows],
            "vectors": [vector for _, _, vector in rows],
            "hashes": [chunk.text_hash for _, chunk, _ in rows],
        })
    return len(rows)


def _mean(vectors: list[Vectors], normalize: bool) -> Vectors | None:
    if not vectors:
        return None
    mean: Vectors = np.mean(np.stack(vectors), axis=0).astype(np.float32)
    if normalize:
        norm = float(np.linalg.norm(mean))
        if norm > 0:
            mean /= norm
    return mean
