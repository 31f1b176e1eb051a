import pytest

from embeddb.errors import SpecError
from embeddb.spec import Distance, EmbeddingSpec, HnswIndex, hash_column_name
from embeddb.template import Template


def make_spec(**overrides: object) -> EmbeddingSpec:
    fields: dict[str, object] = {
        "schema": "public",
        "table": "tickets",
        "column": "embedding",
        "key_columns": ("id",),
        "template": Template.parse("{subject}\n\n{body}"),
        "model": "m",
        "dimensions": 384,
    }
    fields.update(overrides)
    return EmbeddingSpec(**fields)  # type: ignore[arg-type]


def test_defaults_are_cosine_with_pgvector_hnsw_defaults() -> None:
    spec = make_spec()
    assert spec.distance is Distance.COSINE
    assert spec.index == HnswIndex(m=16, ef_construction=64)
    assert spec.encode.normalize is True
    assert spec.hash_column == "embedding_source_hash"
    assert spec.index_name == "tickets_embedding_hnsw"


@pytest.mark.parametrize(
    ("distance", "opclass"),
    [("cosine", "vector_cosine_ops"), ("inner_product", "vector_ip_ops"),
     ("l2", "vector_l2_ops")],
)
def test_distance_maps_to_opclass(distance: str, opclass: str) -> None:
    assert Distance.parse(distance).opclass("vector") == opclass


def test_unknown_distance_lists_the_choices() -> None:
    with pytest.raises(SpecError, match="cosine, inner_product, l2"):
        Distance.parse("manhattan")


def test_a_table_without_primary_key_is_refused() -> None:
    with pytest.raises(SpecError, match=r"public\.tickets has no primary key"):
        make_spec(key_columns=())


def test_the_template_cannot_read_the_vector_column() -> None:
    with pytest.raises(SpecError, match="cannot read the embedding column"):
        make_spec(template=Template.parse("{embedding}"))


@pytest.mark.parametrize(("m", "ef"), [(1, 64), (101, 400), (16, 20), (16, 1001)])
def test_hnsw_parameters_are_checked(m: int, ef: int) -> None:
    with pytest.raises(SpecError, match="HNSW"):
        HnswIndex(m=m, ef_construction=ef)


def test_hnsw_is_refused_beyond_2000_dimensions_but_exact_search_is_allowed() -> None:
    with pytest.raises(SpecError, match="2,000 dimensions"):
        make_spec(dimensions=3072)
    assert make_spec(dimensions=3072, index=None).index is None


def test_long_names_are_shortened_to_a_unique_postgres_identifier() -> None:
    long_a = hash_column_name("a" * 80)
    long_b = hash_column_name("a" * 79 + "b")
    assert len(long_a) <= 63 and len(long_b) <= 63
    assert long_a != long_b
    spec = make_spec(table="t" * 60, column="c" * 60)
    assert len(spec.index_name) <= 63
    assert len(spec.trigger_prefix) + len("_trunc") <= 63


def test_derived_names_fit_postgres_limit_in_bytes_not_characters() -> None:
    # 62 two-byte characters: 124 bytes, though only 62 characters
    column = "é" * 62
    spec = EmbeddingSpec(schema="public", table="日本" * 20, column=column, key_columns=("id",),
                         template=Template.parse("{body}"), model="m", dimensions=3)
    for name in (spec.hash_column, spec.index_name):
        assert len(name.encode()) <= 63, name
    assert len(spec.trigger_prefix.encode()) + len("_trunc") <= 63
    # the names PostgreSQL keeps stay distinct: none is cut by the server
    triggers = {f"{spec.trigger_prefix}_{event}" for event in ("ins", "upd", "del", "trunc")}
    assert len({name.encode()[:63] for name in triggers}) == 4
    assert hash_column_name("é" * 40) != hash_column_name("é" * 39 + "e")


@pytest.mark.parametrize(("quantize", "opclass", "most"), [
    (None, "vector_cosine_ops", 2000), ("halfvec", "halfvec_cosine_ops", 4000),
])
def test_a_quantised_index_has_its_own_opclass_and_dimension_limit(
        quantize: str | None, opclass: str, most: int) -> None:
    assert make_spec(index=HnswIndex(quantize=quantize)).index_opclass == opclass
    make_spec(dimensions=most, index=HnswIndex(quantize=quantize))
    with pytest.raises(SpecError, match=f"at most {most:,} dimensions"):
        make_spec(dimensions=most + 1, index=HnswIndex(quantize=quantize))


def test_a_binary_index_takes_every_dimension_a_vector_column_has() -> None:
    spec = make_spec(dimensions=16000, index=HnswIndex(quantize="binary"))
    assert spec.index_opclass == "bit_hamming_ops"


def test_the_rerank_factor_is_a_search_setting_not_part_of_the_index() -> None:
    assert HnswIndex(quantize="binary", rerank=4) == HnswIndex(quantize="binary", rerank=40)
    assert HnswIndex(quantize="binary") != HnswIndex(quantize="halfvec")


@pytest.mark.parametrize(("options", "message"), [
    ({"quantize": "int8"}, "quantize must be None or one of halfvec, binary"),
    ({"quantize": "binary", "rerank": 0}, "rerank must be an integer between 1 and 100"),
    ({"rerank": 2.5}, "rerank must be an integer"),
])
def test_bad_index_quantisation_is_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        HnswIndex(**options)  # type: ignore[arg-type]


def test_a_halfvec_column_needs_no_halfvec_index() -> None:
    with pytest.raises(SpecError, match="already stores halfvec"):
        make_spec(vector_type="halfvec", index=HnswIndex(quantize="halfvec"))


def test_a_quantised_declaration_needs_its_index() -> None:
    from embeddb import Embedding

    with pytest.raises(SpecError, match="quantize='binary' describes the HNSW index"):
        Embedding("{body}", model="embeddb-testing/hash-8", index=False, quantize="binary")
    declared = Embedding("{body}", model="embeddb-testing/hash-8", quantize="binary", rerank=3)
    assert declared.column.info["embeddb"].index == HnswIndex(quantize="binary")
    assert declared.column.info["embeddb"].index.rerank == 3
