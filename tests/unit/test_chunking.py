"""Splitting with the model's own tokenizer: chunk sizes, spans, boundaries, bad settings."""

from __future__ import annotations

import itertools
import re

import pytest
from tokenizers import Tokenizer

from embeddb.chunking import Chunking, Splitter, model_window
from embeddb.embedders import MINILM, resolve_model_path
from embeddb.errors import SpecError

TEXT = ("PostgreSQL is a database. It stores rows in tables, and indexes speed up lookups.\n\n"
        "Vectors live beside the rows. An HNSW index finds near neighbours quickly. ") * 12


def test_minilm_chunks_fit_the_window_counted_in_its_word_pieces() -> None:
    path = resolve_model_path(MINILM)
    assert path is not None and model_window(MINILM) == 256
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    chunks = Splitter(MINILM, Chunking(max_tokens=60, overlap=25)).split(TEXT)
    assert len(chunks) > 5
    for number, chunk in enumerate(chunks):
        assert chunk.number == number and TEXT[chunk.start:chunk.end] == chunk.text
        assert len(tokenizer.encode(chunk.text).ids) <= 60  # special tokens included
        # boundaries fall between words
        assert chunk.start == 0 or not TEXT[chunk.start - 1].isalnum()
        assert chunk.end == len(TEXT) or not TEXT[chunk.end].isalnum()
    # overlap: within a paragraph (a chunk that ends at a paragraph break has none)
    one_paragraph = Splitter(MINILM, Chunking(max_tokens=60, overlap=25)).split(
        TEXT.replace("\n\n", " "))
    assert all(b.start < a.end for a, b in itertools.pairwise(one_paragraph))


def test_whitespace_has_no_chunks_and_bad_settings_are_refused() -> None:
    assert Splitter(MINILM, Chunking()).split(" \n\t\n ") == []
    with pytest.raises(SpecError, match="smaller than max_tokens"):
        Chunking(max_tokens=32, overlap=40)
    with pytest.raises(SpecError, match=re.escape("larger than the window")):
        Chunking(max_tokens=512).check_window(MINILM)
    with pytest.raises(SpecError, match="101 characters, more than"):
        Splitter(MINILM, Chunking(max_chars=100)).split("x" * 101)


def test_the_default_chunk_fits_the_window_and_its_chunks_stay_within_it() -> None:
    Chunking().check_window(MINILM)  # MiniLM reads 256 word pieces
    from tokenizers import Tokenizer

    from embeddb.embedders import resolve_model_path

    path = resolve_model_path(MINILM)
    assert path is not None
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_truncation()
    chunks = Splitter(MINILM, Chunking()).split(" ".join([TEXT] * 6))
    assert len(chunks) > 3
    assert max(len(tokenizer.encode(c.text).ids) for c in chunks) <= Chunking().max_tokens
