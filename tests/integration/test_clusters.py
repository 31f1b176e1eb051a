"""clusters() and outliers() on real WordNet glosses embedded by the real MiniLM model.

The corpus is 150 synsets from each of eight lexicographer files (animals, foods, plants, body
parts, verbs of motion ...), 1,200 rows, plus a few planted rows of text from elsewhere (SQL, a
URL, a shell command, random letters). k-means with eight clusters must agree with the
lexicographer files far better than chance (adjusted Rand index, computed here from the
contingency table), and the planted rows must be the first outliers.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from math import comb
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embeddb import Embedding, aclusters, clusters, outliers
from embeddb.database import sqlalchemy_url

from .models import drain

LEXNAMES = ["noun.animal", "noun.food", "noun.plant", "noun.body", "noun.location",
            "verb.motion", "verb.emotion", "noun.time"]
PER_LEXNAME = 150
# text from nowhere near a dictionary, and unlike one another (random characters alone are
# not: MiniLM puts all gibberish close together, so each would have the others as neighbours)
PLANTED = ["SELECT count(*) FROM orders WHERE shipped_at IS NULL GROUP BY 1;",
           "https://example.com/api/v2/users?page=3&per_page=50&sort=-created_at",
           "zq0x vbrk 7hh3 wqpl jj2 kfxv",
           "sudo apt-get install -y libssl-dev && ./configure --prefix=/usr/local"]
PLANTED_KEYS = {f"planted-{number}" for number in range(len(PLANTED))}


class Base(DeclarativeBase):
    pass


class Synset(Base):
    __tablename__ = "synsets"
    id: Mapped[str] = mapped_column(primary_key=True)
    lexname: Mapped[str] = mapped_column(index=True)
    text: Mapped[str]
    topic: Mapped[int | None]
    embedding = Embedding("{text}")


def wordnet_path(project_root: Path) -> Path:
    data = Path(os.environ.get("EMBEDDB_DATA_DIR", project_root.parent / "shared" / "data"))
    path = data / "wordnet" / "synsets.jsonl"
    if not path.exists():  # a missing corpus is a failure, never a silent skip
        pytest.fail(f"WordNet not found at {path}; set EMBEDDB_DATA_DIR to the shared data")
    return path


def sample(path: Path) -> list[dict[str, str]]:
    by_lexname: dict[str, list[dict[str, str]]] = {name: [] for name in LEXNAMES}
    with path.open() as lines:
        for line in lines:
            synset = json.loads(line)
            if synset["lexname"] in by_lexname:
                by_lexname[synset["lexname"]].append(synset)
    rng = random.Random(3)
    rows = []
    for name, synsets in by_lexname.items():
        for synset in rng.sample(synsets, PER_LEXNAME):
            rows.append({"id": synset["id"], "lexname": name,
                         "text": f"{', '.join(synset['lemmas'])}: {synset['gloss']}"})
    for number, text in enumerate(PLANTED):
        rows.append({"id": f"planted-{number}", "lexname": "planted", "text": text})
    return rows


@pytest.fixture(scope="module")
def wordnet(module_url: str, db: sa.Engine, project_root: Path) -> Iterator[sa.Engine]:
    Base.metadata.create_all(db)
    with db.begin() as conn:
        conn.execute(sa.insert(Synset.__table__), sample(wordnet_path(project_root)))
    drain(module_url)
    yield db


def adjusted_rand_index(truth: list[str], found: list[int]) -> float:
    """Hubert and Arabie's ARI: 0 for chance, 1 for the same partition."""
    pairs = Counter(zip(truth, found, strict=True))
    index = sum(comb(count, 2) for count in pairs.values())
    rows = sum(comb(count, 2) for count in Counter(truth).values())
    columns = sum(comb(count, 2) for count in Counter(found).values())
    expected = rows * columns / comb(len(truth), 2)
    return (index - expected) / ((rows + columns) / 2 - expected)


def test_adjusted_rand_index_is_one_for_the_same_partition_and_near_zero_for_a_random_one() -> None:
    truth = [name for name in "abcd" for _ in range(50)]
    assert adjusted_rand_index(truth, [ord(c) for c in truth]) == pytest.approx(1.0)
    shuffled = random.Random(1).sample(truth, len(truth))
    assert abs(adjusted_rand_index(truth, [ord(c) for c in shuffled])) < 0.05


