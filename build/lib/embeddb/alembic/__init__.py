"""Alembic support: operations for embedded columns, and an autogenerate plugin.

Importing this module registers the operations (:mod:`embeddb.alembic.ops`)::

    op.create_embeddb_schema()   op.drop_embeddb_schema()
    op.create_embedding(...)     op.alter_embedding(...)     op.drop_embedding(...)

The autogenerate plugin (:mod:`embeddb.alembic.plugin`) is published under the
``alembic.plugins`` entry point as ``embeddb``, so Alembic loads it by itself once embeddb is
installed; like every autogenerate plugin it is enabled in ``env.py``::

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        autogenerate_plugins=["alembic.autogenerate.*", "embeddb"],
    )

Where the entry point is not installed (embeddb only on ``sys.path``), register it first::

    from alembic.runtime.plugins import Plugin
    import embeddb.alembic.plugin

    Plugin.setup_plugin_from_module(embeddb.alembic.plugin, "embeddb")
"""

from __future__ import annotations

from . import impl  # noqa: F401 (registers what each operation does)
from .ops import (
    AlterEmbeddingOp,
    CreateEmbeddbSchemaOp,
    CreateEmbeddingOp,
    Definition,
    DropEmbeddbSchemaOp,
    DropEmbeddingOp,
)
from .plugin import NAME as PLUGIN_NAME
from .plugin import compare_embeddings, setup

__all__ = [
    "PLUGIN_NAME",
    "AlterEmbeddingOp",
    "CreateEmbeddbSchemaOp",
    "CreateEmbeddingOp",
    "Definition",
    "DropEmbeddbSchemaOp",
    "DropEmbeddingOp",
    "compare_embeddings",
    "setup",
]
