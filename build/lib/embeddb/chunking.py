"""Long documents: how a column's text is cut into chunks that fit its model.

``Chunking`` is the declaration (``Embedding(..., chunks=Chunking(max_tokens=128, overlap=32))``);
a :class:`Splitter` applies it. Chunk length is counted with the column's own model's tokenizer
(its ``tokenizer.json``, special tokens included, so a chunk never exceeds the model's window),
and the cutting is done by `semantic-text-splitter`_: it falls on paragraph, then sentence, then
word boundaries, and inside a word only when a single word is longer than a chunk (a URL, a
base64 blob). Each chunk knows its character span in the rendered text.

.. _semantic-text-splitter: https://pypi.org/project/semantic-text-splitter/
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError, SpecError

#: The default chunk: 128 word pieces with 32 of overlap (see README: chosen from SciFact and
#: NFCorpus figures of benchmarks/chunk_quality.py).
DEFAULT_MAX_TOKENS = 128
DEFAULT_OVERLAP = 32
#: Longer rendered texts are refused (the row is retried, then parked, with the reason): a 5 MB
#: document is ~10,000 chunks, minutes of model time in one lease.
DEFAULT_MAX_CHARS = 1_000_000
#: The testing embedder has no tokenizer: it counts words, in a window of this many.
TESTING_WINDOW = 512
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunking:
    """How an embedded column's text is split into chunks, each embedded on its own.

    ``max_tokens`` is counted with the column's model's tokenizer and may not exceed the
    model's window; ``overlap`` tokens of each chunk's end are repeated at the next one's start;
    a rendered text longer than ``max_chars`` characters is not embedded (the row is retried,
    then parked, with the reason).

    Example::

        body_embedding = Embedding("{title}\\n\\n{body}", chunks=Chunking(max_tokens=128))
    """

    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap: int = DEFAULT_OVERLAP
    max_chars: int = DEFAULT_MAX_CHARS

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise SpecError(f"Chunking(max_tokens={self.max_tokens}): a chunk needs at least"
                            " 8 tokens")
        if not 0 <= self.overlap < self.max_tokens:
            raise SpecError(f"Chunking(overlap={self.overlap}) must be at least 0 and smaller"
                            f" than max_tokens ({self.max_tokens})")
        if self.max_chars < 1:
            raise SpecError(f"Chunking(max_chars={self.max_chars}) must be positive")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_catalog(cls, value: dict[str, Any] | None) -> Chunking | None:
        return None if value is None else cls(**value)

    def check_window(self, model: str) -> None:
        """Refuse a chunk larger than ``model``'s window (SpecError naming both)."""
        window = model_window(model)
        if self.max_tokens > window:
            raise SpecError(
                f"Chunking(max_tokens={self.max_tokens}) is larger than the window of {model}"
                f" ({window} tokens): the model would cut every chunk; use at most {window}"
            )


@dataclass(frozen=True)
class Chunk:
    """One piece of a rendered text: its number, its span ``text[start:end]`` and its text."""

    number: int
    start: int
    end: int
    text: str

    @property
    def text_hash(self) -> uuid.UUID:
        """md5 of the text as a uuid, as PostgreSQL's ``md5(text)::uuid`` spells it."""
        return uuid.UUID(hashlib.md5(self.text.encode()).hexdigest())


class Splitter:
    """Splits rendered texts for one column: its model's tokenizer, its chunk settings.

    Example::

        chunks = Splitter("sentence-transformers/all-MiniLM-L6-v2", Chunking()).split(text)
    """

    def __init__(self, model: str, chunking: Chunking) -> None:
        self.chunking = chunking
        self._splitter = _text_splitter(model, chunking)

    def split(self, text: str) -> list[Chunk]:
        """The chunks of ``text`` in order; none for a text that is empty or all whitespace."""
        if len(text) > self.chunking.max_chars:
            raise SpecError(
                f"the text has {len(text):,} characters, more than this column's"
                f" Chunking(max_chars={self.chunking.max_chars:,})"
            )
        if not text.strip():
            return []
        return [Chunk(number, start, start + len(piece), piece)
                for number, (start, piece) in enumerate(self._splitter.chunk_indices(text))]


def model_window(model: str) -> int:
    """How many tokens ``model`` reads (its ``max_seq_length``), from its files."""
    from .embedders import TESTING_PREFIX, resolve_model_path

    if model.startswith(TESTING_PREFIX):
        return TESTING_WINDOW
    path = _model_path(model, resolve_model_path)
    config = path / "sentence_bert_config.json"
    if config.exists():
        return int(json.loads(config.read_text())["max_seq_length"])
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.exists():
        return int(json.loads(tokenizer_config.read_text())["model_max_length"])
    raise ModelError(f"cannot tell the window of model {model!r}: no sentence_bert_config.json"
                     f" or tokenizer_config.json in {path}")


def _model_path(model: str, resolve: Callable[[str], Path | None]) -> Path:
    path = resolve(model)
    if path is None:
        raise ModelError(f"model {model!r} is not available on this machine, so its chunks"
                         " cannot be counted in its tokens; install it")
    return path


@functools.lru_cache(maxsize=16)
def _text_splitter(model: str, chunking: Chunking) -> Any:
    from semantic_text_splitter import TextSplitter

    from .embedders import TESTING_PREFIX, resolve_model_path

    if model.startswith(TESTING_PREFIX):
        return TextSplitter.from_callback(_count_words, chunking.max_tokens, chunking.overlap)
    from tokenizers import Tokenizer

    tokenizer_file = _model_path(model, resolve_model_path) / "tokenizer.json"
    if not tokenizer_file.exists():
        raise ModelError(f"model {model!r} has no tokenizer.json to count chunk tokens with")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()  # the model's truncation would hide a chunk's real length
    tokenizer.no_padding()
    # the splitter counts a chunk's own word pieces; the model also reads [CLS] and [SEP]
    specials = len(tokenizer.encode("").ids)
    return TextSplitter.from_huggingface_tokenizer(
        tokenizer, chunking.max_tokens - specials, overlap=min(chunking.overlap,
                                                               chunking.max_tokens - specials - 1))


def _count_words(text: str) -> int:
    return len(_WORD.findall(text))


__all__ = ["Chunk", "Chunking", "Splitter", "model_window"]
