"""``embeddb worker --backend``: one worker running local models on another float32 backend.

The override replaces a column's declared float32 backend (``torch``, ``onnx``, ``openvino``)
for this worker only; those make the same vectors, so the column's identity holds. A column
declared with a quantised backend (``onnx-int8``) keeps it: that is another model, changed only
by declaring it. :func:`check_at_start` loads every local model the catalog names on the
override, which runs the probe against PyTorch, so a backend that disagrees stops the worker
before it claims a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import sqlalchemy as sa

from . import catalog
from .backends import FLOAT_BACKENDS, check_backend
from .catalog import CatalogEntry
from .embedders import Embedder, load_embedder, runs_on_backends
from .errors import SpecError
from .spec import EncodeOptions


def overridden(entry: CatalogEntry, backend: str) -> EncodeOptions:
    """The encode options ``entry`` runs with on a worker started with ``--backend backend``."""
    encode = entry.spec.encode
    if runs_on_backends(entry.spec.model) and encode.backend in FLOAT_BACKENDS:
        return replace(encode, backend=backend)
    return encode


def embedder_for(backend: str) -> Callable[[CatalogEntry], Embedder]:
    """What the worker calls to load a column's model, with ``backend`` for float32 columns.

    Example::

        Worker(url, embedder_for=embedder_for("onnx")).run()
    """
    if check_backend(backend) not in FLOAT_BACKENDS:
        raise SpecError(
            f"--backend {backend}: a quantised backend is another model, so it cannot be a"
            " worker's choice; declare it on the column (Embedding(..., backend="
            f"{backend!r})), which re-embeds it, or pick one of {', '.join(FLOAT_BACKENDS)}"
        )

    def load(entry: CatalogEntry) -> Embedder:
        embedder = load_embedder(entry.spec.model, overridden(entry, backend),
                                 entry.spec.dimensions)
        catalog.check_model(entry, embedder.identity)
        return embedder

    return load


def check_at_start(engine: sa.Engine, load: Callable[[CatalogEntry], Embedder]) -> int:
    """Load the model of every local column in the catalog with ``load`` (the probe runs on
    load, raising :class:`~embeddb.backends.BackendMismatch`); returns how many were checked."""
    with engine.connect() as conn:
        entries = [entry for entry in catalog.list_entries(conn)
                   if runs_on_backends(entry.spec.model)]
    for entry in entries:
        load(entry)
    return len(entries)
