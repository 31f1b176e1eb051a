"""HTTP rate limits: each process keeps its share of the API key's quota, so workers that share
a key stay within it together. Driven by a test clock: no request waits for real."""

from __future__ import annotations

from typing import Any

import pytest

from embeddb.errors import SpecError
from embeddb.providers import limits
from embeddb.providers.limits import HttpLimits, RateLimiter


class Clock:
    """``time`` for the limiter: ``sleep`` moves ``monotonic`` on instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def test_each_process_takes_its_share_of_the_quota_from_the_environment() -> None:
    quota = {"EMBEDDB_HTTP_RPM": "3000", "EMBEDDB_HTTP_TPM": "1000000"}
    assert HttpLimits.from_environment(quota).process_rpm == 3000  # one process: all of it
    shared = HttpLimits.from_environment({**quota, "EMBEDDB_HTTP_SHARE": "0.25"})
    assert (shared.rpm, shared.process_rpm, shared.process_tpm) == (3000, 750, 250_000)
    assert HttpLimits.from_environment({"EMBEDDB_HTTP_SHARE": "0.5"}).process_rpm is None
    with pytest.raises(SpecError, match="EMBEDDB_HTTP_SHARE is this process's part of the"
                                        " quota, at most 1, got 4"):
        HttpLimits.from_environment({**quota, "EMBEDDB_HTTP_SHARE": "4"})


def test_two_workers_with_half_each_send_no_more_than_the_quota_in_a_minute(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(limits, "time", clock)
    quota = {"EMBEDDB_HTTP_RPM": "120", "EMBEDDB_HTTP_TPM": "60000", "EMBEDDB_HTTP_SHARE": "0.5"}
    workers = []
    for _ in range(2):
        settings = HttpLimits.from_environment(quota)
        workers.append(RateLimiter(settings.process_rpm, settings.process_tpm))
    sent: list[float] = []  # the clock at each request of either worker
    start = clock.now
    while clock.now < start + 120:  # two minutes, the workers taking turns
        for worker in workers:
            worker.acquire(tokens=100)
            sent.append(clock.now)
    # each starts with a full minute's share (a burst), then refills at its share's rate:
    # 2 x 60 at once, then together 120 a minute, the key's quota
    assert sum(1 for at in sent if at == start) == 120
    later = [at for at in sent if at > start]
    for minute in (start, start + 60):
        assert 110 <= sum(1 for at in later if minute < at <= minute + 60) <= 121
    # without the share each would send the whole quota: twice as much
    alone = RateLimiter(HttpLimits.from_environment({"EMBEDDB_HTTP_RPM": "120"}).process_rpm,
                        None)
    first = clock.now
    count = 0
    while clock.now < first + 60:
        alone.acquire(tokens=1)
        count += 1
    assert count > 200


def test_the_token_bucket_waits_once_a_minutes_budget_is_spent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(limits, "time", clock)
    limiter = RateLimiter(rpm=None, tpm=600)  # 10 tokens a second
    start = clock.now
    limiter.acquire(600)
    assert clock.now == start  # a full minute's budget is there at once
    limiter.acquire(5)
    assert clock.now - start == pytest.approx(0.5)  # 5 tokens refill in half a second
