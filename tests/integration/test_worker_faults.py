"""The worker keeps every promise under faults: each scenario runs real `embeddb worker`
processes, kills, stops or starves them, and checks the invariant once things are quiet:
every row's vector is the model's embedding of its current text, nothing is left behind,
nothing is pending or parked that should not be."""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import pytest
import sqlalchemy as sa

from embeddb.server import EmbeddedServer
from embeddb.testing import NONFINITE, POISON
from embeddb.worker import FAILPOINT_VARIABLE

from .conftest import SpawnWorker
from .models import HASH_MODEL, pending, run_worker, ticket_model
from .workers import (
    assert_in_step,
    children_of,
    claims,
    nothing_pending,
    scalar,
    wait_until,
)


def delayed(seconds: float) -> str:
    return f"{HASH_MODEL}?delay={seconds}"


def make_tickets(engine: sa.Engine, count: int, model: str = HASH_MODEL, **options: Any) -> Any:
    Base, Ticket = ticket_model(model=model, **options)
    Base.metadata.create_all(engine)
    if count:
        with engine.begin() as conn:
            conn.execute(sa.insert(Ticket), [
                {"id": i, "subject": f"ticket {i}", "body": f"body of ticket {i}"}
                for i in range(1, count + 1)])
    return Ticket


def execute(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


@pytest.mark.parametrize("point", ["claimed", "embedded", "stored"])
def test_kill_9_at_any_point_is_completed_by_another_worker_after_the_lease(
        point: str, engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine, 40)
    doomed = spawn_worker("--lease-seconds", "2",
                           env={FAILPOINT_VARIABLE: point})
    assert doomed.wait() == -signal.SIGKILL
    assert claims(engine) == 40  # it died holding its claims
    assert scalar(engine, "SELECT count(embedding) FROM tickets") == 0  # nothing half-written
    rescuer = spawn_worker("--lease-seconds", "2")
    wait_until(lambda: nothing_pending(engine), 30, "the rescuer to finish")
    assert rescuer.stop() == 0
    assert assert_in_step(engine, HASH_MODEL) == 40


def test_sigterm_finishes_the_batch_in_hand_then_exits(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine, 10, model=delayed(2))
    worker = spawn_worker()
    wait_until(lambda: claims(engine) == 10, 30, "a claim")
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert assert_in_step(engine, HASH_MODEL) == 10


def test_second_sigterm_exits_at_once_and_hands_back_its_claims(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine, 10, model=delayed(20))
    worker = spawn_worker()
    wait_until(lambda: claims(engine) == 10, 30, "a claim")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "stopping after the current batch" in worker.log, 10, "the first SIGTERM")
    worker.signal(signal.SIGTERM)
    # gone within 10 s, while the batch in hand needs 20: it did not finish the batch
    assert worker.wait(10) == 128 + signal.SIGTERM
    assert claims(engine) == 0  # claimable at once by the next worker, not orphaned
    assert len(pending_rows(engine)) == 10


def pending_rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return pending(conn)


def test_a_worker_stopped_past_its_lease_cannot_overwrite_newer_work(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine, 5, model=delayed(1))
    late = spawn_worker("--lease-seconds", "1")
    wait_until(lambda: claims(engine) == 5, 30, "a claim")
    late.signal(signal.SIGSTOP)  # while "the model runs"
    execute(engine, "UPDATE tickets SET body = 'newer text' WHERE id = 1")
    other = spawn_worker("--lease-seconds", "1")
    wait_until(lambda: nothing_pending(engine), 30, "the other worker")
    late.signal(signal.SIGCONT)
    # the late worker wakes and writes the batch it embedded before row 1 changed: the guard
    # must refuse row 1's old text (superseded) while the same texts of the others are harmless
    wait_until(lambda: re.search(r"tickets\.embedding: \d+ stored, [1-9]\d* superseded", late.log)
               is not None, 30, "the late worker's guarded write")
    assert other.stop() == 0 and late.stop() == 0
    assert assert_in_step(engine, HASH_MODEL) == 5


