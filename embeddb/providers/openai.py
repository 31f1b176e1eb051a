"""Models behind an OpenAI-compatible embeddings API: ``openai/<model>``.

A column's model name carries everything a worker needs to reach the server, and nothing
secret: ``openai/text-embedding-3-small`` (OpenAI itself, key in ``OPENAI_API_KEY``) or, for
another server, ``openai/<model>?base_url=http://host:7997&api_key_env=MY_KEY``. The key is read
from the named environment variable by whoever embeds (worker, query helper), at load time; it
is never stored, logged or put on a command line.

The client is :mod:`httpx` rather than the ``openai`` package: embeddb needs its own control
of retries (``Retry-After``, a shared pause, a deadline that turns into
:class:`~embeddb.errors.ModelUnavailable`), of concurrency and of what a 400 means, which the
``openai`` client hides behind its own retry loop; httpx is small, typed and does only HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np

from ..embedders import Embedder, ModelIdentity, Vectors, check_dimensions, estimate_tokens
from ..errors import ModelError, ModelUnavailable, SpecError
from ..spec import EncodeOptions
from .limits import HttpLimits, RateLimiter, backoff_delay, parse_retry_after

log = logging.getLogger(__name__)

PREFIX = "openai/"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
#: Output dimensions of OpenAI's models; ``dimensions=`` is required for any other model.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
#: Models that take the API's ``dimensions`` parameter only to shorten their vectors.
_FIXED_DIMENSIONS = {"text-embedding-ada-002"}
_OPTIONS = ("base_url", "api_key_env")
#: The fewest texts a request is cut to so that a call's requests are sent in parallel.
MIN_SPLIT_INPUTS = 16


class InputRejected(ModelError):
    """The server refused one request's input (HTTP 400/413/422): a row to isolate, not an
    outage."""


@dataclass(frozen=True)
class HttpModel:
    """A parsed ``openai/...`` model name."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = DEFAULT_API_KEY_ENV

    @classmethod
    def parse(cls, name: str) -> HttpModel:
        if not name.startswith(PREFIX):
            raise SpecError(f"{name!r} is not an {PREFIX}... model")
        model, _, query = name[len(PREFIX):].partition("?")
        if not model:
            raise SpecError(f"{name!r} names no model after {PREFIX!r}")
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise SpecError(f"model {name!r}: unknown option {', '.join(unknown)};"
                            f" known: {', '.join(_OPTIONS)}")
        base_url = options.get("base_url", DEFAULT_BASE_URL).rstrip("/")
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
            raise SpecError(f"model {name!r}: base_url must be an http(s) URL, got {base_url!r}")
        return cls(model, base_url, options.get("api_key_env", DEFAULT_API_KEY_ENV))

    @property
    def name(self) -> str:
        """The canonical model name (defaults left out), as recorded in the catalog."""
        options = {}
        if self.base_url != DEFAULT_BASE_URL:
            options["base_url"] = self.base_url
        if self.api_key_env != DEFAULT_API_KEY_ENV:
            options["api_key_env"] = self.api_key_env
        query = urlencode(options, safe=":/")
        return f"{PREFIX}{self.model}" + (f"?{query}" if query else "")

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/embeddings"


def model_name(model: str, *, base_url: str | None = None, api_key_env: str | None = None) -> str:
    """The catalog name of ``model`` served at ``base_url``, its key in ``api_key_env``.

    ``api_key_env=""`` is a server that wants no key.

    Example::

        model_name("openai/all-MiniLM-L6-v2", base_url="http://127.0.0.1:7997")
        # 'openai/all-MiniLM-L6-v2?base_url=http://127.0.0.1:7997'
    """
    parsed = HttpModel.parse(model)
    composed = HttpModel(
        parsed.model,
        base_url.rstrip("/") if base_url is not None else parsed.base_url,
        api_key_env if api_key_env is not None else parsed.api_key_env,
    )
    return HttpModel.parse(composed.name).name  # parsed again: checks the URL


def _native_dimensions(model: HttpModel, name: str) -> int:
    known = KNOWN_DIMENSIONS.get(model.model)
    if known is None:
        raise SpecError(
            f"the dimensions of {name!r} are not known without asking its server; pass"
            " dimensions=N to Embedding()"
        )
    return known


