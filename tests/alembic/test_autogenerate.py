"""Autogenerate on the example application: each change to an embedding gives exactly the
expected operations, and the script Alembic writes for it runs."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import produce_migrations
from alembic.runtime.migration import MigrationContext
from alembic.runtime.plugins import Plugin
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.orm import DeclarativeBase, mapped_column

import embeddb.alembic.plugin
from embeddb import Embedding, catalog
from embeddb.alembic import Definition
from embeddb.spec import HnswIndex
from tests.integration.models import HASH_MODEL, MINILM

from .example import example_config, generate_and_run
from .example_models import EXAMPLE_EMBEDDING, example_metadata

TEMPLATE = EXAMPLE_EMBEDDING["template"]


@pytest.fixture
def at_head(example: Path, engine: sa.Engine) -> Path:
    """The example application, migrated to its head, with three tickets already embedded."""
    with engine.begin() as conn:
        command.upgrade(example_config(example, conn), "head")
        conn.execute(sa.text(
            "INSERT INTO tickets (id, subject, body, status) SELECT g, 'subject ' || g,"
            " 'body ' || g, 'open' FROM generate_series(1, 3) g"))
        # as if the worker had embedded them (with MiniLM, which these tests need not run)
        conn.execute(sa.text("UPDATE tickets SET embedding = array_fill(0.1, ARRAY[384]),"
                             " embedding_source_hash = md5(embeddb.render_1(tickets))::uuid"))
        conn.execute(sa.text("DELETE FROM embeddb.pending"))
    return example


def diffs(engine: sa.Engine, metadata: sa.MetaData, plugin: str = "embeddb",
          **options: Any) -> list[tuple[Any, ...]]:
    """What autogenerate finds, as ``alembic check`` reports it."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "autogenerate_plugins": ["alembic.autogenerate.*", plugin],
            "target_metadata": metadata,
            **options,
        })
        return produce_migrations(context, metadata).upgrade_ops.as_diffs()