def test_a_batch_slower_than_its_lease_is_written_once_not_reclaimed_by_its_own_worker(
        engine: sa.Engine, database_url: str) -> None:
    # the model takes 1.5 s, the lease 1 s: the next claim must not take the batch back from
    # the write in flight (it did, now and then, and then stored the same rows again and again)
    make_tickets(engine, 5, model=delayed(1.5))
    finished = run_worker(database_url, "--lease-seconds", "1", timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert "embedded 5 rows" in finished.stderr
    assert assert_in_step(engine, HASH_MODEL) == 5


def test_worker_survives_terminated_connections_and_a_database_restart(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker,
        embedded_server: EmbeddedServer | None) -> None:
    Ticket = make_tickets(engine, 0)
    worker = spawn_worker()

    def add(ids: range) -> None:
        with engine.begin() as conn:
            conn.execute(sa.insert(Ticket), [{"id": i, "subject": "s", "body": f"b{i}"}
                                             for i in ids])
        wait_until(lambda: nothing_pending(engine), 45, f"rows {ids} to be embedded")

    add(range(1, 4))
    terminated = scalar(engine, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                " WHERE application_name = 'embeddb-worker'")
    assert terminated >= 1
    add(range(4, 7))
    if embedded_server is not None:  # an external test server is not ours to restart
        embedded_server.stop()
        embedded_server.start()
        add(range(7, 10))
    assert worker.stop() == 0
    assert "paused" in worker.log
    assert claims(engine) == 0
    assert_in_step(engine, HASH_MODEL)


def test_bad_rows_are_retried_then_parked_while_the_rest_are_stored(
        engine: sa.Engine, database_url: str) -> None:
    Ticket = make_tickets(engine, 0)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": 1, "subject": "fine", "body": "one"},
            {"id": 2, "subject": "poison", "body": POISON},
            {"id": 3, "subject": "nan", "body": NONFINITE},
            {"id": 4, "subject": None, "body": ""},
            {"id": 5, "subject": "long", "body": "word " * 50_000},
            {"id": 6, "subject": "fine", "body": "six"},
        ])
    finished = run_worker(database_url, "--max-attempts", "2", "--backoff-seconds", "0")
    assert finished.returncode == 0, finished.stderr
    with engine.connect() as conn:
        parked = {row.row_key["id"]: row for row in pending(conn)}
    assert set(parked) == {2, 3}
    assert all(row.attempts == 2 and row.parked_at is not None for row in parked.values())
    assert "poison" in parked[2].last_error and "non-finite" in parked[3].last_error
    assert scalar(engine, "SELECT array_agg(id ORDER BY id) FROM tickets"
                          " WHERE embedding IS NOT NULL") == [1, 5, 6]
    status = run_cli(database_url, "status")
    assert "2 parked" in status
    assert "requeued 2 parked rows" in run_cli(database_url, "retry")
    assert len(pending_rows(engine)) == 2 and claims(engine) == 0


def run_cli(database_url: str, *args: str) -> str:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "embeddb.cli", *args,
                             "--database-url", database_url],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def test_a_model_that_cannot_load_spends_no_attempts(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine, 5)
    execute(engine, "UPDATE embeddb.columns SET model_name = 'nobody/missing-model'")
    worker = spawn_worker()
    wait_until(lambda: "nobody/missing-model" in worker.log, 30,
               "the worker to report the model it cannot load")
    assert worker.process.poll() is None  # still running, waiting for the model
    assert all(row.attempts == 0 and row.parked_at is None for row in pending_rows(engine))
    execute(engine, f"UPDATE embeddb.columns SET model_name = '{HASH_MODEL}'")
    execute(engine, "SELECT pg_notify('embeddb', 'model fixed')")
    wait_until(lambda: nothing_pending(engine), 30, "the rows, once the model is back")
    assert worker.stop() == 0
    assert_in_step(engine, HASH_MODEL)


def test_rows_updated_many_times_or_deleted_while_being_embedded(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine, 3, model=delayed(0.5))
    worker = spawn_worker()
    wait_until(lambda: claims(engine) > 0, 30, "a claim")
    for version in range(20):
        execute(engine, "UPDATE tickets SET body = :body WHERE id = 1", body=f"version {version}")
        if version == 5:
            execute(engine, "DELETE FROM tickets WHERE id = 2")
        time.sleep(0.05)  # pacing: spreads the edits over the batches in flight, waits on nothing
    wait_until(lambda: nothing_pending(engine), 30, "the last version")
    assert worker.stop() == 0
    assert assert_in_step(engine, HASH_MODEL) == 2
    assert scalar(engine, "SELECT body FROM tickets WHERE id = 1") == "version 19"