def _identity(name: str, options: EncodeOptions, dimensions: int | None) -> ModelIdentity:
    model = HttpModel.parse(name)
    if model.model in KNOWN_DIMENSIONS:
        dims = check_dimensions(name, KNOWN_DIMENSIONS[model.model], dimensions)
    elif dimensions is None:
        dims = _native_dimensions(model, name)
    else:
        dims = dimensions
    digest = hashlib.sha256(f"{model.base_url} {model.model}".encode()).hexdigest()[:12]
    return ModelIdentity(
        name=model.name,
        fingerprint=f"http-{digest}",
        dimensions=dims,
        normalize=options.normalize,
        query_prompt=options.query_prompt,
        document_prompt=options.document_prompt,
    )


class HttpEmbedder:
    """An OpenAI-compatible ``/embeddings`` endpoint: batched, several requests in flight,
    rate-limited, retried.

    An outage, a rate limit that outlasts ``give_up_after`` or a wrong key raises
    :class:`~embeddb.errors.ModelUnavailable` (the worker releases the batch without spending
    attempts); a 400 raises :class:`InputRejected`, so the worker isolates the row.

    Example::

        embedder = HttpEmbedder("openai/text-embedding-3-small", EncodeOptions(), 256)
        embedder.embed_query("reset my password").shape   # (256,)
    """

    def __init__(self, name: str, options: EncodeOptions, dimensions: int | None = None,
                 limits: HttpLimits | None = None) -> None:
        import httpx

        self._model = HttpModel.parse(name)
        self._identity = _identity(name, options, dimensions)
        self._options = options
        self.limits = limits or HttpLimits.from_environment()
        self._send_dimensions = dimensions is not None and not (
            self._model.model in _FIXED_DIMENSIONS
            and dimensions == KNOWN_DIMENSIONS[self._model.model])
        headers = {"Content-Type": "application/json"}
        if self._model.api_key_env:
            key = os.environ.get(self._model.api_key_env)
            if not key:
                raise ModelError(
                    f"model {self._model.name}: the API key is read from the environment variable"
                    f" {self._model.api_key_env}, which is not set for this process; set it"
                    " where the worker and the query helpers run"
                )
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            headers=headers, timeout=self.limits.timeout,
            limits=httpx.Limits(max_connections=self.limits.max_in_flight),
        )
        self._pool = ThreadPoolExecutor(self.limits.max_in_flight,
                                        thread_name_prefix="embeddb-http")
        self._rate = RateLimiter(self.limits.process_rpm, self.limits.process_tpm)
        self._tokenizer = _tiktoken_for(self._model.model)
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text: tiktoken's count where it knows the model and its data is on this
        machine, else an estimate of one token per four characters."""
        if self._tokenizer is not None:
            return [len(ids) for ids in self._tokenizer.encode_ordinary_batch(list(texts))]
        return estimate_tokens(texts)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        prompt = self._options.document_prompt or ""
        return self._embed([prompt + text for text in texts])

    def embed_query(self, text: str) -> Vectors:
        vector: Vectors = self._embed([(self._options.query_prompt or "") + text])[0]
        return vector

    def batches(self, texts: Sequence[str]) -> list[tuple[int, int, int]]:
        """``(start, end, tokens)`` of each request ``texts`` is sent in, within the limits.

        A call that would fit in fewer requests than ``max_in_flight`` (a worker's claim of 256
        rows is one request of 256 by default) is spread over that many requests of at least
        :data:`MIN_SPLIT_INPUTS` texts, so they are answered in parallel; not under an ``rpm``
        limit, which counts requests.
        """
        counts = self.count_tokens(texts)
        inputs = self.limits.batch_inputs
        if self.limits.rpm is None:
            requests = max(1, min(self.limits.max_in_flight, len(texts) // MIN_SPLIT_INPUTS))
            inputs = min(inputs, -(-len(texts) // requests))  # ceiling division
        spans: list[tuple[int, int, int]] = []
        start, tokens = 0, 0
        for i, count in enumerate(counts):
            full = (i - start >= inputs
                    or tokens + count > self.limits.batch_tokens)
            if i > start and full:
                spans.append((start, i, tokens))
                start, tokens = i, 0
            tokens += count
        if start < len(texts):
            spans.append((start, len(texts), tokens))
        return spans

    def _embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._identity.dimensions), dtype=np.float32)
        spans = self.batches(texts)
        futures = [self._pool.submit(self._request, texts[a:b], tokens) for a, b, tokens in spans]
        return np.concatenate([future.result() for future in futures])

    def _request(self, texts: list[str], tokens: int) -> Vectors:
        import httpx

        body: dict[str, Any] = {"model": self._model.model, "input": texts,
                                "encoding_format": "float"}
        if self._send_dimensions:
            body["dimensions"] = self._identity.dimensions
        started = _now()
        attempt = 0
        while True:
            self._rate.acquire(tokens)
            retry_after: float | None = None
            try:
                response = self._client.post(self._model.endpoint, json=body)
                with self._count_lock:
                    self.requests_sent += 1
            except httpx.TransportError as exc:  # timeouts, resets, refused connections
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return self._vectors(response, len(texts))
                problem = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code in (400, 413, 422):
                    raise InputRejected(f"{self._model.name} refused the input ({problem})")
                if response.status_code in (401, 403, 404):
                    raise ModelUnavailable(f"{self._model.name} at {self._model.base_url}:"
                                           f" {problem}{self._key_hint(response.status_code)}")
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if response.status_code == 429:
                    self._rate.pause(retry_after if retry_after is not None else
                                     backoff_delay(attempt, self.limits, None))
            delay = backoff_delay(attempt, self.limits, retry_after)
            if _now() + delay - started > self.limits.give_up_after:
                raise ModelUnavailable(
                    f"{self._model.name} at {self._model.base_url} did not answer within"
                    f" {self.limits.give_up_after:.0f}s ({attempt + 1} tries; last: {problem})")
            log.info("%s: %s; retrying in %.1fs", self._model.name, problem, delay)
            _wait(delay)
            attempt += 1

    def _key_hint(self, status: int) -> str:
        if status in (401, 403) and self._model.api_key_env:
            return f" (check the key in {self._model.api_key_env})"
        return ""

    def _vectors(self, response: Any, expected: int) -> Vectors:
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.array([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelUnavailable(
                f"{self._model.name} answered something that is not an embeddings response"
                f" ({type(exc).__name__})") from exc
        if vectors.ndim != 2 or len(vectors) != expected:
            raise ModelUnavailable(f"{self._model.name} answered {len(vectors)} vectors for"
                                   f" {expected} inputs")
        if vectors.shape[1] != self._identity.dimensions:
            raise ModelUnavailable(
                f"{self._model.name} at {self._model.base_url} answered {vectors.shape[1]}"
                f"-dimensional vectors, but the column is declared with"
                f" {self._identity.dimensions}; declare dimensions={vectors.shape[1]} or point"
                " base_url at the server of the declared model")
        if self._options.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors /= np.where(norms == 0, 1.0, norms).astype(np.float32)
        return vectors


def _error_message(response: Any) -> str:
    """The server's error message, short; never the request (it holds row text)."""
    try:
        payload = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    message = error.get("message", error) if isinstance(error, dict) else error
    return str(message)[:200]


def _tiktoken_for(model: str) -> Any:
    """tiktoken's encoding for an OpenAI model, or None (not installed, unknown model, or its
    data not on this machine: tiktoken downloads it on first use)."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        return tiktoken.encoding_for_model(model)
    except Exception:
        return None


def _now() -> float:
    return time.monotonic()


def _wait(seconds: float) -> None:
    threading.Event().wait(seconds)


class _HttpKind:
    """The ``openai/`` prefix in :mod:`embeddb.embedders`' registry of model kinds."""

    def native_dimensions(self, name: str) -> int:
        return _native_dimensions(HttpModel.parse(name), name)

    def identity(
        self, name: str, options: EncodeOptions, dimensions: int | None
    ) -> ModelIdentity:
        return _identity(name, options, dimensions)

    def load(self, name: str, options: EncodeOptions, dimensions: int | None) -> Embedder:
        return HttpEmbedder(name, options, dimensions)


MODEL_KIND = _HttpKind()
