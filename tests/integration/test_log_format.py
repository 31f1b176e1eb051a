"""`embeddb worker --log-format json`: one JSON object per line, with a batch's fields; the text
format stays what it was; neither carries row text or a password."""

from __future__ import annotations

import json
import logging
import re

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from embeddb.logformat import JsonFormatter

from .models import HASH_MODEL, run_worker, ticket_model

SECRET_TEXT = "zebra-quartz-4711"  # in every row's body; must never reach a log
PASSWORD = "pw-not-for-logs-93"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


def make_tickets(engine: sa.Engine, count: int = 25) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": i, "subject": f"ticket {i}", "body": f"{SECRET_TEXT} {i}"}
            for i in range(1, count + 1)])


def with_password(url: str) -> str:
    """The same database with a password in the URL (the local socket trusts it anyway)."""
    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def test_json_logs_are_one_object_a_line_with_the_batch_fields(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine)
    done = run_worker(with_password(database_url), "--log-format", "json", "--batch-size", "10")
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert SECRET_TEXT not in output and PASSWORD not in output
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert records, "the worker logged nothing"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    batches = [r for r in records if "batch_size" in r]
    assert [r["rows"] for r in batches] == [10, 10, 5]
    first = batches[0]
    assert first["column"] == "public.tickets.embedding"
    assert (first["level"], first["logger"]) == ("INFO", "embeddb.worker")
    assert first["message"].startswith("public.tickets.embedding: 10 stored, 0 superseded")
    assert (first["batch_size"], first["superseded"], first["failed"]) == (10, 0, 0)
    assert first["seconds"] > 0
    rate = 10 / first["seconds"]  # seconds are rounded to 0.1 ms
    assert abs(first["rows_per_second"] - rate) <= 0.05 * rate + 0.1


def test_text_logs_are_unchanged_by_default(engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine)
    done = run_worker(with_password(database_url), "--batch-size", "10")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(TEXT_LINE.match(line) for line in lines), lines
    batch_lines = [line for line in lines if " stored, " in line]
    assert len(batch_lines) == 3
    assert re.search(r"embeddb\.worker: public\.tickets\.embedding: 10 stored, 0 superseded,"
                     r" 0 failed \(\d+\.\d rows/s overall\)$", batch_lines[0])
    assert SECRET_TEXT not in done.stderr and PASSWORD not in done.stderr


def test_json_formatter_masks_a_password_in_any_url() -> None:
    record = logging.LogRecord("embeddb", logging.WARNING, __file__, 1,
                               "cannot reach postgresql://app:%s@db:5432/app", (PASSWORD,), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "cannot reach postgresql://app:***@db:5432/app"