def test_clusters_agree_with_wordnets_lexicographer_files(wordnet: sa.Engine,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    real = Synset.lexname != "planted"
    with Session(wordnet) as session:
        found = clusters(session, Synset.embedding, len(LEXNAMES), where=real, store="topic")
        session.commit()
        rows = session.execute(sa.select(Synset.lexname, Synset.topic).where(real)).all()
        planted_topics = session.scalars(sa.select(Synset.topic).where(~real)).all()
    assert sum(cluster.size for cluster in found) == len(LEXNAMES) * PER_LEXNAME
    assert [c.size for c in found] == sorted((c.size for c in found), reverse=True)
    assert all(len(cluster.central) == 5 and cluster.label for cluster in found)
    assert planted_topics == [None] * len(PLANTED)  # outside the filter: not assigned
    # the stored numbers are the clusters' own, with their sizes
    assert Counter(topic for _, topic in rows) == {c.number: c.size for c in found}
    ari = adjusted_rand_index([lexname for lexname, _ in rows], [topic for _, topic in rows])
    with capsys.disabled():
        print(f"\nWordNet, {len(rows)} synsets of {len(LEXNAMES)} lexnames: ARI {ari:.3f};"
              f" labels {[c.label for c in found]}")
    shuffled = random.Random(5).sample([t for _, t in rows], len(rows))
    chance = adjusted_rand_index([lexname for lexname, _ in rows], shuffled)
    assert ari > 0.3 > chance + 0.25


def test_the_central_rows_of_a_cluster_are_its_own_and_share_a_lexname(wordnet: sa.Engine) -> None:
    with Session(wordnet) as session:
        found = clusters(session, Synset.embedding, len(LEXNAMES),
                         where=Synset.lexname != "planted")
        lexnames = dict(session.execute(sa.select(Synset.id, Synset.lexname)).all())
    # a cluster's most central glosses are one kind of thing in most clusters
    agreeing = sum(Counter(lexnames[key] for key in c.central).most_common(1)[0][1] >= 4
                   for c in found)
    assert agreeing >= len(found) - 2


def test_planted_random_text_comes_first_among_outliers(wordnet: sa.Engine) -> None:
    with Session(wordnet) as session:
        found = outliers(session, Synset.embedding, len(PLANTED) + 2, neighbours=10)
        exact = outliers(session, Synset.embedding, len(PLANTED), neighbours=10, plan="exact")
    assert {key for key, _ in found[: len(PLANTED)]} == PLANTED_KEYS
    assert [o.score for o in found] == sorted(o.score for o in found)
    assert found[len(PLANTED) - 1].score < found[len(PLANTED)].score
    assert [key for key, _ in exact] == [key for key, _ in found[: len(PLANTED)]]


def test_outliers_within_a_filter_see_only_its_rows(wordnet: sa.Engine) -> None:
    animals = Synset.lexname.in_(["noun.animal", "planted"])
    with Session(wordnet) as session:
        found = outliers(session, Synset.embedding, len(PLANTED), where=animals, neighbours=10)
        lexnames = dict(session.execute(sa.select(Synset.id, Synset.lexname)).all())
    assert all(lexnames[key] in ("noun.animal", "planted") for key, _ in found)
    assert {key for key, _ in found} == PLANTED_KEYS


def test_bad_arguments_name_what_is_wrong(wordnet: sa.Engine) -> None:
    with Session(wordnet) as session:
        with pytest.raises(ValueError, match="no column 'nope'"):
            clusters(session, Synset.embedding, 3, store="nope")
        with pytest.raises(ValueError, match="fewer than the 5 clusters"):
            clusters(session, Synset.embedding, 5, where=Synset.lexname == "planted")
        with pytest.raises(ValueError, match="at least 1"):
            outliers(session, Synset.embedding, 0)


def test_aclusters_from_an_async_session(wordnet: sa.Engine, module_url: str) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def run() -> list[Any]:
        engine = create_async_engine(sqlalchemy_url(module_url))
        try:
            async with AsyncSession(engine) as session:
                return await aclusters(session, Synset.embedding, 4,
                                       where=Synset.lexname != "planted", sample=400)
        finally:
            await engine.dispose()

    found = asyncio.run(run())
    assert len(found) == 4
    assert sum(c.size for c in found) == len(LEXNAMES) * PER_LEXNAME


def test_a_label_is_made_of_words_its_rows_share_and_other_clusters_lack() -> None:
    from embeddb.query._clusters import _labels

    labels = _labels({
        0: ["dog: a domestic canine animal", "wolf: a wild canine animal",
            "fox: a small canine animal with a bushy tail"],
        1: ["oak: a tree, a plant", "fern: a plant, not an animal"],
        2: ["!!"],
    })
    assert labels[0].startswith("canine / animal")  # "animal" is in cluster 1 too: second
    assert labels[1].startswith("plant")
    assert labels[2] == "(no words)"