def test_four_workers_race_without_deadlocks_lost_rows_or_duplicate_work(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    rows = 3000
    make_tickets(engine, rows)
    workers = [spawn_worker("--batch-size", "50") for _ in range(4)]
    for start in range(1, 301, 50):  # other clients keep writing during the race
        execute(engine, "UPDATE tickets SET body = body || ' edited' WHERE id BETWEEN :a AND :b",
                a=start, b=start + 49)
    wait_until(lambda: nothing_pending(engine), 120, "four workers to drain")
    assert all(worker.stop() == 0 for worker in workers)
    logs = "\n".join(worker.log for worker in workers)
    assert "deadlock" not in logs.lower()
    stored = sum(int(n) for n in re.findall(r": (\d+) stored", logs))
    assert rows <= stored <= rows + 300  # each row once, edited rows at most twice
    assert sum(": 0 stored" not in w.log and "stored" in w.log for w in workers) >= 2
    assert assert_in_step(engine, HASH_MODEL) == rows


def test_bulk_update_keeps_one_entry_per_row_and_drains_in_bounded_memory(
        engine: sa.Engine, database_url: str) -> None:
    rows = 100_000
    make_tickets(engine, 0, index=False)  # the queue is under test here, not HNSW upkeep
    execute(engine, "INSERT INTO tickets (id, subject, body, status) SELECT g, 'ticket ' || g,"
                    " 'body ' || g, 'open' FROM generate_series(1, :n) g", n=rows)
    execute(engine, "UPDATE tickets SET body = body || ' edited'")
    assert scalar(engine, "SELECT count(*) FROM embeddb.pending") == rows
    finished = run_worker(database_url, "--batch-size", "1000", timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert f"embedded {rows} rows" in finished.stderr
    peak = re.search(r"peak memory (\d+) MiB", finished.stderr)
    assert peak is not None and int(peak.group(1)) < 400  # batches, not the backlog, in memory
    assert nothing_pending(engine)
    assert scalar(engine, "SELECT count(*) FROM tickets WHERE embedding_source_hash"
                          " = md5(concat(subject, E'\\n\\n', body))::uuid") == rows


def test_status_shows_queue_lag_throughput_and_live_workers(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    import json

    make_tickets(engine, 30)
    before = json.loads(run_cli(database_url, "status", "--json"))
    (column,) = before["columns"]
    assert column["pending"] == 30 and column["lag_seconds"] >= 0
    assert column["model_name"] == HASH_MODEL and column["dimensions"] == 32
    worker = spawn_worker()
    wait_until(lambda: nothing_pending(engine), 30, "the rows")
    after = json.loads(run_cli(database_url, "status", "--json"))
    (column,) = after["columns"]
    assert column["pending"] == 0 and column["lag_seconds"] is None
    assert column["rows_per_second"] == pytest.approx(30 / 300)
    (live,) = after["workers"]
    assert live["state"] == "running" and live["heartbeat_age_seconds"] < 10
    assert worker.stop() == 0
    (stopped,) = json.loads(run_cli(database_url, "status", "--json"))["workers"]
    assert stopped["state"] == "stopped" and stopped["rows_embedded"] == 30


def test_several_single_thread_processes_share_the_work_and_stop_together(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    import json

    make_tickets(engine, 400, model=delayed(0.25))  # ~5 s of "model time" to share
    parent = spawn_worker("--processes", "2", "--batch-size", "20")
    wait_until(lambda: nothing_pending(engine), 60, "two processes to drain")
    assert parent.stop() == 0
    workers = json.loads(run_cli(database_url, "status", "--json"))["workers"]
    assert len(workers) == 2 and all(w["state"] == "stopped" for w in workers)
    assert sum(w["rows_embedded"] for w in workers) == 400
    assert all(w["rows_embedded"] > 0 for w in workers)
    assert_in_step(engine, HASH_MODEL)


def test_kill_9_while_expanding_the_inbox_loses_nothing(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine, 0)
    # ids 1..500 leave a key range; 1001, 1003, ... 1999 (gaps) an inbox entry of their keys
    for ids in ("generate_series(1, 500)", "generate_series(1001, 1999, 2)"):
        execute(engine, "INSERT INTO tickets (id, subject, body, status) SELECT g, 'ticket ' || g,"
                        f" 'body ' || g, 'open' FROM {ids} g")
    waiting = ("SELECT (SELECT array_agg(rows) FROM embeddb.inbox),"
               " (SELECT array_agg(rows) FROM embeddb.inbox_ranges)")
    with engine.connect() as conn:
        assert tuple(conn.execute(sa.text(waiting)).one()) == ([500], [500])
    doomed = spawn_worker(env={FAILPOINT_VARIABLE: "expanded"})
    assert doomed.wait() == -signal.SIGKILL
    # it died after queueing the rows and deleting the entries, before committing: none stuck
    with engine.connect() as conn:
        assert tuple(conn.execute(sa.text(waiting)).one()) == ([500], [500])
    assert scalar(engine, "SELECT count(*) FROM embeddb.pending") == 0
    rescuer = spawn_worker()
    wait_until(lambda: nothing_pending(engine), 60, "the rescuer to finish")
    assert rescuer.stop() == 0
    assert assert_in_step(engine, HASH_MODEL) == 1000


def test_a_stop_signal_while_the_worker_processes_start_is_a_clean_stop(
        engine: sa.Engine, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine, 0)
    parent = spawn_worker("--processes", "2")
    # the children exist but are still importing: the SIGTERM passed on kills them before
    # their handler is installed, which stops them as cleanly (they held nothing)
    wait_until(lambda: len(children_of(parent.process.pid)) == 2, 30, "two child processes")
    parent.signal(signal.SIGTERM)
    assert parent.wait(60) == 0
