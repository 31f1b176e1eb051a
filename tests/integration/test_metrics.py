"""`embeddb worker --metrics-port` serves Prometheus metrics that agree with the database."""

from __future__ import annotations

import re
import socket
import sys
import time
import urllib.request

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from embeddb.cli import main
from embeddb.testing import POISON

from .conftest import SpawnWorker
from .models import HASH_MODEL, ticket_model
from .workers import WorkerProcess, nothing_pending, scalar, wait_until

COLUMN = "public.tickets.embedding"
ROWS = 60
SLOW_MODEL = f"{HASH_MODEL}?delay=0.15"  # 10-row batches: a drain of ~1 s to scrape during


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def make_tickets(engine: sa.Engine, model: str = SLOW_MODEL, poisoned: int = 0) -> None:
    Base, Ticket = ticket_model(model=model)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": i, "subject": f"ticket {i}",
             "body": f"body {i} {POISON}" if i <= poisoned else f"body {i}"}
            for i in range(1, ROWS + 1)])


def metrics_ports(worker: WorkerProcess, count: int = 1) -> list[int]:
    """The ports the worker's log says it serves metrics on."""
    def found() -> list[int]:
        return [int(port) for port in re.findall(r"metrics on http://[^:]+:(\d+)/metrics",
                                                 worker.log)]

    wait_until(lambda: len(found()) >= count, 60, "the metrics server to start")
    return found()


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def stored_rows(samples: Samples) -> float:
    """The stored-rows counter, 0 before the worker's first batch creates its series."""
    return samples.get(("embeddb_rows_stored_total", (("column", COLUMN),)), 0.0)


def embedded(engine: sa.Engine) -> int:
    return int(scalar(engine, "SELECT count(embedding) FROM tickets"))


def test_metrics_while_a_worker_drains_agree_with_the_database(
        engine: sa.Engine, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine, poisoned=1)
    worker = spawn_worker("--metrics-port", "0", "--batch-size", "10", "--max-attempts", "1")
    [port] = metrics_ports(worker)

    def mid_drain() -> Samples | None:
        samples = scrape(port)
        if 0 < stored_rows(samples) < ROWS - 1:
            return samples
        return None

    wait_until(lambda: mid_drain() is not None, 60, "a scrape in the middle of the drain")
    samples = mid_drain() or {}
    stored = value(samples, "embeddb_rows_stored_total", column=COLUMN)
    queued = (value(samples, "embeddb_queue_depth", column=COLUMN)
              + value(samples, "embeddb_in_flight_rows", column=COLUMN))
    assert 0 < queued <= ROWS  # the queue was read from the database at scrape time
    assert stored <= embedded(engine)  # counted after the commit, never ahead of it
    assert value(samples, "embeddb_lag_seconds", column=COLUMN) > 0

    wait_until(lambda: scalar(engine, "SELECT count(*) FROM embeddb.pending"
                                      " WHERE parked_at IS NULL") == 0, 60, "the drain")
    wait_until(lambda: stored_rows(scrape(port)) == embedded(engine), 10,
               "the last batch's count")
    samples = scrape(port)
    assert value(samples, "embeddb_rows_stored_total", column=COLUMN) == ROWS - 1
    assert embedded(engine) == ROWS - 1
    assert value(samples, "embeddb_rows_failed_total", column=COLUMN) == 1
    assert value(samples, "embeddb_parked_rows", column=COLUMN) == 1
    assert value(samples, "embeddb_queue_depth", column=COLUMN) == 0
    assert value(samples, "embeddb_in_flight_rows", column=COLUMN) == 0
    assert value(samples, "embeddb_lag_seconds", column=COLUMN) == 0  # only a parked row left
    batches = value(samples, "embeddb_batch_seconds_count", column=COLUMN)
    assert batches >= ROWS / 10
    # every batch ran the slow model once at least: 0.15 s each
    assert value(samples, "embeddb_model_seconds_sum", column=COLUMN) >= 0.15 * batches
    assert value(samples, "embeddb_write_seconds_count", column=COLUMN) == batches
    assert (value(samples, "embeddb_batch_seconds_sum", column=COLUMN)
            >= value(samples, "embeddb_model_seconds_sum", column=COLUMN))
    assert value(samples, "embeddb_model_load_seconds", model=SLOW_MODEL) >= 0
    assert abs(value(samples, "embeddb_worker_last_heartbeat_timestamp_seconds")
               - time.time()) < 30
    assert value(samples, "embeddb_queue_scrape_success") == 1
    worker_ids = [labels for name, labels in samples if name == "embeddb_worker_info"]
    assert worker_ids[0][0][1] == scalar(engine, "SELECT worker_id FROM embeddb.workers")
    assert worker.stop() == 0


def free_port_pair() -> int:
    """A port P with P and P+1 both free just now."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return int(port)
    raise AssertionError("no two free ports in a row")


def test_each_process_serves_its_own_metrics_on_port_plus_i(
        engine: sa.Engine, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine)
    base = free_port_pair()
    parent = spawn_worker("--processes", "2", "--metrics-port", str(base),
                          "--metrics-address", "127.0.0.1", "--batch-size", "10")
    assert sorted(metrics_ports(parent, 2)) == [base, base + 1]
    wait_until(lambda: nothing_pending(engine), 60, "the drain")

    def total_stored() -> float:
        return sum(stored_rows(scrape(port)) for port in (base, base + 1))

    wait_until(lambda: total_stored() == ROWS, 10, "both processes' counts")
    ids = {labels for port in (base, base + 1) for name, labels in scrape(port)
           if name == "embeddb_worker_info"}
    assert len(ids) == 2  # two workers, each with its own counters
    assert parent.stop() == 0


def test_metrics_without_prometheus_client_is_a_clear_error(
        engine: sa.Engine, database_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as if absent
    monkeypatch.delitem(sys.modules, "embeddb.metrics", raising=False)
    code = main(["worker", "--once", "--metrics-port", "0", "--database-url", database_url])
    assert code == 1
    assert "pip install 'embeddb[metrics]'" in capsys.readouterr().err
