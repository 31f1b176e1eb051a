"""What an HTTP provider may send, how fast, and how long it keeps trying.

Limits belong to whoever embeds (they follow the API key's account, not the column), so they
come from that process's environment, like the key:

=================================  =======  ==================================================
variable                           default  meaning
=================================  =======  ==================================================
``EMBEDDB_HTTP_BATCH_INPUTS``      256      texts per request (OpenAI takes up to 2,048)
``EMBEDDB_HTTP_BATCH_TOKENS``      100000   tokens per request (OpenAI takes up to 300,000)
``EMBEDDB_HTTP_MAX_IN_FLIGHT``     4        requests sent at once by one process
``EMBEDDB_HTTP_RPM``               none     requests per minute of the API key's quota
``EMBEDDB_HTTP_TPM``               none     tokens per minute of the API key's quota
``EMBEDDB_HTTP_SHARE``             1        this process's share of RPM and TPM (0.25: one
                                            of four workers on the same key)
``EMBEDDB_HTTP_TIMEOUT``           30       seconds to wait for one answer
``EMBEDDB_HTTP_GIVE_UP_AFTER``     60       seconds of retrying one request before the model
                                            counts as unavailable (the worker backs off and
                                            no row spends an attempt)
=================================  =======  ==================================================

Why each process keeps its own buckets (its share of the quota) rather than one counter in
the database that every worker updates per request:

* the quota is the API key's account's, and embeddb's workers are rarely its only users: the
  query helpers embed in every application process, often other services too. A counter in one
  database would count only the workers of that database, so the provider's 429 with
  ``Retry-After`` stays the authority either way; it is honoured (every request of the process
  pauses, no row spends an attempt).
* a shared bucket is one row that every request of every process updates: its row lock
  serialises them, and a query helper would update it inside the application's own
  transaction (holding the lock until that commits) or need a connection of its own.
* a share is static: a worker that is idle leaves its share unused. With workers that drain
  the same backlog side by side (the usual case) their shares are used alike.

Set ``EMBEDDB_HTTP_RPM``/``TPM`` to the key's quota everywhere and ``EMBEDDB_HTTP_SHARE`` to
each process's part, leaving room for the query traffic.
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ..errors import SpecError

_ENV_PREFIX = "EMBEDDB_HTTP_"


@dataclass(frozen=True)
class HttpLimits:
    """Batching, concurrency, rate and retry limits of one process's HTTP embedder."""

    batch_inputs: int = 256
    batch_tokens: int = 100_000
    max_in_flight: int = 4
    rpm: int | None = None
    tpm: int | None = None
    share: float = 1.0
    timeout: float = 30.0
    give_up_after: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 20.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> HttpLimits:
        """The limits set by ``EMBEDDB_HTTP_*`` variables, defaults for the rest.

        Example::

            os.environ["EMBEDDB_HTTP_RPM"] = "3000"
            HttpLimits.from_environment().rpm   # 3000
        """
        environ = os.environ if environ is None else environ
        values: dict[str, float | int | None] = {}
        for field in fields(cls):
            raw = environ.get(_ENV_PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            try:
                number = float(raw)
            except ValueError:
                raise SpecError(
                    f"{_ENV_PREFIX}{field.name.upper()}={raw!r} is not a number") from None
            if number <= 0:
                raise SpecError(f"{_ENV_PREFIX}{field.name.upper()} must be positive, got {raw}")
            if field.name == "share" and number > 1:
                raise SpecError(f"{_ENV_PREFIX}SHARE is this process's part of the quota, at"
                                f" most 1, got {raw}")
            values[field.name] = number if "float" in str(field.type) else int(number)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def process_rpm(self) -> int | None:
        """Requests per minute this process may send: its ``share`` of ``rpm``."""
        return None if self.rpm is None else max(1, int(self.rpm * self.share))

    @property
    def process_tpm(self) -> int | None:
        """Tokens per minute this process may send: its ``share`` of ``tpm``."""
        return None if self.tpm is None else max(1, int(self.tpm * self.share))


class RateLimiter:
    """Requests and tokens per minute as two token buckets, shared by a process's requests.

    A 429's ``Retry-After`` pauses every request of the process, not only the one that got it.
    """

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self._buckets = [_Bucket(rpm) if rpm else None, _Bucket(tpm) if tpm else None]
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def acquire(self, tokens: int) -> None:
        """Wait until one request of ``tokens`` tokens may be sent."""
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self._paused_until - now
                if wait <= 0:
                    needs = [(b, n) for b, n in zip(self._buckets, (1, tokens), strict=True) if b]
                    wait = max((b.wait_for(n, now) for b, n in needs), default=0.0)
                    if wait <= 0:
                        for bucket, n in needs:
                            bucket.take(n, now)
                        return
            time.sleep(wait)

    def pause(self, seconds: float) -> None:
        """No request of this process is sent for ``seconds`` (a server's ``Retry-After``)."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)


class _Bucket:
    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60.0
        self.at = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, amount: int, now: float) -> float:
        self._refill(now)
        needed = min(float(amount), self.capacity)  # a request larger than a minute's budget
        return max(0.0, (needed - self.level) / self.rate)

    def take(self, amount: int, now: float) -> None:
        self._refill(now)
        self.level -= min(float(amount), self.capacity)


def backoff_delay(attempt: int, limits: HttpLimits, retry_after: float | None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): the server's ``Retry-After``
    when it sent one, else exponential backoff with full jitter around it."""
    if retry_after is not None:
        return min(retry_after, limits.give_up_after)
    ceiling = min(limits.backoff_max, limits.backoff_base * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
