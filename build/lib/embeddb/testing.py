"""A small, deterministic embedder for tests about queues, races and failures.

Its model name is ``embeddb-testing/hash-<dims>``, so it can be recorded in the catalog and loaded
by a worker that has nothing but a database URL, exactly like a real model. Words are hashed into
buckets, so texts that share words are similar; no weights, no torch, microseconds per text.

Two behaviours exist for failure tests:

* a text containing :data:`POISON` makes ``embed_documents`` raise, like a model that chokes on
  one input, and one containing :data:`NONFINITE` gets a vector of NaN;
* ``embeddb-testing/hash-<dims>?delay=<seconds>`` sleeps that long per batch, so a test can kill
  or stop a worker while "the model runs".
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

import numpy as np

from .embedders import TESTING_PREFIX, Embedder, ModelIdentity, Vectors, truncated
from .errors import ModelError
from .spec import EncodeOptions

POISON = "<<embeddb-poison>>"
NONFINITE = "<<embeddb-nan>>"
_NAME = re.compile(r"^embeddb-testing/hash-(\d+)(?:\?(.*))?$")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class TestingModel:
    dimensions: int
    delay: float = 0.0


def parse_testing_model(name: str) -> TestingModel:
    match = _NAME.match(name)
    if not match:
        raise ModelError(f"unknown testing model {name!r}; use {TESTING_PREFIX}hash-<dims>")
    params = parse_qs(match.group(2) or "")
    return TestingModel(int(match.group(1)), float(params.get("delay", ["0"])[0]))


def testing_identity(name: str, options: EncodeOptions) -> ModelIdentity:
    model = parse_testing_model(name)
    return ModelIdentity(
        name=name,
        fingerprint="hash-v1",
        dimensions=model.dimensions,
        normalize=options.normalize,
        query_prompt=options.query_prompt,
        document_prompt=options.document_prompt,
    )


class HashEmbedder:
    """Deterministic bag-of-words hashing embedder."""

    def __init__(self, name: str, options: EncodeOptions | None = None) -> None:
        self._options = options or EncodeOptions()
        self._model = parse_testing_model(name)
        self._identity = testing_identity(name, self._options)

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if self._model.delay:
            time.sleep(self._model.delay)
        for text in texts:
            if POISON in text:
                raise ValueError("the testing model refuses poisoned text")
        prompt = self._options.document_prompt or ""
        vectors = np.stack([self._vector(prompt + text) for text in texts])
        vectors[[NONFINITE in text for text in texts]] = np.nan
        return vectors

    def embed_query(self, text: str) -> Vectors:
        return self._vector((self._options.query_prompt or "") + text)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """One token per word, like the hashing does."""
        return [max(1, len(_WORD.findall(text))) for text in texts]

    def _vector(self, text: str) -> Vectors:
        vector = np.zeros(self._model.dimensions, dtype=np.float32)
        for word in _WORD.findall(text.lower()) or [text]:
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self._model.dimensions
            vector[bucket] += 1.0 if digest[4] & 1 else -1.0
        if not vector.any():
            vector[0] = 1.0
        if self._options.normalize:
            vector /= np.linalg.norm(vector)
        return vector


def load_testing_embedder(name: str, options: EncodeOptions) -> HashEmbedder:
    return HashEmbedder(name, options)


class _TestingKind:
    """The ``embeddb-testing/`` prefix in :mod:`embeddb.embedders`' registry of model kinds."""

    def native_dimensions(self, name: str) -> int:
        return parse_testing_model(name).dimensions

    def identity(
        self, name: str, options: EncodeOptions, dimensions: int | None
    ) -> ModelIdentity:
        return truncated(testing_identity(name, options), dimensions)

    def load(self, name: str, options: EncodeOptions, dimensions: int | None) -> Embedder:
        return HashEmbedder(name, options)


MODEL_KIND = _TestingKind()
