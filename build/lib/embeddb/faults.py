"""Failures confined to one embedded column, each retried on its own schedule.

A column's table dropped while the worker drains it, a privilege revoked, an index that cannot
be built: none of these is the other columns' business. :class:`Faults` keeps, per column, the
reason, since when, and when to try again (exponential backoff with jitter, so many workers do
not retry in step); it logs a reason once, when it first appears or changes, and once more when
the column recovers, not on every poll.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

log = logging.getLogger("embeddb.worker")

# SQLSTATE classes that mean the connection or the server, not one column, is in trouble:
# connection exceptions, insufficient resources, operator intervention, system errors.
_WORKER_WIDE = ("08", "53", "57P", "58")


def confined_to_column(exc: sa.exc.DBAPIError) -> bool:
    """Whether PostgreSQL refused a statement (a missing table, privilege, a failed index
    build...) rather than the connection failing; a lost connection is the whole worker's."""
    if exc.connection_invalidated:
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is not None and not sqlstate.startswith(_WORKER_WIDE)


def jittered_backoff(failures: int, base_seconds: float, max_seconds: float,
                     rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` failures in a row: doubling from ``base_seconds`` up
    to ``max_seconds``, drawn at random from the upper half of that, so that workers which
    failed together (a database restart) do not all come back in the same instant.

    Example: ``jittered_backoff(3, 1.0, 30.0)`` is between 2 and 4 seconds.
    """
    ceiling = min(base_seconds * 2 ** min(max(failures, 1) - 1, 30), max_seconds)
    return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass
class Fault:
    """One column's current trouble."""

    reason: str
    since: float  # time.time()
    failures: int
    retry_at: float  # time.monotonic()

    def wait_seconds(self) -> float:
        return max(0.0, self.retry_at - time.monotonic())


class Faults:
    """The faults of a worker's columns, keyed by column id."""

    def __init__(self, backoff_seconds: float, backoff_max_seconds: float) -> None:
        self._backoff = backoff_seconds
        self._backoff_max = backoff_max_seconds
        self._faults: dict[int, Fault] = {}
        self._lock = threading.Lock()

    def failed(self, key: int, name: str, reason: str) -> Fault:
        """Note a failure of ``name``; logs only a new reason. Returns the fault, whose
        ``retry_at`` has moved on by the next backoff step."""
        with self._lock:
            fault = self._faults.get(key)
            if fault is None or fault.reason != reason:
                log.error("%s: %s (retrying with backoff; other columns carry on)", name, reason)
                fault = Fault(reason, time.time(), 0, 0.0)
                self._faults[key] = fault
            else:
                log.debug("%s: still failing: %s", name, reason)
            fault.failures += 1
            fault.retry_at = time.monotonic() + self.delay(fault.failures)
            return fault

    def delay(self, failures: int) -> float:
        """Seconds before the next try after ``failures`` failures in a row: doubling from
        ``backoff_seconds`` up to ``backoff_max_seconds``, each drawn from its upper half."""
        return jittered_backoff(failures, self._backoff, self._backoff_max)

    def waiting(self, key: int) -> bool:
        """Whether the column is backing off now."""
        fault = self._faults.get(key)
        return fault is not None and time.monotonic() < fault.retry_at

    def recovered(self, key: int, name: str) -> bool:
        """Forget the column's fault after a success; True if it had one."""
        with self._lock:
            fault = self._faults.pop(key, None)
        if fault is not None:
            log.info("%s: recovered after %d failed attempts", name, fault.failures)
        return fault is not None

    def get(self, key: int) -> Fault | None:
        return self._faults.get(key)
