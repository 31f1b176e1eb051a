"""How autogenerate writes embeddb's operations into a migration script.

Each renderer also adds the imports the script needs: ``embeddb.alembic``, whose import
registers ``op.create_embedding`` and the rest (Alembic's plugin loader does the same, but a
migration should not depend on how it is run).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import renderers
from alembic.operations.ops import OpContainer

from .ops import (
    ALTER_FIELDS,
    AlterEmbeddingOp,
    CreateEmbeddbSchemaOp,
    CreateEmbeddingOp,
    DropEmbeddbSchemaOp,
    DropEmbeddingOp,
)

OPS_IMPORT = "import embeddb.alembic  # noqa: F401 (registers op.create_embedding and the rest)"
REEMBED_NOTE = (
    "# a new model or dimension: the worker builds the new vectors beside the old ones, which"
    " searches use until the new ones are swapped in; then: embeddb model finish TABLE.COLUMN"
)


def call(
    autogen_context: AutogenContext,
    name: str,
    positional: Sequence[Any] = (),
    keywords: dict[str, Any] | None = None,
) -> str:
    """``op.name(positional..., key=value, ...)``, one keyword a line as Alembic writes them."""
    autogen_context.imports.add(OPS_IMPORT)
    prefix = autogen_context.opts.get("alembic_module_prefix", "op.") or ""
    head = f"{prefix}{name}({', '.join(repr(value) for value in positional)}"
    if not keywords:
        return head + ")"
    lines = [f"{key}={value!r}" for key, value in keywords.items()]
    return head + ",\n" + ",\n".join(lines) + "\n)"


class ImportsOp(OpContainer):
    """Imports for the script, and no line of its own.

    Alembic spells a pgvector type as ``pgvector.sqlalchemy.vector.VECTOR(dim=3)`` without
    importing ``pgvector.sqlalchemy``, and a comparator has no other way into the script's
    imports. An empty container, so ``alembic check`` does not count it as a change.
    """

    def __init__(self, imports: Iterable[str]) -> None:
        super().__init__()
        self.imports = frozenset(imports)

    def reverse(self) -> ImportsOp:
        return ImportsOp(self.imports)


@renderers.dispatch_for(ImportsOp)
def _render_imports(autogen_context: AutogenContext, op: ImportsOp) -> list[str]:
    autogen_context.imports.update(op.imports)
    return []


def _schema(schema: str | None) -> dict[str, Any]:
    return {"schema": schema} if schema else {}


@renderers.dispatch_for(CreateEmbeddbSchemaOp)
def _render_create_schema(autogen_context: AutogenContext, op: CreateEmbeddbSchemaOp) -> str:
    return call(autogen_context, "create_embeddb_schema")


@renderers.dispatch_for(DropEmbeddbSchemaOp)
def _render_drop_schema(autogen_context: AutogenContext, op: DropEmbeddbSchemaOp) -> str:
    return call(autogen_context, "drop_embeddb_schema")


@renderers.dispatch_for(CreateEmbeddingOp)
def _render_create(autogen_context: AutogenContext, op: CreateEmbeddingOp) -> str:
    keywords = op.definition.arguments()
    if not op.enqueue_existing:
        keywords["enqueue_existing"] = False
    return call(autogen_context, "create_embedding", [op.table_name, op.column_name],
                {**keywords, **_schema(op.schema)})


@renderers.dispatch_for(DropEmbeddingOp)
def _render_drop(autogen_context: AutogenContext, op: DropEmbeddingOp) -> str:
    keywords = op.definition.arguments() if op.definition is not None else {}
    return call(autogen_context, "drop_embedding", [op.table_name, op.column_name],
                {**keywords, **_schema(op.schema)})


@renderers.dispatch_for(AlterEmbeddingOp)
def _render_alter(autogen_context: AutogenContext, op: AlterEmbeddingOp) -> list[str]:
    keywords = {name: op.changes[name] for name in ALTER_FIELDS if name in op.changes}
    keywords.update({f"existing_{name}": op.existing[name]
                     for name in ALTER_FIELDS if name in op.existing})
    if "key_columns" in keywords:
        keywords["key_columns"] = list(keywords["key_columns"])
    if "existing_key_columns" in keywords:
        keywords["existing_key_columns"] = list(keywords["existing_key_columns"])
    text = call(autogen_context, "alter_embedding", [op.table_name, op.column_name],
                {**keywords, **_schema(op.schema)})
    return [REEMBED_NOTE, text] if op.reembeds else [text]
