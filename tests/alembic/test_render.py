"""Each operation renders to the ``op.…(...)`` call a migration script gets, with its import."""

from __future__ import annotations

from dataclasses import replace

import pytest
from alembic.autogenerate import render_op_text
from alembic.autogenerate.api import AutogenContext
from alembic.runtime.migration import MigrationContext

from embeddb.alembic import (
    AlterEmbeddingOp,
    CreateEmbeddbSchemaOp,
    CreateEmbeddingOp,
    Definition,
    DropEmbeddbSchemaOp,
    DropEmbeddingOp,
)
from embeddb.alembic.ops import definition
from embeddb.alembic.render import OPS_IMPORT
from embeddb.spec import HnswIndex

TICKETS = Definition(
    template="{subject}\n\n{body}",
    model="embeddb-testing/hash-32",
    dimensions=32,
    key_columns=("id",),
)
TICKETS_ARGS = """template='{subject}\\n\\n{body}',
model='embeddb-testing/hash-32',
dimensions=32,
vector_type='vector',
key_columns=['id'],
distance='cosine',
m=16,
ef_construction=64,
normalize=True"""


@pytest.fixture
def context() -> AutogenContext:
    migration = MigrationContext.configure(
        dialect_name="postgresql", opts={"alembic_module_prefix": "op."})
    return AutogenContext(migration, autogenerate=False)


def test_create_embeddb_schema(context: AutogenContext) -> None:
    assert render_op_text(context, CreateEmbeddbSchemaOp()) == "op.create_embeddb_schema()"
    assert context.imports == {OPS_IMPORT}


def test_drop_embeddb_schema(context: AutogenContext) -> None:
    assert render_op_text(context, DropEmbeddbSchemaOp()) == "op.drop_embeddb_schema()"
    assert context.imports == {OPS_IMPORT}


def test_create_embedding_spells_out_every_default(context: AutogenContext) -> None:
    text = render_op_text(context, CreateEmbeddingOp("tickets", "embedding", TICKETS))
    assert text == f"op.create_embedding('tickets', 'embedding',\n{TICKETS_ARGS}\n)"
    assert context.imports == {OPS_IMPORT}


def test_create_embedding_without_index_in_a_schema_with_prompts(context: AutogenContext) -> None:
    definition = Definition(
        template="{title}", model="intfloat/e5-small-v2", dimensions=384, key_columns=("a", "b"),
        distance="inner_product", index=None, normalize=False,
        query_prompt="query: ", document_prompt="passage: ", vector_type="halfvec",
    )
    op = CreateEmbeddingOp("docs", "vec", definition, schema="search", enqueue_existing=False)
    assert render_op_text(context, op) == """op.create_embedding('docs', 'vec',
template='{title}',
model='intfloat/e5-small-v2',
dimensions=384,
vector_type='halfvec',
key_columns=['a', 'b'],
distance='inner_product',
index=False,
normalize=False,
query_prompt='query: ',
document_prompt='passage: ',
enqueue_existing=False,
schema='search'
)"""


def test_drop_embedding_carries_the_definition_to_reverse(context: AutogenContext) -> None:
    op = DropEmbeddingOp("tickets", "embedding", TICKETS)
    assert render_op_text(context, op) == \
        f"op.drop_embedding('tickets', 'embedding',\n{TICKETS_ARGS}\n)"
    assert render_op_text(context, op.reverse()) == \
        render_op_text(context, CreateEmbeddingOp("tickets", "embedding", TICKETS))
    assert context.imports == {OPS_IMPORT}


def test_alter_embedding_template(context: AutogenContext) -> None:
    op = AlterEmbeddingOp("tickets", "embedding", {"template": "{subject}"},
                          {"template": "{subject}\n\n{body}"})
    assert render_op_text(context, op) == """op.alter_embedding('tickets', 'embedding',
template='{subject}',
existing_template='{subject}\\n\\n{body}'
)"""
    assert render_op_text(context, op.reverse()) == """op.alter_embedding('tickets', 'embedding',
template='{subject}\\n\\n{body}',
existing_template='{subject}'
)"""
    assert context.imports == {OPS_IMPORT}


def test_alter_embedding_model_says_it_builds_beside_the_old_vectors(context: AutogenContext) -> None:
    op = AlterEmbeddingOp(
        "tickets", "embedding",
        {"model": "embeddb-testing/hash-384", "dimensions": 384},
        {"model": "embeddb-testing/hash-32", "dimensions": 32},
    )
    assert render_op_text(context, op) == """\
# a new model or dimension: the worker builds the new vectors beside the old ones, which searches use until the new ones are swapped in; then: embeddb model finish TABLE.COLUMN
op.alter_embedding('tickets', 'embedding',
model='embeddb-testing/hash-384',
dimensions=384,
existing_model='embeddb-testing/hash-32',
existing_dimensions=32
)"""


def test_alter_embedding_index(context: AutogenContext) -> None:
    op = AlterEmbeddingOp(
        "tickets", "embedding",
        {"index_method": "hnsw", "opclass": "vector_cosine_ops", "m": 24, "key_columns": ("id",)},
        {"index_method": "ivfflat", "opclass": "vector_l2_ops", "m": None,
         "key_columns": ("id",)},
        schema="app",
    )
    assert render_op_text(context, op) == """op.alter_embedding('tickets', 'embedding',
key_columns=['id'],
index_method='hnsw',
opclass='vector_cosine_ops',
m=24,
existing_key_columns=['id'],
existing_index_method='ivfflat',
existing_opclass='vector_l2_ops',
existing_m=None,
schema='app'
)"""


def test_definition_round_trips_through_a_spec() -> None:
    spec = TICKETS.to_spec("public", "tickets", "embedding")
    assert spec.index == HnswIndex() and spec.template.columns == ("subject", "body")
    assert Definition.from_spec(spec) == TICKETS


def test_create_embedding_with_a_fulltext_index(context: AutogenContext) -> None:
    from dataclasses import replace

    op = CreateEmbeddingOp("tickets", "embedding", replace(TICKETS, fulltext="english"))
    assert render_op_text(context, op) == (
        f"op.create_embedding('tickets', 'embedding',\n{TICKETS_ARGS},\nfulltext='english'\n)")
    change = AlterEmbeddingOp("tickets", "embedding", {"fulltext": "english"},
                              {"fulltext": None})
    assert change.reverse().changes == {"fulltext": None}


def test_create_embedding_with_a_quantised_index_round_trips(context: AutogenContext) -> None:
    quantised = replace(TICKETS, index=HnswIndex(quantize="binary", rerank=6))
    text = render_op_text(context, CreateEmbeddingOp("tickets", "embedding", quantised))
    assert "ef_construction=64,\nquantize='binary',\nrerank=6,\nnormalize=True" in text
    made = definition(**{**quantised.arguments(), "key_columns": ["id"]})
    assert made.index is not None and (made.index.quantize, made.index.rerank) == ("binary", 6)
    assert made.to_spec("public", "tickets", "embedding").index_opclass == "bit_hamming_ops"


def test_create_embedding_with_a_backend_round_trips(context: AutogenContext) -> None:
    int8 = replace(TICKETS, backend="onnx-int8")
    text = render_op_text(context, CreateEmbeddingOp("tickets", "embedding", int8))
    assert "backend='onnx-int8'" in text
    assert "backend" not in render_op_text(context, CreateEmbeddingOp("tickets", "embedding",
                                                                      TICKETS))
    made = definition(**{**int8.arguments(), "key_columns": ["id"]})
    assert made.to_spec("public", "tickets", "embedding").encode.backend == "onnx-int8"