def pending(engine: sa.Engine, column: str = "embedding") -> int:
    """Rows of ``tickets.<column>`` waiting for the worker."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM embeddb.pending p JOIN embeddb.columns c ON c.id = p.column_id"
            " WHERE c.table_name = 'tickets' AND c.column_name = :column"),
            {"column": column}).scalar_one())


def entry(engine: sa.Engine, column: str = "embedding") -> catalog.CatalogEntry | None:
    with engine.connect() as conn:
        return catalog.get_entry(conn, "public", "tickets", column)


def index_definition(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'tickets_embedding_hnsw'"
        )).scalar())


def with_embedding(**changes: Any) -> sa.MetaData:
    return example_metadata({**EXAMPLE_EMBEDDING, **changes})


def test_the_example_models_match_the_example_at_head(at_head: Path, engine: sa.Engine) -> None:
    assert diffs(engine, example_metadata()) == []
    assert diffs(engine, example_metadata(), include_schemas=True) == []  # embeddb's own tables
    with engine.connect() as conn:
        command.check(example_config(at_head, conn))  # models.py itself


def test_alembic_finds_the_plugin_through_its_entry_point() -> None:
    (entry_point,) = [e for e in entry_points(group="alembic.plugins") if e.name == "embeddb"]
    assert entry_point.value == "embeddb.alembic.plugin"
    assert entry_point.load() is embeddb.alembic.plugin


def test_the_plugin_can_be_registered_by_hand(at_head: Path, engine: sa.Engine) -> None:
    plugin = Plugin("embeddb_by_hand")
    embeddb.alembic.plugin.setup(plugin)
    try:
        assert [d[0] for d in diffs(engine, example_metadata(None), plugin="embeddb_by_hand")] \
            == ["remove_embedding"]
    finally:
        plugin.remove()


def test_adding_an_embedding_to_a_table(at_head: Path, engine: sa.Engine) -> None:
    metadata = example_metadata(columns={
        "summary": Embedding("{subject}", model=HASH_MODEL, index=False)})
    assert diffs(engine, metadata) == [("add_embedding", None, "tickets", "summary", Definition(
        template="{subject}", model=HASH_MODEL, dimensions=32, key_columns=("id",), index=None))]
    script = generate_and_run(at_head, engine, metadata)
    assert "import embeddb.alembic" in script
    assert "op.create_embedding('tickets', 'summary',\n" in script
    assert "op.drop_embedding('tickets', 'summary',\n" in script
    assert "add_column" not in script and "drop_column" not in script
    found = entry(engine, "summary")
    assert found is not None and found.spec.index is None
    assert pending(engine, "summary") == 3  # the rows already there are queued


def test_adding_a_table_with_an_embedding(at_head: Path, engine: sa.Engine) -> None:
    def notes(base: type[DeclarativeBase]) -> None:
        type("Note", (base,), {
            "__tablename__": "notes",
            "id": mapped_column(sa.Integer, primary_key=True),
            "text": mapped_column(sa.String),
            "embedding": Embedding("{text}", model=HASH_MODEL),
        })

    metadata = example_metadata(tables=[notes])
    found = diffs(engine, metadata)
    assert [d[0] for d in found] == ["add_table", "add_embedding"]
    assert [c.name for c in found[0][1].columns] == ["id", "text"]
    script = generate_and_run(at_head, engine, metadata)
    assert script.index("op.create_table('notes',") < script.index("op.create_embedding('notes'")
    assert script.index("op.drop_embedding('notes'") < script.index("op.drop_table('notes')")
    with engine.connect() as conn:
        assert catalog.get_entry(conn, "public", "notes", "embedding") is not None


def test_changing_the_template(at_head: Path, engine: sa.Engine) -> None:
    metadata = with_embedding(template="{subject}: {status}")
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding",
                                        {"template": (TEMPLATE, "{subject}: {status}")})]
    script = generate_and_run(at_head, engine, metadata)
    assert "template='{subject}: {status}',\n    existing_template='{subject}\\n\\n{body}'" \
        in script
    found = entry(engine)
    assert found is not None and found.spec.template.columns == ("subject", "status")
    assert pending(engine) == 3


def test_changing_the_model(at_head: Path, engine: sa.Engine) -> None:
    metadata = with_embedding(model="embeddb-testing/hash-384")
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding",
                                        {"model": (MINILM, "embeddb-testing/hash-384")})]
    script = generate_and_run(at_head, engine, metadata)
    assert "builds the new vectors beside the old ones" in script
    found, upcoming = entry(engine), entry(engine, "embedding__next")
    assert found is not None and found.identity.name == MINILM  # searches keep the old model
    assert upcoming is not None and upcoming.identity.fingerprint == "hash-v1"
    assert (pending(engine), pending(engine, "embedding__next")) == (0, 3)
    # the change in progress is what the models declare: nothing more to migrate, and the
    # next generation's columns are embeddb's, not Alembic's
    assert diffs(engine, metadata) == []


def test_changing_the_model_and_dimension(at_head: Path, engine: sa.Engine) -> None:
    metadata = with_embedding(model=HASH_MODEL)
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding", {
        "model": (MINILM, HASH_MODEL), "dimensions": (384, 32)})]
    generate_and_run(at_head, engine, metadata)
    with engine.connect() as conn:
        assert dict(conn.execute(sa.text(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'tickets'::regclass AND attname LIKE 'embedding%'"
            " AND NOT attisdropped AND atttypid = 'vector'::regtype")).all()) \
            == {"embedding": "vector(384)", "embedding__next": "vector(32)"}
    assert diffs(engine, metadata) == []


def test_changing_the_index_parameters(at_head: Path, engine: sa.Engine) -> None:
    metadata = with_embedding(m=32, ef_construction=128)
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding", {
        "m": (24, 32), "ef_construction": (100, 128)})]
    generate_and_run(at_head, engine, metadata)
    assert "WITH (m='32', ef_construction='128')" in index_definition(engine)
    found = entry(engine)
    assert found is not None and found.spec.index == HnswIndex(32, 128)
    assert pending(engine) == 0  # a new index re-embeds nothing


def test_changing_the_distance_changes_the_operator_class(
        at_head: Path, engine: sa.Engine) -> None:
    metadata = with_embedding(distance="inner_product")
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding",
                                        {"distance": ("cosine", "inner_product")})]
    generate_and_run(at_head, engine, metadata)
    assert "USING hnsw (embedding vector_ip_ops)" in index_definition(engine)


def test_changing_the_vector_type_casts_the_vectors_and_reverses(
        at_head: Path, engine: sa.Engine) -> None:
    metadata = with_embedding(vector_type="halfvec")
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding",
                                        {"vector_type": ("vector", "halfvec")})]
    script = generate_and_run(at_head, engine, metadata)
    assert "vector_type='halfvec',\n    existing_vector_type='vector'" in script
    assert "re-embeds" not in script

    def state() -> tuple[str, int, int]:
        with engine.connect() as conn:
            column = conn.execute(sa.text(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'tickets'::regclass AND attname = 'embedding'")).scalar_one()
            kept = conn.execute(sa.text(
                "SELECT count(*) FROM tickets WHERE embedding IS NOT NULL")).scalar_one()
        return column, kept, pending(engine)

    assert state() == ("halfvec(384)", 3, 0)
    assert "USING hnsw (embedding halfvec_cosine_ops)" in index_definition(engine)
    with engine.begin() as conn:
        command.downgrade(example_config(at_head, conn, metadata), "-1")
    assert state() == ("vector(384)", 3, 0)
    assert "USING hnsw (embedding vector_cosine_ops)" in index_definition(engine)


@pytest.mark.parametrize(("index", "change"), [
    ("USING hnsw (embedding vector_l2_ops) WITH (m = 24, ef_construction = 100)",
     {"opclass": ("vector_l2_ops", "vector_cosine_ops")}),
    ("USING ivfflat (embedding vector_cosine_ops) WITH (lists = 10)",
     {"index_method": ("ivfflat", "hnsw"), "m": (None, 24), "ef_construction": (None, 100)}),
    ("USING hnsw (embedding vector_cosine_ops)",
     {"m": (16, 24), "ef_construction": (64, 100)}),
])
def test_an_index_changed_behind_alembics_back_is_put_right(
        at_head: Path, engine: sa.Engine, index: str, change: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX tickets_embedding_hnsw"))
        conn.execute(sa.text(f"CREATE INDEX tickets_embedding_hnsw ON tickets {index}"))
    metadata = example_metadata()
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding", change)]
    generate_and_run(at_head, engine, metadata)
    assert "USING hnsw (embedding vector_cosine_ops) WITH (m='24', ef_construction='100')" \
        in index_definition(engine)


def test_removing_the_embedding(at_head: Path, engine: sa.Engine) -> None:
    metadata = example_metadata(None)
    assert diffs(engine, metadata) == [("remove_embedding", None, "tickets", "embedding",
                                        Definition(template=TEMPLATE, model=MINILM,
                                                   dimensions=384, key_columns=("id",),
                                                   index=HnswIndex(24, 100)))]
    script = generate_and_run(at_head, engine, metadata)
    assert "drop_column" not in script and "add_column" not in script
    assert entry(engine) is None
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("tickets")}
    assert columns == {"id", "customer_id", "subject", "body", "status"}


def test_removing_the_table_drops_its_embedding_first(at_head: Path, engine: sa.Engine) -> None:
    def only_customers(base: type[DeclarativeBase]) -> None:
        base.metadata.remove(base.metadata.tables["tickets"])

    metadata = example_metadata(tables=[only_customers])
    kinds = [d[0] for d in diffs(engine, metadata)]
    assert kinds[0] == "remove_embedding" and kinds[-1] == "remove_table"
    script = generate_and_run(at_head, engine, metadata)
    assert script.index("op.drop_embedding('tickets'") < script.index("op.drop_table('tickets')")
    downgrade = script[script.index("def downgrade"):]
    assert "'embedding'" not in downgrade.split("op.create_embedding")[0]  # no vector column
    with engine.begin() as conn:
        command.downgrade(example_config(at_head, conn, metadata), "0002")
    found = entry(engine)
    assert found is not None and found.spec.index == HnswIndex(24, 100)


def test_a_template_that_stops_reading_a_dropped_column(at_head: Path, engine: sa.Engine) -> None:
    metadata = example_metadata({**EXAMPLE_EMBEDDING, "template": "{subject}"}, without=["body"])
    assert [d[0] for d in diffs(engine, metadata)] == ["modify_embedding", "remove_column"]
    generate_and_run(at_head, engine, metadata)
    found = entry(engine)
    assert found is not None and found.spec.template.source == "{subject}"


def test_a_plain_vector_column_gets_its_import(at_head: Path, engine: sa.Engine) -> None:
    metadata = example_metadata(columns={"centroid": mapped_column(VECTOR(3), nullable=True)})
    assert [d[0] for d in diffs(engine, metadata)] == ["add_column"]
    script = generate_and_run(at_head, engine, metadata)
    assert "import pgvector.sqlalchemy" in script
    assert "pgvector.sqlalchemy.vector.VECTOR(dim=3)" in script


def test_adding_changing_and_reverting_the_fulltext_index(
        at_head: Path, engine: sa.Engine) -> None:
    def matches(tsquery: str) -> int | None:
        """Tickets whose stored tsvector matches; None: there is no tsvector column."""
        with engine.connect() as conn:
            if "embedding_fulltext" not in {
                    c["name"] for c in sa.inspect(conn).get_columns("tickets")}:
                return None
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM tickets WHERE embedding_fulltext @@ CAST(:q AS tsquery)"),
                {"q": tsquery}).scalar_one())

    english = with_embedding(fulltext=True)
    assert diffs(engine, english) == [("modify_embedding", None, "tickets", "embedding",
                                       {"fulltext": (None, "english")})]
    script = generate_and_run(at_head, engine, english)
    assert "fulltext='english',\n    existing_fulltext=None" in script
    assert (matches("bodi"), matches("body")) == (3, 0)  # "body" stemmed the English way
    assert pending(engine) == 0  # a full-text index re-embeds nothing

    simple = with_embedding(fulltext="simple")
    assert diffs(engine, simple) == [("modify_embedding", None, "tickets", "embedding",
                                      {"fulltext": ("english", "simple")})]
    generate_and_run(at_head, engine, simple, rev_id="0004")
    assert (matches("bodi"), matches("body")) == (0, 3)  # every row's tsvector made again

    with engine.begin() as conn:
        command.downgrade(example_config(at_head, conn, simple), "-1")
    assert (matches("bodi"), matches("body")) == (3, 0)
    with engine.begin() as conn:
        command.downgrade(example_config(at_head, conn, english), "-1")
    assert matches("bodi") is None
    found = entry(engine)
    assert found is not None and found.spec.fulltext is None
    assert diffs(engine, with_embedding()) == []


def test_quantising_the_index_rebuilds_it_and_reverses(at_head: Path, engine: sa.Engine) -> None:
    metadata = with_embedding(quantize="binary", rerank=8)
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding", {
        "quantize": (None, "binary"), "rerank": (10, 8)})]
    script = generate_and_run(at_head, engine, metadata)
    assert "quantize='binary'" in script and "re-embeds" not in script
    assert "USING hnsw (((binary_quantize(embedding))::bit(384)) bit_hamming_ops)" \
        in index_definition(engine)
    found = entry(engine)
    assert found is not None and found.spec.index == HnswIndex(24, 100, "binary")
    assert found.spec.index.rerank == 8
    assert pending(engine) == 0  # the stored vectors serve the new index as they are
    with engine.begin() as conn:
        command.downgrade(example_config(at_head, conn, metadata), "-1")
    assert "USING hnsw (embedding vector_cosine_ops)" in index_definition(engine)


def test_a_new_rerank_factor_is_a_change_that_rebuilds_nothing(
        at_head: Path, engine: sa.Engine) -> None:
    generate_and_run(at_head, engine, with_embedding(quantize="halfvec"))
    assert "USING hnsw (((embedding)::halfvec(384)) halfvec_cosine_ops)" \
        in index_definition(engine)
    generate_and_run(at_head, engine, with_embedding(quantize="binary"), rev_id="0004")

    def index_oid() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT 'tickets_embedding_hnsw'::regclass::oid")).scalar_one())

    built = index_oid()
    metadata = with_embedding(quantize="binary", rerank=30)
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding", {
        "rerank": (10, 30)})]
    generate_and_run(at_head, engine, metadata, rev_id="0005")
    assert index_oid() == built
    found = entry(engine)
    assert found is not None and found.spec.index is not None and found.spec.index.rerank == 30


def test_an_index_quantised_behind_alembics_back_is_put_right(
        at_head: Path, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX tickets_embedding_hnsw"))
        conn.execute(sa.text(
            "CREATE INDEX tickets_embedding_hnsw ON tickets USING hnsw"
            " ((embedding::halfvec(384)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 100)"))
    metadata = example_metadata()
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding", {
        "quantize": ("halfvec", None)})]
    generate_and_run(at_head, engine, metadata)
    assert "USING hnsw (embedding vector_cosine_ops)" in index_definition(engine)


def test_a_float32_backend_is_a_change_that_reembeds_nothing_and_reverses(
        at_head: Path, engine: sa.Engine) -> None:
    metadata = with_embedding(backend="onnx")
    assert diffs(engine, metadata) == [("modify_embedding", None, "tickets", "embedding", {
        "backend": ("torch", "onnx")})]
    script = generate_and_run(at_head, engine, metadata)
    assert "backend='onnx'" in script and "re-embeds" not in script
    found = entry(engine)
    assert found is not None and found.spec.encode.backend == "onnx"
    assert pending(engine) == 0  # the same model: the stored vectors stay current
    assert diffs(engine, metadata) == []  # and the next autogenerate has nothing to say
    with engine.begin() as conn:
        command.downgrade(example_config(at_head, conn, metadata), "-1")
    found = entry(engine)
    assert found is not None and found.spec.encode.backend == "torch"
