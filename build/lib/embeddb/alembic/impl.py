"""What embeddb's Alembic operations do to the database: each calls :mod:`embeddb.catalog`.

They need a live connection (the catalog and the table are read as they run), so offline
``--sql`` migrations are refused with an error that says so.
"""

from __future__ import annotations

from alembic.operations import Operations
from sqlalchemy.engine import Connection

from .. import catalog, migrate
from ..errors import EmbeddbError, SchemaError
from .ops import (
    AlterEmbeddingOp,
    CreateEmbeddbSchemaOp,
    CreateEmbeddingOp,
    DropEmbeddbSchemaOp,
    DropEmbeddingOp,
)


def _connection(operations: Operations) -> Connection:
    if operations.migration_context.as_sql:
        raise EmbeddbError(
            "embeddb's operations read the catalog and the table as they run, so they need a"
            " database connection; offline (--sql) migrations are not supported"
        )
    return operations.get_bind()


@Operations.implementation_for(CreateEmbeddbSchemaOp)
def _create_embeddb_schema(operations: Operations, operation: CreateEmbeddbSchemaOp) -> None:
    catalog.ensure_catalog(_connection(operations))


@Operations.implementation_for(DropEmbeddbSchemaOp)
def _drop_embeddb_schema(operations: Operations, operation: DropEmbeddbSchemaOp) -> None:
    migrate.downgrade(_connection(operations), "base")


@Operations.implementation_for(CreateEmbeddingOp)
def _create_embedding(operations: Operations, operation: CreateEmbeddingOp) -> None:
    conn = _connection(operations)
    catalog.install(conn, operation.to_spec(conn), enqueue_existing=operation.enqueue_existing)


@Operations.implementation_for(DropEmbeddingOp)
def _drop_embedding(operations: Operations, operation: DropEmbeddingOp) -> None:
    conn = _connection(operations)
    schema = operation.schema_in(conn)
    entry = catalog.get_entry(conn, schema, operation.table_name, operation.column_name)
    if entry is not None:
        spec = entry.spec
    elif operation.definition is not None:
        spec = operation.definition.to_spec(schema, operation.table_name, operation.column_name)
    else:
        raise SchemaError(f"{schema}.{operation.table_name}.{operation.column_name} is not an"
                          " embedded column, so there is nothing to drop")
    catalog.uninstall(conn, spec, drop_columns=True)


@Operations.implementation_for(AlterEmbeddingOp)
def _alter_embedding(operations: Operations, operation: AlterEmbeddingOp) -> None:
    conn = _connection(operations)
    schema = operation.schema_in(conn)
    entry = catalog.get_entry(conn, schema, operation.table_name, operation.column_name)
    if entry is None:
        raise SchemaError(f"{schema}.{operation.table_name}.{operation.column_name} is not an"
                          " embedded column; create it with op.create_embedding first")
    catalog.alter(conn, operation.apply(entry.spec), rebuild_index=operation.rebuilds_index)
