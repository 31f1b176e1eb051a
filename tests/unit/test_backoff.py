"""Reconnect and column backoff: doubling, capped, and spread so workers do not return in step."""

from __future__ import annotations

import random
import statistics

from embeddb.faults import Faults, jittered_backoff
from embeddb.worker import reconnect_delay


def test_reconnect_delays_of_many_workers_after_one_restart_are_spread() -> None:
    # 200 workers lose the database together; each draws its wait after the first failure
    first = [reconnect_delay(1) for _ in range(200)]
    assert all(0.5 <= delay <= 1.0 for delay in first)
    assert max(first) - min(first) > 0.3  # a spread, not one instant
    assert len({round(delay, 3) for delay in first}) > 100
    # and the spread grows with the backoff, up to the 30 s cap
    fifth = [reconnect_delay(5) for _ in range(200)]
    assert all(8.0 <= delay <= 16.0 for delay in fifth)
    assert statistics.pstdev(fifth) > 1.0
    capped = [reconnect_delay(50) for _ in range(200)]
    assert all(15.0 <= delay <= 30.0 for delay in capped)
    assert statistics.pstdev(capped) > 2.0


def test_two_workers_do_not_back_off_in_lockstep() -> None:
    one, two = random.Random(1), random.Random(2)
    a = [jittered_backoff(n, 1.0, 30.0, one) for n in range(1, 8)]
    b = [jittered_backoff(n, 1.0, 30.0, two) for n in range(1, 8)]
    # their reconnect times (cumulative waits) never coincide to within 50 ms
    times_a = [sum(a[:i + 1]) for i in range(len(a))]
    times_b = [sum(b[:i + 1]) for i in range(len(b))]
    assert all(abs(x - y) > 0.05 for x, y in zip(times_a, times_b, strict=True))


def test_column_backoff_uses_the_same_jittered_doubling() -> None:
    faults = Faults(5.0, 300.0)
    delays = [faults.delay(3) for _ in range(100)]
    assert all(10.0 <= delay <= 20.0 for delay in delays)
    assert max(delays) - min(delays) > 3.0
    assert all(150.0 <= faults.delay(40) <= 300.0 for _ in range(20))
