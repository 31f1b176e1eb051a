from embeddb.demo import stdlib_docs


def test_the_demo_corpus_is_the_running_interpreters_public_docs() -> None:
    records = list(stdlib_docs())
    assert len(records) > 1000
    assert {record.kind for record in records} == {"module", "class", "function"}
    names = {record.qualname for record in records}
    assert {"json", "json.dumps", "re.match", "collections.OrderedDict"} <= names
    assert not any(part.startswith("_") for name in names for part in name.split("."))
    assert len(names) == len(records)  # one row per documented object
    assert all(record.doc.strip() and record.qualname.startswith(record.module)
               for record in records)
