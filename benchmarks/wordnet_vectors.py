"""WordNet synsets and their all-MiniLM-L6-v2 vectors, encoded once and cached.

Run ``.venv/bin/python benchmarks/wordnet_vectors.py`` to fill the cache ahead of time (about
15 minutes on 2 cores); ``filtered_search.py`` calls :func:`load` and encodes only if the cache
is missing. The cache is ``benchmarks/.cache/wordnet-<model fingerprint>-<texts digest>.npy``
(gitignored): a different model or a changed corpus gets a new file, never a stale one.
Encoding goes in chunks saved as they finish, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from common import DATA_DIR, REPO_ROOT, read_jsonl

from embeddb.embedders import MINILM, expected_identity, load_embedder
from embeddb.spec import EncodeOptions

CACHE_DIR = REPO_ROOT / "benchmarks" / ".cache"
CHUNK = 4096


@dataclass(frozen=True)
class Synset:
    id: str
    pos: str
    lexname: str
    text: str


def synsets() -> list[Synset]:
    """Every synset, text as ``"lemma, lemma: gloss"``, in file order."""
    path = DATA_DIR / "wordnet" / "synsets.jsonl"
    if not path.exists():
        raise SystemExit(f"WordNet data not found at {path} (see ../shared/data/README.md)")
    return [
        Synset(s["id"], s["pos"], s["lexname"], f"{', '.join(s['lemmas'])}: {s['gloss']}")
        for s in read_jsonl(path)
    ]


def cache_path(texts: list[str], model: str = MINILM, corpus: str = "wordnet") -> Path:
    identity = expected_identity(model, EncodeOptions())
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    return CACHE_DIR / f"{corpus}-{identity.fingerprint}-{digest}.npy"


def load(texts: list[str], model: str = MINILM,
         corpus: str = "wordnet") -> npt.NDArray[np.float32]:
    """The normalised vectors of ``texts``, from the cache, encoding what is missing.

    Any corpus can be cached here (``corpus`` names its file): ``recall_targets.py`` caches
    SciFact's abstracts and claims the same way. MiniLM has no prompts, so a text's document
    vector is also its query vector."""
    path = cache_path(texts, model, corpus)
    if path.exists():
        return np.load(path)
    parts = path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    embedder = load_embedder(model)
    started, encoded = time.perf_counter(), 0
    for start in range(0, len(texts), CHUNK):
        part = parts / f"{start:07d}.npy"
        if part.exists():
            continue
        chunk = texts[start:start + CHUNK]
        np.save(part, embedder.embed_documents(chunk))
        encoded += len(chunk)
        rate = encoded / (time.perf_counter() - started)
        print(f"encoded {start + len(chunk)}/{len(texts)} ({rate:.0f} texts/s)", file=sys.stderr)
    vectors = np.concatenate([np.load(p) for p in sorted(parts.glob("*.npy"))])
    np.save(path, vectors.astype(np.float32))
    for p in parts.glob("*.npy"):
        p.unlink()
    parts.rmdir()
    return vectors


def encoded(texts: list[str], model: str = MINILM,
            corpus: str = "wordnet") -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The indices of ``texts`` whose vectors are cached so far, and those vectors: all of
    them once the cache is complete, else the chunks an unfinished encoding has saved."""
    path = cache_path(texts, model, corpus)
    if path.exists():
        return np.arange(len(texts)), np.load(path)
    starts, parts = [], []
    for part in sorted(path.with_suffix(".parts").glob("*.npy")):
        try:
            parts.append(np.load(part))
        except (ValueError, OSError, EOFError):
            continue  # being written by the running encoding
        starts.append(int(part.stem))
    if not parts:
        raise SystemExit(f"no vectors cached for {corpus} yet: run wordnet_vectors.py")
    indices = np.concatenate([np.arange(start, start + len(vectors))
                              for start, vectors in zip(starts, parts, strict=True)])
    return indices, np.concatenate(parts).astype(np.float32)


if __name__ == "__main__":
    texts = [s.text for s in synsets()]
    vectors = load(texts)
    print(f"{vectors.shape[0]} vectors of {vectors.shape[1]} dims in {cache_path(texts)}")
